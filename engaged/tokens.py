"""Signed tracked-URL tokens: minted per link by rewrite/, verified by tracker/ without a database.

A token is base64url (no padding) of::

    version     1 byte    TOKEN_VERSION
    key id      1 byte    the keyring id of the signing key (1..255)
    kind+flags  1 byte    low nibble: TokenKind; bit 7: the body is raw deflate; bits 4..6: zero
    body        n bytes   msgpack array (below), raw-deflated when that is shorter
    tag         16 bytes  HMAC-SHA256(key, every byte before the tag), truncated to 128 bits

The body array is [expires, message_id, transmission_id, rcpt_to, raw_rcpt_to (nil: same as rcpt_to),
campaign_id, customer_id, tags, metadata (bin: compact JSON; nil: not carried), target_url, link_name
(nil: same as target_url), sending_ip, injection_time, rcpt_type]. The tag is checked (constant time)
before the body is inflated or parsed; inflating stops at MAX_BODY_BYTES. Tokens are signed, not
encrypted: anyone holding a link can read the recipient address and metadata in it.

Metadata travels as its compact JSON text, so `max_metadata_len` bounds exactly the bytes carried.
Truncation rule (Momentum leaves it open): the longest prefix of top-level keys, in their original
order, whose compact JSON object fits in `max_metadata_len` bytes; values are never cut, and an empty
object always fits.
"""

from __future__ import annotations

import binascii
import enum
import hashlib
import hmac
import html
import re
import zlib
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from typing import Any, Final, Protocol
from urllib.parse import quote, unquote

import msgspec

from engaged.errors import EngagedError

TOKEN_VERSION: Final = 1
MAX_TOKEN_CHARS: Final = 4096
MAX_BODY_BYTES: Final = 64 * 1024
TAG_BYTES: Final = 16
DEFAULT_SUBLINK: Final = "a"
MAX_SUBLINK_CHARS: Final = 64

_HEADER_BYTES = 3
_KIND_MASK = 0x0F
_FLAG_DEFLATE = 0x80
_MAX_RAW_BYTES = MAX_TOKEN_CHARS * 3 // 4
_MIN_RAW_BYTES = _HEADER_BYTES + 1 + TAG_BYTES
_COMPRESS_FROM_BYTES = 64
_MAX_NORMALISE_CHARS = 4 * MAX_TOKEN_CHARS
_TOKEN_RUN = re.compile(r"[A-Za-z0-9_-]+")
_TO_STANDARD_BASE64 = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE_BASE64 = bytes.maketrans(b"+/", b"-_")
_BASE64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_SUBLINK = re.compile(r"[A-Za-z0-9._~-]+")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_TAB_OR_NEWLINE = str.maketrans("", "", "\t\n\r")


class TokenKind(enum.IntEnum):
    """What a token may be used for; each tracker endpoint accepts only its own kinds."""

    OPEN = 1
    INITIAL_OPEN = 2
    CLICK = 3
    UNSUBSCRIBE = 4

    @property
    def event_type(self) -> str:
        """The SparkPost event type a request with this token records."""
        return _EVENT_TYPES[self]


_EVENT_TYPES = {
    TokenKind.OPEN: "open",
    TokenKind.INITIAL_OPEN: "initial_open",
    TokenKind.CLICK: "click",
    TokenKind.UNSUBSCRIBE: "link_unsubscribe",
}
_KIND_BY_VALUE: dict[int, TokenKind] = {kind.value: kind for kind in TokenKind}

OPEN_KINDS: Final = frozenset({TokenKind.OPEN, TokenKind.INITIAL_OPEN})
CLICK_KINDS: Final = frozenset({TokenKind.CLICK, TokenKind.UNSUBSCRIBE})


class InvalidToken(EngagedError, ValueError):
    """Forged, tampered, truncated, over-long, of another kind or signed by an unknown key: answer 404."""


class UntrackableLink(EngagedError, ValueError):
    """The link cannot be tracked (not http/https, control characters, or too long); leave it as is."""


