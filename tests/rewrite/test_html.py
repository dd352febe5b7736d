"""engaged.rewrite.html: which hrefs are tracked, how they are written back, where the pixels go."""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engaged.rewrite import html
from engaged.rewrite.html import AMP_MAX_BYTES, HtmlResult, rewrite_html
from engaged.tokens import UntrackableLink
from engaged.types import LinkMinter

Click = tuple[str, str, str | None, bool]
TOKEN = "https://t.example/f/a/"


def track(doc: str, minter: LinkMinter) -> HtmlResult:
    return rewrite_html(doc, minter, click=True, open_=False, initial_open=False)


def targets(result: HtmlResult, clicks: Callable[[str], list[Click]]) -> list[str]:
    return [click[0] for click in clicks(result.text)]


def test_plain_anchor_is_tracked_and_rest_kept(
    minter: LinkMinter, clicks: Callable[[str], list[Click]], restore_html: Callable[[str], str]
) -> None:
    doc = '<p>Hi <a class="x" href="https://example.com/a?b=1">go</a> there</p>'
    result = track(doc, minter)
    assert result.links_tracked == 1
    assert clicks(result.text) == [("https://example.com/a?b=1", "https://example.com/a?b=1", None, False)]
    assert restore_html(result.text) == doc


def test_click_link_inside_mso_conditional_is_tracked(
    minter: LinkMinter, clicks: Callable[[str], list[Click]]
) -> None:
    doc = '<!--[if mso]><a href="http://mso.example/">o</a><![endif]--><a href="http://all.example/">a</a>'
    result = track(doc, minter)
    assert targets(result, clicks) == ["http://mso.example/", "http://all.example/"]
    assert result.text.startswith("<!--[if mso]><a href=") and "<![endif]--><a href=" in result.text


def test_downlevel_revealed_conditional_content_is_ordinary_html(
    minter: LinkMinter, clicks: Callable[[str], list[Click]]
) -> None:
    doc = '<!--[if !mso]><!--><body><a href="http://revealed.example/">x</a><!--<![endif]--></body>'
    result = rewrite_html(doc, minter, click=True, open_=True, initial_open=True)
    assert [click[0] for click in clicks(result.text)] == ["http://revealed.example/"]
    assert result.text.startswith("<!--[if !mso]><!--><body><div ")
    assert result.text.endswith('/q/b"></body>')


def test_vml_roundrect_href_is_tracked(minter: LinkMinter, clicks: Callable[[str], list[Click]]) -> None:
    doc = (
        '<!--[if mso]><v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" HREF="https://vml.example/b"'
        ' style="height:40px"><w:anchorlock/><center>Buy</center></v:roundrect><![endif]-->'
    )
    result = track(doc, minter)
    assert targets(result, clicks) == ["https://vml.example/b"]
    assert result.text.endswith(
        'style="height:40px"><w:anchorlock/><center>Buy</center></v:roundrect><![endif]-->'
    )


def test_uppercase_and_unquoted_attributes_are_tracked_and_quoted(
    minter: LinkMinter, clicks: Callable[[str], list[Click]]
) -> None:
    doc = "<A\tTITLE='a > b'\nHREF=HTTP://Up.example/x?y=1&amp;z=2 >x</A><AREA href = https://area.example/>"
    result = track(doc, minter)
    assert targets(result, clicks) == ["HTTP://Up.example/x?y=1&z=2", "https://area.example/"]
    assert result.text.startswith("<A\tTITLE='a > b'\nHREF=\"" + TOKEN)
    assert '" >x</A><AREA href = "' + TOKEN in result.text


def test_single_quoted_href_keeps_its_quote(minter: LinkMinter) -> None:
    result = track("<a href='https://example.com/'>x</a>", minter)
    assert result.text.startswith("<a href='" + TOKEN) and result.text.endswith("'>x</a>")


def test_entities_are_decoded_for_the_minter_and_the_url_is_reencoded(
    minter: LinkMinter, clicks: Callable[[str], list[Click]]
) -> None:
    doc = '<a href="https://e.example/?a=1&amp;b=2&#38;c=3&notify=1&copy=2&copy;">x</a>'
    assert targets(track(doc, minter), clicks) == ["https://e.example/?a=1&b=2&c=3&notify=1&copy=2©"]


def test_minter_urls_with_ampersand_and_quotes_are_escaped_for_the_attribute() -> None:
    class Odd:
        def click_url(self, target_url: str, link_name: str, sublink: str | None, unsubscribe: bool) -> str:
            return "https://t.example/c?a=1&b=\"'"

        def open_url(self, initial: bool) -> str:
            return "https://t.example/o?x=1&y=2"

    doc = "<a href=\"http://a/\">x</a><a href='http://b/'>y</a>"
    result = rewrite_html(doc, Odd(), click=True, open_=True, initial_open=False)
    assert '<a href="https://t.example/c?a=1&amp;b=&quot;\'">x</a>' in result.text
    assert "<a href='https://t.example/c?a=1&amp;b=\"&#39;'>y</a>" in result.text
    assert 'src="https://t.example/o?x=1&amp;y=2"' in result.text


