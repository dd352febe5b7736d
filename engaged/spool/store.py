"""File spool: write, fsync, rename, fsync the directory (group-committed) before SMTP answers 250."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec

from engaged.errors import NO_SPACE, SpoolError, SpoolFull
from engaged.spool.record import RecipientDone, SpoolRecord, StateLine, decode_record
from engaged.spool.sync import Durability

log = logging.getLogger("engaged.spool")

_MAGIC = b"ENGAGED-SPOOL 1\n"
# Writes, reads, appends and removals of files up to this size go straight to the page cache from the
# event loop (tens of microseconds); a hand-off to a thread and back costs more than that under the GIL.
# Larger files, and every fsync, run on threads.
INLINE_IO_BYTES = 1 << 20
_FREE_FILES = 1024  # finished spool files kept for reuse
ACCEPTED_BODY_BYTES = 32 << 20
"""Bodies of messages just made durable, kept in memory (each up to INLINE_IO_BYTES, this much in all)
for their first delivery pass, which then reads no file. The stat and read of a file that the spool's
own syncs keep busy were 9 % of a worker's py-spy samples (bench/injection.py, 20 KB tracked); holding
the body cut the worker's user CPU from 1,068-1,140 to 1,047-1,070 us a message (msg/s within noise)."""
_record_encoder = msgspec.json.Encoder()
_state_decoder: msgspec.json.Decoder[StateLine] = msgspec.json.Decoder(StateLine)


class SpoolEntry(msgspec.Struct, frozen=True):
    """A spooled message found at startup: its record and what its state log says."""

    record: SpoolRecord
    state: list[StateLine]


