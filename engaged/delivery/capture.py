"""Capture transport (the embedded default): each copy as <data_dir>/captured/<message_id>.<n>.eml + .json."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec

from engaged.delivery.outcome import Deferred, Delivered, OutboundMessage, Outcome
from engaged.spool.store import INLINE_IO_BYTES
from engaged.spool.sync import Durability

INLINE_BUDGET = 0.001
"""Seconds a copy written on the event loop may take. Two file creations a copy are tens of microseconds,
but an ext4 without a journal, after many deletions, spent up to 1.2 ms on each (see bench/_harness.py),
and a network filesystem can take longer: after a slower write, copies go to the threads for THREADED_FOR."""
THREADED_FOR = 10.0


class CaptureSidecar(msgspec.Struct, frozen=True):
    """The JSON written beside each captured copy (interface.md §4)."""

    message_id: str
    mail_from: str
    rcpt_to: str
    timestamp: str


class CaptureTransport:
    """Writes exactly the bytes relay or MX delivery would send after DATA, fsync'd, then renamed in."""

    def __init__(self, directory: Path, *, durability: Durability | None = None) -> None:
        self.directory = directory
        self._prefix = os.path.join(directory, "")  # the copies' paths as strings: pathlib costs a few us each
        self._durability = durability or Durability("fsync", directory)
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="capture")
        self._inline_from = 0.0  # monotonic time from which small copies are written on the event loop again
        directory.mkdir(parents=True, exist_ok=True)

    async def deliver(self, message: OutboundMessage) -> Outcome:
        loop = asyncio.get_running_loop()
        try:
            began = time.monotonic()
            if (len(message.data) <= INLINE_IO_BYTES and not self._durability.fsync_files
                    and began >= self._inline_from):
                # Straight to the page cache, as the spool writes: the hand-off to a thread and back cost
                # 45-60 us of CPU a copy (244-280 against 193-232 us, 20 concurrent 21 KB copies, syncfs).
                self._write(message)
                if time.monotonic() - began > INLINE_BUDGET:  # a slow disk: other sessions must not wait on it
                    self._inline_from = time.monotonic() + THREADED_FOR
            else:
                await loop.run_in_executor(self._executor, self._write, message)
            await self._durability.commit(self.directory)
        except OSError as error:
            return Deferred(error_code="451", reason=f"4.3.0 capture write failed: {error.strerror}")
        return Delivered(delv_method="capture", ip_address="127.0.0.1", response="250 captured")

    def _write(self, message: OutboundMessage) -> None:
        stem = f"{message.message_id}.{message.rcpt_index}"
        sidecar = CaptureSidecar(
            message_id=message.message_id,
            mail_from=message.mail_from,
            rcpt_to=message.rcpt_to,
            timestamp=f"{time.time():.3f}",
        )
        self._atomic_write(f"{stem}.json", msgspec.json.encode(sidecar) + b"\n")
        self._atomic_write(f"{stem}.eml", message.data)

    def _atomic_write(self, name: str, data: bytes) -> None:
        """Write `name` in the directory through a hidden temporary file, renamed in once complete."""
        path, tmp = self._prefix + name, f"{self._prefix}.{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if self._durability.fsync_files:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
