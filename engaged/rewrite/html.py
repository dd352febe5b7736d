"""HTML part rewriting (④ rewrite): click-track <a>/<area>/VML hrefs and place the open pixels.

The document is never parsed into a tree and re-serialised. One regular expression, written after the
HTML5 tokenizer's states with possessive quantifiers only, skips a run of uninteresting markup (text, other
tags with their attribute values, comments, `<style>`/`<script>` and the other raw-text elements, doctypes)
and stops at one interesting construct per match (or after a bounded number of runs: a C-level match holds
the GIL, and rewriting runs on a thread beside the event loop): an `<a>`, `<area>` or `<v:…>` start tag, `<body>`,
`</body>`, or the opening of an Outlook conditional comment `<!--[if …]>`, whose content is tokenized as HTML
(Outlook renders it). Every sub-pattern can also end at the end of the input, so a match never fails and
nothing is scanned twice: the work is linear in the input, whatever the input. The output is the input with
a few spans replaced (href values, removed `data-msys-*` attributes) and the pixels inserted; every other
character stays as it was.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterator

import msgspec

from engaged.rewrite import links
from engaged.rewrite.entities import decode_attribute, encode_attribute
from engaged.types import LinkMinter

__all__ = ["AMP_MAX_BYTES", "AMP_PIXEL", "BOTTOM_PIXEL", "TOP_PIXEL", "HtmlPlans", "HtmlResult", "rewrite_html"]

TOP_PIXEL = (
    '<div style="color:transparent;visibility:hidden;opacity:0;font-size:0;border:0;max-height:1px;'
    "width:1px;margin:0;padding:0;border-width:0!important;display:none!important;line-height:0!important;"
    '"><img border="0" width="1" height="1" alt="" src="{url}"></div>'
)
"""The hidden initial-open pixel, placed right after the first `<body…>` start tag."""

BOTTOM_PIXEL = (
    '<img border="0" width="1" height="1" alt="" style="display:block;width:1px;height:1px;border:0;margin:0;'
    'padding:0" src="{url}">'
)
"""The open pixel, placed before the last `</body>`; a block, so it adds one pixel of height, not a line."""

AMP_PIXEL = '<amp-img src="{url}" width="1" height="1" layout="fixed" alt=""></amp-img>'
"""Both open pixels of an AMP for Email part (`amp_initial_open` after `<body…>`, `amp_open` before `</body>`):
AMP allows no `<img>`, and `amp-img` needs its size, a layout, an https `src` and its end tag."""

AMP_MAX_BYTES = 200_000
"""The AMP for Email validator refuses a document over this many bytes (UTF-8); clients then show the HTML part."""

_WS = "\t\n\f\r "
_NAME_END = r"(?=[\t\n\f\r />]|\Z)"
_VALUE = r"""(?:"[^"]*+"?|'[^']*+'?|[^\t\n\f\r >]*+)"""
_ATTRIBUTE = rf"[\t\n\f\r /]*+[^\t\n\f\r />][^\t\n\f\r />=]*+(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+{_VALUE})?"
_TAG_BODY = rf"[^\t\n\f\r />]*+(?:{_ATTRIBUTE})*+[\t\n\f\r /]*+"
_TAG_REST = rf"{_TAG_BODY}(?:>|\Z)"
_RAW_TEXT = ("script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes")
_RAW_TEXT_NAMES = r"s(?:cript|tyle)|t(?:extarea|itle)|xmp|iframe|no(?:embed|frames)"  # _RAW_TEXT, factored
_PLAIN_TAG_START = "C-HJ-MO-RUWYZc-hj-mo-ruwyz"  # letters no link, body or raw-text name starts with, in any case
_CONDITIONAL = r"<!--\[(?i:if)[^\]]{0,512}\]>"
_TEXT_RUN = 4096  # characters of text per skipped run,
_RUNS_PER_MATCH = 256  # and runs per match: one match scans about a megabyte at most (unless one tag is longer)
_SKIP = "|".join(  # after "<", the common case first: an ordinary start tag, then an ordinary end tag
    [
        rf"[^<]{{1,{_TEXT_RUN}}}+",
        r"<(?:"
        + "|".join(
            [
                rf"[{_PLAIN_TAG_START}]{_TAG_REST}",  # the same as the next, for the tags it can tell at once
                rf"(?!(?i:a(?:rea)?|body|{_RAW_TEXT_NAMES}){_NAME_END}|(?i:v:))[A-Za-z]{_TAG_REST}",
                rf"/(?!(?i:body){_NAME_END})[A-Za-z]{_TAG_REST}",
                rf"!--(?!{_CONDITIONAL[4:]})(?:-?>|(?:[^-]++|-(?!-!?>))*+(?:--!?>|\Z))",
                r"(?![A-Za-z!/?])",
                *(
                    rf"(?i:{name}){_NAME_END}{_TAG_REST}(?:[^<]++|<(?!/(?i:{name})(?:[\t\n\f\r />]|\Z)))*+"
                    for name in _RAW_TEXT
                ),
                r"!(?!--)[^>]*+(?:>|\Z)",
                r"\?[^>]*+(?:>|\Z)",
                r"/(?![A-Za-z])[^>]*+(?:>|\Z)",
            ]
        )
        + ")",
    ]
)


