"""Webhook batch wire format: SparkPost-shaped body, stable batch ids, HMAC signatures and request headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Mapping, Sequence

from engaged import __version__
from engaged.events.model import Event, envelope_of, event_type
from engaged.events.wire import webhook_json
from engaged.types import WebhookRecord
from engaged.webhook_rules import RESTRICTED_HEADERS

USER_AGENT = f"engaged-webhooks/{__version__}"
SIGNATURE_HEADER = "X-Engaged-Signature"
BATCH_HEADER = "X-MessageSystems-Batch-ID"
TOKEN_HEADER = "X-MessageSystems-Webhook-Token"
_SECRET_PREFIX = "whsec_"


def batch_body(events: Sequence[Event]) -> bytes:
    """`[{"msys": {"<envelope>": {event}}}, …]`, each event as SparkPost sends it (integer Unix-second timestamp)."""
    items = [b'{"msys":{"' + envelope_of(event_type(event)).encode() + b'":' + webhook_json(event) + b"}}"
             for event in events]
    return b"[" + b",".join(items) + b"]"


def batch_id(webhook_id: str, after_seq: int, last_seq: int) -> str:
    """The id of the batch covering (after_seq, last_seq] for a webhook: the same on every retry and restart."""
    digest = hashlib.sha256(f"{webhook_id}:{after_seq}:{last_seq}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16]))


def new_secret() -> str:
    """A fresh signing secret: `whsec_` and 32 random bytes in base64 (the Standard Webhooks form)."""
    return _SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Engaged-Signature value: `t=<ts>,v1=<hex HMAC-SHA256(secret as UTF-8, "<ts>." + body)>`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def sign_standard(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks `webhook-signature` value (key: the base64 part of the secret, decoded)."""
    key = base64.b64decode(secret.removeprefix(_SECRET_PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, header: str, body: bytes, now: float, tolerance: float = 300.0) -> bool:
    """Check an X-Engaged-Signature header as a receiver should: fresh timestamp, constant-time compare."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, candidate) for candidate in fields.get("v1", []))


def _authorization(record: WebhookRecord) -> str | None:
    credentials: Mapping[str, str] = record.auth_credentials
    if record.auth_type == "basic":
        pair = f"{credentials.get('username', '')}:{credentials.get('password', '')}"
        return "Basic " + base64.b64encode(pair.encode()).decode()
    if record.auth_type == "bearer":
        return "Bearer " + credentials.get("access_token", "")
    return None


def request_headers(record: WebhookRecord, secret: str, batch: str, body: bytes, timestamp: int, *,
                    access_token: str | None = None) -> dict[str, str]:
    """Every header of one delivery attempt (the signature is made fresh per attempt).

    `access_token` is the OAuth 2.0 token of an `oauth2` webhook; the webhook's `custom_headers` come
    first, so none of ours can be replaced by them.
    """
    headers = {name: value for name, value in record.custom_headers.items()
               if name.lower() not in RESTRICTED_HEADERS}
    headers.update({
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        BATCH_HEADER: batch,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        "webhook-id": batch,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_standard(secret, batch, timestamp, body),
    })
    if record.auth_token:
        headers[TOKEN_HEADER] = record.auth_token
    authorization = "Bearer " + access_token if access_token is not None else _authorization(record)
    if authorization is not None:
        headers["Authorization"] = authorization
    return headers
