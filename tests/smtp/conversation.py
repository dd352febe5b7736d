"""A socket-free driver for the SMTP protocol core: bytes in, replies and steps out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engaged.smtp.protocol import ServerProtocol, Settings
from engaged.smtp.steps import Authenticate, Hello, MailFrom, Message, RcptTo, StartTls, Step

Decide = Callable[[Step], str | None]


def accept_all(step: Step) -> str | None:
    """What a permissive application answers: every step accepted, the password is "pw"."""
    if isinstance(step, MailFrom):
        return "250 2.1.0 Sender OK"
    if isinstance(step, RcptTo):
        return "250 2.1.5 Recipient OK"
    if isinstance(step, Authenticate):
        return "235 2.7.0 Authentication successful" if step.password == b"pw" else \
            "535 5.7.8 Authentication credentials invalid"
    if isinstance(step, Message):
        return f"250 2.0.0 OK queued as {len(step.content)}"
    return None


class Conversation:
    """One connection's core, with every step recorded and answered by `decide`."""

    def __init__(self, decide: Decide = accept_all, /, **settings: Any) -> None:
        options: dict[str, object] = {"hostname": "mx.test", "max_message_size": 10_000, "auth_requires_tls": False,
                                      "tls_available": True}
        options.update(settings)
        self.core = ServerProtocol(Settings(**options))  # type: ignore[arg-type]
        self.decide = decide
        self.steps: list[Step] = []
        self.core.greet()
        self._out = bytearray(self.core.data_to_send())
        self.greeting = self._take()[0]

    def send(self, data: bytes) -> list[str]:
        """Feed bytes; the complete replies they produced (multi-line replies joined by newlines)."""
        self.core.receive(data)
        while (step := self.core.next_step()) is not None:
            self.steps.append(step)
            if isinstance(step, StartTls):
                self._out += self.core.data_to_send()
                self.core.tls_started()
                continue
            if not isinstance(step, Hello | MailFrom | RcptTo | Authenticate | Message):
                continue
            self.core.answer(self.decide(step))
        self._out += self.core.data_to_send()
        return self._take()

    def command(self, line: str | bytes) -> str:
        """One command line and its one reply."""
        data = line if isinstance(line, bytes) else line.encode()
        replies = self.send(data + b"\r\n")
        if len(replies) != 1:
            raise AssertionError(f"{line!r} got {replies}")
        return replies[0]

    def transaction(self, sender: str = "<a@example.org>", rcpts: tuple[str, ...] = ("<b@example.com>",)) -> None:
        for line in ("EHLO client.test", f"MAIL FROM:{sender}", *(f"RCPT TO:{r}" for r in rcpts)):
            reply = self.command(line)
            if not reply.startswith("250"):
                raise AssertionError(f"{line}: {reply}")

    def messages(self) -> list[Message]:
        return [s for s in self.steps if isinstance(s, Message)]

    def _take(self) -> list[str]:
        replies: list[str] = []
        lines: list[str] = []
        while (end := self._out.find(b"\r\n")) >= 0:
            line = bytes(self._out[:end]).decode("utf-8")
            del self._out[: end + 2]
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                replies.append("\n".join(lines))
                lines = []
        return replies