def _closed_tag(kind: str) -> str:
    """The rest of a tag; group `closed_<kind>` matches its ">" (a tag cut off by the end is no tag)."""
    return rf"{_TAG_BODY}(?:(?P<closed_{kind}>>)|\Z)"


_TOKEN = re.compile(
    rf"(?:{_SKIP}){{0,{_RUNS_PER_MATCH}}}+(?:(?P<conditional>{_CONDITIONAL})"
    rf"|(?P<link><(?:(?i:a|area){_NAME_END}|(?i:v:)){_closed_tag('link')})"
    rf"|(?P<body><(?i:body){_NAME_END}{_closed_tag('body')})"
    rf"|(?P<body_end></(?i:body){_NAME_END}{_closed_tag('body_end')})"
    r"|\Z|(?P<pause>))"  # pause: the runs of this match are used up; the next match goes on from here
)
_TAG_NAME = re.compile(r"</?[^\t\n\f\r />]*+")
_ATTRIBUTE_PARTS = re.compile(
    r"[\t\n\f\r /]*+(?P<name>[^\t\n\f\r />][^\t\n\f\r />=]*+)"
    rf"(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+(?P<value>{_VALUE}))?"
)
_FIRST_HREF = re.compile(  # a link tag's first href attribute, found by the attribute rules of _ATTRIBUTE_PARTS
    r"</?[^\t\n\f\r />]*+(?:[\t\n\f\r /]*+(?!(?i:href)[\t\n\f\r />=])[^\t\n\f\r />][^\t\n\f\r />=]*+"
    rf"(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+{_VALUE})?)*+[\t\n\f\r /]*+(?i:href)"
    rf"(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+(?P<value>{_VALUE}))?"
)
_COMMENT_END = re.compile(r"--!?>")
_DOCTYPE = re.compile(r"\ufeff?[\t\n\f\r ]*+<!(?i:doctype)[^>]*+>")
_AMP_HTML = re.compile(r"<html(?=[\t\n\f\r />])[^>]*?[\t\n\f\r /](?:\u26a14email|amp4email)(?=[\t\n\f\r /=>])",
                       re.IGNORECASE)
_UNDECODED = re.compile("[\udc80-\udcff]")  # bytes the part's charset could not decode (surrogateescape)
_OPT_OUT_PRESENT = frozenset({"data-pm-no-track", "ses:no-track", "mautic:disable-tracking"})


class HtmlResult(msgspec.Struct, frozen=True, kw_only=True):
    """The rewritten HTML (the input object itself when nothing changed) and what was done to it."""

    text: str
    links_tracked: int
    pixels: int
    warnings: tuple[str, ...]


class _Attribute(msgspec.Struct, frozen=True):
    start: int  # removing [start, end) removes the attribute and, where no neighbour needs it, its whitespace
    end: int
    value_start: int
    raw_value: str  # as written, quotes included; "" when the attribute has no value

    @property
    def value(self) -> str:
        raw = self.raw_value
        if raw[:1] in ('"', "'"):
            raw = raw[1:-1] if len(raw) > 1 and raw[-1] == raw[0] else raw[1:]
        return decode_attribute(raw)


