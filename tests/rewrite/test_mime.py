"""engaged.rewrite.mime: whole messages, the shared corpus, and arbitrary bytes and MIME trees."""

from __future__ import annotations

import base64
import binascii
import email
import os
from collections.abc import Callable
from email.message import Message
from email.policy import compat32
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engaged.errors import EngagedError
from engaged.rewrite.mime import RewriteOptions, RewriteResult, rewrite_message
from engaged.types import LinkMinter

Click = tuple[str, str, str | None, bool]
BOTH = RewriteOptions(open_tracking=True, click_tracking=True)
CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus"
HEADERS = "From: a@example.com\r\nTo: b@example.com\r\nSubject: t\r\nMIME-Version: 1.0\r\n"


def corpus_files(pattern: str) -> list[object]:
    files = sorted(CORPUS.glob(pattern))
    if not files:
        return [pytest.param(None, id="corpus-missing")]
    return [pytest.param(path, id=str(path.relative_to(CORPUS))) for path in files]


def read_corpus(path: Path | None) -> bytes:
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"corpus not found at {CORPUS.resolve()}")
        pytest.skip(f"corpus not found at {CORPUS.resolve()}")
    return path.read_bytes()


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def qp(data: bytes) -> bytes:
    return binascii.b2a_qp(data.replace(b"\r\n", b"\n"), istext=True).replace(b"\n", b"\r\n")


def part(content_type: str, body: bytes, encoding: str = "7bit", extra: str = "") -> bytes:
    head = f"Content-Type: {content_type}\r\nContent-Transfer-Encoding: {encoding}\r\n{extra}\r\n"
    return head.encode() + body


def multipart(subtype: str, *parts: bytes, boundary: str = "=-b") -> bytes:
    head = f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'.encode()
    delimiter = f"\r\n--{boundary}\r\n".encode()
    return head + b"preamble" + delimiter + delimiter.join(parts) + f"\r\n--{boundary}--\r\n".encode()


def leaves(raw: bytes) -> list[Message]:
    message = email.message_from_bytes(raw, policy=compat32)
    return [leaf for leaf in message.walk() if not leaf.is_multipart()]


def text_of(leaf: Message) -> str:
    payload = leaf.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode(leaf.get_content_charset() or "utf-8", "surrogateescape")


def check_only_top_parts_changed(
    raw: bytes, result: RewriteResult, restore_html: Callable[[str], str], restore_text: Callable[[str], str],
    strip_pixels: Callable[[str], str],
) -> None:  # fmt: skip
    """Read with the stdlib: every leaf is as it was, but for one text/html and one text/plain part whose
    decoded text, with the click URLs mapped back and the pixels removed, is what it was."""
    before, after = leaves(raw), leaves(result.data)
    assert len(before) == len(after)
    changed: list[str] = []
    for old, new in zip(before, after, strict=True):
        if old.get_payload() == new.get_payload():
            assert old.items() == new.items()
            continue
        changed.append(old.get_content_type())
        restore = restore_html if old.get_content_type() == "text/html" else restore_text
        assert restore(strip_pixels(text_of(new))) == text_of(old)
        assert [key for key, _ in old.items()] == [key for key, _ in new.items()]
    assert sorted(changed) == sorted(set(changed)) and set(changed) <= {"text/html", "text/plain"}
    assert len(changed) == result.parts_rewritten
    long_lines = [line for line in result.data.split(b"\r\n") if len(line) > 998]
    assert all(line in raw for line in long_lines)  # no line over 998 octets that was not there before


