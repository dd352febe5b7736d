"""Injection pipeline: named steps from DATA to a durable spool entry; returns Accepted or Rejected."""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

import msgspec

from engaged.config import Config, effective_smtpapi
from engaged.errors import SpoolError
from engaged.events.ids import EventIdGenerator
from engaged.smtp import replies
from engaged.smtpapi.header import HeaderError, XMsysApi, decode_xmsysapi, header_values
from engaged.smtpapi.resolve import PlanError, resolve_plan
from engaged.spool.record import SpoolRecipient, SpoolRecord
from engaged.spool.store import FileSpool

log = logging.getLogger("engaged.inject")

_header_parser = BytesHeaderParser(policy=compat32)


class Transaction(msgspec.Struct, frozen=True, kw_only=True):
    """One SMTP transaction as the listener saw it, ready to be injected."""

    listener: str
    peer: str
    helo: str
    auth_user: str
    customer_id: str
    mail_from: str
    rcpt_tos: list[str]
    smtputf8: bool
    content: bytes
    context: Mapping[str, str] = msgspec.field(default_factory=dict)
    rcpt_contexts: list[Mapping[str, str]] = msgspec.field(default_factory=list)


class Accepted(msgspec.Struct, frozen=True):
    """The message is on disk; `reply` is the 250 to send."""

    record: SpoolRecord
    reply: str


class Rejected(msgspec.Struct, frozen=True):
    """Nothing was queued; `reply` says why."""

    reply: str


def new_message_id(now: float, rng: random.Random) -> str:
    """20 hex digits, as Momentum's: 48 bits of milliseconds and 32 random bits."""
    return f"{int(now * 1000) & 0xFFFFFFFFFFFF:012x}{rng.getrandbits(32):08x}"


class Injector:
    """Turns a finished SMTP transaction into a spooled message (or a refusal).

    `on_accepted` runs after the spool commit: it emits the injection events and hands the
    message to delivery. Nothing here answers before the spool has made the message durable.
    """

    def __init__(
        self,
        config: Config,
        spool: FileSpool,
        on_accepted: Callable[[SpoolRecord], Awaitable[None]],
        ids: EventIdGenerator | None = None,
    ) -> None:
        self._config = config
        self._spool = spool
        self._on_accepted = on_accepted
        self._ids = ids or EventIdGenerator()
        # Seeded once from the OS: a getrandom() call per message costs more than the rest of the id.
        self._random = random.Random(secrets.token_bytes(32))

    async def inject(self, txn: Transaction) -> Accepted | Rejected:
        if not txn.content.strip():
            return Rejected(replies.R554_EMPTY_MESSAGE)
        headers = parse_headers(txn.content)
        header = read_xmsysapi(txn.content)
        if isinstance(header, HeaderError):
            return Rejected(replies.r550_smtpapi(header.reason))
        now = time.time()
        record = self._build_record(txn, headers, header, now)
        if isinstance(record, PlanError):
            return Rejected(replies.r550_smtpapi(record.reason))
        try:
            record = await self._spool.store(record, txn.content)
        except SpoolError as error:
            log.error("message from %s not accepted: %s", txn.peer, error)
            return Rejected(replies.R451_SPOOL_UNAVAILABLE)
        await self._on_accepted(record)
        return Accepted(record, replies.r250_queued(record.message_id))

    def _build_record(
        self, txn: Transaction, headers: Message, header: XMsysApi | None, now: float
    ) -> SpoolRecord | PlanError:
        settings = effective_smtpapi(self._config, txn.listener)
        recipients: list[SpoolRecipient] = []
        for index, rcpt in enumerate(txn.rcpt_tos):
            context = dict(txn.context)
            if index < len(txn.rcpt_contexts):
                context.update(txn.rcpt_contexts[index])
            plan = resolve_plan(settings, self._config.engagement_tracker, header, context, txn.customer_id)
            if isinstance(plan, PlanError):
                return plan
            recipients.append(SpoolRecipient(rcpt_to=rcpt, plan=plan, injection_event_id=self._ids.next_id(now)))
        return SpoolRecord(
            message_id=new_message_id(now, self._random),
            transmission_id=self._ids.next_id(now),
            received_at=now,
            mail_from=txn.mail_from,
            recipients=recipients,
            listener=txn.listener,
            peer=txn.peer,
            helo=txn.helo,
            auth_user=txn.auth_user,
            smtputf8=txn.smtputf8,
            friendly_from=decoded_header(headers, "From"),
            subject=decoded_header(headers, "Subject"),
        )


def parse_headers(content: bytes) -> Message:
    """The header block of a message (compat32, so nothing is reinterpreted)."""
    end = content.find(b"\r\n\r\n")
    block = content if end < 0 else content[: end + 4]
    return _header_parser.parsebytes(block)


def read_xmsysapi(content: bytes) -> XMsysApi | HeaderError | None:
    """The validated X-MSYS-API header, None when absent, HeaderError when broken or repeated."""
    values = header_values(content)
    if not values:
        return None
    if len(values) > 1:
        return HeaderError("X-MSYS-API header must appear at most once")
    try:
        raw = values[0].decode("utf-8")
    except UnicodeDecodeError:
        return HeaderError("X-MSYS-API header is not valid UTF-8; use \\u escapes or RFC 2047")
    return decode_xmsysapi(raw)


def decoded_header(headers: Message, name: str) -> str:
    """A header decoded from RFC 2047 to text (SparkPost's subject / friendly_from); "" if absent."""
    value = headers.get(name)
    if value is None:
        return ""
    text = str(value)
    with contextlib.suppress(LookupError, UnicodeDecodeError, ValueError, TypeError):
        text = str(make_header(decode_header(text)))
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return " ".join(text.split())
