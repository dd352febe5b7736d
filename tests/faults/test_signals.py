"""A SIGTERM at any moment of `engaged serve`'s startup ends it cleanly (exit 0), never by the default disposition."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engaged.testing.server import wait_until, write_config


def spawn(config: Path) -> tuple[subprocess.Popen[str], list[str]]:
    process = subprocess.Popen([sys.executable, "-m", "engaged", "serve", "--config", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []

    def read() -> None:
        if process.stderr is not None:
            lines.extend(line.rstrip("\n") for line in process.stderr)

    threading.Thread(target=read, daemon=True).start()
    return process, lines


# Each moment is a startup log line; before the first one the interpreter may not yet run our code at all.
@pytest.mark.parametrize("moment", ["events store", "api listening", "delivery", "tracker listening", "ready"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_startup_shuts_down_cleanly(tmp_path: Path, moment: str, sig: signal.Signals) -> None:
    process, lines = spawn(write_config(tmp_path))
    try:
        wait_until(lambda: any(moment in line for line in lines) or process.poll() is not None, 60)
        process.send_signal(sig)
        code = process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    log = "\n".join(lines[-20:])
    assert code == 0, f"{sig.name} at {moment!r}: exit {code}\n{log}"
    assert "engaged: stopped" in lines, f"{sig.name} at {moment!r}: no clean stop\n{log}"
