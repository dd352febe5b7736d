"""Signed tracked-URL tokens: minted per link by rewrite/, verified by tracker/ without a database.

A token is base64url (no padding) of::

    version     1 byte    TOKEN_VERSION (2; version 1 tokens still verify, see below)
    key id      1 byte    the keyring id of the signing key (1..255)
    kind+flags  1 byte    low nibble: TokenKind; bit 7: the recipient part is raw deflate; bit 6: the link
                          part is raw deflate (only when it would not fit otherwise); bits 4, 5: pad count
    length      2 bytes   big-endian length of the recipient part as stored
    recipient   n bytes   msgpack [expires, metadata (bin: compact JSON; nil: not carried), RecipientIdentity
                          (its own metadata left empty)], raw-deflated when shorter
    pad         0-2 bytes zero, so that everything before the link is whole base64 quanta
    link        m bytes   clicks: msgpack [target_url, link_name (nil: same as target_url)]; opens: empty
    tag         16 bytes  HMAC-SHA256(key, every byte before the tag), truncated to 128 bits

The recipient part is the same for every link of one recipient's copy, so `RecipientLinks` encodes
(deflates and base64-encodes) it once, and keeps an HMAC state that has already absorbed the header
and that part: each further link costs its own few bytes, one HMAC finish and their base64. The tag is checked (constant
time) before anything is inflated or parsed; inflating stops at MAX_BODY_BYTES. Tokens are signed,
not encrypted: anyone holding a link can read the recipient address and metadata in it.

Version 1 (every token minted before RecipientIdentity) is one msgpack array after the kind byte:
[expires, message_id, transmission_id, rcpt_to, raw_rcpt_to (nil: same), campaign_id, customer_id,
tags, metadata (bin: compact JSON; nil: not carried), target_url, link_name (nil: same), sending_ip,
injection_time, rcpt_type], deflated as a whole when bit 7 is set. It is decoded into the same
TokenPayload; nothing mints it any more.

Metadata travels as its compact JSON text, so `max_metadata_len` bounds exactly the bytes carried
(and any JSON number survives, which msgpack would refuse past 64 bits). Truncation rule
(Momentum leaves it open): the longest prefix of top-level keys, in their original order, whose
compact JSON object fits in `max_metadata_len` bytes; values are never cut, and an empty object
always fits.
"""

from __future__ import annotations

import binascii
import copy
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
from engaged.recipient import RecipientIdentity, TrackingPlan

TOKEN_VERSION: Final = 2
MAX_TOKEN_CHARS: Final = 4096
MAX_BODY_BYTES: Final = 64 * 1024
TAG_BYTES: Final = 16
DEFAULT_SUBLINK: Final = "a"
MAX_SUBLINK_CHARS: Final = 64

_V1: Final = 1
_HEADER_BYTES = 3
_LENGTH_BYTES = 2
_KIND_MASK = 0x0F
_FLAG_DEFLATE = 0x80
_FLAG_LINK_DEFLATE = 0x40
_PAD_SHIFT = 4
_PAD_MASK = 0x30
_HMAC_BLOCK = 64
_Hash = Any  # a hashlib object (the stubs keep its class private)
_Key = tuple[int, _Hash, _Hash]
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
_XOR_INNER_PAD = bytes(byte ^ 0x36 for byte in range(256))  # RFC 2104 ipad and opad, as translation tables
_XOR_OUTER_PAD = bytes(byte ^ 0x5C for byte in range(256))


class TokenKind(enum.IntEnum):
    """What a token may be used for; each tracker endpoint accepts only its own kinds."""

    OPEN = 1
    INITIAL_OPEN = 2
    CLICK = 3
    UNSUBSCRIBE = 4
    AMP_OPEN = 5
    AMP_INITIAL_OPEN = 6
    AMP_CLICK = 7


_KIND_BY_VALUE: dict[int, TokenKind] = {kind.value: kind for kind in TokenKind}

