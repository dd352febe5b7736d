"""Delivery outcomes as values (Delivered | Deferred | Bounced) and the Transport seam that returns them."""

from __future__ import annotations

from typing import Protocol

import msgspec


class OutboundMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One recipient's final copy, ready for the wire."""

    message_id: str
    rcpt_index: int
    mail_from: str
    rcpt_to: str
    data: bytes
    smtputf8: bool = False
    received_at: float = 0.0
    dsn_notify: str = ""  # RFC 3461, passed on when the next hop offers DSN ("" = not given)
    dsn_orcpt: str = ""
    dsn_ret: str = ""
    dsn_envid: str = ""


class Delivered(msgspec.Struct, frozen=True, kw_only=True):
    """The next hop took responsibility for the copy."""

    ip_address: str = ""
    sending_ip: str = ""  # our end of the connection
    outbound_tls: str = "0"
    delv_method: str = "esmtp"
    response: str = ""


class Deferred(msgspec.Struct, frozen=True, kw_only=True):
    """A temporary failure: try again later."""

    error_code: str
    reason: str
    ip_address: str = ""
    sending_ip: str = ""


class Bounced(msgspec.Struct, frozen=True, kw_only=True):
    """A permanent failure: stop trying."""

    error_code: str
    reason: str
    ip_address: str = ""
    sending_ip: str = ""


Outcome = Delivered | Deferred | Bounced


class Transport(Protocol):
    """Carries one recipient's copy to its next hop and says what happened."""

    async def deliver(self, message: OutboundMessage) -> Outcome: ...

    async def close(self) -> None: ...
