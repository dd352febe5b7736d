"""One recipient of an accepted message: who it is (RecipientIdentity) and how its copy is tracked (TrackingPlan).

Both are built once at injection (`inject.py`, `smtpapi/resolve.py`), stored in the spool record, and read
unchanged by delivery, the event builders (`events/message.py`) and, through the token body
(`tokens.py`), by the tracker. A leaf module: it imports nothing from engaged.
"""

from __future__ import annotations

from typing import Any

import msgspec


class RecipientIdentity(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """Everything an event says about the recipient and its message, for message and engagement events alike.

    Encoded as an array (it is the body of every tracked link, so field names would cost bytes in each
    URL). To add a field, append it at the end with a default: spool records and tokens written before
    it still decode. Never reorder, remove or retype a field. `rcpt_to` is the address lower-cased
    (use `identify`); `injection_time` is epoch seconds; `rcpt_type` is "to", "cc", "bcc" or "archive"
    ("" when the copy did not say); `delv_method` is how the copy leaves ("esmtp", "capture"; "" unknown).
    """

    message_id: str
    transmission_id: str
    rcpt_to: str
    raw_rcpt_to: str
    injection_time: float
    campaign_id: str = ""
    customer_id: str = ""
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    ip_pool: str = ""
    sending_ip: str = ""
    rcpt_type: str = ""
    template_id: str = ""
    subject: str = ""
    friendly_from: str = ""
    msg_from: str = ""
    routing_domain: str = ""
    transactional: bool = False
    sandbox: bool = False
    delv_method: str = ""

    @property
    def recipient_domain(self) -> str:
        """The domain of the recipient address (lower case)."""
        return self.rcpt_to.rpartition("@")[2]


def identify(
    raw_rcpt_to: str,
    *,
    message_id: str,
    transmission_id: str,
    injection_time: float,
    msg_from: str = "",
    customer_id: str = "",
    subject: str = "",
    friendly_from: str = "",
    delv_method: str = "",
) -> RecipientIdentity:
    """The identity of one envelope recipient before X-MSYS-API and policy are applied (resolve.py does that).

    The only place a recipient address is lower-cased and its routing domain derived.
    """
    rcpt_to = raw_rcpt_to.lower()
    return RecipientIdentity(
        message_id=message_id,
        transmission_id=transmission_id,
        rcpt_to=rcpt_to,
        raw_rcpt_to=raw_rcpt_to,
        injection_time=injection_time,
        customer_id=customer_id,
        msg_from=msg_from,
        subject=subject,
        friendly_from=friendly_from,
        routing_domain=rcpt_to.rpartition("@")[2],
        delv_method=delv_method,
    )


class TrackingPlan(msgspec.Struct, frozen=True, kw_only=True):
    """How one recipient's copy is tracked: switches and link settings (what it says lives in RecipientIdentity)."""

    open_tracking: bool = False
    click_tracking: bool = False
    initial_open: bool = True
    open_scheme: str = "http"
    click_scheme: str = "http"
    tracking_domain: str = "localhost:8080"
    link_expiry: int = 31536000
    include_metadata_in_clicks: bool = True
    max_metadata_len: int = 1000
    inline_css: bool = False  # options.inline_css: <style> rules into style attributes before tracking
    dkim_key: str = ""  # the [[dkim]] key named by options.dkim_key or smtpapi_dkim_key; "": by From domain

    @property
    def tracks(self) -> bool:
        """Whether the copy is rewritten at all."""
        return self.open_tracking or self.click_tracking