def test_second_of_duplicate_hrefs_is_left_alone(
    minter: LinkMinter, clicks: Callable[[str], list[Click]]
) -> None:
    result = track('<a href="http://first.example/" href="http://second.example/">x</a>', minter)
    assert targets(result, clicks) == ["http://first.example/"]
    assert result.text.endswith(' href="http://second.example/">x</a>')


def test_abrupt_comment_does_not_swallow_the_following_link(
    minter: LinkMinter, clicks: Callable[[str], list[Click]]
) -> None:
    doc = '<!--><a href="http://one.example/">1</a><!---><a href="http://two.example/">2</a><!-- --!><a href="http://3.example/">'
    assert targets(track(doc, minter), clicks) == [
        "http://one.example/",
        "http://two.example/",
        "http://3.example/",
    ]


@pytest.mark.parametrize(
    "href",
    [
        "mailto:a@example.com",
        "tel:+123",
        "sms:+123",
        "#top",
        "/relative/path",
        "relative.html",
        "//protocol-relative.example/",
        "javascript:void(0)",
        "https+notrack://example.com/",
        "http:/one-slash.example",
        "https://example.com/?u={{user_id}}",
        "https://example.com/%%unsub%%",
        "*|ARCHIVE|*",
        "https://example.com/*|UNSUB|*",
        "https://example.com/[[id]]",
        "http://",
        "",
    ],
)
def test_ineligible_href_is_left_alone(href: str, minter: LinkMinter) -> None:
    doc = f'<a href="{href}">x</a>'
    result = track(doc, minter)
    assert result.text is doc and result.links_tracked == 0


@pytest.mark.parametrize("letter", list(string.ascii_letters))
def test_a_tag_starting_with_any_letter_hides_the_links_in_its_attributes(
    letter: str, minter: LinkMinter, clicks: Callable[[str], list[Click]]
) -> None:
    doc = f"<{letter}x title='<a href=\"http://attr.example/\">'><a href='http://after.example/'>y</a>"
    assert targets(track(doc, minter), clicks) == ["http://after.example/"]


@pytest.mark.parametrize("name", ["script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes"])
def test_every_raw_text_element_hides_its_content_in_any_case(name: str, minter: LinkMinter) -> None:
    for spelled in (name, name.upper(), name.capitalize()):
        doc = f'<{spelled}><a href="http://{name}.example/"></{spelled}>'
        result = track(doc, minter)
        assert result.text is doc and result.links_tracked == 0, spelled


@pytest.mark.parametrize(
    "doc",
    [
        '<!-- <a href="http://comment.example/"> -->',
        "<style>a:after { content: \"<a href='http://style.example/'>\" }</style>",
        '<SCRIPT type="x">var a = "<a href=http://script.example/>";</SCRIPT >',
        '<title>About <a href="http://title.example/"></title>',
        '<textarea><a href="http://textarea.example/"></textarea>',
        '<link rel="stylesheet" href="http://link.example/">',
        '<base href="http://base.example/">',
        '<a data-href="http://data.example/">x</a>',
        '<img src="http://img.example/x.png" alt="<a href=http://alt.example/>">',
        "<p title=\"<a href='http://attr.example/'>\">text</p>",
        '<abbr href="http://abbr.example/">x</abbr>',
        '<!DOCTYPE html><?xml href="http://pi.example/"?><![CDATA[<a href="http://cdata.example/">]]>',
        '<a href="http://unterminated.example/"',
        '<a href="http://unclosed-quote.example/-->',
    ],
)
def test_links_outside_tracked_markup_are_left_alone(doc: str, minter: LinkMinter) -> None:
    result = track(doc, minter)
    assert result.text is doc and result.links_tracked == 0


def test_raw_text_element_ends_at_its_own_end_tag(
    minter: LinkMinter, clicks: Callable[[str], list[Click]]
) -> None:
    doc = '<style>p{}</styles></STYLE\n><a href="http://after.example/">x</a>'
    assert targets(track(doc, minter), clicks) == ["http://after.example/"]


def test_data_msys_attributes_are_removed_with_their_whitespace(minter: LinkMinter) -> None:
    doc = (
        '<a\n  data-msys-linkname="n" class="c" data-msys-sublink="s"\tdata-msys-unsubscribe="1" '
        'href="mailto:x@example.com" DATA-MSYS-CLICKTRACK=0>x</a><p data-msys-linkname="kept">'
    )
    result = track(doc, minter)
    assert result.text == '<a class="c" href="mailto:x@example.com">x</a><p data-msys-linkname="kept">'