class FileSpool:
    """Messages as `<dir>/<message_id>.msg` (record + bytes) with `<message_id>.log` (state lines).

    A `.msg` file is written under tmp/ and renamed into place, and `store` returns only after the
    Durability policy made it durable. Its record carries the body length and CRC-32, so a file that
    a crash left incomplete (never answered 250) is detected and quarantined at startup instead of
    being delivered.
    """

    def __init__(self, directory: Path, *, durability: Durability | None = None) -> None:
        self.directory = directory
        self._tmp = directory / "tmp"
        self._quarantine = directory / "quarantine"
        self._durability = durability or Durability("fsync", directory)
        # The accept path (write, rename, sync) has threads of its own so that delivery-side work
        # (state lines, removals, reads) never queues in front of a 250.
        self._accept = ThreadPoolExecutor(max_workers=8, thread_name_prefix="spool-accept")
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="spool")
        self._free_dir = directory / "free"
        # The per-message paths are joined as strings: six pathlib joins a message were 3 % of a worker's
        # py-spy --gil samples (bench/injection.py, 20 KB tracked).
        self._prefix = os.path.join(directory, "")
        self._tmp_prefix = os.path.join(self._tmp, "")
        self._free_prefix = os.path.join(self._free_dir, "")
        self._free: list[str] = []
        self._free_serial = 0
        self._accepted: dict[str, bytes] = {}  # message_id -> body, see ACCEPTED_BODY_BYTES
        self._accepted_bytes = 0

    def open(self) -> None:
        for path in (self.directory, self._tmp, self._quarantine, self._free_dir):
            path.mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp.iterdir():
            leftover.unlink(missing_ok=True)
        self._free = sorted(path.name for path in self._free_dir.iterdir())

    async def store(self, record: SpoolRecord, body: bytes) -> SpoolRecord:
        """Make the message durable and return the record as stored (with the body's length and CRC).

        Raises SpoolError if the message is not durable (the caller answers 451).
        """
        loop = asyncio.get_running_loop()
        recycled = self._free.pop() if self._free else None
        try:
            if len(body) <= INLINE_IO_BYTES and not self._durability.fsync_files:
                record = self._write(record, body, recycled)
            else:  # the checksum too: over 30 MB it keeps the loop's thread busy ~20 ms
                record = await loop.run_in_executor(self._accept, self._write, record, body, recycled)
            await self._durability.commit(self.directory)
        except OSError as error:
            if error.errno in NO_SPACE:
                raise SpoolFull(f"spool write failed: {error}") from error
            raise SpoolError(f"spool write failed: {error}") from error
        if len(body) <= INLINE_IO_BYTES and self._accepted_bytes + len(body) <= ACCEPTED_BODY_BYTES:
            self._accepted[record.message_id] = body
            self._accepted_bytes += len(body)
        return record

    @property
    def accepted_bytes(self) -> int:
        """Octets of accepted bodies held in memory for their first delivery pass."""
        return self._accepted_bytes

    def _forget_accepted(self, message_id: str) -> bytes | None:
        body = self._accepted.pop(message_id, None)
        if body is not None:
            self._accepted_bytes -= len(body)
        return body

    def _write(self, record: SpoolRecord, body: bytes, recycled: str | None = None) -> SpoolRecord:
        """Write the spool file (with the body's length and checksum in its record); the record as written."""
        record = msgspec.structs.replace(record, body_length=len(body), body_crc32=zlib.crc32(body))
        header = _record_encoder.encode(record)
        tmp = f"{self._tmp_prefix}{record.message_id}.msg"
        final = f"{self._prefix}{record.message_id}.msg"
        if recycled is not None:
            # Reusing a finished message's inode: creating and deleting a file per message makes ext4
            # scan for inodes that were not recently deleted, which cost more than all other work here.
            with contextlib.suppress(FileNotFoundError):
                os.rename(self._free_prefix + recycled, tmp)
        # No O_TRUNC: the recycled file is overwritten in place and cut to its new length. Truncating it to
        # zero first frees its blocks, and ext4 (auto_da_alloc) then starts writeback at close: ~500 us
        # against ~30 us here. After a power loss the file may still hold the old message; `scan` knows it
        # by the id in its record, which is not the file's name.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            prefix = b"".join((_MAGIC, b"%d\n" % len(header), header, b"\n"))
            _write_all(fd, prefix, body)  # not joined: a copy of a large body would hold the GIL for its length
            if recycled is not None:
                os.ftruncate(fd, len(prefix) + len(body))
            if self._durability.fsync_files:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
        return record

    async def append_state(self, message_id: str, line: StateLine) -> None:
        """Append one state line to the message's log.

        Not fsync'd: the line survives a process crash (it is in the page cache); after a power
        loss a recipient may be delivered again, which at-least-once delivery allows.
        """
        data = msgspec.json.encode(line) + b"\n"
        try:
            self._append(message_id, data)
        except OSError as error:
            raise SpoolError(f"spool state write failed: {error}") from error

    def _append(self, message_id: str, data: bytes) -> None:
        fd = os.open(f"{self._prefix}{message_id}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    async def finish(self, message_id: str) -> None:
        """Remove a message whose recipients are all finished."""
        self._remove(message_id)

    def _remove(self, message_id: str) -> None:
        self._forget_accepted(message_id)
        path = f"{self._prefix}{message_id}.msg"
        if len(self._free) < _FREE_FILES:
            self._free_serial += 1
            name = f"{os.getpid()}-{self._free_serial}"
            try:
                os.rename(path, self._free_prefix + name)
                self._free.append(name)
            except FileNotFoundError:
                pass
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self._prefix}{message_id}.log")

    async def load_body(self, message_id: str) -> bytes:
        """The message bytes exactly as accepted (held from `store` for the first call, else read back)."""
        held = self._forget_accepted(message_id)
        if held is not None:
            return held
        loop = asyncio.get_running_loop()
        path = self.directory / f"{message_id}.msg"
        if path.stat().st_size <= INLINE_IO_BYTES:
            return self._read(path)[1]
        _, body = await loop.run_in_executor(self._executor, self._read, path)
        return body

    def _read(self, path: Path) -> tuple[SpoolRecord, bytes]:
        data = path.read_bytes()
        if not data.startswith(_MAGIC):
            raise SpoolError(f"{path.name}: not a spool file")
        length_end = data.index(b"\n", len(_MAGIC))
        length = int(data[len(_MAGIC) : length_end])
        header_start = length_end + 1
        try:
            record = decode_record(data[header_start : header_start + length])
        except ValueError as error:  # msgspec.DecodeError is a ValueError too
            raise SpoolError(f"{path.name}: {error}") from error
        body = data[header_start + length + 1 :]
        if len(body) != record.body_length or zlib.crc32(body) != record.body_crc32:
            raise SpoolError(f"{path.name}: body length or checksum mismatch")
        return record, body

    def scan(self) -> Iterator[SpoolEntry]:
        """Every complete spooled message, oldest first; damaged files are moved to quarantine/."""
        paths = sorted(self.directory.glob("*.msg"), key=lambda p: p.stat().st_mtime)
        for path in paths:
            try:
                record, _ = self._read(path)
                if record.message_id != path.stem:
                    # a recycled file whose new content never reached the disk (no 250 was sent for it)
                    raise SpoolError(f"{path.name}: holds message {record.message_id}, a finished one")
            except (SpoolError, ValueError, msgspec.DecodeError, OSError) as error:
                log.error("quarantining damaged spool file %s: %s", path.name, error)
                os.replace(path, self._quarantine / path.name)
                log_path = path.with_suffix(".log")
                if log_path.exists():
                    os.replace(log_path, self._quarantine / log_path.name)
                continue
            yield SpoolEntry(record, self._read_state(path.with_suffix(".log")))

    def _read_state(self, path: Path) -> list[StateLine]:
        if not path.exists():
            return []
        lines: list[StateLine] = []
        for raw in path.read_bytes().split(b"\n"):
            if not raw.strip():
                continue
            try:
                lines.append(_state_decoder.decode(raw))
            except msgspec.DecodeError:
                log.warning("%s: ignoring a torn state line", path.name)
        return lines

    def depth(self) -> int:
        """How many messages are in the spool."""
        return sum(1 for _ in self.directory.glob("*.msg"))

    def close(self) -> None:
        for executor in (self._accept, self._executor):
            executor.shutdown(wait=True)


def finished_recipients(state: list[StateLine]) -> set[int]:
    """Indexes of recipients that a state log marks done."""
    return {line.rcpt for line in state if isinstance(line, RecipientDone)}


def _write_all(fd: int, *parts: bytes) -> None:
    """Write every part at the file's offset, in order, whatever the kernel takes per call."""
    views = [memoryview(part) for part in parts if part]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
