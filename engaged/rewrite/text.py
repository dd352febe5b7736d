"""Plain-text part rewriting (④ rewrite): click-track bare http(s) URLs, honouring `[[data-msys-…]]` suffixes.

A URL starts at `http://` or `https://` (any case, not glued to a preceding letter or digit) and runs to
whitespace, `<`, `>` or `"`, so `<http://…>` wrapping is handled. Trailing `.,;:!?'` and closing brackets
without their opening partner inside the URL are left outside it. A suffix written right after the URL,
`[[data-msys-clicktrack="0"]]`, `[[data-msys-unsubscribe="1"]]` or `[[data-msys-sublink="name"]]`, applies to
that URL and is removed from the delivered text. One possessive regular expression finds each URL and the
trimming walks back over it once, so the work is linear in the text.
"""

from __future__ import annotations

import re

import msgspec

from engaged.rewrite import links
from engaged.types import LinkMinter

__all__ = ["TextResult", "rewrite_text"]

_URL = re.compile(
    r"(?<![A-Za-z0-9])(?P<url>(?i:https?)://(?:[^\s<>\"\[]|\[(?!\[data-msys-))*+)"
    r"(?P<marks>(?:\[\[data-msys-[a-z]++=\"[^\"\]\r\n]{0,256}\"\]\])*+)"
)
_MARK = re.compile(r"\[\[data-msys-(?P<name>[a-z]++)=\"(?P<value>[^\"\]\r\n]*)\"\]\]")
_TRAILING_PUNCTUATION = frozenset(".,;:!?'")
_BRACKETS = {")": "(", "]": "[", "}": "{"}


class TextResult(msgspec.Struct, frozen=True, kw_only=True):
    """The rewritten text (the input object itself when nothing changed) and what was done to it."""

    text: str
    links_tracked: int
    warnings: tuple[str, ...]


def rewrite_text(text: str, minter: LinkMinter) -> TextResult:
    """Replace every trackable bare URL of `text` by its click-tracked URL; the link name is the URL."""
    pieces: list[str] = []
    warnings: list[str] = []
    tracked = 0
    pos = 0
    for match in _URL.finditer(text):
        url, marks = match.group("url"), match.group("marks")
        if not marks:
            url = _trim(url)
        options = _marks(marks)
        refused = links.refusal(url)
        if refused:
            warnings.append(refused)
        minted = None
        if refused is None and options.get("clicktrack") != "0":
            sublink, unsubscribe = options.get("sublink") or None, options.get("unsubscribe") == "1"
            minted = links.mint_click(minter, url, url, sublink, unsubscribe, warnings)
        if minted is not None:
            replacement = minted
            tracked += 1
        elif marks:
            replacement = url
        else:
            continue
        url_end = match.start("url") + len(url)
        pieces.append(text[pos : match.start()])
        pieces.append(replacement)
        pieces.append(text[url_end : match.start("marks")])
        pos = match.end()
    if not pieces:
        return TextResult(text=text, links_tracked=0, warnings=tuple(dict.fromkeys(warnings)))
    pieces.append(text[pos:])
    return TextResult(text="".join(pieces), links_tracked=tracked, warnings=tuple(dict.fromkeys(warnings)))


def _trim(url: str) -> str:
    """`url` without trailing punctuation and without closing brackets that were never opened inside it."""
    unmatched = {close: url.count(close) - url.count(opening) for close, opening in _BRACKETS.items()}
    end = len(url)
    while end > 0:
        last = url[end - 1]
        if last in _TRAILING_PUNCTUATION:
            end -= 1
        elif unmatched.get(last, 0) > 0:
            unmatched[last] -= 1
            end -= 1
        else:
            break
    return url[:end]


def _marks(marks: str) -> dict[str, str]:
    if not marks:
        return {}
    return {match.group("name"): match.group("value") for match in _MARK.finditer(marks)}