class _HrefOracle(HTMLParser):
    """The http(s) hrefs of <a>/<area> as Python's HTML parser sees them, conditional comments included."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag not in ("a", "area") or not href or any(mark in href for mark in ("{{", "*|", "%%", "[[")):
            return
        if href.strip().lower().startswith(("http://", "https://")):
            self.hrefs.append(href.strip())

    def handle_comment(self, data: str) -> None:
        if data.startswith("[if") and "]>" in data and not data.endswith("<!"):
            inner = _HrefOracle()
            inner.feed(data.split("]>", 1)[1])
            self.hrefs += inner.hrefs


@pytest.mark.parametrize("path", corpus_files("html/**/*.html"))
def test_corpus_template_in_a_message_gets_every_link_tracked_and_pixels_placed(
    path: Path | None,
    minter: LinkMinter,
    clicks: Callable[[str], list[Click]],
    restore_html: Callable[[str], str],
    restore_text: Callable[[str], str],
    strip_pixels: Callable[[str], str],
) -> None:
    html = crlf(read_corpus(path))
    plain = part("text/plain; charset=utf-8", b"Plain version.", "quoted-printable")
    raw = HEADERS.encode() + multipart(
        "alternative", plain, part("text/html; charset=utf-8", qp(html), "quoted-printable")
    )
    result = rewrite_message(raw, minter, BOTH)
    check_only_top_parts_changed(raw, result, restore_html, restore_text, strip_pixels)
    out = text_of(leaves(result.data)[1])
    oracle = _HrefOracle()
    oracle.feed(html.decode())
    tracked = [click[0] for click in clicks(out)]
    assert set(oracle.hrefs) <= set(tracked) and len(tracked) == result.links_tracked
    assert result.pixels == 2 and result.warnings == ()
    assert result.data.startswith(raw[: raw.index(b"<")]) and result.data.endswith(b"\r\n--=-b--\r\n")


@pytest.mark.parametrize("path", corpus_files("mime/**/*.eml"))
def test_corpus_message_changes_only_its_top_parts(
    path: Path | None,
    minter: LinkMinter,
    clicks: Callable[[str], list[Click]],
    restore_html: Callable[[str], str],
    restore_text: Callable[[str], str],
    strip_pixels: Callable[[str], str],
) -> None:
    raw = crlf(read_corpus(path))
    result = rewrite_message(raw, minter, BOTH)
    check_only_top_parts_changed(raw, result, restore_html, restore_text, strip_pixels)
    assert len(clicks(result.data.decode("ascii", "replace"))) == result.links_tracked
    if result.parts_rewritten == 0:
        assert result.data is raw


def test_quoted_printable_soft_break_inside_a_url_is_joined_before_tracking(
    minter: LinkMinter, clicks: Callable[[str], list[Click]]
) -> None:
    body = b'<a href=3D"https://example.com/very/long/pa=\r\nth?a=3D1&amp;b=3D2">x</a>\r\n'
    raw = HEADERS.encode() + part("text/html", body, "quoted-printable")
    result = rewrite_message(raw, minter, RewriteOptions(open_tracking=False, click_tracking=True))
    out = text_of(leaves(result.data)[0])
    assert [click[0] for click in clicks(out)] == ["https://example.com/very/long/path?a=1&b=2"]
    assert result.data.startswith(raw[: raw.index(b"<a")]) and b"=\r\n" in result.data


def test_base64_parts_are_rewritten_and_stay_base64_with_their_line_width(
    minter: LinkMinter, clicks: Callable[[str], list[Click]]
) -> None:
    html = b'<body><a href="http://b64.example/">x</a></body>' * 5
    text = b"Read http://text.example/ now"
    raw = HEADERS.encode() + multipart(
        "alternative",
        part("text/plain", base64.encodebytes(text).replace(b"\n", b"\r\n"), "base64"),
        part("text/html", base64.encodebytes(html).replace(b"\n", b"\r\n"), "base64"),
    )
    result = rewrite_message(raw, minter, BOTH)
    plain, html_part = leaves(result.data)
    assert [click[0] for click in clicks(text_of(plain))] == ["http://text.example/"]
    assert [click[0] for click in clicks(text_of(html_part))] == ["http://b64.example/"] * 5
    assert html_part["Content-Transfer-Encoding"] == "base64"
    html_body = result.data.split(b"base64\r\n\r\n")[2]
    assert {len(line) for line in html_body.split(b"\r\n")[:-4]} == {76}  # all but the last line
    assert result.parts_rewritten == 2 and result.links_tracked == 6 and result.pixels == 2


def test_iso_8859_1_part_keeps_its_bytes_around_the_links(minter: LinkMinter) -> None:
    html = "<p>Café déjà</p><a href='http://x.example/é'>é</a>".encode("iso-8859-1")
    raw = HEADERS.encode() + part("text/html; charset=iso-8859-1", html, "8bit")
    result = rewrite_message(raw, minter, RewriteOptions(open_tracking=False, click_tracking=True))
    assert result.data.startswith(
        raw[: -len(html)] + b"<p>Caf\xe9 d\xe9j\xe0</p><a href='https://t.example/f/a/"
    )
    assert result.data.endswith(b"'>\xe9</a>") and result.links_tracked == 1


def test_iso_2022_jp_part_is_left_correct(minter: LinkMinter, clicks: Callable[[str], list[Click]]) -> None:
    text = "こんにちは http://jp.example/ さようなら\r\n"
    raw = HEADERS.encode() + part("text/plain; charset=iso-2022-jp", text.encode("iso-2022-jp"), "7bit")
    result = rewrite_message(raw, minter, BOTH)
    out = text_of(leaves(result.data)[0])
    assert [click[0] for click in clicks(out)] == ["http://jp.example/"]
    assert out.startswith("こんにちは https://t.example/f/a/") and out.endswith(" さようなら\r\n")


def test_message_without_html_gets_text_links_and_no_pixel(minter: LinkMinter) -> None:
    raw = HEADERS.encode() + part("text/plain", b"Go to http://a.example/ now.")
    result = rewrite_message(raw, minter, BOTH)
    assert (result.links_tracked, result.pixels, result.parts_rewritten) == (1, 0, 1)


def test_message_without_text_gets_html_links_and_pixels(minter: LinkMinter) -> None:
    raw = HEADERS.encode() + part("text/html", b'<body><a href="http://a.example/">x</a></body>')
    result = rewrite_message(raw, minter, BOTH)
    assert (result.links_tracked, result.pixels, result.parts_rewritten) == (1, 2, 1)


def test_attachments_are_untouched_even_when_they_are_text(
    minter: LinkMinter, restore_html: Callable[[str], str], restore_text: Callable[[str], str],
    strip_pixels: Callable[[str], str],
) -> None:  # fmt: skip
    link = b'<a href="http://x.example/">x</a>'
    body = multipart(
        "alternative", part("text/plain", b"http://body.example/"), part("text/html", link), boundary="i"
    )
    raw = HEADERS.encode() + multipart(
        "mixed",
        body,
        part("text/html", link, extra="Content-Disposition: attachment; filename=a.html\r\n"),
        part("text/plain", b"http://attached.example/", extra="Content-Disposition: attachment\r\n"),
        part(
            "application/pdf",
            base64.encodebytes(b"%PDF http://pdf.example/").replace(b"\n", b"\r\n"),
            "base64",
        ),
    )
    result = rewrite_message(raw, minter, BOTH)
    check_only_top_parts_changed(raw, result, restore_html, restore_text, strip_pixels)
    assert result.parts_rewritten == 2 and result.links_tracked == 2
    assert result.data.endswith(raw[raw.index(b"\r\n--=-b\r\nContent-Type: text/html") :])


def test_forwarded_message_rfc822_is_untouched(minter: LinkMinter) -> None:
    forwarded = (
        b'Subject: fw\r\nContent-Type: text/html\r\n\r\n<body><a href="http://fw.example/">x</a></body>'
    )
    raw = HEADERS.encode() + multipart(
        "mixed", part("text/plain", b"See below: http://a.example/"), part("message/rfc822", forwarded)
    )
    result = rewrite_message(raw, minter, BOTH)
    assert (result.links_tracked, result.pixels, result.parts_rewritten) == (1, 0, 1)
    assert result.data.endswith(raw[raw.index(b"\r\n--=-b\r\nContent-Type: message/rfc822") :])
    inner = rewrite_message(forwarded, minter, BOTH)
    assert inner.links_tracked == 1  # the same bytes as a message of their own would be tracked


def test_long_7bit_lines_switch_the_part_to_quoted_printable(
    minter: LinkMinter, clicks: Callable[[str], list[Click]]
) -> None:
    html_line = b'<a href="http://a.example/">x</a>' * 25  # 825 octets: fits now, not after tracking
    plain_line = b"http://a.example/ " + b"x" * 970  # the same, in a part without the field (7bit by default)
    raw = HEADERS.encode() + multipart(
        "alternative", b"Content-Type: text/plain\r\n\r\n" + plain_line, part("text/html", html_line, "7BIT")
    )
    result = rewrite_message(raw, minter, RewriteOptions(open_tracking=False, click_tracking=True))
    plain, html = leaves(result.data)
    assert html["Content-Transfer-Encoding"] == plain["Content-Transfer-Encoding"] == "quoted-printable"
    assert (
        b"7BIT" not in result.data
        and b"Content-Type: text/html\r\nContent-Transfer-Encoding: quoted" in result.data
    )
    assert len(clicks(text_of(html))) == 25 and len(clicks(text_of(plain))) == 1
    assert max(len(line) for line in result.data.split(b"\r\n")) <= 76


def test_short_8bit_part_stays_8bit(minter: LinkMinter) -> None:
    raw = HEADERS.encode() + part("text/plain; charset=utf-8", "Café http://a.example/\r\n".encode(), "8bit")
    result = rewrite_message(raw, minter, BOTH)
    assert b"Content-Transfer-Encoding: 8bit\r\n\r\nCaf\xc3\xa9 https://t.example/f/a/" in result.data


def test_tracking_off_or_nothing_to_track_returns_the_same_object(minter: LinkMinter) -> None:
    raw = HEADERS.encode() + part("text/html", b'<a href="http://a.example/">x</a>')
    off = rewrite_message(raw, minter, RewriteOptions(open_tracking=False, click_tracking=False))
    assert off.data is raw and off == RewriteResult(
        data=raw, links_tracked=0, pixels=0, parts_rewritten=0, warnings=()
    )
    plain = HEADERS.encode() + part("text/plain", b"no links")
    assert rewrite_message(plain, minter, BOTH).data is plain


def test_open_only_places_pixels_and_click_only_tracks_links(minter: LinkMinter) -> None:
    raw = HEADERS.encode() + multipart(
        "alternative",
        part("text/plain", b"http://t.example/x"),
        part("text/html", b'<a href="http://a/">x</a>'),
    )
    opens = rewrite_message(
        raw, minter, RewriteOptions(open_tracking=True, click_tracking=False, initial_open=False)
    )
    assert (opens.links_tracked, opens.pixels, opens.parts_rewritten) == (0, 1, 1)
    click = rewrite_message(raw, minter, RewriteOptions(open_tracking=False, click_tracking=True))
    assert (click.links_tracked, click.pixels, click.parts_rewritten) == (2, 0, 2)


def test_links_and_pixels_the_minter_refuses_are_left_as_they_are() -> None:
    class Picky:
        def click_url(self, target_url: str, link_name: str, sublink: str | None, unsubscribe: bool) -> str:
            if "bad" in target_url:
                raise EngagedError("link longer than a token may be")
            return "https://t.example/f/a/ok"

        def open_url(self, initial: bool) -> str:
            if initial:
                raise EngagedError("no initial")
            return "https://t.example/q/b"

    html = b'<body><a href="http://bad.example/">x</a> <a href=http://good.example/>y</a></body>'
    raw = HEADERS.encode() + multipart(
        "alternative",
        part("text/plain", b"http://bad.example/ http://good.example/"),
        part("text/html", html),
    )
    result = rewrite_message(raw, Picky(), BOTH)
    plain, html_part = (text_of(leaf) for leaf in leaves(result.data))
    assert plain == "http://bad.example/ https://t.example/f/a/ok"
    assert html_part == (
        '<body><a href="http://bad.example/">x</a> <a href="https://t.example/f/a/ok">y</a>'
        '<img border="0" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0;margin:0;padding:0" src="https://t.example/q/b"></body>'
    )
    assert (result.links_tracked, result.pixels, result.parts_rewritten) == (2, 1, 2)
    assert set(result.warnings) == {
        "text/html part: link left untracked: link longer than a token may be",
        "text/html part: open pixel left out: no initial",
        "text/plain part: link left untracked: link longer than a token may be",
    }


@pytest.mark.parametrize(
    ("content_type", "encoding", "body", "warning"),
    [
        ("text/html", "base64", b"PGE+!!!", "transfer encoding 'base64' not decodable"),
        ("text/html", "x-uuencode", b"begin", "transfer encoding 'x-uuencode' not decodable"),
        ("text/html; charset=x-klingon", "7bit", b"<a href='http://a/'>", "unknown charset 'x-klingon'"),
    ],
)
def test_undecodable_part_is_delivered_untouched_with_a_warning(
    content_type: str, encoding: str, body: bytes, warning: str, minter: LinkMinter
) -> None:
    raw = HEADERS.encode() + part(content_type, body, encoding)
    result = rewrite_message(raw, minter, BOTH)
    assert result.data is raw and result.warnings == (f"text/html part: {warning}; left untouched",)


def test_headers_and_from_lines_keep_their_bytes(minter: LinkMinter) -> None:
    headers = (
        "DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s;\r\n"
        "\th=from:to:subject; bh=abc=;\r\n\tb=def\r\n"
        'X-MSYS-API: {"campaign_id":"' + "c" * 200 + '","options":{"open_tracking":true}}\r\n'
        "Subject: =?utf-8?q?Caf=C3=A9?=\r\n"
    )
    raw = headers.encode() + part("text/plain", b"From today: http://a.example/\r\n.\r\n..dots\r\n")
    result = rewrite_message(raw, minter, BOTH)
    assert result.data.startswith(raw[: raw.index(b"From today")] + b"From today: https://t.example/f/a/")
    assert result.data.endswith(b"\r\n.\r\n..dots\r\n")


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=400))
def test_any_bytes_never_raise_and_come_back_unchanged_unless_a_part_was_rewritten(raw: bytes) -> None:
    for message in (raw, HEADERS.encode() + raw, HEADERS.encode() + b"Content-Type: text/html\r\n\r\n" + raw):
        result = rewrite_message(message, _StaticMinter(), BOTH)
        assert result.data is message if result.parts_rewritten == 0 else result.data != message


_LEAF_TYPES = ["text/plain", "text/html"] * 3 + ["image/png", "message/rfc822"]
_CHARSETS = ["", "; charset=utf-8", "; charset=iso-8859-1", "; charset=us-ascii"] * 2 + [
    "; charset=x-unknown"
]
_BODY_PIECES = ["Hello ", "é ", "http://a.example/p?q=1 ", '<a href="https://b.example/">b</a>', "<body>"]
_BODY_PIECES += ["</body>", "<!--[if mso]>", "<![endif]-->", "\r\n", "=", "From x\r\n", "x" * 400]
_BODY = st.lists(st.sampled_from(_BODY_PIECES), max_size=12).map("".join)


@st.composite
def mime_trees(draw: st.DrawFn, depth: int = 0) -> bytes:
    """A random MIME entity (headers and body) built from plausible pieces."""
    if depth < 3 and draw(st.booleans()):
        subtype = draw(st.sampled_from(["mixed", "alternative", "related", "digest"]))
        children = draw(st.lists(mime_trees(depth + 1), min_size=1, max_size=3))
        return multipart(subtype, *children, boundary=f"b{depth}-{draw(st.integers(0, 9))}")
    content_type = draw(st.sampled_from(_LEAF_TYPES)) + draw(st.sampled_from(_CHARSETS))
    charset = "iso-8859-1" if "iso-8859-1" in content_type else "utf-8"
    body = draw(_BODY).encode(charset, "replace")
    encoding = draw(st.sampled_from(["7bit", "8bit", "quoted-printable", "base64", "binary"]))
    if encoding == "quoted-printable":
        body = qp(body)
    elif encoding == "base64":
        body = base64.encodebytes(body).replace(b"\n", b"\r\n")
    extra = draw(
        st.sampled_from(
            ["", "", "", "Content-Disposition: attachment\r\n", "Content-Disposition: inline\r\n"]
        )
    )
    return part(content_type, body, encoding, extra)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tree=mime_trees(),
    options=st.builds(
        RewriteOptions, open_tracking=st.booleans(), click_tracking=st.booleans(), initial_open=st.booleans()
    ),
)
def test_random_mime_trees_change_only_their_top_parts(
    tree: bytes,
    options: RewriteOptions,
    minter: LinkMinter,
    restore_html: Callable[[str], str],
    restore_text: Callable[[str], str],
    strip_pixels: Callable[[str], str],
) -> None:
    raw = HEADERS.encode() + tree
    result = rewrite_message(raw, minter, options)
    if not (options.open_tracking or options.click_tracking) or result.parts_rewritten == 0:
        assert result.data is raw
        return
    check_only_top_parts_changed(raw, result, restore_html, restore_text, strip_pixels)


class _StaticMinter:
    def click_url(self, target_url: str, link_name: str, sublink: str | None, unsubscribe: bool) -> str:
        return "https://t.example/f/a/x"

    def open_url(self, initial: bool) -> str:
        return "https://t.example/q/x"


class _AmpMinter:
    """Mints recognisably different URLs, so a test sees which minter served which part."""

    def click_url(self, target_url: str, link_name: str, sublink: str | None, unsubscribe: bool) -> str:
        return "https://t.example/f/a/AMP"

    def open_url(self, initial: bool) -> str:
        return f"https://t.example/q/amp-{'i' if initial else 'b'}"


AMP_PART = (
    "<!doctype html><html \u26a14email><head><meta charset=\"utf-8\">"
    '<script async src="https://cdn.ampproject.org/v0.js"></script>'
    "<style amp4email-boilerplate>body{visibility:hidden}</style></head>"
    '<body><a href="https://example.com/amp">amp</a></body></html>'
).encode()


def test_amp_part_of_an_alternative_is_tracked_by_its_own_minter_and_the_rest_by_the_html_one(
    minter: LinkMinter,
) -> None:
    html = b'<html><body><a href="https://example.com/html">h</a></body></html>'
    raw = HEADERS.encode() + multipart(
        "alternative",
        part("text/plain; charset=utf-8", b"plain https://example.com/text"),
        part("text/x-amp-html; charset=utf-8", qp(AMP_PART), "quoted-printable"),
        part("text/html; charset=utf-8", html),
    )
    result = rewrite_message(raw, minter, BOTH, _AmpMinter())
    plain, amp, rich = (text_of(leaf) for leaf in leaves(result.data))
    assert "https://t.example/f/a/AMP" in amp and "https://t.example/q/amp-i" in amp and "amp-b" in amp
    assert "<amp-img " in amp and "<img" not in amp
    assert "AMP" not in rich and "/q/i" in rich and "AMP" not in plain
    assert (result.links_tracked, result.pixels, result.parts_rewritten, result.warnings) == (3, 4, 3, ())
    untracked = rewrite_message(raw, minter, BOTH)
    assert b"amp-img" not in untracked.data and untracked.parts_rewritten == 2


def test_amp_part_outside_an_alternative_or_not_utf8_is_left_untouched(minter: LinkMinter) -> None:
    alone = HEADERS.encode() + part("text/x-amp-html; charset=utf-8", AMP_PART)
    assert rewrite_message(alone, minter, BOTH, _AmpMinter()).data is alone
    broken = HEADERS.encode() + multipart(
        "alternative", part("text/x-amp-html; charset=utf-8", AMP_PART + b"\xff\xfe"),
        part("text/html; charset=utf-8", b"<p>x</p>"))
    result = rewrite_message(broken, minter, BOTH, _AmpMinter())
    assert AMP_PART + b"\xff\xfe" in result.data
    assert any(w.startswith("text/x-amp-html part: ") and "left untouched" in w for w in result.warnings)
