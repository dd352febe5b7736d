"""The supervisor of `engaged serve`: forks the node process and the workers, watches, restarts, drains.

It serves nothing itself. Startup: lock data_dir, reserve the listening ports, prepare the shards,
fork the node process (it opens the store first, so schema creation never races), then the
workers. It logs `ready` once every child said it is ready; a child that fails before that stops
the whole start (exit code of that child). Afterwards a child that dies is forked again after a
backoff (0.5 s doubling to 30 s; reset once it has run a minute), and its worker resumes its shard.
SIGTERM or SIGINT, even during startup, is forwarded to every child; the supervisor exits 0 when
they have all drained and exited. SIGHUP is forwarded to the workers (tracker TLS reload).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import selectors
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Literal

import msgspec

from engaged.config import Config
from engaged.server import processes, shards
from engaged.server.gate import SharedCounts
from engaged.server.sockets import Reservation, reserve

log = logging.getLogger("engaged")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
HEALTHY_SECONDS = 60.0
LOCK_WAIT_SECONDS = 10.0
_ID_NODES = 1 << 10
_LOCK_FILE = ".serve.lock"


class _NodeListeners(msgspec.Struct, frozen=True):
    """What the node process listens on, from its ready line."""

    api: str = ""
    inbound: list[tuple[str, str]] = []


@dataclass
class Child:
    """One supervised process: the node (`index` -1) or worker `index`."""

    kind: Literal["node", "worker"]
    index: int
    pid: int = 0
    ready_fd: int = -1
    ready: bool = False
    started: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    buffer: bytes = b""

    @property
    def name(self) -> str:
        return "node" if self.kind == "node" else f"worker {self.index}"


class Supervisor:
    """Runs `workers` workers and one node process until SIGTERM/SIGINT (see the module docstring)."""

    def __init__(self, config: Config, workers: int) -> None:
        self.config = config
        self.workers = workers
        self._selector = selectors.DefaultSelector()
        self._signals: list[int] = []
        self._children: dict[int, Child] = {}
        self._pending: list[Child] = []
        self._reservation = Reservation()
        self._stopping = False
        self._announced = False
        node_id = config.bus.node_id  # each node its own block of 32 numbers; random on a lone node
        self._id_base = node_id * 32 if node_id >= 0 else secrets.randbelow(_ID_NODES)
        self._exit = 0
        self._lock_fd = -1
        self._wakeup_r = -1
        self._pid = os.getpid()
        self._node = _NodeListeners()
        self._counts = SharedCounts(max(workers, 1))  # a node without smtp or tracker has no workers

    # -- signals -------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)

    def install_signals(self) -> None:
        """Catch SIGTERM/SIGINT/SIGCHLD from now on (called first, so a signal during startup counts)."""
        read, write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wakeup_r = read
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        for sig in (*processes.BLOCKED_SIGNALS, signal.SIGCHLD):
            signal.signal(sig, self._on_signal)
        self._selector.register(read, selectors.EVENT_READ, None)

    # -- main ----------------------------------------------------------------------------------
    def run(self) -> int:
        """The exit status of `engaged serve`."""
        self.install_signals()
        data = self.config.data_path
        try:
            data.mkdir(parents=True, exist_ok=True)
            self._lock(data)
            self._reservation = reserve(self.config)
            shards.prepare(data, self.workers)
        except OSError as error:
            log.error("%s", error)
            return 1
        log.info("supervisor (pid %d): starting the node process and %d worker(s)", os.getpid(), self.workers)
        node = Child("node", -1)
        self._spawn(node)
        self._pending = [Child("worker", index) for index in range(self.workers)]
        try:
            self._loop()
        finally:
            self._reservation.close()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
        if self._stopping and self._exit == 0:
            log.info("stopped")
        return self._exit

    def _lock(self, data: Path) -> None:
        fd = os.open(data / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        # Every child inherits the lock, so it is free only once all processes of an earlier server are
        # gone (after a SIGKILL of its supervisor, its children follow within moments).
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise OSError(f"{data} is in use by another engaged serve") from None
                if self._signals:
                    os.close(fd)
                    raise OSError(f"{data} is in use by another engaged serve; stopped waiting") from None
                time.sleep(0.05)
        self._lock_fd = fd

    def _loop(self) -> None:
        while self._children or (not self._stopping and any(c.restart_at is not None for c in self._pending)):
            timeout = None
            waiting = [c.restart_at for c in self._pending if c.restart_at is not None]
            if waiting and not self._stopping:
                timeout = max(min(waiting) - time.monotonic(), 0.0)
            for key, _ in self._selector.select(timeout):
                if key.fd == self._wakeup_r:
                    self._drain_wakeup()
                else:
                    self._read_ready(key.data)
            self._handle_signals()
            self._start_due()

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self._wakeup_r, 512):
                pass
        except BlockingIOError:
            pass

    def _handle_signals(self) -> None:
        signals, self._signals = self._signals, []
        for signum in signals:
            if signum == signal.SIGCHLD:
                self._reap()
            elif signum == signal.SIGHUP:
                log.info("SIGHUP: reloading the tracker's TLS certificate in every worker")
                for child in self._children.values():
                    if child.kind == "worker":
                        self._kill(child, signal.SIGHUP)
            elif not self._stopping:
                log.info("shutting down (%s): draining %d process(es)", signal.Signals(signum).name,
                         len(self._children))
                self._stopping = True
                self._pending.clear()
                for child in self._children.values():
                    self._kill(child, signal.SIGTERM)
        self._reap()

    def _kill(self, child: Child, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)

    # -- children ------------------------------------------------------------------------------
    def _start_due(self) -> None:
        if self._stopping:
            return
        node_ready = any(c.kind == "node" and c.ready for c in self._children.values())
        now = time.monotonic()
        for child in list(self._pending):
            if child.restart_at is None and not node_ready:
                continue  # first start: workers wait for the node process (it creates the store)
            if child.restart_at is not None and child.restart_at > now:
                continue
            self._pending.remove(child)
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        read, write = os.pipe2(os.O_CLOEXEC)
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, processes.BLOCKED_SIGNALS)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            os.close(read)
            os.close(write)
            raise
        if pid == 0:  # the child: never returns
            processes.die_with_parent(self._pid)
            os.close(read)
            self._become(child, write)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(write)
        os.set_blocking(read, False)
        child.pid, child.ready_fd, child.ready, child.buffer = pid, read, False, b""
        child.started, child.restart_at = time.monotonic(), None
        self._children[pid] = child
        self._selector.register(read, selectors.EVENT_READ, child)

    def _become(self, child: Child, ready_fd: int) -> None:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for sig in (*processes.BLOCKED_SIGNALS, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            self._selector.close()
            os.close(self._wakeup_r)
            for other in self._children.values():
                if other.ready_fd >= 0:
                    os.close(other.ready_fd)
            placeholders, self._reservation.placeholders = self._reservation.placeholders, []
            for sock in placeholders:
                sock.close()
            prefix = f"engaged: {child.name}: %(message)s"
            for handler in logging.getLogger().handlers:
                handler.setFormatter(logging.Formatter(prefix))
            if child.kind == "node":
                code = processes.run_node(self.config, ready_fd, self._id_base)
            else:
                node = (self._id_base + 1 + child.index) % _ID_NODES
                code = processes.run_worker(self.config, child.index, self._reservation, node, ready_fd,
                                            self._counts)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _read_ready(self, child: Child) -> None:
        try:
            data = os.read(child.ready_fd, 4096)
        except BlockingIOError:
            return
        if not data:
            self._selector.unregister(child.ready_fd)
            os.close(child.ready_fd)
            child.ready_fd = -1
            return
        child.buffer += data
        while b"\n" in child.buffer:
            line, child.buffer = child.buffer.split(b"\n", 1)
            self._on_ready(child, line.decode(errors="replace"))

    def _on_ready(self, child: Child, line: str) -> None:
        child.ready = True
        detail = line.removeprefix("ready").strip()
        if child.kind == "node":
            try:
                listeners = msgspec.json.decode(detail or "{}", type=_NodeListeners)
            except msgspec.DecodeError:
                listeners = _NodeListeners()
            self._node = listeners
            log.info("node (pid %d) ready: %s", child.pid, _node_parts(self.config.server.roles, listeners.api))
        else:
            log.info("worker %d (pid %d) ready: spool shard %d (%s message(s) resumed), tracker journal %d",
                     child.index, child.pid, child.index, detail or "0", child.index)
        if not self._announced and not self._pending and all(c.ready for c in self._children.values()):
            self._announced = True
            for listen, endpoints in self._reservation.smtp.items():
                for endpoint in endpoints:
                    log.info("smtp listening on %s (configured %s)", endpoint.describe(), listen)
            for endpoint in self._reservation.tracker:
                log.info("tracker listening on %s (configured %s)", endpoint.describe(),
                         self.config.engagement_tracker.listen)
            log.info("api listening on %s", self._node.api)
            for configured, bound in self._node.inbound:
                log.info("inbound listening on %s (configured %s)", bound, configured)
            log.info("ready")

    def _reap(self) -> None:
        while self._children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self._children.pop(pid, None)
            if child is None:
                continue
            if child.ready_fd >= 0:
                self._read_ready(child)  # a ready line written just before it died
                if child.ready_fd >= 0:
                    self._selector.unregister(child.ready_fd)
                    os.close(child.ready_fd)
                    child.ready_fd = -1
            self._exited(child, status)

    def _exited(self, child: Child, status: int) -> None:
        if child.kind == "worker":
            self._counts.clear(child.index)  # its connections died with it
        how = (f"killed by {signal.Signals(os.WTERMSIG(status)).name}" if os.WIFSIGNALED(status)
               else f"exited with code {os.waitstatus_to_exitcode(status)}")
        code = os.waitstatus_to_exitcode(status)
        if self._stopping:
            if code != 0:
                log.warning("%s (pid %d) %s while draining", child.name, child.pid, how)
                self._exit = self._exit or 1
            return
        if not self._announced or code == processes.EXIT_CONFIG:  # a restart would fail the same way
            log.error("%s (pid %d) %s %s; stopping", child.name, child.pid, how,
                      "during startup" if not self._announced else "(its configuration cannot serve)")
            self._exit = code if code > 0 else 1
            self._stopping = True
            self._pending.clear()
            for other in self._children.values():
                self._kill(other, signal.SIGTERM)
            return
        if time.monotonic() - child.started >= HEALTHY_SECONDS:
            child.failures = 0
        delay = min(BACKOFF_FIRST * 2 ** child.failures, BACKOFF_MAX)
        child.failures += 1
        child.restart_at = time.monotonic() + delay
        log.warning("%s (pid %d) %s; restarting in %.1f s", child.name, child.pid, how, delay)
        self._pending.append(child)


def _node_parts(roles: list[str], api: str) -> str:
    parts = [f"api {api}, dashboard" if "api" in roles else f"metrics {api}"]
    if "events" in roles:
        parts.append("webhook dispatch")
    if "tracker" in roles:
        parts.append("journal loader")
    return ", ".join(parts)


def run(config: Config, workers: int) -> int:
    """`engaged serve`: the supervisor's exit status."""
    return Supervisor(config, workers).run()
