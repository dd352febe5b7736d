"""SpoolRecord: the versioned, on-disk description of an accepted message and its recipients."""

from __future__ import annotations

from typing import Any

import msgspec

from engaged.recipient import RecipientIdentity, TrackingPlan

SPOOL_VERSION = 2


class SpoolRecipient(msgspec.Struct, frozen=True, kw_only=True):
    """One envelope recipient: who it is, how its copy is tracked, and its injection event id."""

    identity: RecipientIdentity
    plan: TrackingPlan
    injection_event_id: str
    headers: bytes | None = None  # this recipient's own header block, when policy edited it per recipient
    dsn_notify: str = ""  # RFC 3461 NOTIFY as the client gave it ("SUCCESS,FAILURE", "NEVER"); "" = not given
    dsn_orcpt: str = ""  # RFC 3461 ORCPT (addr-type;xtext-address), "" = not given
    replica_of: RecipientIdentity | None = None  # an archive copy: the recipient whose copy (links and all) it is
    bcc_field: bytes = b""  # a bcc copy: its own `Bcc:` field line, in place of the message's Bcc fields

    @property
    def rcpt_to(self) -> str:
        """The address as the client gave it (the envelope's RCPT TO)."""
        return self.identity.raw_rcpt_to


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
    body_length: int = 0
    body_crc32: int = 0
    dsn_ret: str = ""  # RFC 3461 RET ("FULL" or "HDRS"), "" = not given
    dsn_envid: str = ""  # RFC 3461 ENVID (xtext as sent), "" = not given
    cc_field: bytes = b""  # X-MSYS-API cc: the `Cc:` field line every copy carries in place of the message's
    drop_bcc: bool = False  # X-MSYS-API bcc: no copy keeps the message's own Bcc fields


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


class _Version(msgspec.Struct):
    version: int = 1


class _PlanV1(msgspec.Struct, frozen=True, kw_only=True):
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


class _RecipientV1(msgspec.Struct, frozen=True, kw_only=True):
    rcpt_to: str
    plan: _PlanV1
    injection_event_id: str
    headers: bytes | None = None
    dsn_notify: str = ""
    dsn_orcpt: str = ""


class _RecordV1(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    message_id: str
    transmission_id: str
    received_at: float
    mail_from: str
    recipients: list[_RecipientV1]
    listener: str = ""
    peer: str = ""
    helo: str = ""
    auth_user: str = ""
    smtputf8: bool = False
    friendly_from: str = ""
    subject: str = ""
    body_length: int = 0
    body_crc32: int = 0
    dsn_ret: str = ""
    dsn_envid: str = ""


_version_decoder = msgspec.json.Decoder(_Version)
_record_decoder = msgspec.json.Decoder(SpoolRecord)
_v1_decoder = msgspec.json.Decoder(_RecordV1)


def decode_record(data: bytes) -> SpoolRecord:
    """A spool record from its JSON, upgrading version 1 (written before RecipientIdentity).

    Raises msgspec.DecodeError when malformed, ValueError for an unknown version.
    """
    version = _version_decoder.decode(data).version
    if version == SPOOL_VERSION:
        return _record_decoder.decode(data)
    if version != 1:
        raise ValueError(f"unknown spool version {version}")
    old = _v1_decoder.decode(data)
    return SpoolRecord(
        message_id=old.message_id, transmission_id=old.transmission_id, received_at=old.received_at,
        mail_from=old.mail_from, recipients=[_upgrade(old, recipient) for recipient in old.recipients],
        listener=old.listener, peer=old.peer, helo=old.helo, auth_user=old.auth_user, smtputf8=old.smtputf8,
        body_length=old.body_length, body_crc32=old.body_crc32, dsn_ret=old.dsn_ret, dsn_envid=old.dsn_envid,
    )


def _upgrade(old: _RecordV1, recipient: _RecipientV1) -> SpoolRecipient:
    plan = recipient.plan
    rcpt_to = recipient.rcpt_to.lower()
    identity = RecipientIdentity(
        message_id=old.message_id, transmission_id=old.transmission_id, rcpt_to=rcpt_to,
        raw_rcpt_to=recipient.rcpt_to, injection_time=old.received_at, campaign_id=plan.campaign_id,
        customer_id=plan.customer_id, tags=tuple(plan.tags), metadata=plan.metadata, ip_pool=plan.ip_pool,
        subject=old.subject, friendly_from=old.friendly_from, msg_from=old.mail_from,
        routing_domain=rcpt_to.rpartition("@")[2], transactional=plan.transactional, sandbox=plan.sandbox,
    )
    tracking = TrackingPlan(
        open_tracking=plan.open_tracking, click_tracking=plan.click_tracking, initial_open=plan.initial_open,
        open_scheme=plan.open_scheme, click_scheme=plan.click_scheme, tracking_domain=plan.tracking_domain,
        link_expiry=plan.link_expiry, include_metadata_in_clicks=plan.include_metadata_in_clicks,
        max_metadata_len=plan.max_metadata_len,
    )
    return SpoolRecipient(identity=identity, plan=tracking, injection_event_id=recipient.injection_event_id,
                          headers=recipient.headers, dsn_notify=recipient.dsn_notify, dsn_orcpt=recipient.dsn_orcpt)