OPEN_KINDS: Final = frozenset({TokenKind.OPEN, TokenKind.INITIAL_OPEN, TokenKind.AMP_OPEN, TokenKind.AMP_INITIAL_OPEN})
CLICK_KINDS: Final = frozenset({TokenKind.CLICK, TokenKind.UNSUBSCRIBE, TokenKind.AMP_CLICK})


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

    `metadata_included` is False when the link does not carry the recipient's metadata (a click sent
    while click_tracking_include_metadata was false, or a link that would have been too long with it):
    `identity.metadata` is then empty. `target_url` and `link_name` are empty for opens. `expires` is
    epoch seconds.
    """

    kind: TokenKind
    identity: RecipientIdentity
    expires: int
    metadata_included: bool = True
    target_url: str = ""
    link_name: str = ""


class _RecipientPart(msgspec.Struct, frozen=True, array_like=True):
    """The part of a version 2 body shared by every link of one recipient's copy."""

    expires: int
    metadata: bytes | None  # compact JSON object; None: not carried
    identity: RecipientIdentity  # with empty metadata: it travels above


class _LinkPart(msgspec.Struct, frozen=True, array_like=True):
    """The part of a version 2 click body that is the link's own."""

    target_url: str
    link_name: str | None  # None: same as target_url


class _BodyV1(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """The signed body of a version 1 token (still verified, never minted)."""

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


_encoder = msgspec.msgpack.Encoder()
_recipient_decoder = msgspec.msgpack.Decoder(_RecipientPart)
_link_decoder = msgspec.msgpack.Decoder(_LinkPart)
_v1_decoder = msgspec.msgpack.Decoder(_BodyV1)
_json_encoder = msgspec.json.Encoder()
_metadata_decoder = msgspec.json.Decoder(dict[str, Any])


def sign_token(payload: TokenPayload, keyring: SigningKeys) -> str:
    """The token for `payload`, signed with the keyring's current key (one-off; RecipientLinks mints a copy's links).

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
    identity = payload.identity
    metadata = _json_encoder.encode(identity.metadata) if payload.metadata_included else None
    bare = msgspec.structs.replace(identity, metadata={}) if identity.metadata else identity
    sealer = _Sealer(keyring, _RecipientPart(payload.expires, metadata, bare))
    if payload.kind in CLICK_KINDS:
        name = None if payload.link_name == payload.target_url else payload.link_name
        return sealer.seal(payload.kind, _encoder.encode(_LinkPart(payload.target_url, name)))
    return sealer.seal(payload.kind, b"")


def decode_token(token: str, keyring: SigningKeys, *, expect: AbstractSet[TokenKind]) -> TokenPayload:
    """The payload of a genuine token of one of the `expect` kinds; raises InvalidToken otherwise.

    Expiry is not checked here (see is_expired): an expired link still redirects.
    """
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidToken("token too long")
    raw = _decode_base64(token)
    if len(raw) < _MIN_RAW_BYTES:
        raise InvalidToken("token too short")
    version = raw[0]
    if version not in (TOKEN_VERSION, _V1):
        raise InvalidToken("unknown token version")
    kind_flags = raw[2]
    kind = _KIND_BY_VALUE.get(kind_flags & _KIND_MASK)
    allowed = _KIND_MASK | _FLAG_DEFLATE | (_FLAG_LINK_DEFLATE | _PAD_MASK if version == TOKEN_VERSION else 0)
    if kind is None or kind_flags & ~allowed or kind_flags & _PAD_MASK == _PAD_MASK:
        raise InvalidToken("unknown token kind or flags")
    if kind not in expect:
        raise InvalidToken(f"{kind.name.lower()} token where {_names(expect)} expected")
    key = keyring.key(raw[1])
    if key is None:
        raise InvalidToken("unknown key id")
    signed = raw[:-TAG_BYTES]
    if not hmac.compare_digest(hmac.digest(key, signed, "sha256")[:TAG_BYTES], raw[-TAG_BYTES:]):
        raise InvalidToken("bad signature")
    deflated = bool(kind_flags & _FLAG_DEFLATE)
    if version == _V1:
        packed = signed[_HEADER_BYTES:]
        return _payload_of_v1(kind, _inflate(packed) if deflated else packed)
    pad = (kind_flags & _PAD_MASK) >> _PAD_SHIFT
    return _payload_of(kind, signed[_HEADER_BYTES:], deflated, bool(kind_flags & _FLAG_LINK_DEFLATE), pad)


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


class RecipientLinks:
    """Mints the tracked URLs of one recipient's copy (engaged.types.LinkMinter).

    Signs with the keyring's current key at construction. The recipient part of the body is encoded
    once per kind of link and reused, so a link costs only its own part and the tag. click_url and
    open_url raise UntrackableLink when a link cannot be tracked; the caller leaves that link
    unchanged. A link whose token would be too long with the metadata is minted without it.
    """

    def __init__(self, keyring: SigningKeys, identity: RecipientIdentity, plan: TrackingPlan) -> None:
        for scheme in (plan.open_scheme, plan.click_scheme):
            if scheme not in ("http", "https"):
                raise ValueError(f"tracking scheme must be http or https, not {scheme!r}")
        expires = int(identity.injection_time) + plan.link_expiry
        metadata = _json_encoder.encode(truncate_metadata(identity.metadata, plan.max_metadata_len))
        bare = msgspec.structs.replace(identity, metadata={}) if identity.metadata else identity
        self._with_metadata = _Sealer(keyring, _RecipientPart(expires, metadata, bare))
        self._without_metadata = _Sealer(keyring, _RecipientPart(expires, None, bare), self._with_metadata.key)
        self._clicks = self._with_metadata if plan.include_metadata_in_clicks else self._without_metadata
        self._open_prefix = f"{plan.open_scheme}://{plan.tracking_domain}/q/"
        self._click_prefix = f"{plan.click_scheme}://{plan.tracking_domain}/f/"
        self._default_click_prefix = f"{self._click_prefix}{DEFAULT_SUBLINK}/"
        self._amp = False
        self._click_kind = TokenKind.CLICK

    def amp(self) -> RecipientLinks:
        """The same recipient's minter for its AMP part: amp_click, amp_open and amp_initial_open tokens."""
        links = copy.copy(self)
        links._amp = True
        links._click_kind = TokenKind.AMP_CLICK
        return links

    def click_url(self, target_url: str, link_name: str, sublink: str | None, unsubscribe: bool) -> str:
        """`<click_scheme>://<tracking_domain>/f/<sublink or a>/<token>` redirecting to `target_url`.

        Control characters in the target are treated as a browser treats them: tab, CR and LF are
        removed, the others percent-encoded; so the tracker's Location never carries one.
        """
        if not (target_url.isascii() and target_url.isprintable()) and _CONTROL.search(target_url):
            target_url = _clean_target(target_url)  # (printable ASCII has no control: the common case, fast)
        _check_target(target_url)
        kind = TokenKind.UNSUBSCRIBE if unsubscribe else self._click_kind
        # A tuple encodes as the array_like _LinkPart does, without building the Struct.
        link = _encoder.encode((target_url, None if link_name == target_url else link_name))
        try:
            token = self._clicks.seal(kind, link)
        except TokenTooLong:
            if self._clicks is self._without_metadata:
                raise
            token = self._without_metadata.seal(kind, link)
        if sublink is None:
            return self._default_click_prefix + token
        return f"{self._click_prefix}{sanitise_sublink(sublink)}/{token}"

    def open_url(self, initial: bool) -> str:
        """`<open_scheme>://<tracking_domain>/q/<token>`; `initial` marks the top pixel."""
        if self._amp:
            kind = TokenKind.AMP_INITIAL_OPEN if initial else TokenKind.AMP_OPEN
        else:
            kind = TokenKind.INITIAL_OPEN if initial else TokenKind.OPEN
        try:
            token = self._with_metadata.seal(kind, b"")
        except TokenTooLong:
            token = self._without_metadata.seal(kind, b"")
        return self._open_prefix + token


class _Sealer:
    """Seals tokens that share one recipient part: encoded, deflated and base64-encoded once per kind of link.

    The HMAC is computed by hand (RFC 2104) over hashlib states that have already absorbed the key and the
    shared prefix, so a token costs two hash copies and finishes; the prefix is padded to whole base64
    quanta so its text is reused and only the link part and the tag are encoded per token.
    """

    def __init__(self, keyring: SigningKeys, part: _RecipientPart, key: _Key | None = None) -> None:
        self.key = key or _current_key(keyring)
        self._part = part
        self._stored: bytes | None = None
        self._flags = 0
        self._prefixes: dict[int, tuple[str, _Hash, _Hash, int]] = {}

    def seal(self, kind: TokenKind, link: bytes, link_flag: int = 0) -> str:
        """The token of `kind` whose link part is `link` (already encoded); a link that does not fit is deflated."""
        prefixed = self._prefixes.get(kind | link_flag)
        if prefixed is None:
            prefixed = self._prefixes[kind | link_flag] = self._prefix(kind | link_flag)
        text, inner, outer, room = prefixed
        if len(link) > room:
            if link_flag or not link:
                raise TokenTooLong(f"token would exceed {MAX_TOKEN_CHARS} characters")
            return self.seal(kind, _deflate(link), _FLAG_LINK_DEFLATE)
        tagger = inner.copy()
        tagger.update(link)
        finisher = outer.copy()
        finisher.update(tagger.digest())
        tail = binascii.b2a_base64(link + finisher.digest()[:TAG_BYTES], newline=False)
        return text + tail.translate(_TO_URLSAFE_BASE64).rstrip(b"=").decode("ascii")

    def _prefix(self, kind_flags: int) -> tuple[str, _Hash, _Hash, int]:
        if self._stored is None:
            body = _encoder.encode(self._part)
            if len(body) > MAX_BODY_BYTES:
                raise TokenTooLong(f"token body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
            if len(body) >= _COMPRESS_FROM_BYTES:
                packed = _deflate(body)
                if len(packed) < len(body):
                    body, self._flags = packed, _FLAG_DEFLATE
            if len(body) > _MAX_RAW_BYTES:
                raise TokenTooLong(f"token would exceed {MAX_TOKEN_CHARS} characters")
            self._stored = body
        key_id, inner, outer = self.key
        pad = -(_HEADER_BYTES + _LENGTH_BYTES + len(self._stored)) % 3
        flags = kind_flags | self._flags | pad << _PAD_SHIFT
        prefix = bytes((TOKEN_VERSION, key_id, flags)) + len(self._stored).to_bytes(_LENGTH_BYTES, "big")
        prefix += self._stored + bytes(pad)
        inner = inner.copy()
        inner.update(prefix)
        text = binascii.b2a_base64(prefix, newline=False).translate(_TO_URLSAFE_BASE64).decode("ascii")
        return text, inner, outer, _MAX_RAW_BYTES - len(prefix) - TAG_BYTES  # room left for the link part


def _current_key(keyring: SigningKeys) -> _Key:
    """The current key id and the HMAC-SHA256 inner and outer states keyed with it (RFC 2104), to be copied."""
    key_id = keyring.current_id
    key = keyring.key(key_id)
    if key is None:
        raise ValueError(f"the keyring has no key for its current id {key_id}")
    if len(key) > _HMAC_BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_HMAC_BLOCK, b"\0")
    inner = hashlib.sha256(key.translate(_XOR_INNER_PAD))
    outer = hashlib.sha256(key.translate(_XOR_OUTER_PAD))
    return key_id, inner, outer


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


def _deflate(data: bytes) -> bytes:
    """`data` as a raw deflate stream (level 9) whose window just covers it.

    zlib.compress with its 32 KiB window allocates and clears about 256 KiB of state per call: 80-100 us
    for a 200-byte token body where glibc gives those pages back between calls (its default trim
    threshold), about 13 us where it keeps them (the worker's mallopt), against 9-12 us here. A window of
    the input plus deflate's 262-byte lookahead, with a hash table of the same order, made streams as
    short on bodies of 100 B to 60 KB, and any raw inflater (window 2**15) reads them.
    """
    bits = min(max((len(data) + 262 - 1).bit_length(), 9), 15)
    packer = zlib.compressobj(9, zlib.DEFLATED, -bits, max(bits - 7, 1))
    return packer.compress(data) + packer.flush()


def _inflate(packed: bytes) -> bytes:
    inflater = zlib.decompressobj(-15)
    try:
        body = inflater.decompress(packed, MAX_BODY_BYTES + 1)
    except zlib.error as exc:
        raise InvalidToken("bad deflate stream") from exc
    if len(body) > MAX_BODY_BYTES or not inflater.eof or inflater.unused_data:
        raise InvalidToken("deflated body too large or malformed")
    return body


def _payload_of(kind: TokenKind, body: bytes, deflated: bool, link_deflated: bool, pad: int) -> TokenPayload:
    stored = int.from_bytes(body[:_LENGTH_BYTES], "big")
    link_start = _LENGTH_BYTES + stored + pad
    if len(body) < link_start or any(body[link_start - pad : link_start]):
        raise InvalidToken("malformed token body")
    recipient, link = body[_LENGTH_BYTES : _LENGTH_BYTES + stored], body[link_start:]
    if link_deflated:
        link = _inflate(link)
    try:
        part = _recipient_decoder.decode(_inflate(recipient) if deflated else recipient)
        metadata = None if part.metadata is None else _metadata_decoder.decode(part.metadata)
        target = _link_decoder.decode(link) if kind in CLICK_KINDS else None
    except msgspec.DecodeError as exc:
        raise InvalidToken("malformed token body") from exc
    if target is None and link:
        raise InvalidToken("an open token carries no link")
    identity = part.identity if not metadata else msgspec.structs.replace(part.identity, metadata=metadata)
    return TokenPayload(
        kind=kind,
        identity=identity,
        expires=part.expires,
        metadata_included=metadata is not None,
        target_url=target.target_url if target else "",
        link_name=(target.target_url if target.link_name is None else target.link_name) if target else "",
    )


def _payload_of_v1(kind: TokenKind, packed: bytes) -> TokenPayload:
    try:
        body = _v1_decoder.decode(packed)
        metadata = None if body.metadata is None else _metadata_decoder.decode(body.metadata)
    except msgspec.DecodeError as exc:
        raise InvalidToken("malformed token body") from exc
    identity = RecipientIdentity(
        message_id=body.message_id,
        transmission_id=body.transmission_id,
        rcpt_to=body.rcpt_to,
        raw_rcpt_to=body.rcpt_to if body.raw_rcpt_to is None else body.raw_rcpt_to,
        injection_time=float(body.injection_time),
        campaign_id=body.campaign_id,
        customer_id=body.customer_id,
        tags=body.tags,
        metadata=metadata or {},
        sending_ip=body.sending_ip,
        rcpt_type=body.rcpt_type,
        routing_domain=body.rcpt_to.rpartition("@")[2],
    )
    return TokenPayload(
        kind=kind,
        identity=identity,
        expires=body.expires,
        metadata_included=metadata is not None,
        target_url=body.target_url,
        link_name=body.target_url if body.link_name is None else body.link_name,
    )


def _names(kinds: AbstractSet[TokenKind]) -> str:
    return "/".join(sorted(kind.name.lower() for kind in kinds)) or "nothing"
