"""The SMTP protocol core over stdin/stdout (for `swaks --pipe` and inetd-style tests); accepts every message.

Each accepted message is appended to the file named by the first argument (if any) as one JSON line.
No sockets and no event loop: the sans-I/O core is driven by plain reads and writes.
"""

from __future__ import annotations

import json
import os
import sys

from engaged.smtp.protocol import ServerProtocol, Settings
from engaged.smtp.steps import Authenticate, MailFrom, Message, RcptTo, StartTls, Step


def _decide(step: Step, spool: str | None) -> str | None:
    if isinstance(step, MailFrom):
        return "250 2.1.0 Sender OK"
    if isinstance(step, RcptTo):
        return "250 2.1.5 Recipient OK"
    if isinstance(step, Authenticate):
        return "535 5.7.8 Authentication credentials invalid"
    if isinstance(step, Message):
        if spool:
            envelope = step.envelope
            with open(spool, "a", encoding="utf-8") as out:
                out.write(json.dumps({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                                      "data": step.content.decode("utf-8", "replace")}) + "\n")
        return f"250 2.0.0 OK queued as stdio-{len(step.content)}"
    return None


def serve(spool: str | None = None, infd: int = 0, outfd: int = 1) -> None:
    """Talk SMTP on infd/outfd until QUIT or end of input."""
    core = ServerProtocol(Settings(hostname="stdio.test", max_message_size=26214400, auth_requires_tls=False))
    core.greet()
    while True:
        while (step := core.next_step()) is not None:
            if isinstance(step, StartTls):
                core.close()
                break
            core.answer(_decide(step, spool))
        out = core.data_to_send()
        if out:
            os.write(outfd, out)
        if core.closing:
            return
        data = os.read(infd, 65536)
        if not data:
            return
        core.receive(data)


if __name__ == "__main__":
    serve(sys.argv[1] if len(sys.argv) > 1 else None)
