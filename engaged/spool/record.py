"""SpoolRecord: the versioned, on-disk description of an accepted message and its recipients' plans."""

from __future__ import annotations

from typing import Any

import msgspec

SPOOL_VERSION = 1


class TrackingPlan(msgspec.Struct, frozen=True, kw_only=True):
    """Everything resolved for one recipient's copy: tracking switches, link settings, engagement data."""

    open_tracking: bool = False
    click_tracking: bool = False
    initial_open: bool = True
    open_scheme: str = "http"
    click_scheme: str = "http"
    tracking_domain: str = "localhost:8080"
    link_expiry: int = 31536000
    campaign_id: str = ""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    tags: list[str] = msgspec.field(default_factory=list)
    customer_id: str = ""
    transactional: bool = False
    sandbox: bool = False
    ip_pool: str = ""
    include_metadata_in_clicks: bool = True
    max_metadata_len: int = 1000


class SpoolRecipient(msgspec.Struct, frozen=True, kw_only=True):
    """One envelope recipient: the address as given, its plan, and its injection event id."""

    rcpt_to: str
    plan: TrackingPlan
    injection_event_id: str
    headers: bytes | None = None  # this recipient's own header block, when policy edited it per recipient
    dsn_notify: str = ""  # RFC 3461 NOTIFY as the client gave it ("SUCCESS,FAILURE", "NEVER"); "" = not given
    dsn_orcpt: str = ""  # RFC 3461 ORCPT (addr-type;xtext-address), "" = not given


class SpoolRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The envelope and resolved settings stored ahead of the message bytes in a spool file."""

    version: int = SPOOL_VERSION
    message_id: str
    transmission_id: str
    received_at: float
    mail_from: str
    recipients: list[SpoolRecipient]
    listener: str = ""
    peer: str = ""
    helo: str = ""
    auth_user: str = ""
    smtputf8: bool = False
    friendly_from: str = ""
    subject: str = ""
    body_length: int = 0
    body_crc32: int = 0
    warnings: list[str] = msgspec.field(default_factory=list)
    dsn_ret: str = ""  # RFC 3461 RET ("FULL" or "HDRS"), "" = not given
    dsn_envid: str = ""  # RFC 3461 ENVID (xtext as sent), "" = not given


class RecipientDone(msgspec.Struct, frozen=True, kw_only=True, tag="done"):
    """A recipient is finished (delivered or bounced); `event` is its final event as JSON."""

    rcpt: int
    event: bytes


class RecipientAttempt(msgspec.Struct, frozen=True, kw_only=True, tag="attempt"):
    """A failed delivery attempt; the recipient is retried at `next_attempt` (epoch seconds)."""

    rcpt: int
    attempts: int
    next_attempt: float
    event: bytes


StateLine = RecipientDone | RecipientAttempt
