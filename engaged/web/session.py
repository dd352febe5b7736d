"""Dashboard access: API keys to signed session cookies, double-submit CSRF tokens, and the loopback rule."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Sequence
from enum import Enum
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from engaged.api.auth import authorize, is_loopback

SESSION_COOKIE = "engaged_session"
CSRF_COOKIE = "engaged_csrf"
SESSION_SECONDS = 12 * 3600
_CONTEXT = b"engaged-dashboard-session\x00"


class Access(Enum):
    """What the access rule says about one request."""

    ALLOWED = "allowed"
    LOGIN = "login"  # keys are configured and the request carries neither a session nor a key
    FORBIDDEN = "forbidden"  # no keys are configured and the client is not on loopback


def _mac(key: bytes, payload: str) -> str:
    digest = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class SessionKeys:
    """Signs and checks session tokens with the configured API keys themselves.

    A token is `expiry.nonce.mac`, the MAC keyed by SHA-256 of a fixed context and one API key: the
    cookie never holds the key, a restart keeps sessions, and removing a key from the configuration
    ends every session it opened. Tokens expire after `lifetime` seconds.
    """

    def __init__(self, keys: Sequence[str], *, lifetime: float = SESSION_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self._keys = tuple(keys)
        self._secrets = tuple(hashlib.sha256(_CONTEXT + key.encode("utf-8", "surrogateescape")).digest()
                              for key in self._keys)
        self._lifetime = lifetime
        self._clock = clock

    @property
    def required(self) -> bool:
        """True when keys are configured, so the dashboard needs a login."""
        return bool(self._keys)

    def match(self, offered: str) -> int | None:
        """The index of the key `offered` equals, compared in constant time over every key; else None."""
        found: int | None = None
        offered_digest = hashlib.sha256(offered.strip().encode("utf-8", "surrogateescape")).digest()
        for index, key in enumerate(self._keys):
            if hmac.compare_digest(offered_digest, hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()):
                found = index
        return found

    def issue(self, key_index: int) -> str:
        """A new session token signed with key number `key_index`."""
        payload = f"{int(self._clock() + self._lifetime)}.{secrets.token_urlsafe(12)}"
        return f"{payload}.{_mac(self._secrets[key_index], payload)}"

    def verify(self, token: str | None) -> bool:
        """True for an unexpired token signed with one of the configured keys."""
        if not token or token.count(".") != 2:
            return False
        expiry, nonce, mac = token.split(".")
        if not expiry.isdigit() or int(expiry) <= self._clock():
            return False
        payload = f"{expiry}.{nonce}"
        matched = False
        for secret in self._secrets:
            matched |= hmac.compare_digest(mac.encode(), _mac(secret, payload).encode())
        return matched

    def access(self, request: Request) -> Access:
        """The API's rule, with a valid session cookie counting as a key."""
        client = request.client.host if request.client else None
        if not self._keys:
            return Access.ALLOWED if is_loopback(client) else Access.FORBIDDEN
        if self.verify(request.cookies.get(SESSION_COOKIE)):
            return Access.ALLOWED
        header = request.headers.get("authorization")
        if header and authorize(self._keys, header, client) is None:
            return Access.ALLOWED
        return Access.LOGIN


def is_https(request: Request) -> bool:
    """True when the request came over https (directly, or through a trusted proxy uvicorn believes)."""
    return request.url.scheme == "https"


def set_session(response: Response, request: Request, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_SECONDS, path="/", secure=is_https(request),
                        httponly=True, samesite="strict")


def clear_session(response: Response, request: Request) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", secure=is_https(request), httponly=True, samesite="strict")


def csrf_token(request: Request) -> tuple[str, bool]:
    """The browser's CSRF token (from its cookie) and False, or a new one and True (then set it with set_csrf)."""
    current = request.cookies.get(CSRF_COOKIE, "")
    if 32 <= len(current) <= 64 and current.replace("-", "").replace("_", "").isalnum():
        return current, False
    return secrets.token_urlsafe(32), True


def set_csrf(response: Response, request: Request, token: str) -> None:
    response.set_cookie(CSRF_COOKIE, token, path="/", secure=is_https(request), httponly=True, samesite="strict")


def is_same_origin_post(request: Request, submitted: str) -> bool:
    """A form post is ours: the submitted token equals the cookie's, and no header says it came from elsewhere."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), submitted.encode()):
        return False
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host", "")


def safe_next(value: str | None) -> str:
    """A local path to return to after login; anything else (another site, a scheme) becomes "/"."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value
