"""What engaged decides at each SMTP step: relay control, policy phases, limits, AUTH; DATA goes to inject.py."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable

from engaged.config import SmtpUser
from engaged.inject import Accepted, Injector, Transaction
from engaged.policy.engine import PolicyFailure, PolicySession, Reject, Verdict
from engaged.smtp import replies
from engaged.smtp.auth import UserAuthenticator
from engaged.smtp.steps import Authenticate, Hello, MailFrom, Message, RcptTo

log = logging.getLogger("engaged.smtp")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Reply = str | Awaitable[str]


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's address, or None when the socket gave none."""
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


class Session:
    """One connection as the handler sees it: the client, its policy session, who authenticated."""

    __slots__ = ("address", "helo", "ip", "policy", "tls", "trusted", "user")

    def __init__(self, ip: str, *, trusted: bool, policy: PolicySession | None = None) -> None:
        self.address = parse_ip(ip)
        self.ip = str(self.address) if self.address is not None else ""
        self.policy = policy
        self.user: SmtpUser | None = None
        self.tls = False
        self.helo = ""
        self.trusted = trusted  # inside relay_networks


def policy_reply(verdict: Verdict | PolicyFailure) -> str | None:
    """The SMTP reply for a policy verdict: None to go on, a refusal otherwise."""
    if isinstance(verdict, PolicyFailure):
        log.error("policy failed: %s", verdict)
        return replies.R451_POLICY_FAILURE
    return verdict.reply if isinstance(verdict, Reject) else None


def run_policy(session: Session, call: str, *args: str) -> str | None:
    """Run one session-level policy phase (validate_ehlo, validate_mailfrom, …) and map its verdict."""
    policy = session.policy
    if policy is None:
        return None
    try:
        verdict: Verdict = getattr(policy, call)(*args)
    except PolicyFailure as failure:
        return policy_reply(failure)
    return policy_reply(verdict)


class InjectionHandler:
    """The decisions for one listener; `listener` is its configured address (the key of smtp.overrides)."""

    def __init__(self, injector: Injector, *, listener: str, relay_networks: list[Network], max_recipients: int,
                 authenticator: UserAuthenticator) -> None:
        self._injector = injector
        self.listener = listener
        self._relay_networks = relay_networks
        self._max_recipients = max_recipients
        self._authenticator = authenticator

    def is_relay_network(self, ip: str) -> bool:
        address = parse_ip(ip)
        return address is not None and any(address in network for network in self._relay_networks)

    def may_relay(self, session: Session) -> bool:
        """Authenticated clients and clients inside relay_networks may inject; nobody else."""
        return session.user is not None or session.trusted

    def connect(self, session: Session) -> str | None:
        """validate_connect: None for the greeting, or the refusal that replaces it."""
        return run_policy(session, "validate_connect")

    def hello(self, session: Session, step: Hello) -> str | None:
        refusal = run_policy(session, "validate_ehlo", step.hostname)
        if refusal is None:
            session.helo = step.hostname
        return refusal

    def mail(self, session: Session, step: MailFrom) -> Reply:
        if not self.may_relay(session):
            return replies.R530_AUTH_REQUIRED
        address = step.envelope.mail_from
        refusal = run_policy(session, "validate_mailfrom", address)
        if refusal is not None:
            return self._refuse(refusal, address, [], session)
        return replies.R250_SENDER_OK

    def rcpt(self, session: Session, step: RcptTo) -> Reply:
        if not self.may_relay(session):
            return replies.R554_RELAY_DENIED
        if len(step.envelope.rcpt_tos) >= self._max_recipients:
            return replies.R452_TOO_MANY_RECIPIENTS
        refusal = run_policy(session, "validate_rcptto", step.address)
        if refusal is not None:
            return self._refuse(refusal, step.envelope.mail_from, [step.address], session)
        return replies.R250_RECIPIENT_OK

    def reset(self, session: Session) -> None:
        if session.policy is not None:
            session.policy.reset()

    async def _refuse(self, refusal: str, mail_from: str, rcpt_tos: list[str], session: Session) -> str:
        await self._injector.record_rejection(mail_from, rcpt_tos, refusal, peer=session.ip)
        return refusal

    async def authenticate(self, session: Session, step: Authenticate) -> str:
        user = await self._authenticator.authenticate(session.ip, step.login, step.password)
        if session.policy is not None:
            session.policy.set_auth(step.login.decode("utf-8", "replace"), "pass" if user else "fail",
                                    mechanism=step.mechanism)
        if user is None:
            return replies.R535_AUTH_FAILED
        session.user = user
        return replies.R235_AUTH_OK

    async def message(self, session: Session, step: Message) -> str:
        envelope, user = step.envelope, session.user
        txn = Transaction(
            listener=self.listener,
            peer=session.ip,
            helo=session.helo,
            auth_user=user.name if user else "",
            customer_id=user.customer_id if user else "",
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            smtputf8=envelope.smtputf8,
            content=step.content,
            policy=session.policy,
            dsn_ret=envelope.ret,
            dsn_envid=envelope.envid,
            dsn_notify=list(envelope.notify),
            dsn_orcpt=list(envelope.orcpt),
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
        return replies.injection_reply(outcome)
