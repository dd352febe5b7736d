"""List-Unsubscribe (RFC 2369) with one-click (RFC 8058) for non-transactional copies, pure."""

from __future__ import annotations

from engaged.types import LinkMinter

LIST_UNSUBSCRIBE_PATH = "/lu/"
"""Where the tracker answers List-Unsubscribe (engaged.tracker.handler)."""
_PLACEHOLDER = "https://list-unsubscribe.invalid/"


def list_unsubscribe_url(links: LinkMinter) -> str:
    """`<scheme>://<tracking domain>/lu/<token>`: the token of an unsubscribe link for this recipient."""
    click = links.click_url(_PLACEHOLDER, "List-Unsubscribe", None, True)
    scheme_and_host, _, rest = click.partition("://")
    host, _, path = rest.partition("/")
    token = path.rpartition("/")[2]
    return f"{scheme_and_host}://{host}{LIST_UNSUBSCRIBE_PATH}{token}"


def has_list_unsubscribe(message: bytes) -> bool:
    """Whether the header block already carries a List-Unsubscribe field."""
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[: end + 2]
    return any(line[:17].lower() == b"list-unsubscribe:" for line in head.split(b"\r\n"))


def add_list_unsubscribe(message: bytes, url: str, mailto: str = "") -> bytes:
    """The message with List-Unsubscribe (URL, then mailto when given) and List-Unsubscribe-Post on top.

    Prepended, so every other byte stays as it was (and a DKIM signature added afterwards covers them).
    """
    targets = f"<{url}>" + (f",\r\n <mailto:{mailto}?subject=unsubscribe>" if mailto else "")
    fields = f"List-Unsubscribe: {targets}\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    return fields.encode("ascii") + message
