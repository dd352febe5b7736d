"""Policy contexts: Momentum's connection and message variables, and the message whose header block scripts edit."""

from __future__ import annotations

import base64
import re

from engaged.headers import HeaderBlock, decode_words, unfold

CONNECTION = 2
"""msys.core.VCTX_CONN == msys.core.ECMESS_CTX_CONN (the pairs are interchangeable, as in Momentum's samples)."""
MESSAGE = 1
"""msys.core.VCTX_MESS == msys.core.ECMESS_CTX_MESS."""

_NAME = re.compile(rb"[!-9;-~]+\Z")
HEADER_MODES = ("replace", "append", "prepend")
MAX_HEADER_BYTES = 65_536
_WORD_BYTES = 30
"""UTF-8 bytes per encoded-word: 52 characters with =?utf-8?b?…?=, so lines stay within RFC 2047's 76."""


def connection_variables(*, peer_ip: str, listener: str, tls: bool, can_relay: bool) -> dict[str, str]:
    """The connection context at connect time.

    Momentum's names: connection_message_count, connection_rcpt_count, can_relay ("true" when the client may
    relay, absent otherwise). engaged's own: remote_ip, listener (the listener's configured address),
    tls ("true"/"false"). auth_* come from PolicySession.set_auth, ehlo_* from validate_ehlo.
    """
    variables = {
        "remote_ip": peer_ip,
        "listener": listener,
        "tls": "true" if tls else "false",
        "connection_message_count": "0",
        "connection_rcpt_count": "0",
    }
    if can_relay:
        variables["can_relay"] = "true"
    return variables


def split_address(address: str) -> tuple[str, str]:
    """(localpart, domain) of an envelope address; the null sender gives ("", "")."""
    bare = address.strip().removeprefix("<").removesuffix(">")
    localpart, at, domain = bare.rpartition("@")
    return (localpart, domain) if at else (bare, "")


def sender_variables(address: str) -> dict[str, str]:
    """mailfrom_string (the address as given), mailfrom_localpart, mailfrom_domain; message_rcpt_count "0"."""
    localpart, domain = split_address(address)
    return {
        "mailfrom_string": address,
        "mailfrom_localpart": localpart,
        "mailfrom_domain": domain,
        "message_rcpt_count": "0",
    }


def recipient_variables(address: str) -> dict[str, str]:
    """rcptto_string (the address as given), rcptto_localpart, rcptto_domain."""
    localpart, domain = split_address(address)
    return {"rcptto_string": address, "rcptto_localpart": localpart, "rcptto_domain": domain}


class HeaderEditError(ValueError):
    """A header name or value a script may not write (the text goes into the Lua error)."""


class PolicyMessage:
    """The DATA content of one message as policy sees it; `content` is replaced when a script edits headers.

    Edits touch only the header block (up to the first empty line), and every header they do not touch
    keeps its exact bytes. Not shared between recipients: give each recipient's
    validate_data_spool_each_rcpt call its own `copy()` when scripts edit headers per recipient.
    """

    __slots__ = ("_block", "content", "mail_from", "rcpt_tos")

    def __init__(self, content: bytes, mail_from: str, rcpt_tos: list[str]) -> None:
        self.content = content
        self.mail_from = mail_from
        self.rcpt_tos = rcpt_tos
        self._block: HeaderBlock | None = None

    def copy(self) -> PolicyMessage:
        """An independent message with the same content and envelope."""
        twin = PolicyMessage(self.content, self.mail_from, list(self.rcpt_tos))
        twin._block = self._block
        return twin

    @property
    def block(self) -> HeaderBlock:
        """The header block of the current content (indexed again only after an edit)."""
        block = self._block
        if block is None or block.content is not self.content:
            block = self._block = HeaderBlock(self.content)
        return block

    def header(self, name: bytes) -> list[bytes]:
        """Every value of header `name` in order: unfolded, trimmed, RFC 2047 encoded-words decoded to UTF-8."""
        return [_decode(value) for value in self.block.values(name)]

    def edit_header(self, name: bytes, value: bytes, mode: str = "replace") -> None:
        """Replace (all occurrences by one, at the first one's place), append, prepend; b"" deletes them all."""
        if not _NAME.match(name):
            raise HeaderEditError("header name must be printable ASCII without ':'")
        if mode not in HEADER_MODES:
            raise HeaderEditError(f"unknown mode '{mode}' (replace, append or prepend)")
        if any(char in value for char in (b"\r", b"\n", b"\0")):
            raise HeaderEditError("header value must not contain CR, LF or NUL")
        if len(value) > MAX_HEADER_BYTES:
            raise HeaderEditError(f"header value is limited to {MAX_HEADER_BYTES} bytes")
        block = self.block
        content = self.content
        key = name.lower()
        matches = [(field.start, field.end) for field in block.fields if field.name == key]
        if value == b"":
            self._splice([(start, end, b"") for start, end in matches])
            return
        newline = content.find(b"\n")
        eol = b"\n" if newline >= 0 and content[newline - 1 : newline] != b"\r" else b"\r\n"
        line = _render(name, value, eol)
        if mode == "prepend":
            self._splice([(0, 0, line)])
        elif mode == "append" or not matches:
            at = block.end
            if at == len(content) and content and not content.endswith(b"\n"):
                line = eol + line
            self._splice([(at, at, line)])
        else:
            first_start, first_end = matches[0]
            self._splice([(first_start, first_end, line)] + [(start, end, b"") for start, end in matches[1:]])

    def _splice(self, edits: list[tuple[int, int, bytes]]) -> None:
        if not edits:
            return
        content = self.content
        parts: list[bytes] = []
        position = 0
        for start, end, replacement in sorted(edits, key=lambda edit: edit[0]):
            parts.append(content[position:start])
            parts.append(replacement)
            position = end
        parts.append(content[position:])
        self.content = b"".join(parts)


def _decode(raw: bytes) -> bytes:
    value = unfold(raw).strip(b" \t\r\n")
    if b"=?" not in value:
        return value
    text = decode_words(value.decode("utf-8", "surrogateescape"))
    return value if text is None else text.strip(" \t").encode("utf-8", "surrogateescape")


def _render(name: bytes, value: bytes, eol: bytes) -> bytes:
    """`Name: value` + eol; a non-ASCII value becomes base64 UTF-8 encoded-words, folded between words."""
    if value.isascii():
        return name + b": " + value + eol
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise HeaderEditError("header value is not valid UTF-8") from None
    words: list[bytes] = []
    chunk = b""
    for char in text:
        encoded = char.encode("utf-8")
        if len(chunk) + len(encoded) > _WORD_BYTES:
            words.append(chunk)
            chunk = b""
        chunk += encoded
    words.append(chunk)
    return name + b": " + (eol + b" ").join(b"=?utf-8?b?" + base64.b64encode(word) + b"?=" for word in words) + eol
