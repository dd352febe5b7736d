"""SMTP AUTH: PBKDF2 password hashes and the aiosmtpd authenticator over [[smtp.users]]."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import AuthResult, LoginPassword

from engaged.config import SmtpUser

_ITERATIONS = 120_000
_TRACKED_ADDRESSES = 10_000  # client addresses whose recent AUTH failures are remembered
# Verifying an unknown user costs the same as a known one, so timing does not reveal names.
_DUMMY_HASH = "pbkdf2_sha256$120000$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


def hash_password(password: str, *, iterations: int = _ITERATIONS) -> str:
    """A `pbkdf2_sha256$iterations$salt$hash` string for [[smtp.users]] password_hash."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"pbkdf2_sha256${iterations}${_b64(salt)}${_b64(digest)}"


def verify_password(password: bytes, stored: str) -> bool:
    """Constant-time check of a password against a stored hash; False for a malformed hash."""
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != "pbkdf2_sha256":
            return False
        expected = _unb64(digest)
        actual = hashlib.pbkdf2_hmac("sha256", password, _unb64(salt), int(iterations))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


class UserAuthenticator:
    """aiosmtpd authenticator: PLAIN/LOGIN against the configured users.

    On success `auth_data` is the SmtpUser, so the handler can read its customer_id.
    """

    def __init__(self, users: list[SmtpUser], *, max_failures: int = 10, window: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._users = {user.name: user for user in users}
        self._max_failures = max_failures
        self._window = window
        self._clock = clock
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def _blocked(self, ip: str) -> bool:
        """Too many failed attempts from this address within the window (password guessing)."""
        now = self._clock()
        recent = [t for t in self._failures.get(ip, []) if now - t < self._window]
        if recent:
            self._failures[ip] = recent
        else:
            self._failures.pop(ip, None)
        return len(recent) >= self._max_failures

    def _failed(self, ip: str) -> None:
        self._failures.setdefault(ip, []).append(self._clock())
        self._failures.move_to_end(ip)
        while len(self._failures) > _TRACKED_ADDRESSES:
            self._failures.popitem(last=False)

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if mechanism not in ("PLAIN", "LOGIN") or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        peer = getattr(session, "peer", None)
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "")
        if self._blocked(ip):
            self._failed(ip)
            return AuthResult(success=False, handled=False)
        name = auth_data.login.decode("utf-8", "replace")
        user = self._users.get(name)
        ok = verify_password(auth_data.password, user.password_hash if user else _DUMMY_HASH)
        if user is None or not ok:
            self._failed(ip)
        policy = getattr(session, "policy", None)
        if policy is not None:
            policy.set_auth(name, "pass" if user is not None and ok else "fail", mechanism=mechanism)
        if user is None or not ok:
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=user)
