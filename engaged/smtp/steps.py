"""What the SMTP protocol core hands the application: the envelope and one Struct per step to decide."""

from __future__ import annotations

import msgspec


class Envelope(msgspec.Struct, kw_only=True):
    """The transaction in progress: sender, recipients and their RFC 3461 parameters."""

    mail_from: str
    smtputf8: bool = False
    body: str = "7BIT"
    ret: str = ""
    envid: str = ""
    rcpt_tos: list[str] = msgspec.field(default_factory=list)
    notify: list[str] = msgspec.field(default_factory=list)
    orcpt: list[str] = msgspec.field(default_factory=list)
    chunks: bytearray | None = None  # BDAT content so far


class Hello(msgspec.Struct, frozen=True):
    """HELO/EHLO: answer None to accept, or a refusal."""

    hostname: str
    extended: bool


class MailFrom(msgspec.Struct, frozen=True):
    """MAIL FROM: answer with the reply; a 2xx starts the transaction."""

    envelope: Envelope


class RcptTo(msgspec.Struct, frozen=True):
    """RCPT TO: answer with the reply; a 2xx adds the recipient to `envelope`."""

    envelope: Envelope
    address: str
    notify: str
    orcpt: str


class Reset(msgspec.Struct, frozen=True):
    """RSET: the transaction was dropped (already answered; no answer expected)."""


class Authenticate(msgspec.Struct, frozen=True):
    """AUTH credentials: answer with the reply; a 235 marks the connection authenticated."""

    mechanism: str
    login: bytes
    password: bytes


class Message(msgspec.Struct, frozen=True):
    """A complete DATA or last BDAT: answer with the reply to the whole transaction."""

    envelope: Envelope
    content: bytes


class StartTls(msgspec.Struct, frozen=True):
    """220 was queued: flush it, run the handshake, then call `tls_started` (or `close`)."""


Step = Hello | MailFrom | RcptTo | Reset | Authenticate | Message | StartTls

__all__ = ["Authenticate", "Envelope", "Hello", "MailFrom", "Message", "RcptTo", "Reset", "StartTls", "Step"]