def test_removing_a_data_msys_attribute_never_joins_its_neighbours(minter: LinkMinter) -> None:
    doc = '<a data-msys-linkname="x"href="mailto:a@b" title="t"data-msys-sublink="s"class=c>x</a>'
    assert track(doc, minter).text == '<a href="mailto:a@b" title="t"class=c>x</a>'


def test_link_name_sublink_and_unsubscribe_reach_the_minter(
    minter: LinkMinter, clicks: Callable[[str], list[Click]]
) -> None:
    doc = (
        '<a href="http://a.example/" data-msys-linkname="Header &amp; logo" data-msys-sublink="app"'
        ' data-msys-unsubscribe="1">x</a><a href="http://b.example/" data-msys-unsubscribe="0">y</a>'
    )
    result = track(doc, minter)
    assert clicks(result.text) == [
        ("http://a.example/", "Header & logo", "app", True),
        ("http://b.example/", "http://b.example/", None, False),
    ]
    assert "data-msys" not in result.text


def test_link_name_is_truncated_to_63_bytes_on_a_character_boundary(
    minter: LinkMinter, clicks: Callable[[str], list[Click]]
) -> None:
    name = "a" * 61 + "é" + "z"  # "é" is two bytes: 61 + 2 = 63 fits, the "z" does not
    longer = "a" * 62 + "é"  # 62 + 2 = 64: the "é" cannot be split, so it goes
    doc = (
        f'<a href="http://a/" data-msys-linkname="{name}">x</a>'
        f'<a href="http://b/" data-msys-linkname="{longer}">y</a>'
    )
    names = [click[1] for click in clicks(track(doc, minter).text)]
    assert names == ["a" * 61 + "é", "a" * 62]


@pytest.mark.parametrize(
    "attribute",
    [
        'data-msys-clicktrack="0"',
        "clicktracking=off",
        'clicktracking="OFF"',
        "data-pm-no-track",
        "ses:no-track",
        'disable-tracking="true"',
        "mautic:disable-tracking",
    ],
)
def test_opt_out_attribute_leaves_the_link_untracked(attribute: str, minter: LinkMinter) -> None:
    result = track(f'<a {attribute} href="https://example.com/">x</a>', minter)
    assert result.links_tracked == 0 and 'href="https://example.com/"' in result.text
    assert "data-msys" not in result.text


def test_link_of_4096_bytes_is_tracked_and_of_4097_left_alone_with_a_warning(
    minter: LinkMinter, clicks: Callable[[str], list[Click]]
) -> None:
    fits = "https://example.com/" + "x" * (4096 - 20)
    too_long = fits + "y"
    doc = f'<a href="{too_long}">x</a><a href="{fits}">y</a>'
    result = track(doc, minter)
    assert targets(result, clicks) == [fits]
    assert f'<a href="{too_long}">x</a>' in result.text
    assert result.warnings == ("link longer than 4096 bytes left untracked",)


def test_leading_and_trailing_whitespace_of_the_href_is_trimmed(
    minter: LinkMinter, clicks: Callable[[str], list[Click]]
) -> None:
    assert targets(track('<a href=" \n\thttps://e.example/ ">x</a>', minter), clicks) == [
        "https://e.example/"
    ]


def test_pixels_go_after_the_body_start_tag_and_before_the_last_body_end_tag(
    minter: LinkMinter, strip_pixels: Callable[[str], str]
) -> None:
    doc = "<html><BODY style='x'><p>a</p></body><p>stray</p></BODY></html>"
    result = rewrite_html(doc, minter, click=False, open_=True, initial_open=True)
    assert result.pixels == 2 and strip_pixels(result.text) == doc
    assert result.text.startswith("<html><BODY style='x'><div style=\"color:transparent;")
    assert result.text.endswith(
        '<p>stray</p><img border="0" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0;margin:0;padding:0" src="https://t.example/q/b"></BODY></html>'
    )


def test_without_initial_open_only_the_bottom_pixel_is_placed(
    minter: LinkMinter, strip_pixels: Callable[[str], str]
) -> None:
    doc = "<body><p>x</p></body>"
    result = rewrite_html(doc, minter, click=False, open_=True, initial_open=False)
    assert result.pixels == 1 and "/q/i" not in result.text
    assert (
        result.text
        == '<body><p>x</p><img border="0" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0;margin:0;padding:0" src="https://t.example/q/b"></body>'
    )


