"""Lua policy cost: µs per message for a typical each_rcpt script, with 1 and 10 recipients, against no policy."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engaged.policy.engine import PolicyEngine, PolicyMessage

SCRIPT = """
require("msys.core")
require("msys.extended.message")

local mod = {}

function mod:validate_data_spool_each_rcpt(msg, accept, vctx)
  local campaign = msg:header("X-Campaign")[1] or "default"
  vctx:set(msys.core.VCTX_MESS, "smtpapi_open_tracking", "true")
  vctx:set(msys.core.VCTX_MESS, "smtpapi_click_tracking", "true")
  vctx:set(msys.core.VCTX_MESS, "smtpapi_campaign_id", campaign)
  vctx:set(msys.core.VCTX_MESS, "smtpapi_tags", '["bench"]')
  return msys.core.VALIDATE_CONT
end

msys.registerModule("bench", mod)
"""
CONTENT = (
    b"Received: from client.example (client.example [192.0.2.7])\r\n"
    b"\tby mta.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"From: Sender <sender@origin.example>\r\nTo: rcpt@dest.example\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <1@origin.example>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/html; charset=utf-8\r\nX-Campaign: spring_sale\r\n\r\n"
    + b"<p>Hello <a href='https://example.com/'>link</a></p>\r\n" * 40
)
MESSAGES = 2_000
ROUNDS = 5


def one_message(engine: PolicyEngine, rcpts: list[str]) -> list[dict[str, str]]:
    """Every policy call the SMTP session makes for one message, and the per-recipient contexts it yields."""
    session = engine.session(peer_ip="192.0.2.7", listener="127.0.0.1:2525", tls=False)
    session.validate_mailfrom("sender@origin.example")
    for rcpt in rcpts:
        session.validate_rcptto(rcpt)
    message = PolicyMessage(CONTENT, "sender@origin.example", rcpts)
    session.validate_data(message)
    session.validate_data_spool(message)
    connection = session.connection_context()
    merged = []
    for index in range(len(rcpts)):
        session.validate_data_spool_each_rcpt(message, index)
        merged.append(connection | session.recipient_context(index))
    session.validate_set_binding(message)
    session.final_validation(message)
    return merged


def per_message_us(engine: PolicyEngine, recipients: int) -> float:
    rcpts = [f"user{n}@dest{n % 3}.example" for n in range(recipients)]
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(MESSAGES):
            one_message(engine, rcpts)
        best = min(best, (time.perf_counter() - started) / MESSAGES * 1e6)
    return best


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="engaged-bench-policy-") as tmp:
        path = Path(tmp) / "bench.lua"
        path.write_text(SCRIPT, encoding="utf-8")
        scripted = PolicyEngine.load([str(path)])
        plain = PolicyEngine.load([])
        sample = one_message(scripted, ["a@dest.example"])[0]
        if sample.get("smtpapi_campaign_id") != "spring_sale":
            print("bench script did not run as expected", file=sys.stderr)
            return 1
        print(f"policy: 1 module, validate_data_spool_each_rcpt sets 4 variables and reads 1 header; "
              f"best of {ROUNDS} x {MESSAGES} messages, all session calls included")
        print(f"{'recipients':>10} {'no policy µs/msg':>17} {'policy µs/msg':>14} {'policy cost µs/msg':>19} "
              f"{'µs/recipient':>13}")
        for recipients in (1, 10):
            base = per_message_us(plain, recipients)
            with_policy = per_message_us(scripted, recipients)
            cost = with_policy - base
            print(f"{recipients:>10} {base:>17.1f} {with_policy:>14.1f} {cost:>19.1f} {cost / recipients:>13.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
