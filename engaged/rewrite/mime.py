"""Engagement rewriting of a whole message (④ rewrite): raw bytes and a LinkMinter in, raw bytes out.

Pure: no I/O, no clock, no randomness. The top text/html part gets tracked links and the open pixels, the top
text/plain part tracked links, the text/x-amp-html part (AMP for Email) tracked links and `amp-img` pixels minted
by its own minter (amp_click, amp_open, amp_initial_open) (which parts are "top" is defined in
`engaged.rewrite.parts`). Each changed
part is decoded (transfer encoding, then charset), rewritten, re-encoded with its own transfer encoding and
spliced back over its old body, so the headers and every other part keep their bytes by construction. A
7bit/8bit/binary part that would get a line over 998 octets becomes quoted-printable and its
Content-Transfer-Encoding field says so. A part that cannot be decoded is delivered as it came, with a warning
in the result; no input bytes make this module raise. A link or pixel the minter refuses by raising an
EngagedError (tokens.UntrackableLink) is left out with a warning; any other exception from it propagates.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial

import msgspec

from engaged.rewrite import transfer
from engaged.rewrite.css import inline_css
from engaged.rewrite.html import HtmlPlans, rewrite_html
from engaged.rewrite.parts import TextPart, find_top_parts
from engaged.rewrite.text import rewrite_text
from engaged.types import LinkMinter

__all__ = ["RewriteOptions", "RewriteResult", "rewrite_message"]

_TRANSFER_ENCODING_FIELD = re.compile(
    rb"^content-transfer-encoding[ \t]*+:[^\n]*+\n(?:[ \t][^\n]*+\n)*+", re.IGNORECASE | re.MULTILINE
)


class RewriteOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What to do to one recipient's copy."""

    open_tracking: bool
    click_tracking: bool
    initial_open: bool = True  # also place the top pixel (the `initial_open` event) when open_tracking
    inline_css: bool = False  # first copy the HTML part's <style> rules into style attributes (not the AMP part)


class RewriteResult(msgspec.Struct, frozen=True, kw_only=True):
    """The message to deliver (the input object itself when nothing changed) and what was done to it."""

    data: bytes
    links_tracked: int
    pixels: int
    parts_rewritten: int
    warnings: tuple[str, ...]


class _PartRewrite(msgspec.Struct, frozen=True):
    """What one rewriter did to the decoded text of one part."""

    text: str
    links_tracked: int
    pixels: int
    warnings: tuple[str, ...]


_Edit = tuple[int, int, bytes]


def rewrite_message(
    raw: bytes,
    minter: LinkMinter,
    options: RewriteOptions,
    amp_minter: LinkMinter | None = None,
    *,
    plans: HtmlPlans | None = None,
) -> RewriteResult:
    """Track the links and place the open pixels of `raw` (CRLF line breaks, as read from SMTP DATA).

    The AMP part is tracked only when `amp_minter` is given; otherwise it is left as it is. `plans` keeps
    what was read of recent HTML parts (html.HtmlPlans), for the next copy of the same part.
    """
    if not (options.open_tracking or options.click_tracking or options.inline_css):
        return RewriteResult(data=raw, links_tracked=0, pixels=0, parts_rewritten=0, warnings=())
    top = find_top_parts(raw)
    edits: list[_Edit] = []
    warnings = list(top.warnings)
    done: list[_PartRewrite | None] = []
    if top.html is not None:
        done.append(_rewrite_part(raw, top.html, partial(_track_html, minter, options, plans=plans), edits, warnings))
    if top.plain is not None and options.click_tracking:
        done.append(_rewrite_part(raw, top.plain, partial(_track_text, minter), edits, warnings))
    if top.amp is not None and amp_minter is not None and (options.open_tracking or options.click_tracking):
        track_amp = partial(_track_html, amp_minter, options, amp=True, plans=plans)
        done.append(_rewrite_part(raw, top.amp, track_amp, edits, warnings))
    rewritten = [part for part in done if part is not None]
    return RewriteResult(
        data=_splice(raw, edits) if edits else raw,
        links_tracked=sum(part.links_tracked for part in rewritten),
        pixels=sum(part.pixels for part in rewritten),
        parts_rewritten=len(rewritten),
        warnings=tuple(dict.fromkeys(warnings)),
    )