def test_body_inside_comments_and_conditionals_does_not_count(
    minter: LinkMinter, strip_pixels: Callable[[str], str]
) -> None:
    doc = (
        "<!--[if mso]><body class=mso></body><![endif]--><!-- <body> -->"
        "<body id=real><p>x</p></body><!-- </body> -->"
    )
    result = rewrite_html(doc, minter, click=False, open_=True, initial_open=True)
    assert result.text.index("/q/i") > result.text.index("<body id=real>")
    assert result.text.index("/q/b") < result.text.rindex("</body><!-- </body> -->")
    assert strip_pixels(result.text) == doc


def test_document_without_body_gets_the_pixels_first_and_last(
    minter: LinkMinter, strip_pixels: Callable[[str], str]
) -> None:
    for doc in ("<p>Hello</p>", "<!DOCTYPE html>\n<p>Hello</p>", ""):
        result = rewrite_html(doc, minter, click=False, open_=True, initial_open=True)
        assert result.pixels == 2 and strip_pixels(result.text) == doc
        top = result.text.index("/q/i")
        assert top < result.text.index("/q/b") and result.text.endswith('/q/b">')
        assert not doc.startswith("<!DOCTYPE") or result.text.startswith("<!DOCTYPE html><div ")


def test_nothing_to_do_returns_the_same_object(minter: LinkMinter) -> None:
    doc = '<a href="mailto:x@example.com">x</a><a href="http://a.example/">'
    assert rewrite_html(doc, minter, click=False, open_=False, initial_open=True).text is doc
    assert rewrite_html(doc, minter, click=False, open_=False, initial_open=True).links_tracked == 0


ADVERSARIAL = [
    '<a "',
    "<a title='",
    '<a title="',
    "<!--",
    "<!--[if a]>-->",
    "<!--[if a]>",
    "<!--[if ",
    "<a href=http://x/ ",
    "<style>",
    "</",
    "<!",
    "<?",
    "<a/",
    '<a href="&amp;&#x',
    "<v:",
    "<body><!--[if",
    "&notify&copy",
]


@pytest.mark.parametrize("unit", ADVERSARIAL)
def test_adversarial_repetition_is_left_as_it_is_apart_from_the_pixels(
    unit: str, minter: LinkMinter, strip_pixels: Callable[[str], str]
) -> None:
    doc = unit * 20_000
    result = rewrite_html(doc, minter, click=True, open_=True, initial_open=True)
    assert result.pixels == 2 and result.links_tracked == 0
    assert strip_pixels(result.text) == doc


def test_complete_links_after_adversarial_text_are_still_tracked(
    minter: LinkMinter, clicks: Callable[[str], list[Click]]
) -> None:
    for unit in ("<!--[if a]>-->", "<!-->", "</x y='>'>", "<b>&amp", "<!--[if mso]><![endif]-->"):
        doc = unit * 5_000 + '<a href="http://end.example/">x</a>'
        assert targets(track(doc, minter), clicks) == ["http://end.example/"], unit


_URL_CHARS = st.text(alphabet="abcxyz0123456789-._~/?#=&;:+,'\"<>()!$é€ ", max_size=30)
_TEXT = st.text(alphabet="abc xyz\r\n\t&;#=>\"'é€/", max_size=20)
_WRAP_INELIGIBLE = [
    '<a href="mailto:{}">m</a>',
    "<!-- <a href='http://{}'> -->",
    '<style>a{{background:url("http://{}")}}</style>',
    '<link href="http://{}">',
    '<img src="http://{}">',
    '<a data-href="http://{}">d</a>',
]


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, list[str]]:
    """An HTML document and, in order, the targets of the links in it that must be tracked."""
    pieces: list[str] = []
    expected: list[str] = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["text", "link", "conditional", "vml", "ineligible", "tag"]))
        if kind == "text":
            pieces.append(draw(_TEXT))
            continue
        if kind == "tag":
            pieces.append(
                draw(st.sampled_from(["<p>", "</div>", "<br/>", "<td class='a'>", "<!DOCTYPE html>"]))
            )
            continue
        if kind == "ineligible":
            host = draw(st.text(alphabet="abcxyz", min_size=1, max_size=8))
            pieces.append(draw(st.sampled_from(_WRAP_INELIGIBLE)).format(host))
            continue
        target = draw(st.sampled_from(["http://", "https://", "HTTPS://"])) + draw(st.text("abc", min_size=1))
        target += draw(_URL_CHARS).strip()
        quote = draw(st.sampled_from(['"', "'"]))
        tag = draw(st.sampled_from(["a", "A", "area"])) if kind != "vml" else "v:roundrect"
        extra = draw(st.sampled_from(["", ' class="x"', " title='a > b'", "\n\tid=z"]))
        escaped = target.replace("&", "&amp;").replace(quote, "&quot;" if quote == '"' else "&#39;")
        link = f"<{tag}{extra} href={quote}{escaped}{quote}{extra}>x</{tag}>"
        pieces.append(f"<!--[if mso]>{link}<![endif]-->" if kind == "conditional" else link)
        expected.append(target)
    return "".join(pieces), expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(generated=documents(), open_=st.booleans(), initial_open=st.booleans())
