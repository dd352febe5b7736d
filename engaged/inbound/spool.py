"""Inbound mail on disk: made durable before its 250, removed once processed, or kept when unmatched."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import msgspec

_MAGIC = b"engaged-inbound 1\n"


class InboundEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """Who sent an inbound message and to which of our addresses."""

    id: str
    received_at: float
    peer: str
    helo: str
    mail_from: str
    rcpt_tos: list[str]


class InboundItem(msgspec.Struct, frozen=True):
    path: Path
    envelope: InboundEnvelope
    content: bytes


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class InboundSpool:
    """`data_dir/inbound/`: `new/` holds accepted, unprocessed mail; `unmatched/` what matched nothing."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.new = root / "new"
        self.unmatched = root / "unmatched"
        self._tmp = root / "tmp"

    def open(self) -> None:
        for directory in (self.new, self.unmatched, self._tmp):
            directory.mkdir(parents=True, exist_ok=True)

    def store(self, *, peer: str, helo: str, mail_from: str, rcpt_tos: list[str], content: bytes) -> InboundItem:
        """Write, fsync, rename into new/, fsync the directory; only then may the 250 go out (blocking)."""
        now = time.time()
        envelope = InboundEnvelope(id=f"{int(now * 1000):013d}-{secrets.token_hex(6)}", received_at=now, peer=peer,
                                   helo=helo, mail_from=mail_from, rcpt_tos=rcpt_tos)
        tmp = self._tmp / f"{envelope.id}.eml"
        with open(tmp, "wb") as handle:
            handle.write(_MAGIC + msgspec.json.encode(envelope) + b"\n" + content)
            handle.flush()
            os.fsync(handle.fileno())
        final = self.new / tmp.name
        os.replace(tmp, final)
        _fsync_dir(self.new)
        return InboundItem(final, envelope, content)

    def pending(self) -> list[Path]:
        """Everything accepted but not processed yet (after a restart), oldest first."""
        return sorted(self.new.glob("*.eml"))

    def read(self, path: Path) -> InboundItem | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if not data.startswith(_MAGIC):
            return None
        header, _, content = data[len(_MAGIC):].partition(b"\n")
        try:
            envelope = msgspec.json.decode(header, type=InboundEnvelope)
        except msgspec.DecodeError:
            return None
        return InboundItem(path, envelope, content)

    def done(self, item: InboundItem) -> None:
        item.path.unlink(missing_ok=True)

    def keep_unmatched(self, item: InboundItem, reason: str) -> Path:
        """Move the message into unmatched/ (with its reason beside it); it is never dropped."""
        target = self.unmatched / item.path.name
        (self.unmatched / f"{item.path.stem}.reason").write_text(reason + "\n")
        os.replace(item.path, target)
        _fsync_dir(self.unmatched)
        return target

    def unmatched_count(self) -> int:
        return _count_eml(self.unmatched)

    def pending_count(self) -> int:
        return _count_eml(self.new)


def _count_eml(directory: Path) -> int:
    try:
        with os.scandir(directory) as entries:
            return sum(1 for entry in entries if entry.name.endswith(".eml"))
    except FileNotFoundError:
        return 0
