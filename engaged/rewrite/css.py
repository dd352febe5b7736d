"""`options.inline_css` (④ rewrite): copy the rules of `<style>` blocks into `style` attributes, before tracking.

css-inline (Rust: html5ever and Servo's selectors) decides which declarations each element gets, but it re-serialises
the whole document. So every start tag is first marked with its position, the marked copy is inlined, and only the
`style` attributes that changed are spliced back into the original text: every other byte stays as it was, and a
document nothing applied to comes back as the same object. The `<style>` blocks stay (media queries and pseudo-classes
cannot be inlined). CSS that fails a syntax check (unbalanced braces, an unterminated string or comment) leaves the
document untouched with a warning, as does anything css-inline refuses and markup html.parser cannot read (a marked
section it does not know, `<![ if mso ]>`).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import css_inline
import msgspec

from engaged.rewrite.entities import decode_attribute, encode_attribute

__all__ = ["CssResult", "inline_css"]

_MARK = "data-engaged-css"
_STYLE_BLOCK = re.compile(r"<style(?=[\t\n\f\r />])[^>]*+>(.*?)</style", re.IGNORECASE | re.DOTALL)
_CSS_TOKEN = re.compile(r'/\*.*?(?:\*/|\Z)|"(?:[^"\\\n]|\\.)*+(?:"|$)|\'(?:[^\'\\\n]|\\.)*+(?:\'|$)|[{}]', re.DOTALL)
_STYLE_ATTRIBUTE = re.compile(
    r"""[\t\n\f\r /](?i:style)[\t\n\f\r ]*+=[\t\n\f\r ]*+(?P<value>"[^"]*+"|'[^']*+'|[^\t\n\f\r >]*+)"""
)
_TAG_NAME_END = re.compile(r"<[A-Za-z][^\t\n\f\r />]*+")
_SERIALISED_TAG = re.compile(r'<[A-Za-z][^\t\n\f\r />]*+(?:[\t\n\f\r ]++[^\t\n\f\r "=/>]++(?:="[^"]*+")?)*+[^>]*+>')
_SERIALISED_MARK = re.compile(rf' {_MARK}="([0-9]+)"')
_SERIALISED_STYLE = re.compile(r' style="([^"]*)"')
_INLINER = css_inline.CSSInliner(keep_style_tags=True, keep_link_tags=True, load_remote_stylesheets=False)


class CssResult(msgspec.Struct, frozen=True):
    """The document (the input object itself when nothing was inlined), elements restyled, warnings."""

    text: str
    elements: int = 0
    warnings: tuple[str, ...] = ()


class _StartTags(HTMLParser):
    """Offsets of every start tag's name end, and each tag's `style` value, in document order."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=False)
        self._lines = [0]
        self._lines.extend(found.end() for found in re.finditer("\n", text))
        self.tags: list[tuple[int, int]] = []  # (start, end) of each start tag

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        line, column = self.getpos()
        start = self._lines[line - 1] + column
        text = self.get_starttag_text() or ""
        self.tags.append((start, start + len(text)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)


def _marked_styles(inlined: str) -> dict[int, str]:
    """The `style` of each marked element of css-inline's output, by mark. html5ever writes every attribute
    as name="value" with `&`, `"` and no-break spaces escaped, so a regular expression reads it exactly."""
    styles: dict[int, str] = {}
    for tag in _SERIALISED_TAG.finditer(inlined):
        mark = _SERIALISED_MARK.search(tag.group())
        if mark is not None:
            style = _SERIALISED_STYLE.search(tag.group())
            styles[int(mark.group(1))] = decode_attribute(style.group(1)) if style else ""
    return styles


def inline_css(html: str) -> CssResult:
    """Inline the `<style>` rules of one HTML document into its elements' `style` attributes."""
    blocks = [found.group(1) for found in _STYLE_BLOCK.finditer(html)]
    if not blocks:
        return CssResult(html)
    for number, block in enumerate(blocks, 1):
        problem = _syntax_problem(block)
        if problem:
            return CssResult(html, warnings=(f"inline_css: <style> block {number} is not valid CSS ({problem}); "
                                             "left untouched",))
    scanner = _StartTags(html)
    try:
        scanner.feed(html)
        scanner.close()
    except AssertionError as error:  # _markupbase raises it (explicitly, so also under -O) for `<![ if …]>` & co.
        return CssResult(html, warnings=(f"inline_css: markup not readable ({error}); left untouched",))
    marked = _mark(html, scanner.tags)
    try:
        inlined = _INLINER.inline(marked)
    except (css_inline.InlineError, ValueError) as error:
        return CssResult(html, warnings=(f"inline_css: CSS not inlined ({error}); left untouched",))
    styles = _marked_styles(inlined)
    edits: list[tuple[int, int, str]] = []
    for index, (start, end) in enumerate(scanner.tags):
        new = styles.get(index)
        if new is None:
            continue
        edit = _style_edit(html, start, end, new)
        if edit is not None:
            edits.append(edit)
    if not edits:
        return CssResult(html)
    pieces: list[str] = []
    pos = 0
    for start, end, replacement in edits:
        pieces.append(html[pos:start])
        pieces.append(replacement)
        pos = end
    pieces.append(html[pos:])
    return CssResult("".join(pieces), len(edits))


def _syntax_problem(css: str) -> str:
    depth = 0
    for token in _CSS_TOKEN.finditer(css):
        text = token.group()
        if text == "{":
            depth += 1
        elif text == "}":
            depth -= 1
            if depth < 0:
                return "a } without its {"
        elif text.startswith("/*") and not text.endswith("*/"):
            return "an unterminated comment"
        elif text[0] in "\"'" and (len(text) < 2 or text[-1] != text[0]):
            return "an unterminated string"
    return "a { without its }" if depth else ""


def _mark(html: str, tags: list[tuple[int, int]]) -> str:
    pieces: list[str] = []
    pos = 0
    for index, (start, end) in enumerate(tags):
        name = _TAG_NAME_END.match(html, start, end)
        if name is None:
            continue
        pieces.append(html[pos : name.end()])
        pieces.append(f' {_MARK}="{index}"')
        pos = name.end()
    pieces.append(html[pos:])
    return "".join(pieces)


def _style_edit(html: str, start: int, end: int, new: str) -> tuple[int, int, str] | None:
    """The splice that gives the tag html[start:end] the style `new`; None when it already has it."""
    found = _STYLE_ATTRIBUTE.search(html, start, end)
    if found is None:
        if not new:
            return None
        name = _TAG_NAME_END.match(html, start, end)
        at = name.end() if name else start
        return at, at, f' style="{encode_attribute(new, chr(34))}"'
    raw = found.group("value")
    quote = raw[0] if raw[:1] in ('"', "'") else ""
    old = decode_attribute(raw[1:-1] if quote and len(raw) > 1 else raw)
    if old == new:
        return None
    quote = quote or '"'
    return found.start("value"), found.end("value"), quote + encode_attribute(new, quote) + quote
