"""What each copy carries so replies come back: List-Unsubscribe (RFC 2369, one-click RFC 8058), the VERP
return path and X-MSFBL (engaged.verp signs both), pure."""

from __future__ import annotations

from engaged import verp
from engaged.recipient import RecipientIdentity, TrackingPlan
from engaged.tokens import RecipientLinks, SigningKeys
from engaged.types import LinkMinter

LIST_UNSUBSCRIBE_PATH = "/lu/"
"""Where the tracker answers List-Unsubscribe (engaged.tracker.handler)."""
_PLACEHOLDER = "https://u.invalid/"  # never followed: /lu/ answers itself; short, so the header stays short


def list_unsubscribe_url(links: LinkMinter) -> str:
    """`<scheme>://<tracking domain>/lu/<token>`: the token of an unsubscribe link for this recipient."""
    click = links.click_url(_PLACEHOLDER, _PLACEHOLDER, None, True)
    scheme_and_host, _, rest = click.partition("://")
    host, _, path = rest.partition("/")
    token = path.rpartition("/")[2]
    return f"{scheme_and_host}://{host}{LIST_UNSUBSCRIBE_PATH}{token}"


def has_header(message: bytes, name: bytes) -> bool:
    """Whether the header block already carries a field `name` (ASCII, any case)."""
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[: end + 2]
    prefix = name.lower() + b":"
    return any(line[: len(prefix)].lower() == prefix for line in head.split(b"\r\n"))


def add_list_unsubscribe(message: bytes, url: str, mailto: str = "") -> bytes:
    """The message with List-Unsubscribe (URL, then mailto when given) and List-Unsubscribe-Post on top.

    Prepended, so every other byte stays as it was (and a DKIM signature added afterwards covers them).
    """
    targets = f"<{url}>" + (f",\r\n <mailto:{mailto}?subject=unsubscribe>" if mailto else "")
    fields = f"List-Unsubscribe: {targets}\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    return fields.encode("ascii") + message


class ReturnHeaders:
    """Adds, per copy, what `[unsubscribe]` and `[inbound] bounce_domain` ask for; returns the envelope sender."""

    def __init__(self, keyring: SigningKeys, *, list_unsubscribe: bool, bounce_domain: str) -> None:
        self._keyring = keyring
        self._list_unsubscribe = list_unsubscribe
        self._bounce_domain = bounce_domain

    @property
    def active(self) -> bool:
        return self._list_unsubscribe or bool(self._bounce_domain)

    def __call__(self, data: bytes, identity: RecipientIdentity, plan: TrackingPlan, mail_from: str) -> tuple[
            bytes, str]:
        """(the copy with its headers, the MAIL FROM to send it with)."""
        domain = self._bounce_domain
        if self._list_unsubscribe and not identity.transactional and not has_header(data, b"list-unsubscribe"):
            url = list_unsubscribe_url(RecipientLinks(self._keyring, identity, plan))
            mailto = verp.address(self._keyring, "u", identity.message_id, identity.rcpt_to, domain) if domain else ""
            data = add_list_unsubscribe(data, url, mailto)
        if domain:
            value = verp.msfbl(self._keyring, identity.message_id, identity.rcpt_to)
            data = f"X-MSFBL: {value}\r\n".encode("ascii") + data
            if mail_from:  # a null sender stays null: nothing may answer a bounce
                mail_from = verp.address(self._keyring, "b", identity.message_id, identity.rcpt_to, domain)
        return data, mail_from