def test_every_eligible_link_is_tracked_and_restoring_them_gives_the_input_back(
    generated: tuple[str, list[str]],
    open_: bool,
    initial_open: bool,
    minter: LinkMinter,
    clicks: Callable[[str], list[Click]],
    restore_html: Callable[[str], str],
    strip_pixels: Callable[[str], str],
) -> None:
    doc, expected = generated
    result = rewrite_html(doc, minter, click=True, open_=open_, initial_open=initial_open)
    assert [click[0] for click in clicks(result.text)] == expected
    assert result.links_tracked == len(expected)
    assert result.pixels == ((2 if initial_open else 1) if open_ else 0)
    assert restore_html(strip_pixels(result.text)) == doc


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_with_tracking_off_any_text_comes_back_as_the_same_object(text: str) -> None:
    assert rewrite_html(text, _NeverCalled(), click=False, open_=False, initial_open=True).text is text


_SOUP = [
    "<a", "<A", "<area", "<v:rect", " href=", " HREF =", " data-msys-linkname=n", '"', "'", "http://x/", "https://y/",
    "<!--", "-->", "--!>", "<!-->", "<!--[if mso]>", "<![endif]-->", "<body>", "</body>", ">", " ", "/", "=",
    "<style>", "</style>", "&amp;", "&notify=1", "<p>", "text", "\r\n",
]  # fmt: skip


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(st.sampled_from(_SOUP), max_size=40).map("".join))
def test_markup_soup_never_fails_and_every_tracked_link_becomes_one_token(
    text: str, minter: LinkMinter, strip_pixels: Callable[[str], str], clicks: Callable[[str], list[Click]]
) -> None:
    result = rewrite_html(text, minter, click=True, open_=True, initial_open=True)
    assert result.pixels == 2
    assert len(clicks(strip_pixels(result.text))) == result.links_tracked
    assert all(click[0].startswith(("http://x/", "https://y/")) for click in clicks(result.text))


_TRACKED_VALUE = re.compile(r"([\"'])https://t\.example/f/a/[A-Za-z0-9_-]+\1")
_ATTRIBUTE_SOUP = [
    " href=", " HREF = ", " href", "\thref=", "/href=", " hrefx=", " =href=", " data-href=", " x-href=",
    '"', "'", "http://x/a", "https://y/b?q=1&amp;r=2", "&#38;", " title='href=http://z/'", ' alt="a > b"',
    " class=c", "=", " ", "\n", "/",
]  # fmt: skip


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(attributes=st.lists(st.sampled_from(_ATTRIBUTE_SOUP), max_size=12).map("".join))
def test_a_link_tag_without_data_msys_attributes_is_read_as_one_with_them(
    attributes: str, minter: LinkMinter, clicks: Callable[[str], list[Click]]
) -> None:
    plain = f"<a{attributes}>x</a>"
    marked = f"<a{attributes} data-msys-sublink=s>x</a>"  # a data-msys-* attribute: read attribute by attribute
    result, reference = track(plain, minter), track(marked, minter)
    assert result.links_tracked == reference.links_tracked
    assert targets(result, clicks) == [click[0] for click in clicks(reference.text.replace("/f/s/", "/f/a/"))]
    if result.links_tracked:  # only the href value changed (and got quotes): the bytes around it are kept
        tracked = _TRACKED_VALUE.search(result.text)
        assert tracked is not None
        assert plain.startswith(result.text[: tracked.start()])
        assert plain.endswith(result.text[tracked.end() :])
    else:
        assert result.text == plain


class _NeverCalled:
    def click_url(self, target_url: str, link_name: str, sublink: str | None, unsubscribe: bool) -> str:
        raise AssertionError("click_url called with tracking off")

    def open_url(self, initial: bool) -> str:
        raise AssertionError("open_url called with tracking off")


