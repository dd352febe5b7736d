"""Parsing mail sent back to engaged, pure: DSNs (RFC 3464), ARF reports (RFC 5965), plain bounce replies.

Nothing here trusts the input: missing parts, wrong content types and undecodable bytes give
`NotAReport` (or a report with fewer fields), never an exception.
"""

from __future__ import annotations

import re
from email import message_from_bytes
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser
from email.policy import compat32

import msgspec

from engaged.delivery.bounce import classify_bounce

_MAX_TEXT = 1000
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_REPLY = re.compile(r"\b([245]\d\d)[ -]((?:[245]\.\d{1,3}\.\d{1,3} )?[^\r\n]{0,500})")
_BOUNCE_SUBJECT = re.compile(r"undeliver|delivery (status|failure|has failed)|returned mail|failure notice"
                             r"|mail delivery (failed|system)|could not be delivered|non[- ]?delivery", re.I)
_ADDRESS = re.compile(r"<?([^\s<>;]+@[^\s<>;]+?)>?$")


class DsnRecipient(msgspec.Struct, frozen=True, kw_only=True):
    """One per-recipient block of a DSN."""

    final_recipient: str = ""
    original_recipient: str = ""
    action: str = ""
    status: str = ""
    diagnostic: str = ""
    remote_mta: str = ""


class Bounce(msgspec.Struct, frozen=True, kw_only=True):
    """A DSN, or a plain reply that reads like one: the failures it reports and what it quotes."""

    structured: bool
    recipients: list[DsnRecipient]
    reporting_mta: str = ""
    original_headers: bytes = b""


class Complaint(msgspec.Struct, frozen=True, kw_only=True):
    """An ARF feedback report: the complaint and the headers of the message complained about."""

    feedback_type: str
    user_agent: str = ""
    reported_domain: str = ""
    original_rcpt_to: str = ""
    original_mail_from: str = ""
    source_ip: str = ""
    original_headers: bytes = b""
    msfbl: str = ""


class NotAReport(msgspec.Struct, frozen=True):
    """Neither a bounce nor a complaint; `reason` says why."""

    reason: str


Report = Bounce | Complaint | NotAReport


def _clip(text: str) -> str:
    return " ".join(text.split())[:_MAX_TEXT]


def _typed_value(value: str) -> str:
    """`rfc822; a@b` → `a@b`, `smtp; 550 5.1.1 …` → `550 5.1.1 …` (RFC 3464's address-type and diagnostic-type)."""
    kind, semi, rest = value.partition(";")
    return _clip(rest if semi and " " not in kind.strip() else value)


def _address(value: str) -> str:
    found = _ADDRESS.search(_typed_value(value))
    return found.group(1).lower() if found else ""


def _fields(part: Message | str | bytes) -> list[Message]:
    """The field blocks of a message/delivery-status or message/feedback-report body (blank-line separated)."""
    if isinstance(part, Message):
        payload = part.get_payload()
        if isinstance(payload, list) and all(isinstance(item, Message) for item in payload):
            return list(payload)
        raw = part.get_payload(decode=True)
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
    else:
        text = part.decode("utf-8", "replace") if isinstance(part, bytes) else part
    text = text.replace("\r\n", "\n")
    return [HeaderParser(policy=compat32).parsestr(block + "\n") for block in re.split(r"\n\s*\n", text)
            if block.strip()]


def _original_headers(message: Message) -> bytes:
    """The header block of the returned message (message/rfc822 or text/rfc822-headers), if any."""
    for part in message.walk():
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else None
            if isinstance(inner, Message):
                return _header_bytes(inner)
        if kind in ("text/rfc822-headers", "text/global-headers"):
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                return raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0] + b"\n"
    return b""


def _header_bytes(message: Message) -> bytes:
    return "".join(f"{name}: {value}\n" for name, value in message.items()).encode("utf-8", "surrogateescape")


def original_header(headers: bytes, name: str) -> str:
    """One header of the returned message's header block ("" when absent)."""
    if not headers:
        return ""
    parsed = BytesHeaderParser(policy=compat32).parsebytes(headers.replace(b"\r\n", b"\n") + b"\n")
    value = parsed.get(name)
    return "" if value is None else " ".join(str(value).split())


