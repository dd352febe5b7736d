"""X-MSYS-API's `cc`, `bcc` and `archive` lists: decoded and validated, merged with the envelope, and the
`Cc:` / `Bcc:` fields the copies carry. Pure; `header.py` decodes with it, `inject.py` adds the copies.

SparkPost's SMTP API (momentum-spec.md §5.3): every listed address gets its own copy; cc and bcc copies
have their own tracked links, an archive copy is an exact replica of the first envelope recipient's
copy (the same links). Every copy shows a `Cc:` field with the cc addresses; a bcc copy alone carries a
`Bcc:` field with its own address (RFC 5322 §3.6.3). One copy per address: the envelope's recipients
come first, then cc, bcc and archive, and an address already seen gets no second copy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from email.utils import formataddr
from typing import Any, Final

import msgspec

__all__ = ["LISTS", "MAX_LISTED", "ListedAddress", "added_recipients", "bcc_field", "cc_field", "read_list"]

LISTS: Final = ("cc", "bcc", "archive")
MAX_LISTED: Final = 1000
"""cc, bcc and archive together, as SparkPost limits them."""
MAX_NAME_CHARS: Final = 256
_MAX_ADDRESS_BYTES = 254  # RFC 5321 §4.5.3.1.3: a 256-octet path less its angle brackets
_MAX_LOCAL_BYTES = 64
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+"
_LOCAL = re.compile(rf'(?:{_ATOM}(?:\.{_ATOM})*|"(?:[^"\\\x00-\x1f\x7f]|\\[\x20-\x7e])*")')
_LABEL = r"[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\-\u0080-\U0010ffff]*[A-Za-z0-9\u0080-\U0010ffff])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[A-Za-z0-9:.\-]+\])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ListedAddress(msgspec.Struct, frozen=True):
    """One entry of a cc, bcc or archive list: the address as given and its display name ("" for none)."""

    email: str
    name: str = ""


def read_list(field: str, value: Any) -> tuple[ListedAddress, ...] | str:
    """The entries of list `field` (strings or `{"email", "name"}` objects), or why it is refused."""
    if not isinstance(value, list):
        return f"X-MSYS-API '{field}' must be of type 'json array'"
    entries: list[ListedAddress] = []
    for index, item in enumerate(value):
        where = f"{field}[{index}]"
        if isinstance(item, str):
            entry = ListedAddress(item)
        elif isinstance(item, dict):
            unknown = sorted(set(item) - {"email", "name"})
            if unknown:
                return f"X-MSYS-API '{where}.{unknown[0]}' is not supported"
            email, name = item.get("email"), item.get("name", "")
            if not isinstance(email, str):
                return f"X-MSYS-API '{where}.email' must be of type 'string'"
            if not isinstance(name, str):
                return f"X-MSYS-API '{where}.name' must be of type 'string'"
            if len(name) > MAX_NAME_CHARS or _CONTROL.search(name):
                return f"X-MSYS-API '{where}.name' must be at most {MAX_NAME_CHARS} characters, without controls"
            entry = ListedAddress(email, name)
        else:
            return f"X-MSYS-API '{where}' must be an email address or an object with 'email'"
        if not is_address(entry.email):
            return f"X-MSYS-API '{where}' is not a valid email address"
        entries.append(entry)
    return tuple(entries)


def is_address(text: str) -> bool:
    """Whether `text` is a bare `local@domain` mailbox (RFC 5321 syntax; UTF-8 allowed, RFC 6531)."""
    local, at, domain = text.rpartition("@")
    if not at or len(text.encode("utf-8", "surrogateescape")) > _MAX_ADDRESS_BYTES:
        return False
    if len(local.encode("utf-8", "surrogateescape")) > _MAX_LOCAL_BYTES:
        return False
    return _LOCAL.fullmatch(local) is not None and _DOMAIN.fullmatch(domain) is not None


def added_recipients(envelope: Iterable[str], lists: Sequence[tuple[str, Sequence[ListedAddress]]]) -> list[
        tuple[str, ListedAddress]]:
    """(rcpt_type, entry) for every listed address that gets a copy of its own, in list order.

    `lists` is (rcpt_type, entries) in precedence order (cc, bcc, archive). An address (any case) that
    is an envelope recipient or was listed before gets no second copy.
    """
    seen = {address.lower() for address in envelope}
    added: list[tuple[str, ListedAddress]] = []
    for rcpt_type, entries in lists:
        for entry in entries:
            key = entry.email.lower()
            if key not in seen:
                seen.add(key)
                added.append((rcpt_type, entry))
    return added


def cc_field(existing: Sequence[bytes], cc: Sequence[ListedAddress]) -> bytes:
    """The `Cc:` field line (CRLF-terminated, folded after each address) every copy carries.

    The message's own Cc fields (`existing`, raw values) keep their addresses first; each cc address
    they do not already name is added after them.
    """
    kept = [b" ".join(value.split()) for value in existing if value.strip()]
    named = b",".join(kept).lower()
    items = kept + [_mailbox(entry) for entry in cc if not _names(named, entry.email)]
    return b"Cc: " + b",\r\n ".join(items) + b"\r\n"


def bcc_field(entry: ListedAddress) -> bytes:
    """The `Bcc:` field line of a bcc copy: only its own address."""
    return b"Bcc: " + _mailbox(entry) + b"\r\n"


def _mailbox(entry: ListedAddress) -> bytes:
    """`"Name" <address>` (the name RFC 2047-encoded when it is not ASCII), or the bare address."""
    if not entry.name:
        text = entry.email
    elif entry.email.isascii():
        text = formataddr((entry.name, entry.email), charset="utf-8")
    else:  # an SMTPUTF8 message: RFC 6532 lets the name stay UTF-8 too
        quoted = entry.name.replace("\\", "\\\\").replace('"', '\\"')
        text = f'"{quoted}" <{entry.email}>'
    return text.encode("utf-8", "surrogateescape")


def _names(field: bytes, address: str) -> bool:
    """Whether a Cc field's (lower-cased) text already names `address` as a whole mailbox."""
    needle = re.escape(address.lower().encode("utf-8", "surrogateescape"))
    return re.search(rb"(?:^|[\s<,:;])" + needle + rb"(?:$|[\s>,;])", field) is not None
