"""Injection pipeline: named steps from DATA to a durable spool entry; returns Accepted or Rejected."""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable

import msgspec

from engaged.config import Config, SmtpapiSettings, effective_smtpapi
from engaged.errors import SpoolError, SpoolFull, StoreError
from engaged.events.ids import EventIdGenerator
from engaged.events.message import injection_events, policy_rejection_event
from engaged.events.model import Event
from engaged.headers import HeaderBlock
from engaged.policy.context import PolicyMessage
from engaged.policy.engine import PolicyFailure, PolicySession, Reject
from engaged.recipient import identify
from engaged.smtpapi.addresses import added_recipients, bcc_field, cc_field
from engaged.smtpapi.header import HeaderError, XMsysApi, read_xmsysapi
from engaged.smtpapi.peers import merge_peers, read_peer_headers
from engaged.smtpapi.resolve import PlanError, resolve_recipient
from engaged.spool.record import SpoolRecipient, SpoolRecord
from engaged.spool.store import FileSpool
from engaged.suppression.check import SUPPRESSED_CODE, SUPPRESSED_REASON, SuppressionCheck
from engaged.types import EventSink

log = logging.getLogger("engaged.inject")



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
    policy: PolicySession | None = None
    dsn_ret: str = ""  # RFC 3461 parameters as the client gave them ("" = none)
    dsn_envid: str = ""
    dsn_notify: list[str] = msgspec.field(default_factory=list)  # per recipient, parallel to rcpt_tos
    dsn_orcpt: list[str] = msgspec.field(default_factory=list)


class _Steered(msgspec.Struct, frozen=True):
    """What policy made of a message: its header block (and content), per recipient a context and own headers."""

    block: HeaderBlock
    contexts: list[dict[str, str]]
    headers: list[bytes | None]


class Refusal(enum.Enum):
    """Why injection refused a message; the SMTP side words the reply (smtp/replies.py `injection_reply`)."""

    EMPTY_MESSAGE = "empty_message"
    SMTPAPI = "smtpapi"  # detail: the X-MSYS-API or smtpapi context problem, in Momentum's wording
    SPOOL_UNAVAILABLE = "spool_unavailable"
    SPOOL_FULL = "spool_full"
    POLICY_FAILURE = "policy_failure"  # a script failed: temporary
    POLICY = "policy"  # detail: the reply the policy script chose
    SUPPRESSED = "suppressed"  # every recipient is on the suppression list
    SUPPRESSION_UNAVAILABLE = "suppression_unavailable"  # the list could not be read: temporary


class Accepted(msgspec.Struct, frozen=True):
    """The message is on disk (answer 250 with its id)."""

    record: SpoolRecord


class Rejected(msgspec.Struct, frozen=True):
    """Nothing was queued; `refusal` says why."""

    refusal: Refusal
    detail: str = ""


def new_message_id(now: float, rng: random.Random) -> str:
    """20 hex digits, as Momentum's: 48 bits of milliseconds and 32 random bits."""
    return f"{int(now * 1000) & 0xFFFFFFFFFFFF:012x}{rng.getrandbits(32):08x}"


