"""engaged.rewrite.css: <style> rules into style attributes, every other byte kept, bad CSS left alone."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engaged.rewrite.css import inline_css
from engaged.rewrite.mime import RewriteOptions, rewrite_message
from engaged.testing.server import ServerProcess
from engaged.types import LinkMinter
from tests.helpers import RawSmtp, queued_id, wait_captured, wait_events

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus"
_STYLE = re.compile(r"""[\t\n\f\r ]style[\t\n\f\r ]*=[\t\n\f\r ]*("[^"]*"|'[^']*'|[^\t\n\f\r >]*)""", re.IGNORECASE)


def without_styles(html: str) -> str:
    return _STYLE.sub("", html)


def corpus_files() -> list[object]:
    files = sorted(CORPUS.glob("html/**/*.html"))
    if not files:
        return [pytest.param(None, id="corpus-missing")]
    return [pytest.param(path, id=str(path.relative_to(CORPUS))) for path in files]


def test_rules_are_inlined_and_every_other_byte_is_kept() -> None:
    doc = ("<html><head><style>p { color: red } .x { margin: 0 } @media (max-width: 600px) { p { color: blue } }"
           "</style></head>\r\n<body><p class=x data-a='1' style=\"font-weight: bold\">Hi &amp; bye</p>"
           "<!--[if mso]><p>o</p><![endif]--><table><tr><td class='x'>x</td></tr></table><br/></body></html>")
    result = inline_css(doc)
    assert result.warnings == () and result.elements == 2
    assert result.text == doc.replace('style="font-weight: bold"', 'style="color: red;margin: 0;font-weight: bold"'
                                      ).replace("<td class='x'>", "<td style=\"margin: 0;\" class='x'>")


def test_a_document_without_style_blocks_or_matching_rules_comes_back_as_the_same_object() -> None:
    for doc in ("<p>no css</p>", "<style>.absent { color: red }</style><p>x</p>", "<p style='color:red'>x</p>"):
        result = inline_css(doc)
        assert result.text is doc and result.elements == 0 and result.warnings == ()


@pytest.mark.parametrize(
    ("css", "problem"),
    [("}}}{{{ p { color: red", "a } without its {"), ("p { color: red", "a { without its }"),
     ("p { content: 'x }", "an unterminated string"), ("/* p { color: red }", "an unterminated comment")],
)
def test_css_that_fails_the_syntax_check_leaves_the_document_untouched_with_a_warning(css: str, problem: str) -> None:
    doc = f"<style>{css}</style><p>x</p>"
    result = inline_css(doc)
    assert result.text is doc
    assert result.warnings == (f"inline_css: <style> block 1 is not valid CSS ({problem}); left untouched",)


def test_braces_inside_strings_and_comments_are_not_counted() -> None:
    result = inline_css("<style>/* { */ p::after { content: '}' } p { color: red }</style><p>x</p>")
    assert result.warnings == () and result.text.endswith('<p style="color: red;">x</p>')


@pytest.mark.parametrize("path", corpus_files())
def test_corpus_template_outside_its_style_attributes_is_byte_for_byte_the_same(path: Path | None) -> None:
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"corpus not found at {CORPUS.resolve()}")
        pytest.skip(f"corpus not found at {CORPUS.resolve()}")
    doc = path.read_text("utf-8")
    result = inline_css(doc)
    assert result.warnings == ()
    assert without_styles(result.text) == without_styles(doc)
    if "<style" in doc and result.elements:
        assert len(_STYLE.findall(result.text)) >= len(_STYLE.findall(doc))


def message(html: str, amp: str = "") -> bytes:
    parts = [f"Content-Type: text/html; charset=utf-8\r\n\r\n{html}"]
    if amp:
        parts.insert(0, f"Content-Type: text/x-amp-html; charset=utf-8\r\n\r\n{amp}")
    body = "".join(f"--b\r\n{part}\r\n" for part in parts)
    return (f'From: a@example.com\r\nContent-Type: multipart/alternative; boundary="b"\r\n\r\n{body}--b--\r\n'
            ).encode()


