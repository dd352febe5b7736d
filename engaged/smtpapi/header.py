"""X-MSYS-API header: find it in the header block, unfold, decode RFC 2047, parse JSON, validate into XMsysApi
(Momentum's wording)."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from engaged.headers import HeaderBlock, decode_words
from engaged.smtpapi.addresses import LISTS, MAX_LISTED, ListedAddress, read_list
from engaged.smtpapi.options import refusal

FIELD_NAME = b"x-msys-api"
MAX_HEADER_BYTES = 65536
MAX_JSON_DEPTH = 32
MAX_TAGS = 10
MAX_CAMPAIGN_BYTES = 64


class XMsysApi(msgspec.Struct, frozen=True, kw_only=True):
    """The validated header; None means the field was absent."""

    campaign_id: str | None = None
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None
    open_tracking: bool | None = None
    click_tracking: bool | None = None
    transactional: bool | None = None
    skip_suppression: bool | None = None
    sandbox: bool | None = None
    ip_pool: str | None = None
    dkim_key: str | None = None
    inline_css: bool | None = None
    cc: tuple[ListedAddress, ...] = ()  # each gets its own tracked copy and shows in every copy's Cc:
    bcc: tuple[ListedAddress, ...] = ()  # each gets its own tracked copy, with a Bcc: of its own address
    archive: tuple[ListedAddress, ...] = ()  # each gets a replica of the first envelope recipient's copy


class HeaderError(msgspec.Struct, frozen=True):
    """Why the header was refused: the text after `550 5.6.0 `."""

    reason: str


_TRUE = {"true", "1"}
_FALSE = {"false", "0"}


def read_xmsysapi(block: HeaderBlock) -> XMsysApi | HeaderError | None:
    """The validated X-MSYS-API header of a message, None when absent, HeaderError when broken or repeated."""
    values = block.values(FIELD_NAME)
    if not values:
        return None
    if len(values) > 1:
        return HeaderError("X-MSYS-API header must appear at most once")
    try:
        raw = values[0].decode("utf-8")
    except UnicodeDecodeError:
        return HeaderError("X-MSYS-API header is not valid UTF-8; use \\u escapes or RFC 2047")
    return decode_xmsysapi(raw)


def decode_xmsysapi(raw_value: str) -> XMsysApi | HeaderError:
    """Decode the header's value as it came (folded, maybe RFC 2047-encoded, maybe raw UTF-8).

    `raw_value` is the header value decoded from bytes with utf-8/surrogateescape, so bytes that
    are not UTF-8 show up as lone surrogates and are refused.
    """
    if len(raw_value) > MAX_HEADER_BYTES:
        return HeaderError(f"X-MSYS-API header is longer than {MAX_HEADER_BYTES} bytes")
    value = re.sub(r"\r?\n(?=[ \t])", "", raw_value).strip()
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return HeaderError("X-MSYS-API header is not valid UTF-8; use \\u escapes or RFC 2047")
    if "=?" in value:
        decoded = decode_words(value)
        if decoded is None:
            return HeaderError("X-MSYS-API header has an undecodable RFC 2047 encoded-word")
        value = decoded
    try:
        data = msgspec.json.decode(value.encode("utf-8"))
    except msgspec.DecodeError as error:
        return HeaderError(f"JSON parsing error in X-MSYS-API: {error}")
    if not isinstance(data, dict):
        return HeaderError("X-MSYS-API must be a json object")
    if _depth(data) > MAX_JSON_DEPTH:
        return HeaderError(f"X-MSYS-API is nested deeper than {MAX_JSON_DEPTH} levels")
    nul = _nul_path(data, "")
    if nul is not None:
        # Every string here ends up in events; PostgreSQL TEXT cannot hold NUL, so a message carrying one
        # would be accepted and then never stored. Refuse it while the client can still be told.
        return HeaderError(f"X-MSYS-API '{nul}' must not contain a NUL character")
    return _validate(data)


def _depth(value: Any, level: int = 1) -> int:
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


def _nul_path(value: Any, path: str) -> str | None:
    """The dotted path of the first key or string value holding U+0000 (depth is bounded already)."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                return where.replace("\x00", "\\u0000")
            found = _nul_path(item, where)
            if found is not None:
                return found
    if isinstance(value, list):
        for n, item in enumerate(value):
            found = _nul_path(item, f"{path}[{n}]")
            if found is not None:
                return found
    return None


def _type_error(field: str, kind: str) -> HeaderError:
    return HeaderError(f"X-MSYS-API '{field}' must be of type '{kind}'")


def _validate(data: dict[str, Any]) -> XMsysApi | HeaderError:
    refused = refusal(data)
    if refused is not None:
        return HeaderError(refused)
    campaign = data.get("campaign_id")
    if campaign is not None:
        if not isinstance(campaign, str):
            return _type_error("campaign_id", "string")
        if len(campaign.encode("utf-8")) > MAX_CAMPAIGN_BYTES:
            return HeaderError("smtpapi_campaign_id context is limited to 64 bytes")
    metadata = data.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return _type_error("metadata", "json object")
    tags = data.get("tags")
    if tags is not None:
        if not isinstance(tags, list):
            return _type_error("tags", "json array")
        if not all(isinstance(tag, str) for tag in tags):
            return _type_error("tags", "json array of strings")
        tags = tags[:MAX_TAGS]
    options = data.get("options", {})
    if not isinstance(options, dict):
        return _type_error("options", "json object")
    flags: dict[str, bool | None] = {}
    for name in ("open_tracking", "click_tracking", "transactional", "sandbox", "skip_suppression", "inline_css"):
        parsed = parse_flag(options.get(name))
        if isinstance(parsed, HeaderError):
            return _type_error(f"options.{name}", "boolean")
        flags[name] = parsed
    ip_pool = options.get("ip_pool")
    if ip_pool is not None and not isinstance(ip_pool, str):
        return _type_error("options.ip_pool", "string")
    dkim_key = options.get("dkim_key")
    if dkim_key is not None and not isinstance(dkim_key, str):
        return _type_error("options.dkim_key", "string")
    lists: dict[str, tuple[ListedAddress, ...]] = {}
    for name in LISTS:
        if data.get(name) is not None:
            entries = read_list(name, data[name])
            if isinstance(entries, str):
                return HeaderError(entries)
            lists[name] = entries
    if sum(map(len, lists.values())) > MAX_LISTED:
        return HeaderError(f"X-MSYS-API cc, bcc and archive may list at most {MAX_LISTED} recipients in all")
    return XMsysApi(
        campaign_id=campaign,
        metadata=metadata,
        tags=tags,
        ip_pool=ip_pool,
        dkim_key=dkim_key,
        cc=lists.get("cc", ()),
        bcc=lists.get("bcc", ()),
        archive=lists.get("archive", ()),
        **flags,
    )


def parse_flag(value: object) -> bool | HeaderError | None:
    """A boolean from JSON true/false, "true"/"false", 1/0 or "1"/"0"; None when absent."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    return HeaderError("not a boolean")
