"""OAuth 2.0 client-credentials tokens for `auth_type = "oauth2"` webhooks, cached until they expire.

As SparkPost does: the token is requested from `auth_request_details.url` with its `body` (client id,
secret, grant type; sent form-encoded as RFC 6749 §4.4 asks), sent as `Authorization: Bearer …`,
kept until `expires_in` runs out (a minute early), and dropped when the target answers 400 or 401.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import msgspec

__all__ = ["TokenCache", "TokenError", "fetch_token"]

_EARLY = 60.0
"""Seconds before `expires_in` runs out that a token is renewed."""
_DEFAULT_LIFETIME = 3600.0


class TokenError(Exception):
    """The authorization server gave no usable token; the message says why (for last_error and the API)."""

    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class _Token(msgspec.Struct, frozen=True):
    access_token: str
    expires_in: float = _DEFAULT_LIFETIME


async def fetch_token(client: httpx.AsyncClient, details: dict[str, Any], timeout: float) -> tuple[str, float]:
    """(access_token, lifetime in seconds) from the authorization server in `details` (`url`, `body`)."""
    body = {str(key): str(value) for key, value in dict(details.get("body") or {}).items()}
    try:
        response = await client.post(str(details.get("url", "")), data=body, timeout=timeout,
                                     headers={"Accept": "application/json"})
    except httpx.HTTPError as error:
        raise TokenError(f"POST to webhook tokens URL failed: {type(error).__name__}: {error}") from error
    if not 200 <= response.status_code < 300:
        raise TokenError(f"POST to webhook tokens URL failed: HTTP {response.status_code}", response.status_code,
                         response.text[:1000])
    try:
        token = msgspec.json.decode(response.content, type=_Token)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise TokenError(f"webhook tokens URL answered without an access_token: {error}", response.status_code,
                         response.text[:1000]) from error
    return token.access_token, max(float(token.expires_in), 0.0)


class TokenCache:
    """One cached token per webhook, renewed when it is about to expire or after a 400/401."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[str, tuple[str, float, str]] = {}

    async def token(self, webhook_id: str, details: dict[str, Any], client: httpx.AsyncClient,
                    timeout: float) -> str:
        """The webhook's token, fetched when missing, expired or requested with other `details`."""
        key = msgspec.json.encode(details).decode()
        cached = self._tokens.get(webhook_id)
        if cached is not None and cached[2] == key and self._clock() < cached[1]:
            return cached[0]
        access_token, lifetime = await fetch_token(client, details, timeout)
        self._tokens[webhook_id] = (access_token, self._clock() + max(lifetime - _EARLY, 0.0), key)
        return access_token

    def invalidate(self, webhook_id: str) -> None:
        """Forget the token (the target refused it)."""
        self._tokens.pop(webhook_id, None)
