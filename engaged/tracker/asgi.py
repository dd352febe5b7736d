"""The tracker's HTTP surface, one plain ASGI callable: /q and /o (pixel), /f (redirect), robots.txt, 404, 405.

A request with a genuine token is journaled (engaged.tracker.journal) before its response is sent;
when the journal fails the pixel or redirect is still served, and the loss is logged and counted.
Nothing from a token or a request is ever written into a response body: bodies are fixed texts.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, unquote

from starlette.types import Receive, Scope, Send

from engaged.events.ids import EventIdGenerator
from engaged.events.message import format_iso, format_timestamp
from engaged.events.model import ClickEvent, InitialOpenEvent, LinkUnsubscribeEvent, OpenEvent, encode_event
from engaged.tokens import (
    CLICK_KINDS,
    MAX_TOKEN_CHARS,
    OPEN_KINDS,
    InvalidToken,
    SigningKeys,
    TokenKind,
    TokenPayload,
    decode_token,
    is_expired,
    normalise_token,
)
from engaged.tracker.classify import Classifier, Engagement
from engaged.tracker.geo import GeoIp
from engaged.tracker.journal import Journal
from engaged.tracker.pixel import COMMON_HEADERS, NO_CACHE, PIXEL_GIF, PIXEL_HEADERS

MAX_SEGMENT_CHARS: Final = 4 * MAX_TOKEN_CHARS  # a re-encoded token may grow; normalise_token reads no further
MAX_USER_AGENT_CHARS: Final = 1024
MAX_ACCEPT_LANGUAGE_CHARS: Final = 256
ROBOTS_TXT: Final = b"User-agent: *\nDisallow: /\n"
ALLOWED_METHODS: Final = b"GET, HEAD"

_TEXT = b"text/plain; charset=utf-8"
_EVENT_CLASSES: dict[TokenKind, type[OpenEvent | InitialOpenEvent | ClickEvent | LinkUnsubscribeEvent]] = {
    TokenKind.OPEN: OpenEvent,
    TokenKind.INITIAL_OPEN: InitialOpenEvent,
    TokenKind.CLICK: ClickEvent,
    TokenKind.UNSUBSCRIBE: LinkUnsubscribeEvent,
}
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_NEEDS_ESCAPE = re.compile("[^\x21-\x7e]")
_TRUST_CACHE = 1024
_ISO_CACHE = 4096


def _fixed(status_body: bytes, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [*COMMON_HEADERS, (b"content-type", _TEXT), (b"content-length", str(len(status_body)).encode()),
            (b"cache-control", NO_CACHE), *extra]


NOT_FOUND: Final = b"Not Found\n"
METHOD_NOT_ALLOWED: Final = b"Method Not Allowed\n"
URI_TOO_LONG: Final = b"URI Too Long\n"
_NOT_FOUND_HEADERS = _fixed(NOT_FOUND)
_METHOD_HEADERS = _fixed(METHOD_NOT_ALLOWED, (b"allow", ALLOWED_METHODS))
_TOO_LONG_HEADERS = _fixed(URI_TOO_LONG)
_ROBOTS_HEADERS = [*COMMON_HEADERS, (b"content-type", _TEXT), (b"content-length", str(len(ROBOTS_TXT)).encode())]
_REDIRECT_HEADERS = [*COMMON_HEADERS, (b"content-length", b"0"), (b"cache-control", NO_CACHE),
                     (b"referrer-policy", b"no-referrer")]


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


class TrackerApp:
    """The ASGI application; `journal` must be open while it serves."""

    def __init__(self, *, keyring: SigningKeys, journal: Journal, ids: EventIdGenerator, classifier: Classifier,
                 geo: GeoIp | None = None, trusted_proxies: Sequence[str] = (),
                 clock: Callable[[], float] = time.time) -> None:
        self._keyring = keyring
        self._journal = journal
        self._ids = ids
        self._classifier = classifier
        self._geo = geo
        self._trusted = tuple(ipaddress.ip_network(network, strict=False) for network in trusted_proxies)
        self._trust_cache: dict[str, bool] = {}
        self._iso_cache: dict[int, str] = {}
        self._clock = clock
        self.stats = TrackerStats()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        path = raw_path.decode("latin-1")
        head = scope["method"] == "HEAD"
        get = head or scope["method"] == "GET"
        if path.startswith(("/q/", "/o/")):
            kinds, segment = OPEN_KINDS, path[3:]
        elif path.startswith("/f/"):
            kinds, segment = CLICK_KINDS, _click_segment(path[3:])
        elif path == "/robots.txt":
            if not get:
                return await self._method_not_allowed(send)
            return await _respond(send, 200, _ROBOTS_HEADERS, b"" if head else ROBOTS_TXT)
        else:
            return await self._not_found(send, head)
        if not get:
            return await self._method_not_allowed(send)
        if len(segment) > MAX_SEGMENT_CHARS:
            self.stats.too_long += 1
            return await _respond(send, 414, _TOO_LONG_HEADERS, b"" if head else URI_TOO_LONG)
        token = normalise_token(segment)
        if len(token) > MAX_TOKEN_CHARS:
            self.stats.too_long += 1
            return await _respond(send, 414, _TOO_LONG_HEADERS, b"" if head else URI_TOO_LONG)
        try:
            payload = decode_token(token, self._keyring, expect=kinds)
        except InvalidToken:
            self.stats.invalid_tokens += 1
            return await self._not_found(send, head)
        if kinds is OPEN_KINDS:
            self.stats.opens += 1
            await self._record(scope, payload)
            return await _respond(send, 200, PIXEL_HEADERS, b"" if head else PIXEL_GIF)
        location = location_of(payload.target_url)
        if location is None:
            self.stats.invalid_tokens += 1
            return await self._not_found(send, head)
        self.stats.clicks += 1
        await self._record(scope, payload)
        return await _respond(send, 302, [*_REDIRECT_HEADERS, (b"location", location)], b"")

    async def _not_found(self, send: Send, head: bool) -> None:
        self.stats.not_found += 1
        await _respond(send, 404, _NOT_FOUND_HEADERS, b"" if head else NOT_FOUND)

    async def _method_not_allowed(self, send: Send) -> None:
        self.stats.method_not_allowed += 1
        await _respond(send, 405, _METHOD_HEADERS, METHOD_NOT_ALLOWED)

    async def _record(self, scope: Scope, payload: TokenPayload) -> None:
        """Journal the event of a genuine, unexpired request (returns once it is durable or has failed)."""
        now = self._clock()
        if is_expired(payload, now):
            self.stats.expired += 1
            return
        user_agent = accept_language = forwarded = ""
        for name, value in scope["headers"]:
            if name == b"user-agent":
                user_agent = value.decode("utf-8", "replace")[:MAX_USER_AGENT_CHARS]
            elif name == b"accept-language":
                accept_language = value.decode("utf-8", "replace")[:MAX_ACCEPT_LANGUAGE_CHARS]
            elif name == b"x-forwarded-for":
                forwarded = f"{forwarded},{value.decode('latin-1')}" if forwarded else value.decode("latin-1")
        client = scope.get("client")
        ip_address = self.client_address(client[0] if client else "", forwarded)
        is_click = payload.kind in CLICK_KINDS
        machine = self._classifier.classify(Engagement(
            method=scope["method"], user_agent=user_agent, ip_address=ip_address, is_click=is_click,
            message_id=payload.message_id, link=payload.target_url, now=now, injection_time=payload.injection_time))
        fields: dict[str, Any] = {
            "event_id": self._ids.next_id(now),
            "timestamp": format_timestamp(now),
            "message_id": payload.message_id,
            "transmission_id": payload.transmission_id,
            "campaign_id": payload.campaign_id,
            "customer_id": payload.customer_id,
            "rcpt_to": payload.rcpt_to,
            "raw_rcpt_to": payload.raw_rcpt_to,
            "rcpt_meta": payload.metadata if payload.metadata is not None else {},
            "rcpt_tags": list(payload.tags),
            "rcpt_type": payload.rcpt_type or None,
            "sending_ip": payload.sending_ip,
            "ip_address": ip_address,
            "user_agent": user_agent,
            "accept_language": accept_language,
            "geo_ip": self._geo.lookup(ip_address) if self._geo is not None and ip_address else None,
            "machine_engagement": machine,
            "injection_time": self._injection_time(payload.injection_time),
        }
        if is_click:
            fields["target_link_url"] = payload.target_url
            fields["target_link_name"] = payload.link_name or payload.target_url
        event = _EVENT_CLASSES[payload.kind](**fields)
        await self._journal.append(encode_event(event) + b"\n")

    def _injection_time(self, epoch: int) -> str:
        """The token's injection time as SparkPost's ISO string ("" when unknown); one message's hits share it."""
        if not epoch:
            return ""
        text = self._iso_cache.get(epoch)
        if text is None:
            if len(self._iso_cache) >= _ISO_CACHE:
                self._iso_cache.clear()
            text = self._iso_cache[epoch] = format_iso(epoch)
        return text

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


async def _respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
