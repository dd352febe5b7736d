"""Which links are click-tracked, the link-name limit, and asking the minter; shared by html and text."""

from __future__ import annotations

import re

from engaged.errors import EngagedError
from engaged.types import LinkMinter

__all__ = [
    "LINK_NAME_MAX_BYTES",
    "MAX_LINK_BYTES",
    "REFUSED_LONG",
    "REFUSED_UNDECODABLE",
    "link_target",
    "mint_click",
    "mint_open",
    "refusal",
    "truncate_link_name",
]

MAX_LINK_BYTES = 4096
"""SparkPost refuses to redirect to targets over 4096 bytes, so such links are left as they are."""

LINK_NAME_MAX_BYTES = 63
"""`data-msys-linkname` is truncated to 63 bytes of UTF-8, on a character boundary."""

_C0_OR_SPACE = "".join(chr(code) for code in range(0x21))
_HTTP = re.compile(r"https?://.", re.IGNORECASE | re.DOTALL)
_PLACEHOLDER_DELIMITERS = (("{{", "}}"), ("%%", "%%"), ("*|", "|*"), ("[[", "]]"))
_SURROGATE = re.compile("[\ud800-\udfff]")

REFUSED_LONG = "link longer than 4096 bytes left untracked"
REFUSED_UNDECODABLE = "link with bytes undecodable in the part's charset left untracked"


def link_target(value: str) -> str:
    """The URL a browser follows for a decoded href: leading and trailing C0 controls and spaces removed."""
    return value.strip(_C0_OR_SPACE)


def refusal(target: str) -> str | None:
    """None if `target` is to be click-tracked; else why not (a warning text, or "" when nothing is wrong).

    Tracked: `http://` and `https://` (any case) URLs of at most 4096 bytes that carry no template placeholder
    (`{{…}}`, `%%…%%`, `*|…|*`, `[[…]]`: another system substitutes them later, so they must stay visible).
    """
    if not _HTTP.match(target):
        return ""
    if target.isascii():
        if len(target) > MAX_LINK_BYTES:
            return REFUSED_LONG
    elif _SURROGATE.search(target):
        return REFUSED_UNDECODABLE
    elif len(target) > MAX_LINK_BYTES or len(target.encode("utf-8")) > MAX_LINK_BYTES:
        return REFUSED_LONG
    if _has_placeholder(target):
        return ""
    return None


def mint_click(
    minter: LinkMinter,
    target: str,
    link_name: str,
    sublink: str | None,
    unsubscribe: bool,
    warnings: list[str],
) -> str | None:
    """The tracked URL, or None when the minter refuses the link (raises an EngagedError, such as
    tokens.UntrackableLink): the link is then left as it is and the reason added to `warnings`."""
    try:
        return minter.click_url(target, link_name, sublink, unsubscribe)
    except EngagedError as error:
        warnings.append(f"link left untracked: {error}")
        return None


def mint_open(minter: LinkMinter, initial: bool, warnings: list[str]) -> str | None:
    """The open-pixel URL, or None (and a warning) when the minter refuses with an EngagedError."""
    try:
        return minter.open_url(initial)
    except EngagedError as error:
        warnings.append(f"open pixel left out: {error}")
        return None


def _has_placeholder(target: str) -> bool:
    if "{{" not in target and "%%" not in target and "*|" not in target and "[[" not in target:
        return False  # the common case; the openings of _PLACEHOLDER_DELIMITERS, as fast substring searches
    for opening, closing in _PLACEHOLDER_DELIMITERS:
        start = target.find(opening)
        if start >= 0 and target.find(closing, start + len(opening)) >= 0:
            return True
    return False


def truncate_link_name(name: str) -> str:
    """`name` cut to at most 63 bytes of UTF-8 without splitting a character (lone surrogates become "?")."""
    data = name.encode("utf-8", "replace")
    if len(data) <= LINK_NAME_MAX_BYTES:
        return data.decode("utf-8")
    return data[:LINK_NAME_MAX_BYTES].decode("utf-8", "ignore")
