"""Peers' SMTP headers (③ smtpapi): SendGrid, Mailgun, Postmark and Amazon SES controls read as X-MSYS-API fields.

Each vendor is off until `[smtpapi] accept_headers` names it. An accepted vendor's headers are validated (a bad
one refuses the message with `550 5.6.0` and the reason), mapped onto the fields X-MSYS-API has (campaign_id,
metadata, tags, options.open_tracking, options.click_tracking), and removed from every delivered copy. They rank
below X-MSYS-API and above the listener's and global settings: `merge_peers` fills only what the X-MSYS-API
header left unset, and `resolve.py` puts policy above both. When several vendors are accepted, the first in
`accept_headers` that sets a field wins it.

* sendgrid: `X-SMTPAPI` (JSON): `unique_args` (string values, at most 10,000 bytes) → metadata, `category` (a
  string or a list) → tags, `filters.clicktrack.settings.enable` / `filters.opentrack.settings.enable` → click /
  open tracking; a `to` list is refused (the recipients are RCPT TO's).
* mailgun: `X-Mailgun-Variables` (JSON object, repeatable) → metadata, `X-Mailgun-Tag` (repeatable) → tags,
  `X-Mailgun-Track` → both, `X-Mailgun-Track-Clicks` (yes/no/htmlonly), `X-Mailgun-Track-Opens` → each one,
  `X-Mailgun-Campaign-Id` → campaign_id.
* postmark: `X-PM-Metadata-<key>` → metadata[key], `X-PM-Tag` → tags, `X-PM-TrackOpens` (true/false) → open,
  `X-PM-TrackLinks` (None/HtmlAndText/HtmlOnly/TextOnly) → click.
* ses: `X-SES-MESSAGE-TAGS` (`name=value, …`) → metadata, `X-SES-CONFIGURATION-SET` → metadata
  `ses:configuration-set` (the tag SES itself puts on its events).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec

from engaged.headers import decode_words
from engaged.smtpapi.header import MAX_CAMPAIGN_BYTES, MAX_HEADER_BYTES, MAX_TAGS, HeaderError, XMsysApi, parse_flag

__all__ = ["PEERS", "PeerHeaders", "is_peer_field", "merge_peers", "read_peer_headers", "strip_peer_headers"]

PEERS: Final = ("sendgrid", "mailgun", "postmark", "ses")
MAX_UNIQUE_ARGS_BYTES: Final = 10_000
MAX_PEER_TAG_CHARS: Final = 128
_SES_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")  # a message tag's name or value (SES API MessageTag)
_SES_CONFIGURATION_SET = re.compile(r"[A-Za-z0-9_-]{1,64}")  # SES API ConfigurationSet: 64 characters or fewer
_FIELD_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:", re.MULTILINE)

_EXACT: Final[dict[str, frozenset[bytes]]] = {
    "sendgrid": frozenset({b"x-smtpapi"}),
    "mailgun": frozenset({b"x-mailgun-variables", b"x-mailgun-tag", b"x-mailgun-track", b"x-mailgun-track-clicks",
                          b"x-mailgun-track-opens", b"x-mailgun-campaign-id"}),
    "postmark": frozenset({b"x-pm-tag", b"x-pm-trackopens", b"x-pm-tracklinks"}),
    "ses": frozenset({b"x-ses-message-tags", b"x-ses-configuration-set"}),
}
_PREFIXES: Final[dict[str, tuple[bytes, ...]]] = {"postmark": (b"x-pm-metadata-",)}


class PeerHeaders(msgspec.Struct, frozen=True, kw_only=True):
    """What accepted peers' headers asked for, in X-MSYS-API's terms; None: no header said."""

    campaign_id: str | None = None
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None
    open_tracking: bool | None = None
    click_tracking: bool | None = None


def is_peer_field(name: bytes, accepted: Sequence[str]) -> bool:
    """Whether header field `name` (any case) belongs to one of the `accepted` vendors."""
    lowered = name.lower()
    return any(lowered in _EXACT[vendor] or lowered.startswith(_PREFIXES.get(vendor, ())) for vendor in accepted)


def read_peer_headers(message: bytes, accepted: Sequence[str]) -> PeerHeaders | HeaderError | None:
    """The accepted vendors' headers of `message`, merged in `accepted` order; None when it carries none."""
    if not accepted:
        return None
    fields = _fields(message, lambda name: is_peer_field(name, accepted))
    if not fields:
        return None
    found: list[PeerHeaders] = []
    for vendor in accepted:
        own = [(name, value) for name, value in fields if is_peer_field(name.encode("ascii"), (vendor,))]
        if own:
            parsed = _READERS[vendor](own)
            if isinstance(parsed, HeaderError):
                return parsed
            found.append(parsed)
    merged: dict[str, Any] = {}
    for peer in found:
        for field in PeerHeaders.__struct_fields__:
            value = getattr(peer, field)
            if value is not None and field not in merged:
                merged[field] = value
    return PeerHeaders(**merged)


