"""engaged.rewrite.text: bare URLs in plain text, their boundaries and the `[[data-msys-…]]` suffixes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engaged.rewrite.text import rewrite_text
from engaged.types import LinkMinter

Click = tuple[str, str, str | None, bool]


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("See http://a.example/x.", "http://a.example/x"),
        ("See http://a.example/x, or", "http://a.example/x"),
        ("Go: https://a.example/?q=1!", "https://a.example/?q=1"),
        ("Really http://a.example/?", "http://a.example/"),
        ("(see http://a.example/b)", "http://a.example/b"),
        ("(see http://a.example/wiki/Foo_(bar))", "http://a.example/wiki/Foo_(bar)"),
        ("[http://a.example/x]", "http://a.example/x"),
        ("list http://a.example/?a[]=1 end", "http://a.example/?a[]=1"),
        ("<http://a.example/x>", "http://a.example/x"),
        ("<URL:http://a.example/x>", "http://a.example/x"),
        ('"http://a.example/x"', "http://a.example/x"),
        ("'http://a.example/x'", "http://a.example/x"),
        ("HTTPS://A.EXAMPLE/X\r\nnext", "HTTPS://A.EXAMPLE/X"),
        ("tab\thttp://a.example/é\u00a0nbsp", "http://a.example/é"),
    ],
)
def test_url_boundaries(
    text: str,
    url: str,
    minter: LinkMinter,
    clicks: Callable[[str], list[Click]],
    restore_text: Callable[[str], str],
) -> None:
    result = rewrite_text(text, minter)
    assert clicks(result.text) == [(url, url, None, False)]
    assert result.links_tracked == 1 and restore_text(result.text) == text


@pytest.mark.parametrize(
    "text",
    [
        "xhttp://a.example/",
        "mailto:a@example.com ftp://a.example/",
        "http:// nothing",
        "http://.",
        "https://a.example/{{unsubscribe}}",
        "https://a.example/*|ID|*",
        "no links at all",
    ],
)
def test_text_without_trackable_urls_comes_back_as_the_same_object(text: str, minter: LinkMinter) -> None:
    result = rewrite_text(text, minter)
    assert result.text is text and result.links_tracked == 0


def test_clicktrack_suffix_opts_the_url_out_and_is_removed(minter: LinkMinter) -> None:
    result = rewrite_text('Keep http://a.example/x[[data-msys-clicktrack="0"]]. Done', minter)
    assert result.text == "Keep http://a.example/x. Done" and result.links_tracked == 0


def test_unsubscribe_and_sublink_suffixes_reach_the_minter_and_are_removed(
    minter: LinkMinter, clicks: Callable[[str], list[Click]]
) -> None:
    text = 'Bye http://a.example/u[[data-msys-unsubscribe="1"]] app http://a.example/d[[data-msys-sublink="deep"]].'
    result = rewrite_text(text, minter)
    assert clicks(result.text) == [
        ("http://a.example/u", "http://a.example/u", None, True),
        ("http://a.example/d", "http://a.example/d", "deep", False),
    ]
    assert "[[" not in result.text and result.text.endswith(".")


def test_suffixes_combine(minter: LinkMinter, clicks: Callable[[str], list[Click]]) -> None:
    text = 'x http://a.example/[[data-msys-sublink="s"]][[data-msys-unsubscribe="1"]] y'
    result = rewrite_text(text, minter)
    assert clicks(result.text) == [("http://a.example/", "http://a.example/", "s", True)]
    assert result.text.endswith(" y") and "[[" not in result.text


def test_url_over_4096_bytes_is_left_alone_with_a_warning(minter: LinkMinter) -> None:
    text = "http://a.example/" + "x" * 4096
    result = rewrite_text(text, minter)
    assert result.text is text and result.warnings == ("link longer than 4096 bytes left untracked",)


@pytest.mark.parametrize(
    "text",
    [
        "http://a.b/c?d=" * 32_000,
        "http://" + "xn--a." * 20_000,
        " " * 120_000,
        "(" * 50_000 + "http://a" + ")" * 50_000,
        "http://a/" + ")" * 100_000,
        "[[data-msys-" * 20_000,
        "http://x[" * 20_000,
    ],
)
def test_linkify_denial_of_service_inputs_are_handled(text: str, minter: LinkMinter) -> None:
    result = rewrite_text(text, minter)
    assert result.links_tracked <= 1


_PATH = st.text(alphabet="abcXYZ0189-._~/?#=&;:+,%!$'*é", max_size=25)
_BALANCED = st.sampled_from(["", "(x)", "_(y)/z", "?a[]=1", "[1]"])
_GAP = st.sampled_from([" ", "\r\n", "\t", " (", ") ", " <", "> ", ". ", ", ", "! ", '"', " '"])


@st.composite
def texts(draw: st.DrawFn) -> tuple[str, list[str]]:
    """Words and URLs and, in order, the URLs that must be tracked."""
    pieces: list[str] = []
    expected: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        pieces.append(draw(st.text(alphabet="abc ,.()\r\n'\"<>é", max_size=12)) + draw(_GAP))
        url = (
            draw(st.sampled_from(["http://", "https://", "HTTP://"])) + draw(st.text("abc", min_size=1)) + "/"
        )
        url += draw(_PATH) + draw(_BALANCED)
        url = url.rstrip(".,;:!?'")
        if any(opening in url for opening in ("{{", "%%", "*|", "[[")):
            continue
        pieces.append(url + draw(_GAP))
        expected.append(url)
    return "".join(pieces), expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(generated=texts())
def test_every_url_is_tracked_and_restoring_them_gives_the_text_back(
    generated: tuple[str, list[str]],
    minter: LinkMinter,
    clicks: Callable[[str], list[Click]],
    restore_text: Callable[[str], str],
) -> None:
    text, expected = generated
    result = rewrite_text(text, minter)
    assert [click[0] for click in clicks(result.text)] == expected
    assert restore_text(result.text) == text
