"""`make test`'s wheel check: build the wheel, install it without extras in a fresh virtualenv, run it as a user would.

Outside (the project's venv): build the wheel, make a new venv, `pip install` the wheel alone, run
`engaged check-config`, then this file again with the new venv's Python (`--inside`). Inside (only
the wheel's own dependencies importable, the current directory a temporary one): `engaged serve` on
port 0, one message over SMTP, its injection and delivery events read back from the events API, and
a clean SIGTERM. Exits non-zero with the reason on the first failure.
"""

from __future__ import annotations

import json
import os
import smtplib
import subprocess
import sys
import tempfile
import urllib.request
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(*argv: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(arg) for arg in argv], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"check_wheel: {' '.join(map(str, argv))} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def outside(work: Path) -> None:
    wheels = work / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, REPO)
    wheel = next(wheels.glob("engaged-*.whl"))
    fresh = work / "venv"
    venv.create(fresh, with_pip=True)
    python = fresh / "bin" / "python"
    _run(python, "-m", "pip", "install", "-q", wheel)
    home = work / "home"
    home.mkdir()
    _run(fresh / "bin" / "engaged", "check-config", cwd=home)
    print(f"check_wheel: {wheel.name} installs without extras; check-config runs")
    print(_run(python, Path(__file__), "--inside", home, cwd=home), end="")


def inside(home: Path) -> None:
    os.chdir(home)
    from engaged.testing.server import ServerProcess, wait_until, write_config

    server = ServerProcess(write_config(home)).start()
    try:
        host, port = server.smtp
        with smtplib.SMTP(host, port, timeout=10) as client:
            client.sendmail("app@example.com", ["someone@example.net"],
                            b"From: app@example.com\r\nTo: someone@example.net\r\nSubject: wheel\r\n\r\nhello\r\n")
        api = f"http://{server.addresses['api']}/api/v1/events/message?events=injection,delivery"

        def types() -> list[str]:
            with urllib.request.urlopen(api, timeout=10) as answer:
                return sorted(event["type"] for event in json.load(answer)["results"])

        wait_until(lambda: types() == ["delivery", "injection"], timeout=30)
    finally:
        code = server.stop()
    if code != 0:
        sys.exit(f"check_wheel: engaged serve exited {code}:\n" + "\n".join(server.log[-20:]))
    print("check_wheel: engaged serve accepted, delivered and reported a message, then stopped cleanly")


def main() -> None:
    if sys.argv[1:2] == ["--inside"]:
        inside(Path(sys.argv[2]))
        return
    with tempfile.TemporaryDirectory(prefix="engaged-wheel-") as work:
        outside(Path(work))


if __name__ == "__main__":
    main()