def _track_html(minter: LinkMinter, options: RewriteOptions, text: str, amp: bool = False,
                plans: HtmlPlans | None = None) -> _PartRewrite:
    inlined = inline_css(text) if options.inline_css and not amp else None
    if inlined is not None:
        text = inlined.text
    result = rewrite_html(
        text,
        minter,
        click=options.click_tracking,
        open_=options.open_tracking,
        initial_open=options.initial_open,
        amp=amp,
        plans=plans,
    )
    if inlined is not None and (inlined.elements or inlined.warnings):
        return _PartRewrite(result.text, result.links_tracked, result.pixels, inlined.warnings + result.warnings)
    return _PartRewrite(result.text, result.links_tracked, result.pixels, result.warnings)


def _track_text(minter: LinkMinter, text: str) -> _PartRewrite:
    result = rewrite_text(text, minter)
    return _PartRewrite(result.text, result.links_tracked, 0, result.warnings)


def _rewrite_part(
    raw: bytes,
    part: TextPart,
    rewrite: Callable[[str], _PartRewrite],
    edits: list[_Edit],
    warnings: list[str],
) -> _PartRewrite | None:
    """Queue the edits that rewrite one part; what was done (its text left out), or None if the part stays.

    Each large intermediate (the body, its text, the rewritten text) is dropped as soon as the next one
    exists, so a part costs about three copies of itself at the most, not six.
    """
    label = f"text/{part.subtype} part"
    body = raw[part.body_start : part.body_end]
    data = transfer.decode_body(body, part.transfer_encoding)
    shape = body if part.transfer_encoding == "base64" else b""  # only base64 re-encoding copies its shape
    del body
    if data is None:
        warnings.append(
            f"{label}: transfer encoding {part.transfer_encoding!r} not decodable; left untouched"
        )
        return None
    decoded = transfer.decode_text(data, part.charset)
    del data
    if isinstance(decoded, str):
        warnings.append(f"{label}: {decoded}; left untouched")
        return None
    text, codec = decoded
    del decoded
    done = rewrite(text)
    warnings.extend(f"{label}: {warning}" for warning in done.warnings)
    if done.text is text:
        return None
    del text
    new_data = transfer.encode_text(done.text, codec)
    done = msgspec.structs.replace(done, text="")
    if new_data is None:
        warnings.append(f"{label}: tracking URLs not representable in charset {codec!r}; left untouched")
        return None
    encoding = part.transfer_encoding
    if encoding in transfer.IDENTITY_ENCODINGS and transfer.has_long_line(new_data):
        encoding = transfer.QUOTED_PRINTABLE
        edits.append(_transfer_encoding_edit(raw, part))
    edits.append(
        (part.body_start, part.body_end, transfer.encode_body(new_data, encoding, shape, part.linesep))
    )
    return done


def _transfer_encoding_edit(raw: bytes, part: TextPart) -> _Edit:
    """Set the part's Content-Transfer-Encoding to quoted-printable: replace the field, or add it last."""
    field = b"Content-Transfer-Encoding: quoted-printable" + part.linesep
    found = _TRANSFER_ENCODING_FIELD.search(raw, part.headers_start, part.headers_end)
    if found is None:
        return part.headers_end, part.headers_end, field
    return found.start(), found.end(), field


def _splice(raw: bytes, edits: list[_Edit]) -> bytes:
    edits.sort(key=lambda edit: edit[0])
    pieces: list[bytes] = []
    pos = 0
    for start, end, replacement in edits:
        pieces.append(raw[pos:start])
        pieces.append(replacement)
        pos = end
    pieces.append(raw[pos:])
    return b"".join(pieces)