def test_inline_css_runs_before_tracking_and_leaves_the_amp_part_alone(minter: LinkMinter) -> None:
    html = '<html><head><style>a { color: #c00 }</style></head><body><a href="https://x.example/">x</a></body></html>'
    amp = ('<!doctype html><html \u26a14email><head><style amp-custom>a { color: red }</style></head>'
           '<body><a href="https://x.example/amp">a</a></body></html>')
    raw = message(html, amp)
    result = rewrite_message(raw, minter, RewriteOptions(open_tracking=False, click_tracking=True, inline_css=True))
    assert b'<a style="color: #c00;" href="https://t.example/f/a/' in result.data
    assert amp.encode() in result.data
    only_css = rewrite_message(raw, minter, RewriteOptions(open_tracking=False, click_tracking=False,
                                                           inline_css=True))
    assert only_css.data == raw.replace(b'<a href="https://x.example/">', b'<a style="color: #c00;" '
                                        b'href="https://x.example/">')
    assert only_css.links_tracked == 0 and only_css.warnings == ()


def test_a_message_whose_css_is_rejected_goes_out_untouched_with_the_warning(minter: LinkMinter) -> None:
    raw = message("<html><head><style>p { color: red</style></head><body><p>x</p></body></html>")
    result = rewrite_message(raw, minter, RewriteOptions(open_tracking=False, click_tracking=False, inline_css=True))
    assert result.data is raw
    assert result.warnings == ("text/html part: inline_css: <style> block 1 is not valid CSS (a { without its }); "
                               "left untouched",)


@pytest.mark.parametrize("section", ["<![ if !mso ]>", "<![>", "<![p{color:red}]]>", "<![<body>]]>"])
def test_marked_sections_are_passed_over_and_the_rules_still_apply(section: str) -> None:
    html = f"<html><head><style>p {{ color: red }}</style></head><body>{section}<p>x</p></body></html>"
    result = inline_css(html)  # html.parser raised AssertionError on each of these
    assert result.text == html.replace("<p>x", '<p style="color: red;">x') and result.warnings == ()


@pytest.mark.parametrize(("name", "unit", "count"), [("quotes", "<p style='", 40_000), ("styles", "<style>", 40_000),
                                                      ("titles", "<title>", 40_000), ("comments", "<!--", 40_000)])
def test_inlining_is_linear_in_adversarial_markup(name: str, unit: str, count: int) -> None:
    html = "<style>p{color:red}</style><p>x</p>" + unit * count  # html.parser or a lazy regex: minutes
    started = time.perf_counter()
    result = inline_css(html)
    assert time.perf_counter() - started < 2.0, name
    assert result.text.startswith('<style>p{color:red}</style><p style="color: red;">x</p>') or result.warnings


_MARKUP = ["<style>", "</style>", "p{color:red}", "a { color: blue }", "{", "}", "/*", "*/", '"', "'", "<p>", "</p>",
           "<a href='x'>", "<![", "<!--", "-->", "<!", "<?", "]]>", "<!DOCTYPE", "&", "&#x110000;", "\x00",
           "<p style='", "'>", "@media (x){", "<div class=a>", ".a{margin:0}", "<svg>", "<template>", "<textarea>",
           "<title>", "<plaintext>", "<table>", "<td>", "<", ">", " ", "\n", "<br/>", "<P STYLE=color:red>", "&quot;"]


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(st.sampled_from(_MARKUP), max_size=30))
def test_inlining_never_raises_and_changes_nothing_but_style_attributes(pieces: list[str]) -> None:
    html = "<style>p{color:red} .a{margin:0} a{color:blue}</style>" + "".join(pieces)
    result = inline_css(html)
    assert all(warning.startswith("inline_css: ") for warning in result.warnings)
    assert result.text is html or without_styles(result.text) == without_styles(html)


def test_an_html_part_with_a_marked_section_is_inlined_and_delivered(
    shared_server: ServerProcess,
) -> None:
    html = b"<html><head><style>p{color:red}</style></head><body><![ if !mso ]><p>x</p><![endif]></body></html>"
    raw = (b"From: a@example.com\r\nTo: b@example.net\r\nSubject: css\r\nContent-Type: text/html\r\n"
           b'X-MSYS-API: {"options": {"inline_css": true}}\r\n\r\n' + html + b"\r\n")
    client = RawSmtp(shared_server.smtp)
    try:
        client.transaction(["b@example.net"])
        client.command("DATA")
        client.send(raw + b".\r\n")
        message_id = queued_id(client.reply())
    finally:
        client.close()
    [copy] = wait_captured(shared_server, message_id)  # composing raised, and delivery failed on every attempt
    assert html.replace(b"<p>x", b'<p style="color: red;">x') in copy
    [delivery] = [e for e in wait_events(shared_server, message_id, {"delivery"}) if e["type"] == "delivery"]
    assert "warnings" not in delivery