AMP_DOC = (
    "<!doctype html>\n<html \u26a14email data-css-strict>\n<head>\n<meta charset=\"utf-8\">\n"
    '<script async src="https://cdn.ampproject.org/v0.js"></script>\n'
    '<script async custom-element="amp-carousel" src="https://cdn.ampproject.org/v0/amp-carousel-0.1.js"></script>\n'
    "<style amp4email-boilerplate>body{visibility:hidden}</style>\n"
    "<style amp-custom>a { color: #c00; } .hero { margin: 0 }</style>\n</head>\n"
    '<body class="hero">\n<amp-carousel width="600" height="300" layout="responsive" type="slides">\n'
    '<amp-img src="https://img.example/1.png" width="600" height="300" layout="responsive" alt="1"></amp-img>\n'
    "</amp-carousel>\n"
    '<p><a href="https://shop.example/sale?a=1&amp;b=2" data-msys-linkname="sale">Sale</a>\n'
    '<a href="https://shop.example/keep" data-msys-clicktrack="0">kept</a>\n'
    '<a href="mailto:help@shop.example">mail</a>\n'
    '<a href="https://shop.example/{{id}}">templated</a></p>\n</body>\n</html>\n'
)
AMP_PIXEL = '<amp-img src="https://t.example/q/{}" width="1" height="1" layout="fixed" alt=""></amp-img>'
_AMP_SCRIPT_HOST = "https://cdn.ampproject.org/"
_AMP_DISALLOWED = {"img", "iframe", "frame", "frameset", "object", "param", "applet", "embed", "base", "video",
                   "audio", "picture", "svg", "canvas", "noscript", "input", "textarea", "select"}
_AMP_LINK_SCHEMES = ("http://", "https://", "mailto:", "tel:")