def rewrite_html(
    html: str,
    minter: LinkMinter,
    *,
    click: bool,
    open_: bool,
    initial_open: bool,
    amp: bool = False,
    plans: HtmlPlans | None = None,
) -> HtmlResult:
    """Track the links of one HTML document (if `click`) and add the open pixels (if `open_`).

    Pixels: the top (`initial_open`) one right after the first `<body…>` start tag, the bottom one before the
    last `</body>`; a `<body>` inside an Outlook conditional comment does not count. Without `<body>` the top
    pixel goes first (after a leading doctype, which must stay first) and the bottom pixel goes last.

    `amp`: the document is an AMP for Email part. It must say so (`<html ⚡4email>` or `<html amp4email>`) and
    have `<body>` and `</body>`, else it is left untouched with a warning; pixels are AMP_PIXEL and need https
    URLs (else they are left out, with a warning); links are tracked by the same rules as in HTML. A part the
    tracking would take past AMP_MAX_BYTES is left untouched with a warning (it would no longer be valid AMP).

    The work splits in two: reading the document (what to edit: everything but the tokens) and, per
    recipient, minting and splicing. `plans` keeps what was read of recent documents, so the copies of one
    message (and messages whose HTML is the same to the character) read each document once.
    """
    plan = plans.get(html, click, amp) if plans is not None else None
    if plan is None:
        plan = _read(html, click, amp)
        if plans is not None:
            plans.put(html, click, amp, plan)
    return _apply(html, plan, minter, open_=open_, initial_open=initial_open, amp=amp)


class HtmlPlans:
    """The plans of the last few documents read, by document; bounded in entries and in characters held.

    Thread-safe (a copy may be composed on a thread); a document longer than a quarter of the bound is
    not kept.
    """

    def __init__(self, entries: int = 16, chars: int = 4 << 20) -> None:
        self._entries, self._chars = entries, chars
        self._held = 0
        self._plans: OrderedDict[tuple[str, bool, bool], HtmlPlan] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, html: str, click: bool, amp: bool) -> HtmlPlan | None:
        key = (html, click, amp)
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
            return plan

    def put(self, html: str, click: bool, amp: bool, plan: HtmlPlan) -> None:
        if len(html) > self._chars // 4:
            return
        with self._lock:
            if (html, click, amp) in self._plans:
                return
            self._plans[(html, click, amp)] = plan
            self._held += len(html)
            while len(self._plans) > self._entries or self._held > self._chars:
                (old, _, _), _ = self._plans.popitem(last=False)
                self._held -= len(old)

    def __len__(self) -> int:
        return len(self._plans)

    @property
    def chars_held(self) -> int:
        """The characters of the documents whose plans are kept."""
        return self._held


class _Mint(msgspec.Struct, frozen=True):
    """A link to track: replace html[start:end] (its href value) with the tracked URL, quoted with `quote`."""

    start: int
    end: int
    quote: str
    target: str
    link_name: str
    sublink: str | None
    unsubscribe: bool


_Edit = tuple[int, int, str]


class HtmlPlan(msgspec.Struct, frozen=True):
    """What reading one document found, independent of any recipient.

    `steps` in document order: an edit to make (a `data-msys-*` attribute removed), a link to mint, or a
    warning. `untouched`: the document is to be left as it is, with these warnings (an unusable AMP part).
    """

    steps: tuple[_Edit | _Mint | str, ...]
    body_open: int
    body_close: int
    untouched: tuple[str, ...] | None = None


