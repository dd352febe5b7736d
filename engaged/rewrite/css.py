"""`options.inline_css` (④ rewrite): copy the rules of `<style>` blocks into `style` attributes, before tracking.

css-inline (Rust: html5ever and Servo's selectors) decides which declarations each element gets, but it re-serialises
the whole document. So every start tag is first marked with its position, the marked copy is inlined, and only the
`style` attributes that changed are spliced back into the original text: every other byte stays as it was, and a
document nothing applied to comes back as the same object. The `<style>` blocks stay (media queries and pseudo-classes
cannot be inlined). CSS that fails a syntax check (unbalanced braces, an unterminated string or comment) leaves the
document untouched with a warning, as does anything css-inline refuses. Start tags are found by a linear-time
scanner written after the HTML5 tokenizer's states (as in `html.py`), so no input makes this slow or raise.
"""

from __future__ import annotations

import re

import css_inline
import msgspec

from engaged.rewrite.entities import decode_attribute, encode_attribute

__all__ = ["CssResult", "inline_css"]

_MARK = "data-engaged-css"
_STYLE_OPEN = re.compile(r"<style(?=[\t\n\f\r />])", re.IGNORECASE)
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


_VALUE = r"""(?:"[^"]*+"?|'[^']*+'?|[^\t\n\f\r >]*+)"""
_ATTRIBUTE = rf"[\t\n\f\r /]*+[^\t\n\f\r />][^\t\n\f\r />=]*+(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+{_VALUE})?"
_TAG_REST = rf"[^\t\n\f\r />]*+(?:{_ATTRIBUTE})*+[\t\n\f\r /]*+"
_RAW_TEXT = ("script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes", "plaintext")
_MARKUP = re.compile(  # one token of the HTML5 tokenizer's states, possessive throughout: linear in the input
    r"[^<]++"
    r"|<!--(?:-?>|(?:[^-]++|-(?!-!?>))*+(?:--!?>|\Z))"
    rf"|<(?P<tag>(?:(?P<raw>(?i:{'|'.join(_RAW_TEXT)}))(?=[\t\n\f\r />]|\Z)|[A-Za-z]){_TAG_REST})(?P<closed>>)?"
    rf"|</[A-Za-z]{_TAG_REST}>?"
    r"|<[!?][^>]*+>?"
    r"|</[^>]*+>?"
    r"|<"
)
_RAW_END = {name: re.compile(rf"</(?i:{name})(?=[\t\n\f\r />]|\Z)") for name in _RAW_TEXT}


def _scan(html: str) -> tuple[list[tuple[int, int]], list[str]]:
    """(start, end) of every start tag in document order, and the text of every `<style>` element, as the HTML5
    tokenizer reads them.

    A tag cut off by the end of the document is no tag, and the content of raw-text elements (`<style>`,
    `<script>`, `<title>`, …) holds none. html.parser and a lazy regular expression did this before, in time
    quadratic in unterminated attribute values and `<style>` elements (`<p style='` 8,000 times: 8 s; `<style>`
    20,000 times: 15 s), and html.parser raised AssertionError on `<![ if mso ]>`. One difference from html5ever
    is kept: inside `<svg>` or `<math>`, `<title>` and `<style>` are read as raw text here, so an element in an
    unclosed one there gets no inlined style (a closed one costs nothing).
    """
    tags: list[tuple[int, int]] = []
    styles: list[str] = []
    pos, end = 0, len(html)
    while pos < end:
        found = _MARKUP.match(html, pos)
        if found is None:  # every position starts some token; kept for the type checker
            break
        pos = found.end()
        if found.group("tag") is None or found.group("closed") is None:
            continue
        tags.append((found.start(), pos))
        raw = found.group("raw")
        if raw is not None:
            name = raw.lower()
            close = _RAW_END[name].search(html, pos) if name != "plaintext" else None
            content_end = close.start() if close is not None else end
            if name == "style":
                styles.append(html[pos:content_end])
            pos = content_end
    return tags, styles


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
    if _STYLE_OPEN.search(html) is None:
        return CssResult(html)
    tags, blocks = _scan(html)
    if not blocks:
        return CssResult(html)
    for number, block in enumerate(blocks, 1):
        problem = _syntax_problem(block)
        if problem:
            return CssResult(html, warnings=(f"inline_css: <style> block {number} is not valid CSS ({problem}); "
                                             "left untouched",))
    marked = _mark(html, tags)
    try:
        inlined = _INLINER.inline(marked)
    except (css_inline.InlineError, ValueError) as error:
        return CssResult(html, warnings=(f"inline_css: CSS not inlined ({error}); left untouched",))
    styles = _marked_styles(inlined)
    edits: list[tuple[int, int, str]] = []
    for index, (start, end) in enumerate(tags):
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
