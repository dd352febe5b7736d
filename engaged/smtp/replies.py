"""Every SMTP reply engaged sends, named, so code and tests share one text."""

from __future__ import annotations

from engaged.inject import Accepted, Refusal, Rejected
from engaged.suppression.check import NONE_QUEUED

# Without an enhanced code: a HELO client gets none, and after EHLO reply() adds 2.0.0 (RFC 2034).
R221_BYE = "221 Bye"
R250_OK = "250 OK"
R250_SENDER_OK = "250 2.1.0 Sender OK"
R250_RECIPIENT_OK = "250 2.1.5 Recipient OK"
R250_RESET = "250 2.0.0 Reset"
R421_TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
R421_DATA_TIMEOUT = "421 4.4.2 Timeout waiting for data, closing connection"
R451_SPOOL_UNAVAILABLE = "451 4.3.0 Temporary failure storing the message, try again later"
R452_SPOOL_FULL = "452 4.3.1 Insufficient system storage, try again later"
R451_INTERNAL = "451 4.3.0 Internal error, try again later"
R451_POLICY_FAILURE = "451 4.3.0 Policy error, try again later"
R452_TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
R500_LINE_TOO_LONG = "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)"
R501_BAD_ADDRESS = "501 5.1.3 Bad recipient address syntax"
R501_BAD_SENDER = "501 5.1.7 Bad sender address syntax"
R530_AUTH_REQUIRED = "530 5.7.0 Authentication required"
R535_AUTH_FAILED = "535 5.7.8 Authentication credentials invalid"
R550_BARE_LINE_ENDING = "550 5.5.0 Bare CR or LF in message data is not allowed (RFC 5321 2.3.8)"
R552_TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
R554_RELAY_DENIED = "554 5.7.1 Relay access denied"
R554_EMPTY_MESSAGE = "554 5.6.0 Message is empty"
R421_IDLE = "421 4.4.2 Idle too long, closing connection"
R501_BAD_CHARACTERS = "501 5.5.2 Syntax error: 8-bit or control characters are not allowed here"
R501_BDAT_SYNTAX = "501 5.5.4 Syntax: BDAT <size> [LAST]"
R503_DATA_WITH_BDAT = "503 5.5.1 Error: DATA can not be used together with BDAT"
R500_COMMAND_TOO_LONG = "500 Command line too long"
R500_BAD_SYNTAX = "500 Error: bad syntax"
R502_TOO_MANY_ERRORS = "502 5.5.1 Too many unrecognized commands, goodbye."
R503_NEED_MAIL = "503 Error: need MAIL command"
R503_NEED_RCPT = "503 5.5.1 Error: need RCPT command"
R503_NESTED_MAIL = "503 Error: nested MAIL command"
R354_DATA = "354 End data with <CR><LF>.<CR><LF>"
R220_TLS = "220 Ready to start TLS"
R454_NO_TLS = "454 TLS not available"
R235_AUTH_OK = "235 2.7.0 Authentication successful"
R538_AUTH_NEEDS_TLS = "538 5.7.11 Encryption required for requested authentication mechanism"
R502_AUTH_NOT_OFFERED = "502 5.5.1 AUTH is not offered on this listener"
R501_AUTH_ABORTED = "501 5.7.0 Auth aborted"
R501_BAD_BASE64 = "501 5.5.2 Can't decode base64"
R501_AUTH_SPLIT = "501 5.5.2 Can't split auth value"
R504_AUTH_MECHANISM = "504 5.5.4 Unrecognized authentication type"
R552_SIZE_DECLARED = "552 Error: message size exceeds fixed maximum message size"
R555_MAIL_PARAMS = "555 MAIL FROM parameters not recognized or not implemented"
R555_RCPT_PARAMS = "555 RCPT TO parameters not recognized or not implemented"

_DEFAULT_ENHANCED = {
    "221": "2.0.0", "250": "2.0.0", "251": "2.1.5", "252": "2.5.0",
    "421": "4.3.0", "450": "4.2.0", "451": "4.3.0", "452": "4.3.1", "454": "4.7.0", "455": "4.5.4",
    "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1", "504": "5.5.4",
    "530": "5.7.0", "535": "5.7.8", "538": "5.7.11", "550": "5.0.0", "551": "5.1.6",
    "552": "5.3.4", "553": "5.1.3", "554": "5.0.0", "555": "5.5.4",
}


def r250_queued(message_id: str) -> str:
    """The 250 after DATA: the message is on disk under this id."""
    return f"250 2.0.0 OK queued as {message_id}"


def r250_chunk(size: int) -> str:
    """The 250 for a BDAT chunk that is not the last one (RFC 3030)."""
    return f"250 2.0.0 {size} octets received"


def r550_smtpapi(reason: str) -> str:
    """An X-MSYS-API or smtpapi context problem, in Momentum's wording."""
    return f"550 5.6.0 {_one_line(reason)}"


def injection_reply(outcome: Accepted | Rejected) -> str:
    """The reply to DATA for what injection made of the message."""
    if isinstance(outcome, Accepted):
        return r250_queued(outcome.record.message_id)
    refusal = outcome.refusal
    if refusal is Refusal.SMTPAPI:
        return r550_smtpapi(outcome.detail)
    if refusal is Refusal.POLICY:
        return outcome.detail
    return _REFUSALS[refusal]


_REFUSALS = {
    Refusal.EMPTY_MESSAGE: R554_EMPTY_MESSAGE,
    Refusal.SPOOL_UNAVAILABLE: R451_SPOOL_UNAVAILABLE,
    Refusal.SPOOL_FULL: R452_SPOOL_FULL,
    Refusal.POLICY_FAILURE: R451_POLICY_FAILURE,
    Refusal.SUPPRESSED: NONE_QUEUED,
    Refusal.SUPPRESSION_UNAVAILABLE: R451_INTERNAL,
}


def with_enhanced_code(reply: str) -> str:
    """Add an RFC 3463 enhanced status code to a single-line reply that lacks one (RFC 2034)."""
    code, sep, text = reply.partition(" ")
    if sep != " " or len(code) != 3 or not code.isdigit():
        return reply
    first = text.split(" ", 1)[0]
    if first.count(".") == 2 and first.replace(".", "").isdigit():
        return reply
    enhanced = _DEFAULT_ENHANCED.get(code)
    return f"{code} {enhanced} {text}" if enhanced else reply


def _one_line(text: str) -> str:
    return " ".join(text.split())[:400]
