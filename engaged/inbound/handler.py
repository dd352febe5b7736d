"""The inbound listener's decisions: mail to our own domains only (never a relay), spooled before 250."""

from __future__ import annotations

import asyncio
import logging

from engaged.errors import NO_SPACE
from engaged.inbound.processor import InboundProcessor
from engaged.inbound.spool import InboundSpool
from engaged.smtp import replies
from engaged.smtp.handler import Reply, Session
from engaged.smtp.steps import Authenticate, Hello, MailFrom, Message, RcptTo

log = logging.getLogger("engaged.inbound")

R550_NOT_OURS = "550 5.7.1 Relay access denied: this server only receives mail for its bounce domains"
R452_TOO_MANY = "452 4.5.3 Too many recipients"
R250_RECEIVED = "250 2.0.0 OK received"


class InboundHandler:
    """Anyone may send, to the configured domains only; nobody is trusted, nobody authenticates."""

    def __init__(self, spool: InboundSpool, processor: InboundProcessor, domains: tuple[str, ...], *,
                 max_recipients: int) -> None:
        self._spool = spool
        self._processor = processor
        self._domains = domains
        self._max_recipients = max_recipients

    def is_relay_network(self, ip: str) -> bool:
        return False

    def connect(self, session: Session) -> str | None:
        return None

    def hello(self, session: Session, step: Hello) -> str | None:
        session.helo = step.hostname
        return None

    def mail(self, session: Session, step: MailFrom) -> Reply:
        return replies.R250_SENDER_OK  # bounces come from <>; any sender may report

    def rcpt(self, session: Session, step: RcptTo) -> Reply:
        domain = step.address.rpartition("@")[2].lower().rstrip(".")
        if domain not in self._domains:
            return R550_NOT_OURS
        if len(step.envelope.rcpt_tos) >= self._max_recipients:
            return R452_TOO_MANY
        return replies.R250_RECIPIENT_OK

    def reset(self, session: Session) -> None:
        return None

    async def authenticate(self, session: Session, step: Authenticate) -> str:
        return replies.R502_AUTH_NOT_OFFERED  # the listener offers no AUTH; never reached

    async def message(self, session: Session, step: Message) -> str:
        envelope = step.envelope
        try:
            item = await asyncio.to_thread(self._spool.store, peer=session.ip, helo=session.helo,
                                           mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos),
                                           content=step.content)
        except OSError as error:
            log.error("inbound message from %s not accepted: %s", session.ip, error)
            return replies.R452_SPOOL_FULL if error.errno in NO_SPACE else replies.R451_SPOOL_UNAVAILABLE
        self._processor.submit(item)
        return R250_RECEIVED
