"""Shared pieces for the policy tests: the scripts folder, inline scripts, and a session at the DATA stage."""

from __future__ import annotations

from pathlib import Path

from engaged.policy.engine import PolicyEngine, PolicyMessage, PolicySession

SCRIPTS = Path(__file__).resolve().parent / "scripts"
MESSAGE = (
    b"From: Sender <sender@origin.example>\r\n"
    b"To: rcpt@dest.example\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"X-Campaign: spring_sale\r\n"
    b"\r\n"
    b"Hello\r\n"
)


def script(name: str) -> str:
    """Path of tests/policy/scripts/<name>.lua."""
    return str(SCRIPTS / f"{name}.lua")


def inline(tmp_path: Path, source: str, name: str = "inline") -> str:
    """Write an inline script into tmp_path; its path."""
    path = tmp_path / f"{name}.lua"
    path.write_text(source, encoding="utf-8")
    return str(path)


def module(callouts: str, name: str = "test") -> str:
    """A script that requires msys.core and registers `callouts` (Lua defining methods on `mod`)."""
    return f'require("msys.core")\nlocal mod = {{}}\n{callouts}\nmsys.registerModule("{name}", mod)\n'


def engine_with(
    tmp_path: Path,
    callouts: str,
    *,
    max_memory: int = 32 << 20,
    max_instructions: int = 1_000_000,
    max_seconds: float = 0.25,
) -> PolicyEngine:
    """An engine loaded with one inline module."""
    return PolicyEngine.load(
        [inline(tmp_path, module(callouts))],
        max_memory=max_memory,
        max_instructions=max_instructions,
        max_seconds=max_seconds,
    )


def at_data(
    engine: PolicyEngine,
    rcpts: tuple[str, ...] = ("rcpt@dest.example",),
    *,
    listener: str = "127.0.0.1:2525",
    sender: str = "sender@origin.example",
) -> tuple[PolicySession, PolicyMessage]:
    """A session that went through connect, EHLO, MAIL and RCPT (all expected to Continue), and its message."""
    session = engine.session(peer_ip="192.0.2.7", listener=listener, tls=True)
    session.validate_connect()
    session.validate_ehlo("client.example")
    session.validate_mailfrom(sender)
    for rcpt in rcpts:
        session.validate_rcptto(rcpt)
    return session, PolicyMessage(MESSAGE, sender, list(rcpts))
