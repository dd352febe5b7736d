"""HTML attribute values: decode character references by the HTML5 attribute rules, and encode URLs back.

`html.unescape` follows the rules for text, not for attribute values: it turns `&notify=1` into `¬ify=1`.
In an attribute, a named reference without its `;` (one of the 106 "legacy" names such as `&not`, `&copy`)
is left literal when the next character is `=` or an ASCII letter or digit, so query strings survive.
"""

from __future__ import annotations

import re
from html.entities import html5 as _NAMED

__all__ = ["decode_attribute", "encode_attribute"]

_REFERENCE = re.compile(
    r"&(?:#[xX](?P<hex>[0-9A-Fa-f]+);?|#(?P<dec>[0-9]+);?|(?P<name>[A-Za-z][A-Za-z0-9]{0,31})(?P<semi>;?))"
)
_LEGACY_MAX = max(len(name) for name in _NAMED if not name.endswith(";"))
_REPLACEMENT = "\ufffd"
_MAX_CODE_POINT = 0x10FFFF

# HTML5 "numeric character reference end state": C1 controls are read as windows-1252.
_C1_REMAP = {
    0x80: "\u20ac", 0x82: "\u201a", 0x83: "\u0192", 0x84: "\u201e", 0x85: "\u2026", 0x86: "\u2020",
    0x87: "\u2021", 0x88: "\u02c6", 0x89: "\u2030", 0x8A: "\u0160", 0x8B: "\u2039", 0x8C: "\u0152",
    0x8E: "\u017d", 0x91: "\u2018", 0x92: "\u2019", 0x93: "\u201c", 0x94: "\u201d", 0x95: "\u2022",
    0x96: "\u2013", 0x97: "\u2014", 0x98: "\u02dc", 0x99: "\u2122", 0x9A: "\u0161", 0x9B: "\u203a",
    0x9C: "\u0153", 0x9E: "\u017e", 0x9F: "\u0178",
}  # fmt: skip


def decode_attribute(value: str) -> str:
    """The value an HTML5 parser gives an attribute whose raw text (without quotes) is `value`."""
    ampersands = value.count("&")
    if not ampersands:
        return value
    if value.count("&amp;") == ampersands:  # the common case (query strings): one pass, nothing else to read
        return value.replace("&amp;", "&")
    return _REFERENCE.sub(_replace, value)


def encode_attribute(value: str, quote: str = '"') -> str:
    """`value` escaped for an attribute quoted with `quote` (`"` or `'`): `&` and the quote character."""
    escaped = value.replace("&", "&amp;")
    if quote == "'":
        return escaped.replace("'", "&#39;")
    return escaped.replace('"', "&quot;")


def _replace(match: re.Match[str]) -> str:
    digits = match.group("hex")
    if digits is not None:
        return _code_point(digits, 16)
    digits = match.group("dec")
    if digits is not None:
        return _code_point(digits, 10)
    return _named(match)


def _code_point(digits: str, base: int) -> str:
    digits = digits.lstrip("0") or "0"
    if len(digits) > 8:  # beyond U+10FFFF whatever the base; avoids int() on huge digit strings
        return _REPLACEMENT
    number = int(digits, base)
    if number == 0 or number > _MAX_CODE_POINT or 0xD800 <= number <= 0xDFFF:
        return _REPLACEMENT
    return _C1_REMAP.get(number) or chr(number)


def _named(match: re.Match[str]) -> str:
    name, semi = match.group("name"), match.group("semi")
    if semi and name + ";" in _NAMED:
        return _NAMED[name + ";"]
    for length in range(min(len(name), _LEGACY_MAX), 1, -1):
        prefix = name[:length]
        if prefix not in _NAMED:
            continue
        following = name[length:] + semi or match.string[match.end() : match.end() + 1]
        if following and (following[0] == "=" or _is_ascii_alnum(following[0])):
            return match.group(0)  # the "historical" rule for attribute values: leave it literal
        return _NAMED[prefix] + name[length:] + semi
    return match.group(0)


def _is_ascii_alnum(char: str) -> bool:
    return char.isascii() and char.isalnum()