class TokenTooLong(UntrackableLink):
    """The payload does not fit in MAX_TOKEN_CHARS characters (or MAX_BODY_BYTES before deflate)."""


class SigningKeys(Protocol):
    """What tokens need from the keyring (engaged.keys.Keyring): the current id and a lookup."""

    @property
    def current_id(self) -> int: ...

    def key(self, key_id: int) -> bytes | None: ...


class TokenPayload(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a tracked URL carries; the tracker builds its event from this alone.

    `metadata` is None when the link does not carry metadata (a click sent while
    click_tracking_include_metadata was false); `target_url` and `link_name` are empty for opens.
    `expires` and `injection_time` are epoch seconds (0: unknown).
    """

    kind: TokenKind
    message_id: str
    transmission_id: str
    rcpt_to: str
    raw_rcpt_to: str
    campaign_id: str = ""
    customer_id: str = ""
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] | None = None
    target_url: str = ""
    link_name: str = ""
    expires: int
    sending_ip: str = ""
    injection_time: int = 0
    rcpt_type: str = ""

    @property
    def metadata_included(self) -> bool:
        """Whether the sender put metadata in this link (decided at send time)."""
        return self.metadata is not None


class _Body(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """The signed body: TokenPayload minus the kind (in the header), with repeats left out."""

    expires: int
    message_id: str
    transmission_id: str
    rcpt_to: str
    raw_rcpt_to: str | None  # None: same as rcpt_to
    campaign_id: str
    customer_id: str
    tags: tuple[str, ...]
    metadata: bytes | None  # compact JSON object; None: not carried
    target_url: str
    link_name: str | None  # None: same as target_url
    sending_ip: str
    injection_time: int
    rcpt_type: str


_body_encoder = msgspec.msgpack.Encoder()
_body_decoder = msgspec.msgpack.Decoder(_Body)
_json_encoder = msgspec.json.Encoder()
_metadata_decoder = msgspec.json.Decoder(dict[str, Any])


def sign_token(payload: TokenPayload, keyring: SigningKeys) -> str:
    """The token for `payload`, signed with the keyring's current key.

    Raises UntrackableLink for a click target that is not http/https or holds control characters,
    TokenTooLong when the token would exceed MAX_TOKEN_CHARS, ValueError for an open token with a
    target URL.
    """
    if payload.kind in CLICK_KINDS:
        _check_target(payload.target_url)
        if _CONTROL.search(payload.target_url):
            raise UntrackableLink("control characters or unpaired surrogates in the link")
    elif payload.target_url or payload.link_name:
        raise ValueError("open tokens carry no target URL or link name")
    metadata = None if payload.metadata is None else _json_encoder.encode(payload.metadata)
    body = _Body(
        payload.expires,
        payload.message_id,
        payload.transmission_id,
        payload.rcpt_to,
        None if payload.raw_rcpt_to == payload.rcpt_to else payload.raw_rcpt_to,
        payload.campaign_id,
        payload.customer_id,
        payload.tags,
        metadata,
        payload.target_url,
        None if payload.link_name == payload.target_url else payload.link_name,
        payload.sending_ip,
        payload.injection_time,
        payload.rcpt_type,
    )
    key_id, mac = _current_mac(keyring)
    return _seal(payload.kind, _body_encoder.encode(body), key_id, mac)


def decode_token(token: str, keyring: SigningKeys, *, expect: AbstractSet[TokenKind]) -> TokenPayload:
    """The payload of a genuine token of one of the `expect` kinds; raises InvalidToken otherwise.

    Expiry is not checked here (see is_expired): an expired link still redirects.
    """
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidToken("token too long")
    raw = _decode_base64(token)
    if len(raw) < _MIN_RAW_BYTES:
        raise InvalidToken("token too short")
    if raw[0] != TOKEN_VERSION:
        raise InvalidToken("unknown token version")
    kind_flags = raw[2]
    kind = _KIND_BY_VALUE.get(kind_flags & _KIND_MASK)
    if kind is None or kind_flags & ~(_KIND_MASK | _FLAG_DEFLATE):
        raise InvalidToken("unknown token kind or flags")
    if kind not in expect:
        raise InvalidToken(f"{kind.name.lower()} token where {_names(expect)} expected")
    key = keyring.key(raw[1])
    if key is None:
        raise InvalidToken("unknown key id")
    signed = raw[:-TAG_BYTES]
    if not hmac.compare_digest(hmac.digest(key, signed, "sha256")[:TAG_BYTES], raw[-TAG_BYTES:]):
        raise InvalidToken("bad signature")
    packed = signed[_HEADER_BYTES:]
    return _payload_of(kind, _inflate(packed) if kind_flags & _FLAG_DEFLATE else packed)


def is_expired(payload: TokenPayload, now: float) -> bool:
    """Whether the link is past its tracking window at `now` (epoch seconds): serve it, record nothing."""
    return now > payload.expires


def normalise_token(raw_path_segment: str) -> str:
    """The token in a path segment that a mail client or proxy may have re-encoded.

    Pass everything after `/q/`, `/o/` or `/f/<sublink>/` (without the query string). Up to three
    rounds of percent-encoding and HTML escaping are undone, then the first run of base64url
    characters is kept: whatever clients append (`%20`, `>`, `)`, `.`, `&amp;…`, a trailing `/`)
    lies outside that alphabet. Junk made of base64url characters cannot be told apart from the
    token; the signature check rejects it.
    """
    text = raw_path_segment[:_MAX_NORMALISE_CHARS]
    for _ in range(3):
        if "%" not in text and "&" not in text:
            break
        text = html.unescape(unquote(text))
    match = _TOKEN_RUN.search(text)
    return match.group() if match else ""


def truncate_metadata(metadata: Mapping[str, Any], max_len: int) -> dict[str, Any]:
    """The longest prefix of `metadata`'s keys whose compact JSON object is at most `max_len` bytes.

    Whole keys are dropped from the end; values are never cut, so the result is always valid JSON.
    An empty object is returned when not even the first key fits (also when `max_len` < 2).
    """
    if len(_json_encoder.encode(metadata)) <= max_len:
        return dict(metadata)
    kept: dict[str, Any] = {}
    size = 2  # the braces
    for name, value in metadata.items():
        item = len(_json_encoder.encode(name)) + 1 + len(_json_encoder.encode(value)) + (1 if kept else 0)
        if size + item > max_len:
            break
        kept[name] = value
        size += item
    return kept


def sanitise_sublink(sublink: str | None) -> str:
    """A safe path segment for the `/f/<sublink>/` slot: unreserved characters, else percent-encoded.

    Empty, dot segments (`.`, `..`, which browsers would resolve away) and segments longer than
    MAX_SUBLINK_CHARS once encoded fall back to DEFAULT_SUBLINK.
    """
    if not sublink:
        return DEFAULT_SUBLINK
    segment = sublink if _SUBLINK.fullmatch(sublink) else quote(sublink, safe="-._~")
    if segment in (".", "..") or len(segment) > MAX_SUBLINK_CHARS:
        return DEFAULT_SUBLINK
    return segment


class LinkData(msgspec.Struct, frozen=True, kw_only=True):
    """One recipient's copy: what its tracked URLs carry and where they point.

    `metadata` is the message's full metadata; it is cut to `max_metadata_len` here. Open links always
    carry it; click links only when `include_metadata_in_clicks` (click_tracking_include_metadata).
    `expires` and `injection_time` are epoch seconds.
    """

    message_id: str
    transmission_id: str
    rcpt_to: str
    raw_rcpt_to: str
    campaign_id: str = ""
    customer_id: str = ""
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] | None = None
    open_scheme: str = "http"
    click_scheme: str = "http"
    tracking_domain: str
    expires: int
    include_metadata_in_clicks: bool = True
    max_metadata_len: int = 1000
    sending_ip: str = ""
    injection_time: int = 0
    rcpt_type: str = ""


class RecipientLinks:
    """Mints the tracked URLs of one recipient's copy (engaged.types.LinkMinter).

    Signs with the keyring's current key at construction. click_url and open_url raise
    UntrackableLink when a link cannot be tracked; the caller leaves that link unchanged. A click
    or open whose token would be too long with metadata is minted without it (and says so).
    """

    def __init__(self, keyring: SigningKeys, data: LinkData) -> None:
        for scheme in (data.open_scheme, data.click_scheme):
            if scheme not in ("http", "https"):
                raise ValueError(f"tracking scheme must be http or https, not {scheme!r}")
        self._key_id, self._mac = _current_mac(keyring)
        self._data = data
        metadata = _json_encoder.encode(truncate_metadata(data.metadata or {}, data.max_metadata_len))
        self._click_metadata = metadata if data.include_metadata_in_clicks else None
        self._open_body = _body_encoder.encode(self._body(metadata, "", None))
        self._open_prefix = f"{data.open_scheme}://{data.tracking_domain}/q/"
        self._click_prefix = f"{data.click_scheme}://{data.tracking_domain}/f/"

    def click_url(self, target_url: str, link_name: str, sublink: str | None, unsubscribe: bool) -> str:
        """`<click_scheme>://<tracking_domain>/f/<sublink or a>/<token>` redirecting to `target_url`.

        Control characters in the target are treated as a browser treats them: tab, CR and LF are
        removed, the others percent-encoded; so the tracker's Location never carries one.
        """
        if _CONTROL.search(target_url):
            target_url = _clean_target(target_url)
        _check_target(target_url)
        kind = TokenKind.UNSUBSCRIBE if unsubscribe else TokenKind.CLICK
        name = None if link_name == target_url else link_name
        try:
            token = self._seal_click(kind, target_url, name, self._click_metadata)
        except TokenTooLong:
            if self._click_metadata is None:
                raise
            token = self._seal_click(kind, target_url, name, None)
        return f"{self._click_prefix}{sanitise_sublink(sublink)}/{token}"

    def open_url(self, initial: bool) -> str:
        """`<open_scheme>://<tracking_domain>/q/<token>`; `initial` marks the top pixel."""
        kind = TokenKind.INITIAL_OPEN if initial else TokenKind.OPEN
        try:
            token = _seal(kind, self._open_body, self._key_id, self._mac)
        except TokenTooLong:
            token = _seal(kind, _body_encoder.encode(self._body(None, "", None)), self._key_id, self._mac)
        return self._open_prefix + token

    def _seal_click(self, kind: TokenKind, target_url: str, name: str | None, metadata: bytes | None) -> str:
        body = _body_encoder.encode(self._body(metadata, target_url, name))
        return _seal(kind, body, self._key_id, self._mac)

    def _body(self, metadata: bytes | None, target_url: str, link_name: str | None) -> _Body:
        data = self._data
        return _Body(
            data.expires,
            data.message_id,
            data.transmission_id,
            data.rcpt_to,
            None if data.raw_rcpt_to == data.rcpt_to else data.raw_rcpt_to,
            data.campaign_id,
            data.customer_id,
            data.tags,
            metadata,
            target_url,
            link_name,
            data.sending_ip,
            data.injection_time,
            data.rcpt_type,
        )


def _current_mac(keyring: SigningKeys) -> tuple[int, hmac.HMAC]:
    """The current key id and an HMAC keyed with it, to be copied per token (saves the key setup)."""
    key_id = keyring.current_id
    key = keyring.key(key_id)
    if key is None:
        raise ValueError(f"the keyring has no key for its current id {key_id}")
    return key_id, hmac.new(key, digestmod=hashlib.sha256)


def _check_target(target_url: str) -> None:
    scheme = target_url[:8].lower()
    if not (scheme.startswith("http://") or scheme.startswith("https://")):
        raise UntrackableLink("only http and https links are tracked")
    if len(target_url) > MAX_TOKEN_CHARS:
        raise TokenTooLong("link longer than a token may be")


def _clean_target(target_url: str) -> str:
    """`target_url` as a browser would request it (WHATWG URL parsing of controls)."""
    if _SURROGATE.search(target_url):
        raise UntrackableLink("unpaired surrogate in the link")
    cleaned = target_url.translate(_TAB_OR_NEWLINE)
    return _CONTROL.sub(lambda match: quote(match.group(), safe=""), cleaned)


def _seal(kind: TokenKind, body: bytes, key_id: int, mac: hmac.HMAC) -> str:
    if len(body) > MAX_BODY_BYTES:
        raise TokenTooLong(f"token body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
    flags = 0
    if len(body) >= _COMPRESS_FROM_BYTES:
        packed = zlib.compress(body, 9, -15)
        if len(packed) < len(body):
            body, flags = packed, _FLAG_DEFLATE
    if _HEADER_BYTES + len(body) + TAG_BYTES > _MAX_RAW_BYTES:
        raise TokenTooLong(f"token would exceed {MAX_TOKEN_CHARS} characters")
    signed = bytes((TOKEN_VERSION, key_id, kind | flags)) + body
    tagger = mac.copy()
    tagger.update(signed)
    raw = signed + tagger.digest()[:TAG_BYTES]
    return binascii.b2a_base64(raw, newline=False).translate(_TO_URLSAFE_BASE64).rstrip(b"=").decode("ascii")


def _decode_base64(token: str) -> bytes:
    """Strict base64url: only the canonical spelling decodes (no `+`, `/`, `=`, stray bits or junk)."""
    tail = len(token) % 4
    if tail == 1 or not token.isascii() or "+" in token or "/" in token or "=" in token:
        raise InvalidToken("not base64url")
    padded = token.encode("ascii").translate(_TO_STANDARD_BASE64) + b"=" * ((4 - tail) % 4)
    try:
        raw = binascii.a2b_base64(padded, strict_mode=True)
    except binascii.Error as exc:
        raise InvalidToken("not base64url") from exc
    if tail and _BASE64URL_ALPHABET.index(token[-1]) & (0x0F if tail == 2 else 0x03):
        raise InvalidToken("not canonical base64url")
    return raw


def _inflate(packed: bytes) -> bytes:
    inflater = zlib.decompressobj(-15)
    try:
        body = inflater.decompress(packed, MAX_BODY_BYTES + 1)
    except zlib.error as exc:
        raise InvalidToken("bad deflate stream") from exc
    if len(body) > MAX_BODY_BYTES or not inflater.eof or inflater.unused_data:
        raise InvalidToken("deflated body too large or malformed")
    return body


def _payload_of(kind: TokenKind, packed: bytes) -> TokenPayload:
    try:
        body = _body_decoder.decode(packed)
        metadata = None if body.metadata is None else _metadata_decoder.decode(body.metadata)
    except msgspec.DecodeError as exc:
        raise InvalidToken("malformed token body") from exc
    return TokenPayload(
        kind=kind,
        message_id=body.message_id,
        transmission_id=body.transmission_id,
        rcpt_to=body.rcpt_to,
        raw_rcpt_to=body.rcpt_to if body.raw_rcpt_to is None else body.raw_rcpt_to,
        campaign_id=body.campaign_id,
        customer_id=body.customer_id,
        tags=body.tags,
        metadata=metadata,
        target_url=body.target_url,
        link_name=body.target_url if body.link_name is None else body.link_name,
        expires=body.expires,
        sending_ip=body.sending_ip,
        injection_time=body.injection_time,
        rcpt_type=body.rcpt_type,
    )


def _names(kinds: AbstractSet[TokenKind]) -> str:
    return "/".join(sorted(kind.name.lower() for kind in kinds)) or "nothing"