def merge_peers(header: XMsysApi | None, peers: PeerHeaders | None) -> XMsysApi | None:
    """X-MSYS-API with the fields it left unset taken from peers' headers (X-MSYS-API > peer header)."""
    if peers is None:
        return header
    base = header or XMsysApi()
    changes = {field: value for field in PeerHeaders.__struct_fields__
               if getattr(base, field) is None and (value := getattr(peers, field)) is not None}
    return msgspec.structs.replace(base, **changes) if changes else header


def strip_peer_headers(message: bytes, accepted: Sequence[str]) -> bytes:
    """`message` without the accepted vendors' header fields (folded lines included); the same object if none."""
    if not accepted:
        return message
    end = message.find(b"\r\n\r\n")
    head_end = len(message) if end < 0 else end + 2
    out: list[bytes] = []
    skipping = False
    position = 0
    while position < head_end:
        line_end = message.find(b"\r\n", position, head_end)
        line_end = head_end if line_end < 0 else line_end + 2
        line = message[position:line_end]
        if line[:1] not in (b" ", b"\t"):
            name = _FIELD_NAME.match(line)
            skipping = name is not None and is_peer_field(name.group(1), accepted)
        if not skipping:
            out.append(line)
        position = line_end
    if sum(map(len, out)) == head_end:
        return message
    return b"".join(out) + message[head_end:]


def _fields(message: bytes, wanted: Callable[[bytes], bool]) -> list[tuple[str, str]]:
    """(name, value) of each wanted field, unfolded; the value decoded from UTF-8 with surrogateescape."""
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[: end + 2]
    found: list[tuple[str, list[bytes]]] = []
    current: list[bytes] | None = None
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
            continue
        current = None
        name = _FIELD_NAME.match(line)
        if name is not None and wanted(name.group(1)):
            current = [line[name.end() :]]
            found.append((name.group(1).decode("ascii"), current))
    return [(name, b"".join(parts).decode("utf-8", "surrogateescape")) for name, parts in found]


def _text(name: str, value: str) -> str | HeaderError:
    """The header's text: bounded, valid UTF-8, RFC 2047 encoded-words decoded."""
    if len(value) > MAX_HEADER_BYTES:
        return HeaderError(f"{name} header is longer than {MAX_HEADER_BYTES} bytes")
    value = value.strip()
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return HeaderError(f"{name} header is not valid UTF-8; use RFC 2047")
    decoded = decode_words(value)
    if decoded is None:
        return HeaderError(f"{name} header has an undecodable RFC 2047 encoded-word")
    return decoded


def _json_object(name: str, value: str) -> dict[str, Any] | HeaderError:
    text = _text(name, value)
    if isinstance(text, HeaderError):
        return text
    try:
        data = msgspec.json.decode(text.encode("utf-8"))
    except msgspec.DecodeError as error:
        return HeaderError(f"JSON parsing error in {name}: {error}")
    if not isinstance(data, dict):
        return HeaderError(f"{name} must be a json object")
    return data


def _tag(name: str, value: str) -> str | HeaderError:
    text = _text(name, value)
    if isinstance(text, HeaderError):
        return text
    if not text or len(text) > MAX_PEER_TAG_CHARS:
        return HeaderError(f"{name} must be a tag of 1 to {MAX_PEER_TAG_CHARS} characters")
    return text


def _choice(name: str, value: str, choices: dict[str, bool]) -> bool | HeaderError:
    text = _text(name, value)
    if isinstance(text, HeaderError):
        return text
    chosen = choices.get(text.lower())
    if chosen is None:
        return HeaderError(f"{name} must be one of {', '.join(choices)}")
    return chosen


def _sendgrid(fields: list[tuple[str, str]]) -> PeerHeaders | HeaderError:
    if len(fields) > 1:
        return HeaderError("X-SMTPAPI header must appear at most once")
    data = _json_object("X-SMTPAPI", fields[0][1])
    if isinstance(data, HeaderError):
        return data
    if "to" in data:
        return HeaderError("X-SMTPAPI 'to' lists are not accepted: engaged takes the recipients from RCPT TO")
    metadata = data.get("unique_args")
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            return HeaderError("X-SMTPAPI 'unique_args' must be a json object of strings")
        if len(msgspec.json.encode(metadata)) > MAX_UNIQUE_ARGS_BYTES:
            return HeaderError(f"X-SMTPAPI 'unique_args' is longer than {MAX_UNIQUE_ARGS_BYTES} bytes")
    category = data.get("category")
    tags: list[str] | None = None
    if category is not None:
        tags = [category] if isinstance(category, str) else category
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            return HeaderError("X-SMTPAPI 'category' must be a string or a json array of strings")
        tags = tags[:MAX_TAGS]
    filters = data.get("filters", {})
    if not isinstance(filters, dict):
        return HeaderError("X-SMTPAPI 'filters' must be a json object")
    switches: dict[str, bool | None] = {}
    for filter_name in ("clicktrack", "opentrack"):
        entry = filters.get(filter_name, {})
        settings = entry.get("settings", {}) if isinstance(entry, dict) else None
        flag = parse_flag(settings.get("enable")) if isinstance(settings, dict) else HeaderError("")
        if isinstance(flag, HeaderError):
            return HeaderError(f"X-SMTPAPI 'filters.{filter_name}.settings.enable' must be 0 or 1")
        switches[filter_name] = flag
    return PeerHeaders(metadata=metadata, tags=tags, open_tracking=switches["opentrack"],
                       click_tracking=switches["clicktrack"])


