"""SMTP paths and ESMTP parameters (RFC 5321 4.1.2, RFC 6531, RFC 3461), pure: text in, values or None out."""

from __future__ import annotations

import re

import msgspec

# RFC 5321 4.1.2. RFC 6531 adds UTF8-non-ascii to atext, qtextSMTP and sub-domains (U-labels).
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
_U8 = r"\u0080-\U0010ffff"
_DOT_STRING = rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*"
_DOT_STRING_U8 = rf"[{_ATEXT}{_U8}]+(?:\.[{_ATEXT}{_U8}]+)*"
_QUOTED = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"'
_QUOTED_U8 = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_U8}]|\\[\x20-\x7e])*"'
_SUB_DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_SUB_DOMAIN_U8 = rf"[A-Za-z0-9{_U8}](?:[A-Za-z0-9{_U8}-]*[A-Za-z0-9{_U8}])?"
_DOMAIN = rf"{_SUB_DOMAIN}(?:\.{_SUB_DOMAIN})*"
_DOMAIN_U8 = rf"{_SUB_DOMAIN_U8}(?:\.{_SUB_DOMAIN_U8})*"
_IPV4 = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}"
_LITERAL = rf"\[(?:{_IPV4}|IPv6:[0-9A-Fa-f:.]+|{_DOMAIN}:[\x21-\x5a\x5e-\x7e]+)\]"
_MAILBOX = re.compile(rf"(?:{_DOT_STRING}|{_QUOTED})@(?:{_DOMAIN}|{_LITERAL})")
_MAILBOX_U8 = re.compile(rf"(?:{_DOT_STRING_U8}|{_QUOTED_U8})@(?:{_DOMAIN_U8}|{_LITERAL})")
_ROUTE = re.compile(rf"@{_DOMAIN}(?:,@{_DOMAIN})*:")
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")
_NOTIFY = frozenset({"SUCCESS", "FAILURE", "DELAY"})


class Path(msgspec.Struct, frozen=True):
    """A parsed `<path>` and the parameter text after it; `routed` when a source route was dropped."""

    address: str
    params: str
    routed: bool = False


def parse_path(arg: str, *, smtputf8: bool) -> Path | None:
    """`<mailbox> params`, `<>` or `<@route:mailbox>`; None for anything RFC 5321 (and 6531) does not allow.

    Source routes are accepted and dropped (RFC 5321 appendix C: servers MUST accept the syntax and
    MAY ignore the route).
    """
    text = arg.lstrip(" ")
    if not text.startswith("<"):
        return None
    close = text.find(">")
    if close < 0:
        return None
    inner, rest = text[1:close], text[close + 1 :]
    if rest and not rest.startswith(" "):
        return None
    routed = False
    if inner.startswith("@"):
        route = _ROUTE.match(inner)
        if route is None:
            return None
        inner, routed = inner[route.end() :], True
    if inner and not is_valid_mailbox(inner, smtputf8=smtputf8):
        return None
    if not inner and routed:
        return None
    return Path(inner, rest.strip(" "), routed)


def is_valid_mailbox(address: str, *, smtputf8: bool) -> bool:
    """RFC 5321 Mailbox (RFC 6531 with SMTPUTF8), local part <= 64 and domain <= 255 octets, path <= 256."""
    if not address.isascii() and not smtputf8:
        return False
    size = len(address.encode("utf-8")) if smtputf8 else len(address)
    if size > 254:
        return False
    local, _, domain = address.rpartition("@")
    if len(local.encode("utf-8")) > 64 or len(domain.encode("utf-8")) > 255:
        return False
    pattern = _MAILBOX_U8 if smtputf8 else _MAILBOX
    return pattern.fullmatch(address) is not None


def parse_params(text: str) -> dict[str, str] | None:
    """`KEY[=value] …` with keywords upper-cased and values kept as sent; None on bad syntax (RFC 5321 4.1.2)."""
    params: dict[str, str] = {}
    for item in text.split():
        key, eq, value = item.partition("=")
        if not key.isascii() or not key.replace("-", "").isalnum() or (eq and not value) or key.upper() in params:
            return None
        params[key.upper()] = value
    return params


def is_xtext(value: str, *, max_length: int) -> bool:
    """RFC 3461 4: xtext, at most `max_length` characters."""
    return len(value) <= max_length and _XTEXT.fullmatch(value) is not None


def parse_notify(value: str) -> str | None:
    """NOTIFY=NEVER or a comma list of SUCCESS, FAILURE, DELAY (RFC 3461 4.1), normalised; None if invalid."""
    items = value.upper().split(",")
    if items == ["NEVER"]:
        return "NEVER"
    if not items or len(set(items)) != len(items) or not set(items) <= _NOTIFY:
        return None
    return ",".join(items)


def parse_orcpt(value: str) -> str | None:
    """ORCPT=addr-type;xtext (RFC 3461 4.2), at most 500 characters; None if invalid."""
    addr_type, semi, address = value.partition(";")
    if not semi or not addr_type.isascii() or not addr_type.replace("-", "").isalnum():
        return None
    return value if is_xtext(address, max_length=500) else None
