"""API access control: `Authorization: <key>` (or `Bearer <key>`) for [api] keys; loopback only when none are set."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from engaged.api.params import error_body

__all__ = ["AuthMiddleware", "authorize", "is_loopback"]


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and their IPv4-mapped forms; False for anything else or no address."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


def authorize(keys: Sequence[str], authorization: str | None, client_host: str | None) -> int | None:
    """None when the request may proceed, else the HTTP status to refuse it with (401 or 403).

    With keys configured, the header must carry one of them (compared in constant time, over every
    key); without keys, only loopback clients are answered.
    """
    if not keys:
        return None if is_loopback(client_host) else 403
    if not authorization:
        return 401
    token = authorization.strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    elif token[:6].lower() == "basic ":  # SparkPost's alternative: the key as user name, an empty password
        try:
            token = base64.b64decode(token[6:].strip(), validate=True).decode("utf-8").rpartition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return 401
    offered = _digest(token)
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(offered, _digest(key))
    return None if matched else 401


_DESCRIPTIONS = {401: "the Authorization header must carry one of the [api] keys",
                 403: "no [api] keys are configured, so only loopback clients are served"}


class AuthMiddleware:
    """Applies `authorize` to every HTTP request on the API listener (the API, the stream and /metrics)."""

    def __init__(self, app: ASGIApp, keys: Sequence[str]) -> None:
        self._app = app
        self._keys = tuple(keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        header = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"authorization"), None)
        client = scope.get("client")
        status = authorize(self._keys, header, client[0] if client else None)
        if status is None:
            await self._app(scope, receive, send)
            return
        body = error_body(status, _DESCRIPTIONS[status])
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="engaged"'))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
