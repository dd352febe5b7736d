"""The tracker's routes: /q and /o (pixel), /f (redirect), /lu (List-Unsubscribe), robots.txt, 404, 405, 414
(sans-I/O: no sockets).

`Tracker.handle` turns one parsed request into an `Answer`: the response head and body, and for a
genuine, unexpired open or click the journal line of its event; engaged.tracker.http writes the
line to the journal and sends the response only once it is durable. When the journal fails the
pixel or redirect is still served, and the loss is logged and counted. Nothing from a token or a
request is ever written into a response body: bodies are fixed texts.

Verified tokens are cached (bounded): an image proxy fetching the same pixel again costs a dict
lookup, not a base64 decode, an HMAC and a msgpack decode; the cache entry also holds the event's
constant fields already encoded, so a request encodes only what differs per request.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple
from urllib.parse import quote, unquote

import msgspec

from engaged.events.enrich import UserAgentParser
from engaged.events.ids import EventIdGenerator
from engaged.events.message import engagement_fields, format_timestamp
from engaged.tokens import (
    CLICK_KINDS,
    MAX_TOKEN_CHARS,
    OPEN_KINDS,
    InvalidToken,
    SigningKeys,
    TokenKind,
    TokenPayload,
    decode_token,
    normalise_token,
)
from engaged.tracker.classify import Classifier, Engagement
from engaged.tracker.geo import GeoIp
from engaged.tracker.pixel import COMMON_HEADERS, NO_CACHE, PIXEL_GIF, PIXEL_HEADERS

MAX_SEGMENT_CHARS: Final = 4 * MAX_TOKEN_CHARS  # a re-encoded token may grow; normalise_token reads no further
MAX_USER_AGENT_CHARS: Final = 1024
MAX_ACCEPT_LANGUAGE_CHARS: Final = 256
ROBOTS_TXT: Final = b"User-agent: *\nDisallow: /\n"
ALLOWED_METHODS: Final = b"GET, HEAD"
TOKEN_CACHE_SIZE: Final = 16_384

_TEXT = b"text/plain; charset=utf-8"
_TYPES: dict[TokenKind, bytes] = {
    TokenKind.OPEN: b'{"type":"open",',
    TokenKind.INITIAL_OPEN: b'{"type":"initial_open",',
    TokenKind.CLICK: b'{"type":"click",',
    TokenKind.UNSUBSCRIBE: b'{"type":"link_unsubscribe",',
    TokenKind.AMP_OPEN: b'{"type":"amp_open",',
    TokenKind.AMP_INITIAL_OPEN: b'{"type":"amp_initial_open",',
    TokenKind.AMP_CLICK: b'{"type":"amp_click",',
}
_LIST_UNSUBSCRIBE = b'{"type":"list_unsubscribe",'
LIST_UNSUBSCRIBE_PATH: Final = "/lu/"
"""The List-Unsubscribe URL: `/lu/<token>`, the token of an unsubscribe link (engaged.delivery.unsubscribe mints it)."""
_TYPE_NAMES: dict[TokenKind, str] = {
    TokenKind.OPEN: "open",
    TokenKind.INITIAL_OPEN: "initial_open",
    TokenKind.CLICK: "click",
    TokenKind.UNSUBSCRIBE: "link_unsubscribe",
    TokenKind.AMP_OPEN: "amp_open",
    TokenKind.AMP_INITIAL_OPEN: "amp_initial_open",
    TokenKind.AMP_CLICK: "amp_click",
}
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_NEEDS_ESCAPE = re.compile("[^\x21-\x7e]")
_TRUST_CACHE = 1024
_encode = msgspec.json.Encoder().encode


def _block(status: bytes, headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    """A status line and header lines, each ending in CRLF (the caller adds Date and the blank line)."""
    return b"HTTP/1.1 " + status + b"\r\n" + b"".join(name + b": " + value + b"\r\n" for name, value in headers)


def _fixed(status: bytes, body: bytes, *extra: tuple[bytes, bytes]) -> bytes:
    return _block(status, [*COMMON_HEADERS, (b"content-type", _TEXT), (b"content-length", str(len(body)).encode()),
                           (b"cache-control", NO_CACHE), *extra])


NOT_FOUND: Final = b"Not Found\n"
METHOD_NOT_ALLOWED: Final = b"Method Not Allowed\n"
URI_TOO_LONG: Final = b"URI Too Long\n"
BAD_REQUEST: Final = b"Bad Request\n"
REQUEST_TIMEOUT: Final = b"Request Timeout\n"
SERVICE_UNAVAILABLE: Final = b"Service Unavailable\n"
_PIXEL_HEAD = _block(b"200 OK", PIXEL_HEADERS)
_REDIRECT_HEAD = _block(b"302 Found", [*COMMON_HEADERS, (b"content-length", b"0"), (b"cache-control", NO_CACHE),
                                       (b"referrer-policy", b"no-referrer")])
_ROBOTS_HEAD = _block(b"200 OK", [*COMMON_HEADERS, (b"content-type", _TEXT),
                                  (b"content-length", str(len(ROBOTS_TXT)).encode())])


class Answer(NamedTuple):
    """One response: `head` (status and header lines, no Date, no blank line), the GET body, the event line."""

    head: bytes
    body: bytes
    event: bytes | None = None


ANSWER_NOT_FOUND: Final = Answer(_fixed(b"404 Not Found", NOT_FOUND), NOT_FOUND)
ANSWER_METHOD_NOT_ALLOWED: Final = Answer(_fixed(b"405 Method Not Allowed", METHOD_NOT_ALLOWED,
                                                 (b"allow", ALLOWED_METHODS)), METHOD_NOT_ALLOWED)
ANSWER_TOO_LONG: Final = Answer(_fixed(b"414 URI Too Long", URI_TOO_LONG), URI_TOO_LONG)
ANSWER_BAD_REQUEST: Final = Answer(_fixed(b"400 Bad Request", BAD_REQUEST), BAD_REQUEST)
ANSWER_TIMEOUT: Final = Answer(_fixed(b"408 Request Timeout", REQUEST_TIMEOUT), REQUEST_TIMEOUT)
ANSWER_UNAVAILABLE: Final = Answer(_fixed(b"503 Service Unavailable", SERVICE_UNAVAILABLE), SERVICE_UNAVAILABLE)
ANSWER_ROBOTS: Final = Answer(_ROBOTS_HEAD, ROBOTS_TXT)

UNSUBSCRIBED: Final = b"You are unsubscribed.\n"
# The confirmation page posts to its own URL (an empty action): nothing from the token is ever written into it.
CONFIRM_PAGE: Final = (b'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
                       b'<meta name="viewport" content="width=device-width, initial-scale=1">'
                       b'<meta name="robots" content="noindex"><title>Unsubscribe</title></head>\n'
                       b'<body><h1>Unsubscribe</h1><p>Stop receiving these emails?</p>'
                       b'<form method="post" action=""><input type="hidden" name="List-Unsubscribe" value="One-Click">'
                       b'<button type="submit">Unsubscribe</button></form></body></html>\n')
_PAGE_HEADERS = [(b"content-security-policy", b"default-src 'none'; form-action 'self'; frame-ancestors 'none'"),
                 (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer")]
ANSWER_CONFIRM: Final = Answer(_block(b"200 OK", [*COMMON_HEADERS, (b"content-type", b"text/html; charset=utf-8"),
                                                  (b"content-length", str(len(CONFIRM_PAGE)).encode()),
                                                  (b"cache-control", NO_CACHE), *_PAGE_HEADERS]), CONFIRM_PAGE)
_UNSUBSCRIBED_HEAD = _fixed(b"200 OK", UNSUBSCRIBED)
ANSWER_LIST_METHODS: Final = Answer(_fixed(b"405 Method Not Allowed", METHOD_NOT_ALLOWED,
                                           (b"allow", b"GET, HEAD, POST")), METHOD_NOT_ALLOWED)


@dataclass
class TrackerStats:
    """Request counters for metrics."""

    opens: int = 0
    clicks: int = 0
    expired: int = 0
    not_found: int = 0
    invalid_tokens: int = 0
    method_not_allowed: int = 0
    too_long: int = 0
    bad_requests: int = 0
    timeouts: int = 0
    refused_connections: int = 0
    token_cache_hits: int = 0
    list_unsubscribes: int = 0


@dataclass(frozen=True, slots=True)
class _Verified:
    """A genuine token: what every request for it shares."""

    payload: TokenPayload
    prefix: bytes  # `{"type":…,<constant fields>,` of its event line
    answer: Answer  # the pixel, or the redirect to its target


def location_of(target_url: str) -> bytes | None:
    """The Location header for a signed target: http(s) only, no control characters, non-ASCII escaped.

    None means the target must not be redirected to (answer 404). Spaces and non-ASCII characters are
    percent-encoded as UTF-8, as a browser would request them.
    """
    if not target_url[:8].lower().startswith(("http://", "https://")) or _CONTROL.search(target_url):
        return None
    if _NEEDS_ESCAPE.search(target_url):
        try:
            target_url = _NEEDS_ESCAPE.sub(lambda match: quote(match.group(), safe=""), target_url)
        except UnicodeEncodeError:  # an unpaired surrogate
            return None
    return target_url.encode("ascii")


class Tracker:
    """Answers tracker requests; holds the verified-token, trust and classification caches."""

    def __init__(self, *, keyring: SigningKeys, ids: EventIdGenerator, classifier: Classifier,
                 geo: GeoIp | None = None, trusted_proxies: Sequence[str] = (),
                 clock: Callable[[], float] = time.time, token_cache_size: int = TOKEN_CACHE_SIZE) -> None:
        self._keyring = keyring
        self._ids = ids
        self._classifier = classifier
        self._agents = UserAgentParser()
        self._geo = geo
        self._trusted = tuple(ipaddress.ip_network(network, strict=False) for network in trusted_proxies)
        self._trust_cache: dict[str, bool] = {}
        self._verified: dict[str, _Verified] = {}
        self._cache_size = token_cache_size
        self._clock = clock
        self.stats = TrackerStats()

    def handle(self, method: bytes, path: str, user_agent: bytes = b"", accept_language: bytes = b"",
               forwarded: bytes = b"", peer: str = "") -> Answer:
        """The answer to one request; `path` is the request target without its query, as latin-1 text."""
        if path.startswith(LIST_UNSUBSCRIBE_PATH):
            return self._list_unsubscribe(method, path, user_agent, accept_language, forwarded, peer)
        verified = self._verified.get(path)
        get = method == b"GET" or method == b"HEAD"
        if verified is not None and get:
            self.stats.token_cache_hits += 1
        else:
            found = self._route(path, get)
            if isinstance(found, Answer):
                return found
            verified = found
        payload = verified.payload
        if payload.kind in CLICK_KINDS:
            self.stats.clicks += 1
        else:
            self.stats.opens += 1
        now = self._clock()
        if now > payload.expires:
            self.stats.expired += 1
            return verified.answer
        answer = verified.answer
        return Answer(answer.head, answer.body,
                      self._event_line(verified, method, now, user_agent, accept_language, forwarded, peer))

    def _route(self, path: str, get: bool) -> Answer | _Verified:
        if path.startswith(("/q/", "/o/")):
            kinds, segment = OPEN_KINDS, path[3:]
        elif path.startswith("/f/"):
            kinds, segment = CLICK_KINDS, _click_segment(path[3:])
        elif path == "/robots.txt":
            if not get:
                return self._method_not_allowed()
            return ANSWER_ROBOTS
        else:
            return self._not_found()
        if not get:
            return self._method_not_allowed()
        payload = self._payload_of(segment, kinds)
        if isinstance(payload, Answer):
            return payload
        if kinds is OPEN_KINDS:
            answer = Answer(_PIXEL_HEAD, PIXEL_GIF)
        else:
            location = location_of(payload.target_url)
            if location is None:
                self.stats.invalid_tokens += 1
                return self._not_found()
            answer = Answer(_REDIRECT_HEAD + b"location: " + location + b"\r\n", b"")
        verified = _Verified(payload, self._prefix(payload), answer)
        if len(self._verified) >= self._cache_size:
            del self._verified[next(iter(self._verified))]
        self._verified[path] = verified
        return verified

    def _list_unsubscribe(self, method: bytes, path: str, user_agent: bytes, accept_language: bytes,
                          forwarded: bytes, peer: str) -> Answer:
        """RFC 8058: a POST unsubscribes (200, no redirect, a `list_unsubscribe` event); a GET (a person who
        opened the URL) shows a page whose button makes that POST, and records nothing."""
        if method not in (b"GET", b"HEAD", b"POST"):
            self.stats.method_not_allowed += 1
            return ANSWER_LIST_METHODS
        payload = self._payload_of(path[len(LIST_UNSUBSCRIBE_PATH):], CLICK_KINDS)
        if isinstance(payload, Answer):
            return payload
        if payload.kind is not TokenKind.UNSUBSCRIBE:
            self.stats.invalid_tokens += 1
            return self._not_found()
        if method != b"POST":
            return ANSWER_CONFIRM
        self.stats.list_unsubscribes += 1
        now = self._clock()
        verified = _Verified(payload, self._prefix(payload, _LIST_UNSUBSCRIBE), Answer(_UNSUBSCRIBED_HEAD, b""))
        line = self._event_line(verified, method, now, user_agent, accept_language, forwarded, peer)
        return Answer(_UNSUBSCRIBED_HEAD, UNSUBSCRIBED, line)

    def _payload_of(self, segment: str, kinds: frozenset[TokenKind]) -> TokenPayload | Answer:
        """The verified payload of a token segment of one of `kinds`, or the answer refusing it: 414 for an
        overlong segment or token, 404 for a token that does not verify (each counted)."""
        if len(segment) > MAX_SEGMENT_CHARS:
            self.stats.too_long += 1
            return ANSWER_TOO_LONG
        token = normalise_token(segment)
        if len(token) > MAX_TOKEN_CHARS:
            self.stats.too_long += 1
            return ANSWER_TOO_LONG
        try:
            return decode_token(token, self._keyring, expect=kinds)
        except InvalidToken:
            self.stats.invalid_tokens += 1
            return self._not_found()

    def _not_found(self) -> Answer:
        self.stats.not_found += 1
        return ANSWER_NOT_FOUND

    def _method_not_allowed(self) -> Answer:
        self.stats.method_not_allowed += 1
        return ANSWER_METHOD_NOT_ALLOWED

    def _prefix(self, payload: TokenPayload, type_prefix: bytes | None = None) -> bytes:
        """The start of the event line: its type and every field the token alone decides."""
        event_type = "list_unsubscribe" if type_prefix is not None else _TYPE_NAMES[payload.kind]
        fields = engagement_fields(event_type, payload.identity, target_url=payload.target_url,
                                   link_name=payload.link_name)
        return (type_prefix or _TYPES[payload.kind]) + _encode(fields)[1:-1] + b","

    def _event_line(self, verified: _Verified, method: bytes, now: float, user_agent_bytes: bytes,
                    accept_language_bytes: bytes, forwarded: bytes, peer: str) -> bytes:
        """The journal line of one open or click: the cached prefix and what this request adds."""
        payload = verified.payload
        user_agent = user_agent_bytes.decode("utf-8", "replace")[:MAX_USER_AGENT_CHARS]
        accept_language = accept_language_bytes.decode("utf-8", "replace")[:MAX_ACCEPT_LANGUAGE_CHARS]
        ip_address = self.client_address(peer, forwarded.decode("latin-1")) if forwarded else peer
        is_click = payload.kind in CLICK_KINDS
        machine = self._classifier.classify(Engagement(
            method=method.decode("latin-1"), user_agent=user_agent, ip_address=ip_address, is_click=is_click,
            message_id=payload.identity.message_id, link=payload.target_url, now=now,
            injection_time=int(payload.identity.injection_time)))
        fields: dict[str, Any] = {"event_id": self._ids.next_id(now), "timestamp": format_timestamp(now)}
        # Empty values are left out, as the event's own encoding would: the line is stored as written.
        if ip_address:
            fields["ip_address"] = ip_address
        if user_agent:
            fields["user_agent"] = user_agent
        if accept_language:
            fields["accept_language"] = accept_language
        fields["machine_engagement"] = machine
        fields["user_agent_parsed"] = self._agents.parse(user_agent, machine.kind)
        if self._geo is not None and ip_address:
            geo_ip = self._geo.lookup(ip_address)
            if geo_ip is not None:
                fields["geo_ip"] = geo_ip
        return verified.prefix + _encode(fields)[1:] + b"\n"

    def client_address(self, peer: str, forwarded: str) -> str:
        """The requester: the socket peer, or, when the peer is a trusted proxy, the right-most address in
        X-Forwarded-For that is not a trusted proxy (the left-most when all are; stops at a malformed entry)."""
        if not self._trusted or not forwarded or not self._is_trusted(peer):
            return peer
        client = peer
        for entry in reversed(forwarded.split(",")):
            candidate = _address(entry)
            if candidate is None:
                break
            client = candidate
            if not self._is_trusted(candidate):
                break
        return client

    def _is_trusted(self, address: str) -> bool:
        trusted = self._trust_cache.get(address)
        if trusted is None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                trusted = False
            else:
                mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
                trusted = any(ip in network or (mapped is not None and mapped in network) for network in self._trusted)
            if len(self._trust_cache) >= _TRUST_CACHE:
                self._trust_cache.clear()
            self._trust_cache[address] = trusted
        return trusted


def _click_segment(rest: str) -> str:
    """The token segment after `/f/<sublink>/` ("" when there is no sublink); tolerates an encoded slash."""
    sublink, slash, segment = rest.partition("/")
    if not slash and "%2f" in rest.lower():
        sublink, slash, segment = unquote(rest).partition("/")
    return segment if slash and sublink else ""


def _address(entry: str) -> str | None:
    """A canonical IP address from one X-Forwarded-For entry (`ip`, `ip:port`, `[v6]` or `[v6]:port`)."""
    text = entry.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None
