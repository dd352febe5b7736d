"""fdatasync completed on the event loop: Linux native AIO (no thread, no GIL hand-off), else a thread.

The journal syncs one batch at a time and answers its requests when the sync completes. On a thread,
each sync costs the GIL twice (the thread wakes for the job, then again to hand back the outcome):
measured with one tracker worker on one CPU (bench/tracker.py's case, loader paused), 0.64 context
switches and 22.7 us of CPU per click, a fifth of it in the scheduler. IOCB_CMD_FDSYNC (Linux 4.18)
runs the same fdatasync on a kernel worker and reports through an eventfd the loop already polls:
0.12 switches and 17-19 us per click. In bench/tracker.py, alternating with the thread (same run):
-c50 with one worker 27.0-28.7k clicks/s against 26.6-27.3k, with two 24.4k against 22.5-23.3k (p99
9.6 against 11.6-12.2 ms); -c1000 within noise. The price: that kernel worker runs on the CPU the
tracker keeps busy, so a sync takes longer to come back (p50 0.45 against 0.2 ms on one pinned CPU;
with the loader paused, p99 4.3 against 3.0 ms).

Both report the outcome as an errno (0: durable) to a callback on the loop. `open_datasync` picks
AIO where the kernel has it (x86_64 and aarch64 Linux; it also needs a free slot of fs.aio-max-nr)
and the thread otherwise. When io_submit refuses a sync (a seccomp filter, no resources) or a file
system refuses AIO sync (UNSUPPORTED at completion), the journal moves to a thread, which does that
sync again (engaged.tracker.journal).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import platform
import queue
import sys
import threading
from collections.abc import Callable
from typing import Final, Protocol

log = logging.getLogger("engaged")

Done = Callable[[int], None]
"""Called on the event loop with 0 once the data is durable, else the errno of the failure."""

UNSUPPORTED: Final = frozenset({errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS})
"""Errors that mean this file (its file system) cannot be synced through AIO, not that the sync failed."""

# (io_setup, io_destroy, io_getevents, io_submit) by machine; other machines use the thread.
_SYSCALLS: Final = {"x86_64": (206, 207, 208, 209), "aarch64": (0, 1, 4, 2)}
_IOCB_CMD_FDSYNC: Final = 3
_IOCB_FLAG_RESFD: Final = 1
_MAX_EVENTS: Final = 8


class DataSync(Protocol):
    """Syncs a file's data and reports the outcome on the loop; one call at a time per journal."""

    def submit(self, fd: int, done: Done) -> None:
        """Start fdatasync(fd); `done` runs on the loop. Raises OSError if it cannot even be started."""
        ...

    def close(self) -> None:
        """Release what the syncer holds; nothing may be in flight."""
        ...


class _IoCb(ctypes.Structure):
    """struct iocb (linux/aio_abi.h), little-endian layout."""

    _fields_ = [("aio_data", ctypes.c_uint64), ("aio_key", ctypes.c_uint32), ("aio_rw_flags", ctypes.c_int32),
                ("aio_lio_opcode", ctypes.c_uint16), ("aio_reqprio", ctypes.c_int16),
                ("aio_fildes", ctypes.c_uint32), ("aio_buf", ctypes.c_uint64), ("aio_nbytes", ctypes.c_uint64),
                ("aio_offset", ctypes.c_int64), ("aio_reserved2", ctypes.c_uint64), ("aio_flags", ctypes.c_uint32),
                ("aio_resfd", ctypes.c_uint32)]


class _IoEvent(ctypes.Structure):
    """struct io_event (linux/aio_abi.h)."""

    _fields_ = [("data", ctypes.c_uint64), ("obj", ctypes.c_uint64), ("res", ctypes.c_int64),
                ("res2", ctypes.c_int64)]


class AioDataSync:
    """IOCB_CMD_FDSYNC through io_submit; completions are read when the eventfd turns readable."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        """Raises OSError where Linux AIO is missing or its context limit (fs.aio-max-nr) is reached."""
        numbers = _SYSCALLS.get(platform.machine())
        if not sys.platform.startswith("linux") or numbers is None or sys.byteorder != "little":
            raise OSError(errno.ENOSYS, "Linux AIO is not available here")
        self._setup, self._destroy, self._getevents, self._submit = numbers
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long
        self._context = ctypes.c_ulong(0)
        if self._libc.syscall(self._setup, _MAX_EVENTS, ctypes.byref(self._context)) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"io_setup: {os.strerror(code)}")
        self._eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._iocb = _IoCb(aio_lio_opcode=_IOCB_CMD_FDSYNC, aio_flags=_IOCB_FLAG_RESFD, aio_resfd=self._eventfd)
        self._iocbs = (ctypes.POINTER(_IoCb) * 1)(ctypes.pointer(self._iocb))
        self._events = (_IoEvent * _MAX_EVENTS)()
        self._no_wait = (ctypes.c_long * 2)(0, 0)  # struct timespec {0, 0}: collect what has completed
        self._done: Done | None = None
        self._loop = loop
        loop.add_reader(self._eventfd, self._completed)

    def submit(self, fd: int, done: Done) -> None:
        if self._done is not None:
            raise RuntimeError("a sync is already in flight")
        self._iocb.aio_fildes = fd
        if self._libc.syscall(self._submit, self._context, 1, self._iocbs) != 1:
            code = ctypes.get_errno()
            raise OSError(code, f"io_submit: {os.strerror(code)}")
        self._done = done

    def _completed(self) -> None:
        try:
            os.eventfd_read(self._eventfd)
        except BlockingIOError:
            return
        count = self._libc.syscall(self._getevents, self._context, 0, _MAX_EVENTS, self._events, self._no_wait)
        if count <= 0 or self._done is None:
            return
        done, self._done = self._done, None
        result = self._events[0].res
        done(0 if result >= 0 else -result)

    def close(self) -> None:
        if self._eventfd < 0:
            return
        self._loop.remove_reader(self._eventfd)
        self._libc.syscall(self._destroy, self._context)  # waits for an operation still in flight
        os.close(self._eventfd)
        self._eventfd = -1


class ThreadDataSync:
    """os.fdatasync on a thread of its own; the outcome comes back with call_soon_threadsafe."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._jobs: queue.SimpleQueue[tuple[int, Done] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="journal-sync", daemon=True)
        self._thread.start()

    def submit(self, fd: int, done: Done) -> None:
        self._jobs.put((fd, done))

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fd, done = job
            try:
                os.fdatasync(fd)
                code = 0
            except OSError as error:
                code = error.errno or errno.EIO
            try:
                self._loop.call_soon_threadsafe(done, code)
            except RuntimeError:  # the loop closed under us: nobody waits for the outcome
                return

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()


def open_datasync(loop: asyncio.AbstractEventLoop, prefer_aio: bool = True) -> DataSync:
    """AioDataSync where the kernel offers it (and `prefer_aio`), else ThreadDataSync."""
    if prefer_aio:
        try:
            return AioDataSync(loop)
        except OSError as error:
            log.info("tracker journal: syncing on a thread (%s)", error.strerror or error)
    return ThreadDataSync(loop)