def _read(html: str, click: bool, amp: bool) -> HtmlPlan:
    """Find the links, the `<body>` tags and the conditional comments of `html` (one linear pass)."""
    steps: list[_Edit | _Mint | str] = []
    body_open = body_close = -1
    conditional_end = 0
    comment_end = -2  # memo for _COMMENT_END.search: positions only grow, so each character is scanned once
    pos = 0
    while (match := _TOKEN.match(html, pos)) is not None and match.lastgroup is not None:
        kind, start, pos = match.lastgroup, match.start(match.lastgroup), match.end()
        if kind == "pause":
            if start == match.start():  # no run matched, so no later match would move: nothing left to scan
                break
            continue
        if kind == "conditional":
            if comment_end != -1 and comment_end < pos:
                found = _COMMENT_END.search(html, pos)
                comment_end = found.start() if found else -1
            conditional_end = len(html) if comment_end == -1 else comment_end
        elif kind == "link":
            if click and match.start("closed_link") >= 0:
                _read_link(html, start, pos, steps)
        elif start >= conditional_end and match.start(f"closed_{kind}") >= 0:
            if kind == "body" and body_open < 0:
                body_open = pos
            elif kind == "body_end":
                body_close = start
    if amp and _UNDECODED.search(html):
        return HtmlPlan((), body_open, body_close,
                        untouched=("AMP part is not valid UTF-8, as AMP for Email requires; left untouched",))
    if amp and (not _AMP_HTML.search(html) or body_open < 0 or body_close < 0):
        missing = "<html \u26a14email>" if not _AMP_HTML.search(html) else "<body> and </body>"
        return HtmlPlan((), body_open, body_close,
                        untouched=(f"not an AMP for Email document (no {missing}); left untouched",))
    return HtmlPlan(tuple(steps), body_open, body_close)


def _apply(html: str, plan: HtmlPlan, minter: LinkMinter, *, open_: bool, initial_open: bool,
           amp: bool) -> HtmlResult:
    """One recipient's document: `plan`'s links minted by `minter`, its pixels placed, spliced in."""
    if plan.untouched is not None:
        return HtmlResult(text=html, links_tracked=0, pixels=0, warnings=plan.untouched)
    edits: list[_Edit] = []
    warnings: list[str] = []
    tracked = 0
    for step in plan.steps:
        if isinstance(step, _Mint):
            url = links.mint_click(minter, step.target, step.link_name, step.sublink, step.unsubscribe, warnings)
            if url is not None:
                edits.append((step.start, step.end, step.quote + encode_attribute(url, step.quote) + step.quote))
                tracked += 1
        elif isinstance(step, str):
            warnings.append(step)
        else:
            edits.append(step)
    pixels = 0
    if open_ and amp:
        pixels = _place_amp_pixels(minter, initial_open, plan.body_open, plan.body_close, edits, warnings)
    elif open_:
        pixels = _place_pixels(html, minter, initial_open, plan.body_open, plan.body_close, edits, warnings)
    if not edits:
        return HtmlResult(text=html, links_tracked=0, pixels=0, warnings=tuple(dict.fromkeys(warnings)))
    edits.sort(key=lambda edit: edit[0])
    text = _splice(html, edits)
    if amp and (size := len(text.encode("utf-8"))) > AMP_MAX_BYTES:
        return HtmlResult(text=html, links_tracked=0, pixels=0, warnings=(
            f"AMP part would be {size} bytes tracked, over AMP for Email's {AMP_MAX_BYTES}; left untouched",))
    return HtmlResult(
        text=text,
        links_tracked=tracked,
        pixels=pixels,
        warnings=tuple(dict.fromkeys(warnings)),
    )


def _read_link(html: str, start: int, end: int, steps: list[_Edit | _Mint | str]) -> None:
    """The steps for one link start tag html[start:end]."""
    lowered = html[start:end].lower()  # (a case-insensitive regex search is ten times slower)
    if "track" not in lowered and "data-msys-" not in lowered:  # in every opt-out name and every data-msys-* one
        _read_plain_link(html, start, end, steps)
        return
    attributes: dict[str, _Attribute] = {}
    for name, attribute in _attributes(html, start, end):
        if name.startswith("data-msys-"):
            steps.append((attribute.start, attribute.end, ""))
        attributes.setdefault(name, attribute)  # HTML5 keeps the first of duplicate attributes
    href = attributes.get("href")
    if href is None or _is_opted_out(attributes):
        return
    target = links.link_target(href.value)
    refused = links.refusal(target)
    if refused is not None:
        if refused:
            steps.append(refused)
        return
    name_attribute = attributes.get("data-msys-linkname")
    link_name = links.truncate_link_name(name_attribute.value) if name_attribute else target
    sublink_attribute = attributes.get("data-msys-sublink")
    sublink = (sublink_attribute.value or None) if sublink_attribute else None
    unsubscribe_attribute = attributes.get("data-msys-unsubscribe")
    unsubscribe = unsubscribe_attribute is not None and unsubscribe_attribute.value.strip() == "1"
    quote = href.raw_value[0] if href.raw_value[:1] in ('"', "'") else '"'  # unquoted values get quoted
    steps.append(_Mint(href.value_start, href.end, quote, target, link_name, sublink, unsubscribe))


