"""SMTP AUTH: PBKDF2 password hashes and the authenticator over [[smtp.users]], hashing off the event loop."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from engaged.config import SmtpUser

_ITERATIONS = 120_000
_TRACKED_KEYS = 10_000  # client addresses (and address/user pairs) whose recent AUTH failures are remembered
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


class _Failures:
    """Recent failure times per key within a sliding window, for at most _TRACKED_KEYS keys."""

    def __init__(self, window: float, clock: Callable[[], float]) -> None:
        self._window = window
        self._clock = clock
        self._times: OrderedDict[str, list[float]] = OrderedDict()

    def count(self, key: str) -> int:
        now = self._clock()
        recent = [t for t in self._times.get(key, []) if now - t < self._window]
        if recent:
            self._times[key] = recent
        else:
            self._times.pop(key, None)
        return len(recent)

    def add(self, key: str) -> None:
        self._times.setdefault(key, []).append(self._clock())
        self._times.move_to_end(key)
        while len(self._times) > _TRACKED_KEYS:
            self._times.popitem(last=False)


class UserAuthenticator:
    """PLAIN/LOGIN credentials against the configured users, with lockouts per address and per user.

    A client address is locked out after `max_failures` failed attempts within `window` seconds,
    and one user name from one address after `max_user_failures` (so a guesser on 127.0.0.1 does not
    lock out every other local application's account). Locked-out attempts cost no hashing.
    Hashes run on `concurrency` threads (hashlib releases the GIL), never on the event loop.
    """

    def __init__(self, users: list[SmtpUser], *, max_failures: int = 10, max_user_failures: int = 5,
                 window: float = 300.0, concurrency: int = 2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._users = {user.name: user for user in users}
        self._max_failures = max_failures
        self._max_user_failures = max_user_failures
        self._failures = _Failures(window, clock)
        self._concurrency = concurrency
        self._pool: ThreadPoolExecutor | None = None
        self._slots: asyncio.Semaphore | None = None

    def locked_out(self, ip: str, name: str) -> bool:
        """Too many recent failures from this address, or for this user from this address."""
        return (self._failures.count(ip) >= self._max_failures
                or self._failures.count(f"{ip}\x00{name}") >= self._max_user_failures)

    def check(self, ip: str, login: bytes, password: bytes) -> SmtpUser | None:
        """The user for these credentials, or None (wrong, unknown or locked out); hashes in this thread."""
        name = login.decode("utf-8", "replace")
        if self.locked_out(ip, name):
            self._failed(ip, name)
            return None
        return self._settle(ip, name, self._verify(name, password))

    async def authenticate(self, ip: str, login: bytes, password: bytes) -> SmtpUser | None:
        """`check`, with the hash on a bounded thread pool so other sessions keep being served."""
        name = login.decode("utf-8", "replace")
        if self.locked_out(ip, name):
            self._failed(ip, name)
            return None
        if self._pool is None or self._slots is None:
            self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="smtp-auth")
            self._slots = asyncio.Semaphore(self._concurrency * 4)
        async with self._slots:
            user = await asyncio.get_running_loop().run_in_executor(self._pool, self._verify, name, password)
        return self._settle(ip, name, user)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _verify(self, name: str, password: bytes) -> SmtpUser | None:
        user = self._users.get(name)
        ok = verify_password(password, user.password_hash if user else _DUMMY_HASH)
        return user if ok else None

    def _settle(self, ip: str, name: str, user: SmtpUser | None) -> SmtpUser | None:
        if user is None:
            self._failed(ip, name)
        return user

    def _failed(self, ip: str, name: str) -> None:
        self._failures.add(ip)
        self._failures.add(f"{ip}\x00{name}")