def parse(raw: bytes) -> Report:
    """What a mail sent to the inbound listener is."""
    try:
        message = message_from_bytes(raw, policy=compat32)
    except Exception as error:  # the stdlib parser should not raise, but input is hostile
        return NotAReport(f"unparseable: {error}")
    kind = message.get_content_type()
    report_type = (message.get_param("report-type") or "")
    report_type = report_type.lower() if isinstance(report_type, str) else ""
    if kind == "multipart/report" and report_type == "feedback-report":
        return _complaint(message)
    if kind == "multipart/report" and report_type == "delivery-status":
        return _dsn(message)
    for part in message.walk():  # a report part in a report that mislabels itself
        if part.get_content_type() == "message/feedback-report":
            return _complaint(message)
        if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status"):
            return _dsn(message)
    return _plain(message)


def _dsn(message: Message) -> Report:
    status_part = next((part for part in message.walk() if part.get_content_type() in
                        ("message/delivery-status", "message/global-delivery-status")), None)
    if status_part is None:
        return NotAReport("delivery-status report without a message/delivery-status part")
    blocks = _fields(status_part)
    if not blocks:
        return NotAReport("empty message/delivery-status part")
    per_message, *per_recipient = blocks
    recipients = []
    for block in per_recipient:
        recipient = DsnRecipient(
            final_recipient=_address(str(block.get("Final-Recipient", ""))),
            original_recipient=_address(str(block.get("Original-Recipient", ""))),
            action=_clip(str(block.get("Action", ""))).lower(),
            status=_clip(str(block.get("Status", ""))),
            diagnostic=_typed_value(str(block.get("Diagnostic-Code", ""))),
            remote_mta=_typed_value(str(block.get("Remote-MTA", ""))),
        )
        if recipient.final_recipient or recipient.original_recipient:
            recipients.append(recipient)
    if not recipients:
        return NotAReport("delivery-status report names no recipient")
    return Bounce(structured=True, recipients=recipients,
                  reporting_mta=_typed_value(str(per_message.get("Reporting-MTA", ""))),
                  original_headers=_original_headers(message))


def _complaint(message: Message) -> Report:
    part = next((item for item in message.walk() if item.get_content_type() == "message/feedback-report"), None)
    if part is None:
        return NotAReport("feedback-report without a message/feedback-report part")
    blocks = _fields(part)
    fields = blocks[0] if blocks else None
    if fields is None or not fields.get("Feedback-Type"):
        return NotAReport("feedback report without Feedback-Type")
    headers = _original_headers(message)
    return Complaint(
        feedback_type=_clip(str(fields.get("Feedback-Type"))).lower(),
        user_agent=_clip(str(fields.get("User-Agent", ""))),
        reported_domain=_clip(str(fields.get("Reported-Domain", ""))).lower(),
        original_rcpt_to=_address(str(fields.get("Original-Rcpt-To", ""))),
        original_mail_from=_address(str(fields.get("Original-Mail-From", ""))),
        source_ip=_clip(str(fields.get("Source-IP", ""))),
        original_headers=headers,
        msfbl=original_header(headers, "X-MSFBL"),
    )


def _text_of(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                return raw[:65536].decode(part.get_content_charset() or "utf-8", "replace")
    return ""


def _plain(message: Message) -> Report:
    """A bounce without a DSN: a failure reply quoted in the text, under a bounce-like subject or sender."""
    subject = str(message.get("Subject", ""))
    sender = str(message.get("From", "")).lower()
    looks = _BOUNCE_SUBJECT.search(subject) or "mailer-daemon" in sender or "postmaster" in sender
    if not looks:
        return NotAReport("no delivery-status part and nothing that reads as a bounce")
    text = _text_of(message)
    reply = _REPLY.search(text)
    status = _STATUS.search(text)
    diagnostic = _clip(reply.group(0)) if reply else _clip(text[:300])
    return Bounce(structured=False, recipients=[DsnRecipient(
        action="failed", status=status.group(0) if status else "", diagnostic=diagnostic)],
        original_headers=_original_headers(message))


def failure(recipient: DsnRecipient) -> tuple[str, str, str] | None:
    """(bounce_class, error_code, reason) for a block that reports a failure, None for delayed/delivered/relayed."""
    if recipient.action and recipient.action not in ("failed",):
        return None
    status = recipient.status
    if status[:1] == "2":
        return None
    reply = _REPLY.search(recipient.diagnostic)
    code = reply.group(1) if reply else ("550" if status[:1] == "5" else "450" if status[:1] == "4" else "")
    text = f"{status} {recipient.diagnostic}".strip()
    return classify_bounce(code or "5", text), code, _clip(recipient.diagnostic or status)
