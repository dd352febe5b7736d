"""The SMTP server state machine, sans-I/O: bytes in, replies and transaction steps out (RFC 5321).

`ServerProtocol` owns the whole conversation: line framing, pipelining, HELO/EHLO, MAIL/RCPT with
their ESMTP parameters, DATA and BDAT, AUTH PLAIN/LOGIN exchanges and STARTTLS. It never touches a
socket or a clock. The adapter (`listener.py`) feeds it with `receive`, asks `next_step` for the next
thing the application must decide, answers with `answer`, and writes `data_to_send`. While a step is
unanswered the core processes no further input, so pipelined commands are answered in order.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections import Counter

import msgspec

from engaged.smtp import commands, replies
from engaged.smtp.data import DataProblem, DataReader, check_chunks
from engaged.smtp.steps import Authenticate, Envelope, Hello, MailFrom, Message, RcptTo, Reset, StartTls, Step

_CRLF = b"\r\n"
_LINE_LIMIT = 512  # RFC 5321 4.5.3.1.4
_ESMTP_LINE_LIMIT = 1024  # MAIL/RCPT with SIZE, SMTPUTF8 and DSN parameters
_AUTH_LINE_LIMIT = 12288  # RFC 4954 4
_DATA_REFUSALS = {
    DataProblem.TOO_BIG: replies.R552_TOO_BIG,
    DataProblem.BARE_LINE_ENDING: replies.R550_BARE_LINE_ENDING,
    DataProblem.LINE_TOO_LONG: replies.R500_LINE_TOO_LONG,
}


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """What the core needs to know about its listener and this connection."""

    hostname: str
    max_message_size: int
    max_commands: int = 10000  # per verb and connection
    max_errors: int = 20  # unknown or malformed commands before the connection is closed
    tls_available: bool = False
    auth_requires_tls: bool = True
    auth: bool = True  # offer AUTH at all (the inbound listener does not: nobody logs in there)
    smtputf8: bool = True  # advertise SMTPUTF8 (RFC 6531)
    dsn: bool = True  # advertise DSN (RFC 3461)


class Mode(enum.Enum):
    """What the next input bytes are."""

    COMMAND = "command"
    DATA = "data"
    BDAT = "bdat"
    AUTH = "auth"
    TLS = "tls"  # waiting for the handshake: input is discarded (CVE-2011-0411)
    CLOSED = "closed"


class ServerProtocol:
    """One SMTP server connection's state; see the module docstring for the calling convention."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.helo = ""
        self.extended = False
        self.tls = False
        self.authenticated = False
        self.envelope: Envelope | None = None
        self.mode = Mode.COMMAND
        self.commands_seen = 0
        self.errors = 0
        self._buf = bytearray()
        self._pos = 0
        self._out: list[bytes] = []
        self._pending: Step | None = None
        self._calls: Counter[str] = Counter()
        self._discarding = False
        self._data = DataReader(settings.max_message_size)
        self._bdat_left = 0
        self._bdat_last = False
        self._bdat_refusal: str | None = None
        self._bdat_size = 0
        self._auth: tuple[str, bytes | None] | None = None  # mechanism, login so far

    # -- the adapter's side -------------------------------------------------------------------
    def greet(self, refusal: str | None = None) -> None:
        """Queue the 220 greeting, or a refusal (policy or limits) and close."""
        if refusal is None:
            self._out.append(f"220 {self.settings.hostname} engaged ESMTP\r\n".encode())
        else:
            self.send_raw(refusal)
            self.close()

    def receive(self, data: bytes) -> None:
        """Bytes from the client; ignored while a TLS handshake is pending or after close."""
        if self.mode is not Mode.TLS and self.mode is not Mode.CLOSED:
            self._buf += data

    def next_step(self) -> Step | None:
        """Process buffered input up to the next step the application must see; None: need input."""
        while self._pending is None and self.mode is not Mode.CLOSED and self.mode is not Mode.TLS:
            step: Step | None
            if self.mode is Mode.COMMAND:
                line = self._take_line(self._line_limit_cap())
                if line is None:
                    return None
                step = self._command(line)
            elif self.mode is Mode.DATA:
                step = self._read_data()
                if step is None and self.mode is Mode.DATA:
                    return None
            elif self.mode is Mode.BDAT:
                step = self._read_bdat()
                if step is None and self.mode is Mode.BDAT:
                    return None
            else:
                line = self._take_line(_AUTH_LINE_LIMIT)
                if line is None:
                    return None
                step = self._auth_line(line)
            if step is not None:
                if not isinstance(step, Reset):
                    self._pending = step
                return step
        return None

    def answer(self, reply: str | None) -> None:
        """The application's answer to the pending step (see each step for what `reply` means)."""
        step, self._pending = self._pending, None
        if isinstance(step, Hello):
            commands.hello_answered(self, step, reply)
        elif isinstance(step, MailFrom):
            if reply is not None and reply[:1] == "2":
                self.envelope = step.envelope
            self.reply(reply or replies.R451_INTERNAL)
        elif isinstance(step, RcptTo):
            if reply is not None and reply[:1] == "2":
                step.envelope.rcpt_tos.append(step.address)
                step.envelope.notify.append(step.notify)
                step.envelope.orcpt.append(step.orcpt)
            self.reply(reply or replies.R451_INTERNAL)
        elif isinstance(step, Authenticate):
            self.authenticated = reply is not None and reply.startswith("235")
            self.reply(reply or replies.R535_AUTH_FAILED)
        elif isinstance(step, Message):
            self.envelope = None
            self.reply(reply or replies.R451_INTERNAL)

    def tls_started(self) -> None:
        """The handshake finished: the session starts over (RFC 3207 4.2)."""
        self._pending = None
        self.tls = True
        self.helo, self.extended, self.envelope, self.authenticated = "", False, None, False
        self.mode = Mode.COMMAND

    def data_to_send(self) -> bytes:
        """Every reply queued since the last call."""
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def close(self) -> None:
        """Stop processing: the adapter closes the connection once the queued replies are written."""
        self.mode = Mode.CLOSED
        self._pending = None
        self._buf.clear()
        self._pos = 0

    @property
    def closing(self) -> bool:
        return self.mode is Mode.CLOSED

    @property
    def waiting(self) -> bool:
        """A step is with the application (no timeout applies while it decides)."""
        return self._pending is not None

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    # -- used by commands.py ------------------------------------------------------------------
    def reply(self, text: str) -> None:
        """Queue a reply, with an enhanced status code once the client said EHLO (RFC 2034)."""
        if self.extended:
            text = replies.with_enhanced_code(text)
        self._out.append(text.encode("utf-8") + _CRLF)

    def send_raw(self, text: str) -> None:
        self._out.append(text.encode("utf-8") + _CRLF)

    def count_error(self) -> bool:
        """Count a bad command; True (and closing) once there were too many."""
        self.errors += 1
        if self.errors >= self.settings.max_errors:
            self.reply(replies.R502_TOO_MANY_ERRORS)
            self.close()
            return True
        return False

    def _refuse(self, text: str) -> None:
        """A bad command's reply, or the closing 502 when it was one too many."""
        if not self.count_error():
            self.reply(text)

    def start_data(self) -> None:
        self._data.start()
        self.mode = Mode.DATA

    def start_bdat(self, size: int, last: bool, refusal: str | None) -> None:
        self._bdat_left, self._bdat_size, self._bdat_last, self._bdat_refusal = size, size, last, refusal
        self.mode = Mode.BDAT

    def start_auth(self, mechanism: str, login: bytes | None, challenge: bytes) -> None:
        self._auth = (mechanism, login)
        self._out.append(b"334 " + base64.b64encode(challenge) + _CRLF)
        self.mode = Mode.AUTH

    def start_tls(self) -> StartTls:
        self.reply(replies.R220_TLS)
        self._buf.clear()  # anything pipelined after STARTTLS is discarded, never run inside TLS
        self._pos = 0
        self.mode = Mode.TLS
        return StartTls()

    # -- input processing -------------------------------------------------------------------
    def _line_limit_cap(self) -> int:
        return _AUTH_LINE_LIMIT if self.extended else _LINE_LIMIT

    def _take_line(self, cap: int) -> bytes | None:
        buf, pos = self._buf, self._pos
        end = buf.find(b"\n", pos)
        if end < 0:
            if len(buf) - pos > cap:
                self._discarding = True  # a line too long: drop it up to its end, then answer once
                self._compact(len(buf))
            else:
                self._compact(pos)
            return None
        line = bytes(buf[pos : end - 1 if end > pos and buf[end - 1] == 13 else end])
        self._compact(end + 1)
        if self._discarding:
            self._discarding = False
            return b"\xff" * (cap + 1)  # stands for "too long": every verb's limit refuses it
        return line

    def _compact(self, pos: int) -> None:
        if pos >= len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif pos > 65536:
            del self._buf[:pos]
            self._pos = 0
        else:
            self._pos = pos

    def _command(self, line: bytes) -> Step | None:
        self.commands_seen += 1
        verb_bytes, _, arg_bytes = line.partition(b" ")
        verb = verb_bytes.upper().decode("ascii", "replace")
        limit = _AUTH_LINE_LIMIT if verb == "AUTH" else (
            _ESMTP_LINE_LIMIT if self.extended and verb in ("MAIL", "RCPT") else _LINE_LIMIT)
        if len(line) > limit:
            self._refuse(replies.R500_COMMAND_TOO_LONG)
            return None
        if not line or not verb_bytes.isascii() or not verb.isalpha():
            self._refuse(replies.R500_BAD_SYNTAX)
            return None
        arg = commands.decode_arg(arg_bytes.strip(b" "), utf8=verb in ("MAIL", "RCPT"))
        if arg is None:
            self._refuse(replies.R501_BAD_CHARACTERS)
            return None
        handler = commands.VERBS.get(verb)
        if handler is None:
            self._refuse(f'500 Error: command "{verb}" not recognized')
            return None
        self._calls[verb] += 1
        if self._calls[verb] > self.settings.max_commands:
            self.reply(f"421 4.7.0 {verb} sent too many times")
            self.close()
            return None
        return handler(self, arg)

    def _read_data(self) -> Step | None:
        with memoryview(self._buf) as view:
            result, leftover = self._data.feed(view[self._pos :])
        self._buf.clear()
        self._pos = 0
        if result is None:
            return None
        self._buf += leftover
        self.mode = Mode.COMMAND
        envelope, self.envelope = self.envelope, None
        if result.problem is not None or envelope is None:
            self.reply(_DATA_REFUSALS.get(result.problem, replies.R451_INTERNAL) if result.problem
                       else replies.R451_INTERNAL)
            return None
        self.envelope = envelope
        return Message(envelope, result.content)

    def _read_bdat(self) -> Step | None:
        available = len(self._buf) - self._pos
        take = min(available, self._bdat_left)
        envelope = self.envelope
        if self._bdat_refusal is None and envelope is not None and envelope.chunks is not None:
            with memoryview(self._buf) as view:
                envelope.chunks += view[self._pos : self._pos + take]
        self._compact(self._pos + take)
        self._bdat_left -= take
        if self._bdat_left:
            return None
        self.mode = Mode.COMMAND
        if self._bdat_refusal is not None:
            self.reply(self._bdat_refusal)
            return None
        if envelope is None or envelope.chunks is None:
            self.reply(replies.R451_INTERNAL)
            return None
        if not self._bdat_last:
            self.reply(replies.r250_chunk(self._bdat_size))
            return None
        content = bytes(envelope.chunks)
        envelope.chunks = None
        problem = check_chunks(content, self.settings.max_message_size)
        if problem is not None:
            self.envelope = None
            self.reply(_DATA_REFUSALS[problem])
            return None
        return Message(envelope, content)

    def _auth_line(self, line: bytes) -> Step | None:
        self.mode = Mode.COMMAND
        if self._auth is None:
            return None
        mechanism, login = self._auth
        self._auth = None
        if len(line) > _AUTH_LINE_LIMIT:
            self.reply(replies.R500_COMMAND_TOO_LONG)
            return None
        if line == b"*":
            self.reply(replies.R501_AUTH_ABORTED)
            return None
        try:
            blob = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            self.reply(replies.R501_BAD_BASE64)
            return None
        if mechanism == "PLAIN":
            return commands.plain_credentials(self, blob)
        if login is None:
            self.start_auth("LOGIN", blob, b"Password\x00")
            return None
        return Authenticate("LOGIN", login, blob)