def _read_plain_link(html: str, start: int, end: int, steps: list[_Edit | _Mint | str]) -> None:
    """_read_link for the common tag: no data-msys-* attribute and no opt-out, so only its href matters."""
    match = _FIRST_HREF.match(html, start, end)
    if match is None:
        return
    raw = match.group("value")
    if not raw:
        return
    quote = raw[0]
    if quote == '"' or quote == "'":
        value = raw[1:-1] if len(raw) > 1 and raw[-1] == quote else raw[1:]
    else:
        value, quote = raw, '"'  # unquoted values get quoted
    target = links.link_target(decode_attribute(value))
    refused = links.refusal(target)
    if refused is not None:
        if refused:
            steps.append(refused)
        return
    steps.append(_Mint(match.start("value"), match.end(), quote, target, target, None, False))


def _attributes(html: str, start: int, end: int) -> Iterator[tuple[str, _Attribute]]:
    """(lower-cased name, attribute) for each attribute of the complete tag html[start:end]."""
    name_match = _TAG_NAME.match(html, start, end)
    pos = name_match.end() if name_match else end
    while (match := _ATTRIBUTE_PARTS.match(html, pos, end)) is not None:
        name_start, pos = match.start("name"), match.end()
        attribute_start = name_start
        if html[pos] in _WS or html[pos] in "/>":  # else that whitespace is all that separates its neighbours
            while attribute_start > match.start() and html[attribute_start - 1] in _WS:
                attribute_start -= 1
        value_start = match.start("value") if match.group("value") is not None else pos
        yield (
            match.group("name").lower(),
            _Attribute(attribute_start, pos, value_start, match.group("value") or ""),
        )


def _is_opted_out(attributes: dict[str, _Attribute]) -> bool:
    """The per-link opt-outs of SparkPost, SendGrid, Postmark, SES, Mailgun and Mautic."""
    if any(name in attributes for name in _OPT_OUT_PRESENT):
        return True
    clicktrack = attributes.get("data-msys-clicktrack")
    if clicktrack is not None and clicktrack.value.strip() == "0":
        return True
    sendgrid = attributes.get("clicktracking")
    if sendgrid is not None and sendgrid.value.strip().lower() == "off":
        return True
    mailgun = attributes.get("disable-tracking")
    return mailgun is not None and mailgun.value.strip().lower() == "true"


def _place_pixels(
    html: str,
    minter: LinkMinter,
    initial_open: bool,
    body_open: int,
    body_close: int,
    edits: list[tuple[int, int, str]],
    warnings: list[str],
) -> int:
    pixels = 0
    if initial_open and (url := links.mint_open(minter, True, warnings)) is not None:
        if body_open < 0:
            doctype = _DOCTYPE.match(html)
            body_open = doctype.end() if doctype else 0
        edits.append((body_open, body_open, TOP_PIXEL.format(url=encode_attribute(url))))
        pixels += 1
    if (url := links.mint_open(minter, False, warnings)) is not None:
        at = body_close if body_close >= 0 else len(html)
        edits.append((at, at, BOTTOM_PIXEL.format(url=encode_attribute(url))))
        pixels += 1
    return pixels


def _place_amp_pixels(
    minter: LinkMinter,
    initial_open: bool,
    body_open: int,
    body_close: int,
    edits: list[tuple[int, int, str]],
    warnings: list[str],
) -> int:
    pixels = 0
    for initial, at in ((True, body_open), (False, body_close)):
        if initial and not initial_open:
            continue
        url = links.mint_open(minter, initial, warnings)
        if url is None:
            continue
        if not url.startswith("https://"):
            warnings.append("AMP open pixel left out: amp-img needs an https URL (open_tracking_scheme = \"https\")")
            continue
        edits.append((at, at, AMP_PIXEL.format(url=encode_attribute(url))))
        pixels += 1
    return pixels


def _splice(text: str, edits: list[tuple[int, int, str]]) -> str:
    pieces: list[str] = []
    pos = 0
    for start, end, replacement in edits:
        pieces.append(text[pos:start])
        pieces.append(replacement)
        pos = end
    pieces.append(text[pos:])
    return "".join(pieces)
