"""One function per SMTP verb, called by the protocol core (`protocol.py`) with the decoded argument."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from engaged.smtp import replies
from engaged.smtp.address import is_xtext, parse_notify, parse_orcpt, parse_params, parse_path
from engaged.smtp.steps import Authenticate, Envelope, Hello, MailFrom, RcptTo, Reset, Step

if TYPE_CHECKING:
    from engaged.smtp.protocol import ServerProtocol

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HELP = "250 Supported commands: AUTH BDAT DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET STARTTLS VRFY"


def decode_arg(raw: bytes, *, utf8: bool) -> str | None:
    """The argument as text: ASCII, or UTF-8 for MAIL/RCPT (paths are checked later); None if refused."""
    if raw.isascii():
        text = raw.decode("ascii")
    elif not utf8:
        return None
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None if _CONTROL.search(text) else text


def _hello(core: ServerProtocol, arg: str | None, *, extended: bool) -> Step | None:
    if not arg:
        core.reply("501 Syntax: EHLO hostname" if extended else "501 Syntax: HELO hostname")
        return None
    core.envelope = None
    core.extended = extended
    return Hello(arg, extended)


def hello_answered(core: ServerProtocol, step: Hello, refusal: str | None) -> None:
    """Send the EHLO/HELO reply (or the policy's refusal) once the application has seen it."""
    if refusal is not None:
        core.send_raw(refusal)
        return
    core.helo = step.hostname
    settings = core.settings
    if not step.extended:
        core.send_raw(f"250 {settings.hostname}")
        return
    lines = [settings.hostname, f"SIZE {settings.max_message_size}", "8BITMIME",
             *(["SMTPUTF8"] if settings.smtputf8 else []), "PIPELINING", "CHUNKING", *(["DSN"] if settings.dsn else []),
             "ENHANCEDSTATUSCODES"]
    if settings.tls_available and not core.tls:
        lines.append("STARTTLS")
    if settings.auth and (core.tls or not settings.auth_requires_tls):
        lines.append("AUTH LOGIN PLAIN")
    lines.append("HELP")
    for line in lines[:-1]:
        core.send_raw("250-" + line)
    core.send_raw("250 " + lines[-1])


def _mail(core: ServerProtocol, arg: str | None) -> Step | None:
    if not core.helo:
        core.reply("503 Error: send HELO first")
        return None
    syntax = "501 Syntax: MAIL FROM: <address>" + (" [SP <mail-parameters>]" if core.extended else "")
    if arg is None or arg[:5].upper() != "FROM:":
        core.reply(syntax)
        return None
    if core.envelope is not None:
        core.reply(replies.R503_NESTED_MAIL)
        return None
    rest = arg[5:]
    smtputf8 = core.extended and core.settings.smtputf8 and " SMTPUTF8" in rest.upper()
    path = parse_path(rest, smtputf8=smtputf8)
    if path is None:
        core.reply(replies.R501_BAD_SENDER)
        return None
    params = parse_params(path.params) if core.extended else ({} if not path.params else None)
    if params is None:
        core.reply(syntax)
        return None
    envelope = Envelope(mail_from=path.address)
    refusal = _mail_params(core, envelope, params, syntax)
    if refusal is not None:
        core.reply(refusal)
        return None
    return MailFrom(envelope)


def _mail_params(core: ServerProtocol, envelope: Envelope, params: dict[str, str], syntax: str) -> str | None:
    body = params.pop("BODY", "7BIT").upper()
    if body not in ("7BIT", "8BITMIME"):
        return "501 Error: BODY can only be one of 7BIT, 8BITMIME"
    envelope.body = body
    if "SMTPUTF8" in params:
        if params.pop("SMTPUTF8"):
            return "501 Error: SMTPUTF8 takes no arguments"
        if not core.settings.smtputf8:
            return "501 Error: SMTPUTF8 disabled"
        envelope.smtputf8 = True
    size = params.pop("SIZE", None)
    if size is not None:
        if not size.isdigit():
            return syntax
        if int(size) > core.settings.max_message_size:
            return replies.R552_SIZE_DECLARED
    ret = params.pop("RET", None)
    if ret is not None:
        if ret.upper() not in ("FULL", "HDRS"):
            return syntax
        envelope.ret = ret.upper()
    envid = params.pop("ENVID", None)
    if envid is not None:
        if not is_xtext(envid, max_length=100):
            return syntax
        envelope.envid = envid
    params.pop("AUTH", None)  # RFC 4954 5: a relaying client's AUTH=<>; trust comes from our own AUTH
    return replies.R555_MAIL_PARAMS if params else None


def _rcpt(core: ServerProtocol, arg: str | None) -> Step | None:
    if not core.helo:
        core.reply("503 Error: send HELO first")
        return None
    envelope = core.envelope
    if envelope is None:
        core.reply(replies.R503_NEED_MAIL)
        return None
    syntax = "501 Syntax: RCPT TO: <address>" + (" [SP <mail-parameters>]" if core.extended else "")
    if arg is None or arg[:3].upper() != "TO:":
        core.reply(syntax)
        return None
    path = parse_path(arg[3:], smtputf8=envelope.smtputf8)
    if path is None or not path.address:
        core.reply(replies.R501_BAD_ADDRESS)
        return None
    params = parse_params(path.params) if core.extended else ({} if not path.params else None)
    if params is None:
        core.reply(syntax)
        return None
    notify = params.pop("NOTIFY", "")
    orcpt = params.pop("ORCPT", "")
    if params:
        core.reply(replies.R555_RCPT_PARAMS)
        return None
    checked_notify = parse_notify(notify) if notify else ""
    checked_orcpt = parse_orcpt(orcpt) if orcpt else ""
    if checked_notify is None or checked_orcpt is None:
        core.reply(syntax)
        return None
    return RcptTo(envelope, path.address, checked_notify, checked_orcpt)


def _data(core: ServerProtocol, arg: str | None) -> Step | None:
    if not core.helo:
        core.reply("503 Error: send HELO first")
        return None
    envelope = core.envelope
    if envelope is None or not envelope.rcpt_tos:
        core.reply(replies.R503_NEED_RCPT)
        return None
    if arg:
        core.reply("501 5.5.4 Syntax: DATA")
        return None
    if envelope.chunks is not None:
        core.envelope = None
        core.reply(replies.R503_DATA_WITH_BDAT)
        return None
    core.reply(replies.R354_DATA)
    core.start_data()
    return None


def _bdat(core: ServerProtocol, arg: str | None) -> Step | None:
    parts = arg.split(" ") if arg else []
    if not 1 <= len(parts) <= 2 or not parts[0].isdigit() or len(parts[0]) > 12 \
            or (len(parts) == 2 and parts[1].upper() != "LAST"):
        core.reply(replies.R501_BDAT_SYNTAX)
        core.close()  # the chunk's length is unknown, so the stream cannot be resynchronised
        return None
    size, last = int(parts[0]), len(parts) == 2
    envelope = core.envelope
    so_far = len(envelope.chunks) if envelope is not None and envelope.chunks is not None else 0
    if so_far + size > core.settings.max_message_size:
        core.envelope = None
        core.reply(replies.R552_TOO_BIG)
        core.close()  # a refused oversize chunk is not read (RFC 3030 allows closing)
        return None
    refusal: str | None = None
    if not core.helo:
        refusal = "503 Error: send HELO first"
    elif envelope is None:
        refusal = replies.R503_NEED_MAIL
    elif not envelope.rcpt_tos:
        refusal = replies.R503_NEED_RCPT
    elif envelope.chunks is None:
        envelope.chunks = bytearray()
    core.start_bdat(size, last, refusal)  # a refused chunk is still read, so the stream stays in step
    return None


def _rset(core: ServerProtocol, arg: str | None) -> Step | None:
    if arg:
        core.reply("501 Syntax: RSET")
        return None
    core.envelope = None
    core.reply(replies.R250_RESET)
    return Reset()


def _noop(core: ServerProtocol, arg: str | None) -> Step | None:
    core.reply(replies.R250_OK)
    return None


def _quit(core: ServerProtocol, arg: str | None) -> Step | None:
    if arg:
        core.reply("501 Syntax: QUIT")
        return None
    core.reply(replies.R221_BYE)
    core.close()
    return None


def _starttls(core: ServerProtocol, arg: str | None) -> Step | None:
    if arg:
        core.reply("501 Syntax: STARTTLS")
        return None
    if not core.settings.tls_available or core.tls:
        core.reply(replies.R454_NO_TLS)
        return None
    return core.start_tls()


def _auth(core: ServerProtocol, arg: str | None) -> Step | None:
    refusal = _auth_refusal(core, arg)
    if refusal is not None or arg is None:
        core.reply(refusal or "501 Not enough value")
        return None
    args = arg.split()
    mechanism = args[0].upper()
    if mechanism not in ("PLAIN", "LOGIN"):
        core.reply(replies.R504_AUTH_MECHANISM)
        return None
    if len(args) == 1:
        core.start_auth(mechanism, None, b"" if mechanism == "PLAIN" else b"User Name\x00")
        return None
    try:
        blob = b"" if args[1] == "=" else base64.b64decode(args[1], validate=True)
    except (binascii.Error, ValueError):
        core.reply(replies.R501_BAD_BASE64)
        return None
    if mechanism == "PLAIN":
        return plain_credentials(core, blob)
    core.start_auth("LOGIN", blob, b"Password\x00")
    return None


def _auth_refusal(core: ServerProtocol, arg: str | None) -> str | None:
    if not core.helo:
        return "503 Error: send EHLO first"
    if not core.extended:
        return "500 Error: command 'AUTH' not recognized"
    if not core.settings.auth:
        return replies.R502_AUTH_NOT_OFFERED
    if core.settings.auth_requires_tls and not core.tls:
        return replies.R538_AUTH_NEEDS_TLS
    if core.authenticated:
        return "503 Already authenticated"
    if not arg:
        return "501 Not enough value"
    if len(arg.split()) > 2:
        return "501 Too many values"
    return None


def plain_credentials(core: ServerProtocol, blob: bytes) -> Step | None:
    """`authzid NUL authcid NUL password` (RFC 4616) as an Authenticate step."""
    parts = blob.split(b"\x00")
    if len(parts) != 3:
        core.reply(replies.R501_AUTH_SPLIT)
        return None
    return Authenticate("PLAIN", parts[1], parts[2])


def _help(core: ServerProtocol, arg: str | None) -> Step | None:
    core.reply(_HELP)
    return None


def _vrfy(core: ServerProtocol, arg: str | None) -> Step | None:
    core.reply("252 Cannot VRFY user, but will accept message and attempt delivery" if arg
               else "501 Syntax: VRFY <address>")
    return None


def _expn(core: ServerProtocol, arg: str | None) -> Step | None:
    core.reply("502 EXPN not implemented")
    return None


VERBS: dict[str, Callable[[ServerProtocol, str | None], Step | None]] = {
    "EHLO": lambda core, arg: _hello(core, arg, extended=True),
    "HELO": lambda core, arg: _hello(core, arg, extended=False),
    "MAIL": _mail, "RCPT": _rcpt, "DATA": _data, "BDAT": _bdat, "RSET": _rset, "NOOP": _noop,
    "QUIT": _quit, "STARTTLS": _starttls, "AUTH": _auth, "HELP": _help, "VRFY": _vrfy, "EXPN": _expn,
}