class Injector:
    """Turns a finished SMTP transaction into a spooled message (or a refusal).

    After the spool commit `on_accepted` hands the message to delivery together with the task that
    stores its injection events, and the injector answers without waiting for that commit: the spool
    record holds everything the events say (delivery awaits the task before its first attempt, and
    stores the events itself if the task failed, or after a crash). Nothing here answers before the
    spool has made the message durable.
    """

    def __init__(
        self,
        config: Config,
        spool: FileSpool,
        on_accepted: Callable[[SpoolRecord, asyncio.Task[bool]], Awaitable[None]],
        ids: EventIdGenerator | None = None,
        events: EventSink | None = None,
        suppression: SuppressionCheck | None = None,
    ) -> None:
        self._config = config
        self._spool = spool
        self._on_accepted = on_accepted
        self._events = events
        self._suppression = suppression
        self._ids = ids or EventIdGenerator()
        # Seeded once from the OS: a getrandom() call per message costs more than the rest of the id.
        self._random = random.Random(secrets.token_bytes(32))

    async def inject(self, txn: Transaction) -> Accepted | Rejected:
        if not txn.content.strip():
            return Rejected(Refusal.EMPTY_MESSAGE)
        steered = self._apply_policy(txn)
        if isinstance(steered, Rejected):
            if steered.refusal is Refusal.POLICY:
                await self.record_rejection(txn.mail_from, txn.rcpt_tos, steered.detail, peer=txn.peer,
                                            customer_id=txn.customer_id)
            return steered
        header = read_xmsysapi(steered.block)
        if isinstance(header, HeaderError):
            return Rejected(Refusal.SMTPAPI, header.reason)
        peers = read_peer_headers(steered.block.content, effective_smtpapi(self._config, txn.listener).accept_headers)
        if isinstance(peers, HeaderError):
            return Rejected(Refusal.SMTPAPI, peers.reason)
        header = merge_peers(header, peers)
        now = time.time()
        record = self._build_record(txn, steered, header, now)
        if isinstance(record, PlanError):
            return Rejected(Refusal.SMTPAPI, record.reason)
        if self._suppression is not None and not (header is not None and header.skip_suppression):
            screened = await self._screen(record, txn.peer)
            if isinstance(screened, Rejected):
                return screened
            record = screened
        try:
            record = await self._spool.store(record, steered.block.content)
        except SpoolError as error:
            log.error("message from %s not accepted: %s", txn.peer, error)
            return Rejected(Refusal.SPOOL_FULL if isinstance(error, SpoolFull) else Refusal.SPOOL_UNAVAILABLE)
        # The injection events' commit (an fsync, and SQLite's write lock shared by every worker) stays off
        # the 250's path.
        await self._on_accepted(record, asyncio.get_running_loop().create_task(self._announce(record)))
        return Accepted(record)

    async def _announce(self, record: SpoolRecord) -> bool:
        """Store the message's injection events right after the spool commit; False when the store failed
        (the message is durable all the same, and delivery stores them before its first attempt)."""
        if self._events is None:
            return False
        try:
            await self._events.append(injection_events(record))
        except Exception as error:  # the 250 stands: the events follow from delivery
            log.warning("injection events of %s not stored yet: %s", record.message_id, error)
            return False
        return True

    async def _screen(self, record: SpoolRecord, peer: str) -> SpoolRecord | Rejected:
        """Drop suppressed recipients (a policy_rejection each); refuse the message when none is left.

        `options.transactional` (the identity's) picks which list applies; a list that cannot be read
        answers 451, so nobody suppressed is ever sent to.
        """
        if self._suppression is None:
            return record
        try:
            refused = await self._suppression.refused(
                [(recipient.identity.rcpt_to, recipient.identity.transactional) for recipient in record.recipients])
        except StoreError as error:
            log.error("suppression list unavailable, message from %s not accepted: %s", peer, error)
            return Rejected(Refusal.SUPPRESSION_UNAVAILABLE)
        if not refused:
            return record
        if self._events is not None:
            now = time.time()
            await self._events.append([policy_rejection_event(
                recipient.identity, event_id=self._ids.next_id(now), now=now, remote_addr=peer,
                error_code=SUPPRESSED_CODE, reason=SUPPRESSED_REASON,
            ) for index, recipient in enumerate(record.recipients) if index in refused])
        kept = [recipient for index, recipient in enumerate(record.recipients) if index not in refused]
        if not kept:
            return Rejected(Refusal.SUPPRESSED)
        return msgspec.structs.replace(record, recipients=kept)

    def _apply_policy(self, txn: Transaction) -> _Steered | Rejected:
        """The DATA-time policy phases: validate_data, validate_data_spool, then per recipient
        validate_data_spool_each_rcpt on its own copy, then validate_set_binding and
        core_final_validation. Any refusal refuses the whole transaction (SMTP has one reply)."""
        count = len(txn.rcpt_tos)
        session = txn.policy
        if session is None:
            return _Steered(HeaderBlock(txn.content), [{} for _ in range(count)], [None] * count)
        message = PolicyMessage(txn.content, txn.mail_from, list(txn.rcpt_tos))
        try:
            for phase in (session.validate_data, session.validate_data_spool):
                verdict = phase(message)
                if isinstance(verdict, Reject):
                    return Rejected(Refusal.POLICY, verdict.reply)
            base = message.content
            own_headers: list[bytes | None] = []
            for index in range(count):
                copy = message.copy()
                verdict = session.validate_data_spool_each_rcpt(copy, index)
                if isinstance(verdict, Reject):
                    return Rejected(Refusal.POLICY, verdict.reply)
                own_headers.append(copy.block.raw if copy.content != base else None)
            for phase in (session.validate_set_binding, session.final_validation):
                verdict = phase(message)
                if isinstance(verdict, Reject):
                    return Rejected(Refusal.POLICY, verdict.reply)
        except PolicyFailure as failure:
            log.error("policy failed, message from %s not accepted: %s", txn.peer, failure)
            return Rejected(Refusal.POLICY_FAILURE)
        connection = session.connection_context()
        contexts = [connection | session.recipient_context(index) for index in range(count)]
        return _Steered(message.block, contexts, own_headers)

    async def record_rejection(self, mail_from: str, rcpt_tos: list[str], reply: str, *, peer: str,
                               customer_id: str = "") -> None:
        """A `policy_rejection` event per recipient for a permanent (5xx) policy refusal."""
        if reply[:1] != "5" or self._events is None:
            return
        now = time.time()
        message_id = new_message_id(now, self._random)
        code, _, text = reply.partition(" ")
        events: list[Event] = [policy_rejection_event(
            identify(rcpt, message_id=message_id, transmission_id="", injection_time=now, msg_from=mail_from,
                     customer_id=customer_id),
            event_id=self._ids.next_id(now), now=now, remote_addr=peer, error_code=code, reason=text,
        ) for rcpt in rcpt_tos or [""]]
        await self._events.append(events)

    def _build_record(
        self, txn: Transaction, steered: _Steered, header: XMsysApi | None, now: float
    ) -> SpoolRecord | PlanError:
        settings = effective_smtpapi(self._config, txn.listener)
        message_id = new_message_id(now, self._random)
        transmission_id = self._ids.next_id(now)
        subject = steered.block.text(b"subject")
        friendly_from = steered.block.text(b"from")
        capture = self._config.delivery.mode == "capture"
        recipients: list[SpoolRecipient] = []
        for index, rcpt in enumerate(txn.rcpt_tos):
            base = identify(rcpt, message_id=message_id, transmission_id=transmission_id, injection_time=now,
                            msg_from=txn.mail_from, customer_id=txn.customer_id, subject=subject,
                            friendly_from=friendly_from)
            resolved = resolve_recipient(settings, self._config.engagement_tracker, header, steered.contexts[index],
                                         base)
            if isinstance(resolved, PlanError):
                return resolved
            identity, plan = resolved
            captured = capture or identity.sandbox
            identity = msgspec.structs.replace(  # sending_ip reaches the tokens, so opens and clicks carry it
                identity, delv_method="capture" if captured else "esmtp",
                sending_ip="" if captured else self._config.delivery.source_address)
            recipients.append(SpoolRecipient(identity=identity, plan=plan, injection_event_id=self._ids.next_id(now),
                                             headers=steered.headers[index],
                                             dsn_notify=_nth(txn.dsn_notify, index),
                                             dsn_orcpt=_nth(txn.dsn_orcpt, index)))
        cc = b""
        if header is not None and (header.cc or header.bcc or header.archive):
            listed = self._listed(txn, steered, header, settings, recipients[0], now)
            if isinstance(listed, PlanError):
                return listed
            recipients.extend(listed)
            cc = cc_field(steered.block.values(b"cc"), header.cc) if header.cc else b""
        return SpoolRecord(
            message_id=message_id,
            transmission_id=transmission_id,
            received_at=now,
            mail_from=txn.mail_from,
            recipients=recipients,
            listener=txn.listener,
            peer=txn.peer,
            helo=txn.helo,
            auth_user=txn.auth_user,
            smtputf8=txn.smtputf8,
            dsn_ret=txn.dsn_ret,
            dsn_envid=txn.dsn_envid,
            cc_field=cc,
            drop_bcc=header is not None and bool(header.bcc),
        )

    def _listed(self, txn: Transaction, steered: _Steered, header: XMsysApi, settings: SmtpapiSettings,
                original: SpoolRecipient, now: float) -> list[SpoolRecipient] | PlanError:
        """A recipient for each address of X-MSYS-API's cc, bcc and archive lists that has no copy yet.

        They take the first envelope recipient's policy context and header edits; an archive copy also
        its tracking plan, and `replica_of` makes its copy that recipient's, byte for byte but for the
        return path, X-MSFBL and List-Unsubscribe.
        """
        base = original.identity
        lists = (("cc", header.cc), ("bcc", header.bcc), ("archive", header.archive))
        recipients: list[SpoolRecipient] = []
        for rcpt_type, entry in added_recipients(txn.rcpt_tos, lists):
            if not txn.smtputf8 and not entry.email.isascii():
                return PlanError(f"X-MSYS-API '{rcpt_type}' address {entry.email} needs MAIL FROM with SMTPUTF8")
            listed = identify(entry.email, message_id=base.message_id, transmission_id=base.transmission_id,
                              injection_time=now, msg_from=txn.mail_from, customer_id=txn.customer_id,
                              subject=base.subject, friendly_from=base.friendly_from)
            resolved = resolve_recipient(settings, self._config.engagement_tracker, header, steered.contexts[0],
                                         listed)
            if isinstance(resolved, PlanError):
                return resolved
            identity, plan = resolved
            identity = msgspec.structs.replace(identity, rcpt_type=rcpt_type, delv_method=base.delv_method)
            archive = rcpt_type == "archive"
            recipients.append(SpoolRecipient(
                identity=identity, plan=original.plan if archive else plan, injection_event_id=self._ids.next_id(now),
                headers=steered.headers[0], replica_of=base if archive else None,
                bcc_field=bcc_field(entry) if rcpt_type == "bcc" else b""))
        return recipients


def _nth(values: list[str], index: int) -> str:
    return values[index] if index < len(values) else ""
