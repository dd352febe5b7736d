"""Runs one WebhookWorker per stored webhook and merges the [[webhooks]] config into the webhook table."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence

import msgspec

from engaged.config import WebhookConfig
from engaged.errors import ConfigError
from engaged.events.model import SPARKPOST_EVENT_TYPES
from engaged.prometheus import Metrics
from engaged.sinks.guard import Networks, check_target
from engaged.sinks.oauth import TokenCache
from engaged.sinks.signing import RESTRICTED_HEADERS, new_secret
from engaged.sinks.webhooks import LEASE, RENEW, WebhookWorker
from engaged.types import WebhookOutbox, WebhookRecord

log = logging.getLogger("engaged")

SYNC_INTERVAL = 5.0
"""How often the table is re-read, so webhooks created or deleted by other processes are picked up."""
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


async def config_problems(hooks: Sequence[WebhookConfig], networks: Networks = ()) -> list[str]:
    """`webhooks[i].key: reason` for every invalid [[webhooks]] entry, the target's addresses included.

    A host that does not resolve at startup is accepted (every connection checks it again), so a DNS
    hiccup cannot stop the server; one that resolves to a refused address is an error.
    """
    problems: list[str] = []
    names: set[str] = set()
    for index, hook in enumerate(hooks):
        record = record_from_config(hook, 0.0)
        if hook.name in names:
            problems.append(f"webhooks[{index}].name: another webhook has the name {hook.name!r}")
        names.add(hook.name)
        problems.extend(f"webhooks[{index}].{field}: {reason}" for field, reason in problems_of(record))
        refused = await check_target(record.target, record.allow_private_targets, unresolved_ok=True,
                                     networks=networks)
        if refused is not None:
            problems.append(f"webhooks[{index}].target: {refused}")
    return problems


class WebhookDispatcher:
    """Starts and stops workers as webhooks appear in and vanish from the store."""

    def __init__(self, store: WebhookOutbox, metrics: Metrics, owner: str, networks: Networks = ()) -> None:
        self._store = store
        self._networks = networks
        self._tokens = TokenCache()
        self._metrics = metrics
        self._owner = owner
        self._workers: dict[str, tuple[WebhookWorker, asyncio.Task[None]]] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def merge_config(self, hooks: Sequence[WebhookConfig]) -> None:
        """Store the configured webhooks (secret and cursor kept) and drop configured ones no longer listed.

        Raises ConfigError, before changing anything, when an entry is invalid (see config_problems).
        """
        problems = await config_problems(hooks, self._networks)
        if problems:
            raise ConfigError(problems)
        existing = {row.record.id: row for row in await self._store.webhooks()}
        wanted: set[str] = set()
        for hook in hooks:
            previous = existing.get(config_webhook_id(hook.name))
            record = record_from_config(hook, previous.record.created if previous else time.time())
            wanted.add(record.id)
            await self._store.put_webhook(record, previous.secret if previous else new_secret())
        for webhook_id, row in existing.items():
            if row.record.source == "config" and webhook_id not in wanted:
                await self._store.delete_webhook(webhook_id)
                log.info("webhook %s: removed from the configuration, deleted", row.record.name)

    async def start(self) -> None:
        await self._sync()
        self._task = asyncio.get_running_loop().create_task(self._supervise())

    def refresh(self) -> None:
        """Re-read the webhook table now (after a change made through the API)."""
        self._wake.set()

    async def _supervise(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), SYNC_INTERVAL)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                await self._sync()
            except Exception:  # a store outage: keep the running workers, try again later
                log.exception("webhooks: cannot read the webhook table")

    async def _sync(self) -> None:
        ids = {row.record.id for row in await self._store.webhooks()}
        for webhook_id in ids - self._workers.keys():
            worker = WebhookWorker(webhook_id, self._store, self._metrics, self._owner, networks=self._networks,
                                   tokens=self._tokens)
            self._workers[webhook_id] = (worker, asyncio.get_running_loop().create_task(worker.run()))
        for webhook_id in self._workers.keys() - ids:
            worker, task = self._workers.pop(webhook_id)
            worker.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self, grace: float = 1.0) -> None:
        """Stop every worker (an attempt still running after `grace` is abandoned and resent later), release leases."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await self._task
        workers, self._workers = self._workers, {}
        for worker, _ in workers.values():
            worker.stop()
        tasks = [task for _, task in workers.values()]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for webhook_id in workers:
            with contextlib.suppress(Exception):
                await self._store.release_webhook(webhook_id, self._owner)