_YES_NO = {"yes": True, "no": False, "true": True, "false": False}


def _mailgun(fields: list[tuple[str, str]]) -> PeerHeaders | HeaderError:
    metadata: dict[str, Any] | None = None
    tags: list[str] = []
    values: dict[str, bool] = {}
    campaign: str | None = None
    for name, value in fields:
        key = name.lower()
        if key == "x-mailgun-variables":
            variables = _json_object("X-Mailgun-Variables", value)
            if isinstance(variables, HeaderError):
                return variables
            metadata = {**(metadata or {}), **variables}
        elif key == "x-mailgun-tag":
            tag = _tag("X-Mailgun-Tag", value)
            if isinstance(tag, HeaderError):
                return tag
            tags.append(tag)
        elif key == "x-mailgun-campaign-id":
            text = _text("X-Mailgun-Campaign-Id", value)
            if isinstance(text, HeaderError):
                return text
            if len(text.encode("utf-8")) > MAX_CAMPAIGN_BYTES:
                return HeaderError(f"X-Mailgun-Campaign-Id is limited to {MAX_CAMPAIGN_BYTES} bytes (campaign_id)")
            campaign = text
        else:
            choices = {**_YES_NO, "htmlonly": True} if key == "x-mailgun-track-clicks" else _YES_NO
            chosen = _choice(name, value, choices)
            if isinstance(chosen, HeaderError):
                return chosen
            values[key] = chosen
    track = values.get("x-mailgun-track")
    return PeerHeaders(
        campaign_id=campaign,
        metadata=metadata,
        tags=tags[:MAX_TAGS] or None,
        open_tracking=values.get("x-mailgun-track-opens", track),
        click_tracking=values.get("x-mailgun-track-clicks", track),
    )


def _postmark(fields: list[tuple[str, str]]) -> PeerHeaders | HeaderError:
    metadata: dict[str, Any] = {}
    tags: list[str] = []
    opens: bool | None = None
    clicks: bool | None = None
    for name, value in fields:
        key = name.lower()
        if key.startswith("x-pm-metadata-"):
            if len(key) == len("x-pm-metadata-"):
                return HeaderError("X-PM-Metadata- needs a key name after the prefix")
            text = _text(name, value)
            if isinstance(text, HeaderError):
                return text
            metadata[name[len("x-pm-metadata-") :]] = text
        elif key == "x-pm-tag":
            tag = _tag("X-PM-Tag", value)
            if isinstance(tag, HeaderError):
                return tag
            tags.append(tag)
        elif key == "x-pm-trackopens":
            chosen = _choice("X-PM-TrackOpens", value, {"true": True, "false": False})
            if isinstance(chosen, HeaderError):
                return chosen
            opens = chosen
        else:
            choices = {"none": False, "htmlandtext": True, "htmlonly": True, "textonly": True}
            chosen = _choice("X-PM-TrackLinks", value, choices)
            if isinstance(chosen, HeaderError):
                return HeaderError("X-PM-TrackLinks must be one of None, HtmlAndText, HtmlOnly, TextOnly")
            clicks = chosen
    return PeerHeaders(metadata=metadata or None, tags=tags[:MAX_TAGS] or None, open_tracking=opens,
                       click_tracking=clicks)


def _ses(fields: list[tuple[str, str]]) -> PeerHeaders | HeaderError:
    metadata: dict[str, Any] = {}
    for name, value in fields:
        text = _text(name, value)
        if isinstance(text, HeaderError):
            return text
        if name.lower() == "x-ses-configuration-set":
            if not _SES_CONFIGURATION_SET.fullmatch(text.strip()):
                return HeaderError("X-SES-CONFIGURATION-SET must be a name of letters, digits, _ and - (at most 64)")
            metadata["ses:configuration-set"] = text.strip()
            continue
        for pair in text.split(","):
            tag_name, equals, tag_value = (part.strip() for part in pair.partition("="))
            if not (equals and _SES_TOKEN.fullmatch(tag_name) and _SES_TOKEN.fullmatch(tag_value)):
                return HeaderError("X-SES-MESSAGE-TAGS must be name=value pairs separated by commas, each of "
                                   "letters, digits, _ and - (at most 256)")
            metadata[tag_name] = tag_value
    return PeerHeaders(metadata=metadata)


_READERS: Final[dict[str, Callable[[list[tuple[str, str]]], PeerHeaders | HeaderError]]] = {
    "sendgrid": _sendgrid,
    "mailgun": _mailgun,
    "postmark": _postmark,
    "ses": _ses,
}
