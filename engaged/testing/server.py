"""Runs the real `engaged serve` in a child process and reads its bound addresses from its log lines."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

_LISTEN = re.compile(r"^engaged: (smtp|tracker|api|inbound) listening on (\S+)")
_CHILD_READY = re.compile(r"^engaged: (worker \d+|node) \(pid (\d+)\) ready")


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll `predicate` until it returns something truthy; return that, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(interval)


def write_config(directory: Path, extra: str = "", *, data_dir: Path | None = None) -> Path:
    """A config on free loopback ports (port 0) with data in `directory`/data, plus `extra` TOML."""
    data = data_dir or directory / "data"
    text = (
        f'data_dir = "{data}"\n'
        '[smtp]\nlisten = ["127.0.0.1:0"]\n'
        '[engagement_tracker]\nlisten = "127.0.0.1:0"\n'
        '[api]\nlisten = "127.0.0.1:0"\n'
    )
    path = directory / "engaged.toml"
    path.write_text(_merge(text, extra))
    return path


def _merge(base: str, extra: str) -> str:
    """Append `extra`; keys of a section that `extra` also opens are moved into its table."""
    sections: dict[str, list[str]] = {}
    order: list[str] = []
    current = ""
    for line in (base + "\n" + extra).splitlines():
        header = re.match(r"^\s*\[([^\[\]]+)\]\s*$", line)
        if header:
            current = header.group(1).strip()
            if current not in sections:
                sections[current] = []
                order.append(current)
            continue
        if line.strip().startswith("[["):
            current = "\0" + line.strip() + str(len(order))
            sections[current] = [line]
            order.append(current)
            continue
        if current not in sections:
            sections[current] = []
            order.insert(0, current)
        sections[current].append(line)
    out: list[str] = []
    for name in order:
        lines = sections[name]
        if name and not name.startswith("\0"):
            keys: dict[str, str] = {}
            for line in lines:
                if "=" in line and not line.strip().startswith("#"):
                    keys[line.split("=", 1)[0].strip()] = line
            out.append(f"[{name}]")
            out.extend(keys.values())
        else:
            out.extend(lines)
    return "\n".join(out) + "\n"


class ServerProcess:
    """`engaged serve --config FILE` as a child process; `start()` returns when it logs "ready"."""

    def __init__(self, config: Path, env: Mapping[str, str] | None = None, *, args: Sequence[str] = (),
                 expect: Sequence[str] = ("smtp",)) -> None:
        self.config = config
        self.expect = tuple(expect)  # listeners it must have logged (a node of other roles has no smtp)
        self.args = list(args)
        self.env = dict(os.environ if env is None else env)
        self.process: subprocess.Popen[str] | None = None
        self.addresses: dict[str, str] = {}
        self.log: list[str] = []
        self._ready = threading.Event()

    def start(self, timeout: float = 90.0) -> ServerProcess:
        ready = self._ready = threading.Event()
        self.addresses = {}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engaged", "serve", "--config", str(self.config), *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        threading.Thread(target=self._read, args=(self.process, ready), daemon=True).start()
        if not ready.wait(timeout) or any(name not in self.addresses for name in self.expect):
            self.kill()
            raise RuntimeError("engaged serve did not start:\n" + "\n".join(self.log[-40:]))
        return self

    def _read(self, process: subprocess.Popen[str], ready: threading.Event) -> None:
        stream = process.stderr
        if stream is None:
            return
        for line in stream:
            line = line.rstrip("\n")
            self.log.append(line)
            match = _LISTEN.match(line)
            if match and match.group(1) not in self.addresses:
                self.addresses[match.group(1)] = match.group(2)
            if line == "engaged: ready":
                ready.set()
        ready.set()

    def address(self, name: str) -> tuple[str, int]:
        host, _, port = self.addresses[name].rpartition(":")
        return host.strip("[]"), int(port)

    def pids(self) -> dict[str, int]:
        """The latest pid of each child process by name (`node`, `worker 0`, ...), from the ready lines."""
        found: dict[str, int] = {}
        for line in list(self.log):
            match = _CHILD_READY.match(line)
            if match:
                found[match.group(1)] = int(match.group(2))
        return found

    @property
    def smtp(self) -> tuple[str, int]:
        return self.address("smtp")

    @property
    def tracker(self) -> tuple[str, int]:
        return self.address("tracker")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait: a clean shutdown; returns the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self.process = None
        return code

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self.process = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop() if self.process is not None and self.process.poll() is None else self.kill()
