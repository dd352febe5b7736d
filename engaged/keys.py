"""The link-signing keyring: secret keys kept in `<data_dir>/keys/`, created on first use and rotated."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import msgspec

from engaged.errors import EngagedError

KEY_BYTES = 32
MIN_KEY_ID = 1
MAX_KEY_ID = 255
KEYS_DIR = "keys"
KEYS_FILE = "keys.json"
_LOCK_FILE = ".lock"
_FILE_VERSION = 1


class KeyringError(EngagedError):
    """The keyring could not be read, written or extended."""


@dataclass(frozen=True, slots=True, repr=False)
class Keyring:
    """Every key that still verifies, by id; new tokens are signed with `current_id`.

    The repr names the key ids only, so a keyring in a log line or traceback leaks no secret.
    """

    current_id: int
    keys: Mapping[int, bytes]

    def __post_init__(self) -> None:
        for key_id, secret in self.keys.items():
            if not MIN_KEY_ID <= key_id <= MAX_KEY_ID:
                raise ValueError(f"key id {key_id} is outside {MIN_KEY_ID}..{MAX_KEY_ID}")
            if len(secret) != KEY_BYTES:
                raise ValueError(f"key {key_id} has {len(secret)} bytes, not {KEY_BYTES}")
        if self.current_id not in self.keys:
            raise ValueError(f"current key id {self.current_id} is not in the keyring")
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))

    def __repr__(self) -> str:
        return f"Keyring(current_id={self.current_id}, key_ids={sorted(self.keys)})"

    def key(self, key_id: int) -> bytes | None:
        """The secret for `key_id`, or None when this keyring does not hold it."""
        return self.keys.get(key_id)


class _KeyFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`keys.json`: {"version": 1, "current": id, "keys": {"id": base64 secret}}."""

    version: int
    current: int
    keys: dict[int, bytes]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_KeyFile)


def load_keyring(data_dir: Path) -> Keyring:
    """The keyring under `data_dir`, created with one fresh key when there is none yet.

    Concurrent first starts agree on one key: creation happens under an exclusive lock, and a
    process that finds the file already written reads it instead of writing its own.
    """
    path = data_dir / KEYS_DIR / KEYS_FILE
    with contextlib.suppress(FileNotFoundError):
        return _read(path)
    with _locked(data_dir / KEYS_DIR) as keys_dir:
        if path.exists():
            return _read(path)
        keyring = Keyring(current_id=MIN_KEY_ID, keys={MIN_KEY_ID: secrets.token_bytes(KEY_BYTES)})
        _write(keys_dir, keyring)
        return keyring


def rotate_key(data_dir: Path) -> int:
    """Add a fresh key and make it current; returns its id. Older keys keep verifying.

    Raises KeyringError when all ids up to 255 are taken.
    """
    with _locked(data_dir / KEYS_DIR) as keys_dir:
        path = keys_dir / KEYS_FILE
        keys: dict[int, bytes] = dict(_read(path).keys) if path.exists() else {}
        new_id = max(keys, default=MIN_KEY_ID - 1) + 1
        if new_id > MAX_KEY_ID:
            raise KeyringError(f"{path}: keyring is full ({MAX_KEY_ID} keys); retire old keys before rotating again")
        keys[new_id] = secrets.token_bytes(KEY_BYTES)
        _write(keys_dir, Keyring(current_id=new_id, keys=keys))
        return new_id


def _read(path: Path) -> Keyring:
    data = path.read_bytes()
    try:
        record = _decoder.decode(data)
        if record.version != _FILE_VERSION:
            raise ValueError(f"unsupported version {record.version}")
        return Keyring(current_id=record.current, keys=record.keys)
    except (msgspec.DecodeError, ValueError) as exc:
        raise KeyringError(f"{path}: invalid keyring: {exc}") from exc


def _write(keys_dir: Path, keyring: Keyring) -> None:
    """Replace keys.json atomically: temporary file, fsync, rename, fsync of the directory."""
    record = _KeyFile(version=_FILE_VERSION, current=keyring.current_id, keys=dict(keyring.keys))
    data = _encoder.encode(record)
    tmp = keys_dir / f".{KEYS_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, keys_dir / KEYS_FILE)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(keys_dir)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(keys_dir: Path) -> Iterator[Path]:
    """Create `keys_dir` (mode 0700) and hold its exclusive lock for the block."""
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    fd = os.open(keys_dir / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield keys_dir
    finally:
        os.close(fd)


class LiveKeyring:
    """The keyring as it is on disk now, so `engaged keys rotate` takes effect without a restart.

    Senders sign with the newest current key; verifiers that meet an unknown key id (a link signed
    by another process after a rotation) re-read the file at once. The file's mtime is checked at
    most every `recheck` seconds, so the hot path costs one clock read.
    """

    def __init__(self, data_dir: Path, *, recheck: float = 1.0) -> None:
        self._path = data_dir / KEYS_DIR / KEYS_FILE
        self._recheck = recheck
        self._keyring = load_keyring(data_dir)
        self._mtime = self._stat()
        self._checked = time.monotonic()
        self._forced = 0.0

    def _stat(self) -> float:
        try:
            return self._path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def _refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self._recheck:
            return
        if force and now - self._forced < 0.1:
            return  # forged key ids must not turn into a file read per request
        self._checked = now
        if force:
            self._forced = now
        mtime = self._stat()
        if mtime != self._mtime:
            with contextlib.suppress(OSError, KeyringError, ValueError):
                self._keyring = _read(self._path)
                self._mtime = mtime

    @property
    def current(self) -> Keyring:
        """The keyring as last read."""
        self._refresh()
        return self._keyring

    @property
    def current_id(self) -> int:
        return self.current.current_id

    def key(self, key_id: int) -> bytes | None:
        secret = self.current.key(key_id)
        if secret is None:
            self._refresh(force=True)
            secret = self._keyring.key(key_id)
        return secret
