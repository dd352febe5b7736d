"""What a forked child of the supervisor runs: one worker, or the node process.

A child starts with SIGTERM, SIGINT and SIGHUP blocked (the supervisor forks with them blocked),
installs its loop's handlers, then unblocks them: a stop signal that arrived while it was starting
is delivered then, and the child finishes starting, stops cleanly and exits 0. SIGHUP (forwarded
by the supervisor) makes a worker reload the tracker's TLS certificate. When it is ready it writes one
line to its ready pipe; the supervisor logs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import msgspec

from engaged.app import NodeApp, WorkerApp
from engaged.config import Config
from engaged.errors import ConfigError
from engaged.events.ids import EventIdGenerator
from engaged.server.gate import SharedCounts
from engaged.server.sockets import Reservation, bind

log = logging.getLogger("engaged")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
BLOCKED_SIGNALS = (*STOP_SIGNALS, signal.SIGHUP)  # blocked across fork until the child's loop handles them
EXIT_CONFIG = 2


class _Startable(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def _run(app: _Startable, ready: Callable[[], str], ready_fd: int,
               hangup: Callable[[], object] = lambda: None, failed: asyncio.Future[None] | None = None) -> None:
    """Start `app`, say it is ready, serve until a stop signal (or until `failed` holds an error: stop, raise it)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hangup)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, BLOCKED_SIGNALS)
    starting = loop.create_task(app.start())
    stopping = loop.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    try:
        await starting  # a stop signal during start: finish starting, then stop (nothing half-open)
    except BaseException:
        stopping.cancel()
        with contextlib.suppress(Exception):
            await app.stop()
        raise
    if not stop.is_set():
        with contextlib.suppress(OSError):
            os.write(ready_fd, ready().encode() + b"\n")
        waits: set[asyncio.Future[Any]] = {stopping} if failed is None else {stopping, failed}
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    log.info("shutting down")
    await app.stop()
    if failed is not None and failed.done():
        failed.result()


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent (the supervisor) dies, as a crash would."""
    name = ctypes.util.find_library("c")
    if name is not None:
        libc = ctypes.CDLL(name, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(1)


def _exit_code(main: Callable[[], Coroutine[Any, Any, None]]) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(main())
    except ConfigError as error:
        for line in error.problems:
            sys.stderr.write(line + "\n")
        return EXIT_CONFIG
    except (SystemExit, KeyboardInterrupt):
        return 1
    except BaseException:
        log.exception("failed")
        return 1
    return 0


def run_worker(config: Config, index: int, reservation: Reservation, id_node: int, ready_fd: int,
               counts: SharedCounts) -> int:
    """Worker `index`: binds its own sockets on the reserved endpoints, serves until SIGTERM; the exit code."""

    async def main() -> None:
        smtp = {listen: [bind(endpoint) for endpoint in endpoints] for listen, endpoints in reservation.smtp.items()}
        tracker = [bind(endpoint) for endpoint in reservation.tracker] if reservation.tracker else None
        smtp_config = config.smtp
        gate = counts.gate(index, smtp_config.max_connections, smtp_config.max_connections_per_ip,
                           reserved=smtp_config.reserved_connections, max_idle_per_ip=smtp_config.max_idle_per_ip)
        app = WorkerApp(config, index=index, ids=EventIdGenerator(id_node), smtp_sockets=smtp,
                        tracker_sockets=tracker, smtp_gate=gate)
        await _run(app, lambda: f"ready {app.resumed}", ready_fd, hangup=app.reload_tls)

    return _exit_code(main)


def run_node(config: Config, ready_fd: int, id_node: int) -> int:
    """The node process (API, dashboard, webhooks, inbound, journal loader) until SIGTERM; the exit code.

    Its ready line carries its listeners for the supervisor to log: `ready {"api": …, "inbound": […]}`.
    """

    async def main() -> None:
        app = NodeApp(config, ids=EventIdGenerator(id_node))

        def ready() -> str:
            listeners = {"api": app.api_address, "inbound": app.inbound.addresses if app.inbound else []}
            return "ready " + msgspec.json.encode(listeners).decode()

        await _run(app, ready, ready_fd, failed=app.failed)

    return _exit_code(main)