def amp_problems(doc: str) -> list[str]:
    """What the AMP for Email validator would refuse, of the rules that can be checked offline."""
    from html.parser import HTMLParser

    problems: list[str] = []

    class Checker(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.head_children: list[str] = []
            self.in_head = False
            self.open_amp_imgs = 0
            self.seen: set[str] = set()

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            values = dict(attrs)
            self.seen.add(tag)
            if self.in_head and tag != "head":
                self.head_children.append(tag if tag != "meta" or "charset" not in values else "meta charset")
            if tag == "head":
                self.in_head = True
            if tag == "html" and not ({"\u26a14email", "amp4email"} & set(values)):
                problems.append("html lacks \u26a14email")
            if tag in _AMP_DISALLOWED:
                problems.append(f"<{tag}> is not allowed")
            if tag == "script" and not ((values.get("src") or "").startswith(_AMP_SCRIPT_HOST) and "async" in values):
                problems.append(f"script {values} is not an AMP runtime or extension script")
            if tag == "amp-img":
                self.open_amp_imgs += 1
                for required in ("src", "width", "height", "layout"):
                    if not values.get(required):
                        problems.append(f"amp-img without {required}: {values}")
                if not (values.get("src") or "").startswith("https://"):
                    problems.append(f"amp-img src is not https: {values.get('src')}")
            href = values.get("href") or ""
            if tag == "a" and href and not href.startswith(_AMP_LINK_SCHEMES):
                problems.append(f"a href with a disallowed scheme: {href}")
            for name in values:
                if name.startswith("on"):
                    problems.append(f"attribute {name} is not allowed")

        def handle_endtag(self, tag: str) -> None:
            if tag == "head":
                self.in_head = False
            if tag == "amp-img":
                self.open_amp_imgs -= 1

    checker = Checker()
    checker.feed(doc)
    checker.close()
    if not doc.lower().startswith("<!doctype html>"):
        problems.append("does not start with <!doctype html>")
    if checker.head_children[:1] != ["meta charset"]:
        problems.append(f"meta charset is not the first child of head: {checker.head_children}")
    if f'<script async src="{_AMP_SCRIPT_HOST}v0.js"></script>' not in doc:
        problems.append("no AMP runtime script")
    if "<style amp4email-boilerplate>body{visibility:hidden}</style>" not in doc:
        problems.append("no amp4email boilerplate")
    if {"head", "body"} - checker.seen:
        problems.append("head or body missing")
    if checker.open_amp_imgs:
        problems.append("amp-img without its end tag")
    if len(doc.encode("utf-8")) > 200_000:
        problems.append("larger than the 200,000 bytes AMP for Email allows")
    return problems


def amp_track(doc: str, minter: LinkMinter, *, click: bool = True, open_: bool = True) -> HtmlResult:
    return rewrite_html(doc, minter, click=click, open_=open_, initial_open=True, amp=True)


def test_amp_sample_is_valid_before_tracking() -> None:
    assert amp_problems(AMP_DOC) == []
    assert amp_problems(AMP_DOC.replace("<amp-img", "<img").replace("</amp-img>", "")) != []


def test_tracked_amp_part_stays_valid_amp_with_tracked_links_and_amp_img_pixels(
    minter: LinkMinter, clicks: Callable[[str], list[Click]], restore_html: Callable[[str], str]
) -> None:
    result = amp_track(AMP_DOC, minter)
    assert amp_problems(result.text) == [] and "data-msys-" not in result.text
    assert (result.links_tracked, result.pixels, result.warnings) == (1, 2, ())
    assert clicks(result.text) == [("https://shop.example/sale?a=1&b=2", "sale", None, False)]
    top, bottom = AMP_PIXEL.format("i"), AMP_PIXEL.format("b")
    assert result.text.index('<body class="hero">') + len('<body class="hero">') == result.text.index(top)
    assert result.text.index(bottom) + len(bottom) == result.text.index("</body>")
    untracked = restore_html(result.text.replace(top, "").replace(bottom, ""))
    assert untracked == AMP_DOC.replace(' data-msys-linkname="sale"', "").replace(' data-msys-clicktrack="0"', "")


def test_amp_part_that_is_not_amp_for_email_is_left_untouched_with_a_warning(minter: LinkMinter) -> None:
    for doc, missing in ((AMP_DOC.replace("\u26a14email ", ""), "<html \u26a14email>"),
                         (AMP_DOC.replace("<body", "<div").replace("</body>", "</div>"), "<body> and </body>")):
        result = amp_track(doc, minter)
        assert result.text is doc
        assert result.warnings == (f"not an AMP for Email document (no {missing}); left untouched",)


def test_amp_pixels_need_https_and_are_left_out_with_a_warning(
    clicks: Callable[[str], list[Click]]
) -> None:
    class HttpMinter:
        def click_url(self, target_url: str, link_name: str, sublink: str | None, unsubscribe: bool) -> str:
            return "http://t.example/f/a/x"

        def open_url(self, initial: bool) -> str:
            return "http://t.example/q/x"

    result = amp_track(AMP_DOC, HttpMinter())
    assert result.pixels == 0 and "amp-img" in result.warnings[0] and "https" in result.warnings[0]
    assert result.links_tracked == 1 and amp_problems(result.text) == []


def test_amp_part_that_tracking_would_take_past_the_size_limit_is_left_untouched(minter: LinkMinter) -> None:
    link = '<a href="https://shop.example/p">p</a>\n'
    body_at = AMP_DOC.index("</body>")
    filler = "x" * (AMP_MAX_BYTES - len(AMP_DOC.encode()) - len(link) * 20)
    under = AMP_DOC[:body_at] + link * 20 + filler + AMP_DOC[body_at:]
    assert amp_problems(under) == []
    result = amp_track(under, minter)  # each tracked link is longer than its target: the part would pass the limit
    assert result.text is under and (result.links_tracked, result.pixels) == (0, 0)
    [warning] = result.warnings
    assert warning.startswith("AMP part would be ") and warning.endswith(
        f"bytes tracked, over AMP for Email's {AMP_MAX_BYTES}; left untouched")
    small = amp_track(AMP_DOC[:body_at] + link * 20 + AMP_DOC[body_at:], minter)
    assert small.links_tracked == 21 and amp_problems(small.text) == []


def test_amp_opt_outs_and_open_only_follow_the_html_rules(minter: LinkMinter) -> None:
    doc = AMP_DOC.replace('href="https://shop.example/sale?a=1&amp;b=2"', 'href="https://shop.example/s" ses:no-track')
    result = amp_track(doc, minter)
    assert result.links_tracked == 0 and "ses:no-track" in result.text
    opens = amp_track(AMP_DOC, minter, click=False)
    assert (opens.links_tracked, opens.pixels) == (0, 2) and amp_problems(opens.text) == []


def _tokenizer(runs: str, text_run: str) -> re.Pattern[str]:
    """The module's tokenizer with other bounds on the runs per match and the characters per text run."""
    pattern = html._TOKEN.pattern
    bounded = f"{{0,{html._RUNS_PER_MATCH}}}+", f"[^<]{{1,{html._TEXT_RUN}}}+"
    assert all(part in pattern for part in bounded)
    return re.compile(pattern.replace(bounded[0], runs).replace(bounded[1], f"[^<]{text_run}"))


_UNBOUNDED = _tokenizer("*+", "++")
_TINY = _tokenizer("{0,2}+", "{1,3}+")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(generated=documents(), noise=st.lists(st.sampled_from(ADVERSARIAL), max_size=4))
def test_matches_cut_after_a_few_runs_rewrite_like_one_unbounded_match(
    generated: tuple[str, list[str]], noise: list[str], minter: LinkMinter
) -> None:
    # Each match stops after a bounded number of runs so that no C-level call holds the GIL for long; where
    # it stops must not change the result.
    doc = "".join(noise) + generated[0]
    with patch.object(html, "_TOKEN", _UNBOUNDED):
        expected = rewrite_html(doc, minter, click=True, open_=True, initial_open=True)
    with patch.object(html, "_TOKEN", _TINY):
        assert rewrite_html(doc, minter, click=True, open_=True, initial_open=True) == expected


def test_a_megabyte_of_text_before_a_link_is_scanned_in_bounded_matches(
    minter: LinkMinter, clicks: Callable[[str], list[Click]]
) -> None:
    doc = "<body>" + "word " * 300_000 + "<p>x</p>" * 20_000 + '<a href="http://end.example/">x</a></body>'
    matches = 0
    real = html._TOKEN

    class Counting:
        def match(self, text: str, pos: int) -> re.Match[str] | None:
            nonlocal matches
            matches += 1
            found = real.match(text, pos)
            assert found is None or found.end() - pos <= html._RUNS_PER_MATCH * html._TEXT_RUN
            return found

    with patch.object(html, "_TOKEN", Counting()):
        assert targets(track(doc, minter), clicks) == ["http://end.example/"]
    assert matches > len(doc) // (html._RUNS_PER_MATCH * html._TEXT_RUN)


class _OtherRecipient:
    """A second recipient's minter: different tokens for the same links, so a plan holding a token would show."""

    def click_url(self, target_url: str, link_name: str, sublink: str | None, unsubscribe: bool) -> str:
        if "refuse" in target_url:
            raise UntrackableLink("refused by this recipient's minter")
        return f"https://other.example/f/{len(target_url)}/{link_name[:3]}-{sublink}-{int(unsubscribe)}"

    def open_url(self, initial: bool) -> str:
        return f"https://other.example/q/{int(initial)}"


_PLAN_SOUP = [*_SOUP, ' href="http://refuse.example/"', " data-msys-sublink=s", " data-msys-unsubscribe=1",
              ' data-msys-clicktrack="0"', " {{x}}", "<html amp4email>", "<v:roundrect href='https://v.example/'>"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(st.sampled_from(_PLAN_SOUP), max_size=40).map("".join), click=st.booleans(),
       open_=st.booleans(), initial_open=st.booleans(), amp=st.booleans())
def test_a_kept_plan_gives_every_recipient_what_reading_the_document_anew_gives(
    text: str, click: bool, open_: bool, initial_open: bool, amp: bool, minter: LinkMinter
) -> None:
    plans = html.HtmlPlans()
    for each in (minter, _OtherRecipient(), minter):  # the first reads and keeps; the others reuse
        kept = rewrite_html(text, each, click=click, open_=open_, initial_open=initial_open, amp=amp, plans=plans)
        assert kept == rewrite_html(text, each, click=click, open_=open_, initial_open=initial_open, amp=amp)
    assert len(plans) == 1


def test_a_kept_plan_is_used_instead_of_reading_the_document_again(minter: LinkMinter) -> None:
    plans = html.HtmlPlans()
    doc = '<body><a href="https://a.example/x">x</a></body>'
    first = rewrite_html(doc, minter, click=True, open_=True, initial_open=True, plans=plans)
    with patch.object(html, "_read", side_effect=AssertionError("read again")):
        again = rewrite_html(doc, _OtherRecipient(), click=True, open_=True, initial_open=True, plans=plans)
        assert rewrite_html(doc, minter, click=True, open_=True, initial_open=True, plans=plans) == first
    assert again.links_tracked == 1 and "https://other.example/f/" in again.text
    # What was read with click tracking off has no links to mint: it is kept apart.
    assert rewrite_html(doc, minter, click=False, open_=True, initial_open=True, plans=plans).links_tracked == 0
    assert len(plans) == 2


def test_kept_plans_are_bounded_in_entries_and_in_characters(minter: LinkMinter) -> None:
    plans = html.HtmlPlans(entries=3, chars=4_000)
    docs = [f'<a href="https://a.example/{n}">{"x" * 200}</a>' for n in range(5)]
    for doc in docs:
        rewrite_html(doc, minter, click=True, open_=False, initial_open=False, plans=plans)
    assert len(plans) == 3  # the two least recently used are gone
    with patch.object(html, "_read", side_effect=AssertionError("read again")):
        for doc in docs[2:]:
            rewrite_html(doc, minter, click=True, open_=False, initial_open=False, plans=plans)
    long_doc = "<p>" + "y" * 1_500 + "</p>"  # over a quarter of the characters: read, never kept
    rewrite_html(long_doc, minter, click=True, open_=False, initial_open=False, plans=plans)
    assert len(plans) == 3
    middle = "<p>" + "z" * 900 + "</p>"
    for n in range(4):  # 4 x 900 characters with the others: the character bound evicts before the entry bound
        rewrite_html(middle + str(n), minter, click=True, open_=False, initial_open=False, plans=plans)
    assert len(plans) <= 3 and plans.chars_held <= 4_000
