"""What a webhook definition may hold: the checks shared by the webhooks API and [[webhooks]] in load_config.

Pure (no I/O): whether a target's addresses may be reached is checked at connect time and, for
[[webhooks]], once at startup by engaged.sinks.dispatch.target_problems.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from engaged.events.model import SPARKPOST_EVENT_TYPES
from engaged.types import WebhookRecord

if TYPE_CHECKING:
    from engaged.config import WebhookConfig

LEASE = 45.0
"""Seconds a claim on a webhook lasts; the holder renews it at least every RENEW seconds."""
RENEW = 10.0
RESTRICTED_HEADERS = frozenset({
    "content-type", "content-length", "host", "user-agent", "authorization", "connection", "transfer-encoding",
    "x-messagesystems-batch-id", "x-messagesystems-webhook-token", "x-engaged-signature", "webhook-id",
    "webhook-timestamp", "webhook-signature",
})
"""Headers `custom_headers` may not set: ours, and those that would break or forge the request."""
_NAMESPACE = uuid.UUID("0b6f4c1e-3d0c-4f59-9a43-5f1d0c2c6e11")
_AUTH_TYPES = ("none", "basic", "bearer", "oauth2")
_MAX_CUSTOM_HEADERS = 10
_MAX_CUSTOM_HEADER_BYTES = 3000
_MAX_BATCH_SIZE = 10000
MAX_TIMEOUT = LEASE - RENEW - 5.0
"""An attempt must end while the lease taken before it still holds (else another process may send too)."""


def config_webhook_id(name: str) -> str:
    """The stable id of a [[webhooks]] entry (its cursor survives restarts and edits of other keys)."""
    return str(uuid.uuid5(_NAMESPACE, "config:" + name))


def record_from_config(hook: WebhookConfig, created: float) -> WebhookRecord:
    """A [[webhooks]] entry as a record: keys named like WebhookRecord fields are taken, others keep defaults."""
    known = WebhookRecord.__struct_fields__
    fields = {key: value for key, value in msgspec.structs.asdict(hook).items() if key in known}
    fields.update(id=config_webhook_id(hook.name), source="config", created=created,
                  exception_subaccounts=tuple(str(value) for value in hook.exception_subaccounts))
    return msgspec.convert(fields, WebhookRecord)


def problems_of(record: WebhookRecord) -> list[tuple[str, str]]:
    """(field, reason) for every invalid field of a definition; empty when it is valid (target checked apart)."""
    problems: list[tuple[str, str]] = []
    if not record.name.strip():
        problems.append(("name", "must not be empty"))
    unknown = [name for name in record.events if name not in SPARKPOST_EVENT_TYPES]
    if unknown:
        problems.append(("events", f"unknown event types: {', '.join(unknown)}"))
    if record.auth_type not in _AUTH_TYPES:
        problems.append(("auth_type", f"must be one of {', '.join(_AUTH_TYPES)}"))
    credentials = record.auth_credentials
    if record.auth_type == "basic" and not ("username" in credentials and "password" in credentials):
        problems.append(("auth_credentials", "basic auth needs username and password"))
    if record.auth_type == "bearer" and not credentials.get("access_token"):
        problems.append(("auth_credentials", "bearer auth needs access_token"))
    details = record.auth_request_details
    if record.auth_type == "oauth2" and not (isinstance(details.get("url"), str) and details["url"].startswith(
            ("http://", "https://")) and isinstance(details.get("body"), dict)):
        problems.append(("auth_request_details", "oauth2 needs url (the token endpoint) and body (client_id, "
                                                 "client_secret, grant_type)"))
    problems.extend(_header_problems(record.custom_headers))
    if not 1 <= record.batch_size <= _MAX_BATCH_SIZE:
        problems.append(("batch_size", f"must be 1 to {_MAX_BATCH_SIZE}"))
    for key in ("batch_age", "timeout", "retry_base", "retry_max_age"):
        if not getattr(record, key) > 0:
            problems.append((key, "must be a positive number of seconds"))
    if record.timeout > MAX_TIMEOUT:
        problems.append(("timeout", f"must be at most {MAX_TIMEOUT:g} seconds"))
    return problems


def _header_problems(headers: dict[str, str]) -> list[tuple[str, str]]:
    restricted = sorted(name for name in headers if name.lower() in RESTRICTED_HEADERS)
    if restricted:
        return [("custom_headers", f"restricted header(s) {', '.join(restricted)}: engaged sets them itself")]
    if len(headers) > _MAX_CUSTOM_HEADERS:
        return [("custom_headers", f"at most {_MAX_CUSTOM_HEADERS} custom headers")]
    if sum(len(name) + len(value) for name, value in headers.items()) > _MAX_CUSTOM_HEADER_BYTES:
        return [("custom_headers", f"custom headers may hold at most {_MAX_CUSTOM_HEADER_BYTES} bytes in all")]
    for name, value in headers.items():
        if not name or any(ch in name for ch in " :\r\n") or any(ch in value for ch in "\r\n\0"):
            return [("custom_headers", f"invalid header {name!r}")]
    return []


def entry_problems(hooks: Sequence[WebhookConfig]) -> list[tuple[str, str]]:
    """(`webhooks[i].key`, reason) for every invalid [[webhooks]] entry, its target's addresses aside."""
    problems: list[tuple[str, str]] = []
    names: set[str] = set()
    for index, hook in enumerate(hooks):
        if hook.name in names:
            problems.append((f"webhooks[{index}].name", f"another webhook has the name {hook.name!r}"))
        names.add(hook.name)
        problems.extend((f"webhooks[{index}].{field}", reason)
                        for field, reason in problems_of(record_from_config(hook, 0.0)))
    return problems
