"""The aiosmtpd handler: EHLO/MAIL/RCPT/DATA hooks; relay control and limits; DATA goes to inject.py."""

from __future__ import annotations

import ipaddress
import logging
import re
from typing import Any

from aiosmtpd.smtp import Envelope, Session

from engaged.config import SmtpUser
from engaged.inject import Accepted, Injector, Transaction
from engaged.policy.engine import PolicyFailure, PolicySession, Reject, Verdict
from engaged.smtp import replies

log = logging.getLogger("engaged.smtp")

# A practical RFC 5321 path check: local@domain, no spaces, no CR/LF/NUL, sane lengths.
_ATOM = r"[^\s<>()\[\],;:\\\"@\x00-\x1f\x7f]+"
_ADDRESS = re.compile(rf"{_ATOM}(\.{_ATOM})*@[^\s@<>\x00-\x1f\x7f]+")
_QUOTED_LOCAL = re.compile(r"\"(?:[^\"\\\r\n]|\\[^\r\n])*\"@[^\s@<>\x00-\x1f\x7f]+")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_valid_address(address: str) -> bool:
    """True for a mailbox RFC 5321 allows and that we can carry: bounded lengths, no control characters."""
    if len(address) > 256:
        return False
    local, _, domain = address.rpartition("@")
    if not local or not domain or len(local) > 64 or len(domain) > 255:
        return False
    return bool(_ADDRESS.fullmatch(address) or _QUOTED_LOCAL.fullmatch(address))


def peer_ip(session: Session) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's address, or None when the socket gave none."""
    peer: object = session.peer
    host = peer[0] if isinstance(peer, tuple) and peer else peer
    try:
        return ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return None


class PolicedSession(Session):
    """aiosmtpd's Session plus the connection's policy session (None when no scripts are loaded)."""

    policy: PolicySession | None = None
    refusal: str | None = None


def policy_of(session: Session) -> PolicySession | None:
    """The policy session of an SMTP session, if any."""
    return session.policy if isinstance(session, PolicedSession) else None


def policy_reply(verdict: Verdict | PolicyFailure) -> str | None:
    """The SMTP reply for a policy verdict: None to go on, a refusal otherwise."""
    if isinstance(verdict, PolicyFailure):
        log.error("policy failed: %s", verdict)
        return replies.R451_POLICY_FAILURE
    return verdict.reply if isinstance(verdict, Reject) else None


def run_policy(session: Session, call: str, *args: str) -> str | None:
    """Run one session-level policy phase (validate_ehlo, validate_mailfrom, …) and map its verdict."""
    policy = policy_of(session)
    if policy is None:
        return None
    try:
        verdict: Verdict = getattr(policy, call)(*args)
    except PolicyFailure as failure:
        return policy_reply(failure)
    return policy_reply(verdict)


class InjectionHandler:
    """Hooks for one listener; `listener` is its configured address (the key of smtp.overrides)."""

    def __init__(
        self,
        injector: Injector,
        *,
        listener: str,
        relay_networks: list[Network],
        max_recipients: int,
    ) -> None:
        self._injector = injector
        self.listener = listener
        self._relay_networks = relay_networks
        self._max_recipients = max_recipients

    def may_relay(self, session: Session) -> bool:
        """Authenticated clients and clients inside relay_networks may inject; nobody else."""
        if session.authenticated:
            return True
        ip = peer_ip(session)
        return ip is not None and any(ip in network for network in self._relay_networks)

    async def handle_EHLO(
        self, server: Any, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        refusal = run_policy(session, "validate_ehlo", hostname)
        if refusal is not None:
            return [refusal]
        session.host_name = hostname
        extra = ["250-PIPELINING", "250-ENHANCEDSTATUSCODES"]
        return [*responses[:-1], *extra, responses[-1]]

    async def handle_MAIL(
        self, server: Any, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if not self.may_relay(session):
            return replies.R530_AUTH_REQUIRED
        if address and not is_valid_address(address):
            return replies.R501_BAD_SENDER
        refusal = run_policy(session, "validate_mailfrom", address)
        if refusal is not None:
            await self._injector.record_rejection(address, [], refusal, peer=str(peer_ip(session) or ""))
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return replies.R250_SENDER_OK

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if not self.may_relay(session):
            return replies.R554_RELAY_DENIED
        if not is_valid_address(address):
            return replies.R501_BAD_ADDRESS
        if len(envelope.rcpt_tos) >= self._max_recipients:
            return replies.R452_TOO_MANY_RECIPIENTS
        refusal = run_policy(session, "validate_rcptto", address)
        if refusal is not None:
            await self._injector.record_rejection(envelope.mail_from or "", [address], refusal,
                                                  peer=str(peer_ip(session) or ""))
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.R250_RECIPIENT_OK

    async def handle_RSET(self, server: Any, session: Session, envelope: Envelope) -> str:
        policy = policy_of(session)
        if policy is not None:
            policy.reset()
        return replies.R250_RESET

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        user = session.auth_data if isinstance(session.auth_data, SmtpUser) else None
        txn = Transaction(
            listener=self.listener,
            peer=str(peer_ip(session) or ""),
            helo=session.host_name or "",
            auth_user=user.name if user else "",
            customer_id=user.customer_id if user else "",
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            smtputf8=bool(envelope.smtp_utf8),
            content=content,
            policy=policy_of(session),
        )
        try:
            outcome = await self._injector.inject(txn)
        except Exception:
            log.exception("injection failed for a message from %s", txn.peer)
            return replies.R451_INTERNAL
        finally:
            if txn.policy is not None:
                txn.policy.reset()
        if isinstance(outcome, Accepted):
            log.info("accepted %s from %s for %d recipient(s)", outcome.record.message_id, txn.peer,
                     len(txn.rcpt_tos))
        return outcome.reply

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session error: %s: %s", type(error).__name__, error)
        return replies.R451_INTERNAL
