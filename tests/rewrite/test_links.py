"""engaged.rewrite.links: which targets are tracked, how link names are cut, minter refusals."""

from __future__ import annotations

import pytest

from engaged.errors import EngagedError
from engaged.rewrite.links import (
    LINK_NAME_MAX_BYTES,
    MAX_LINK_BYTES,
    link_target,
    mint_click,
    mint_open,
    refusal,
    truncate_link_name,
)


@pytest.mark.parametrize("url", ["http://a.example", "HTTPS://A.EXAMPLE/x", "hTtP://x?{{", "https://x/%%"])
def test_http_and_https_urls_are_tracked(url: str) -> None:
    assert refusal(url) is None


@pytest.mark.parametrize(
    "url",
    [
        "mailto:a@b",
        "ftp://x",
        "http:/x",
        "http://",
        "HTTPS://",
        "{{url}}",
        "http://x/{{id}}",
        "http://%%x%%",
        "http://*|X|*",
    ],
)
def test_other_targets_are_refused_silently(url: str) -> None:
    assert refusal(url) == ""


def test_targets_over_the_byte_limit_are_refused_with_a_reason() -> None:
    multibyte = "http://x/" + "é" * ((MAX_LINK_BYTES - 9) // 2)
    assert refusal(multibyte) is None
    assert refusal(multibyte + "é") == "link longer than 4096 bytes left untracked"


def test_undecodable_bytes_are_refused_with_a_reason() -> None:
    assert refusal("http://x/\udcff") == "link with bytes undecodable in the part's charset left untracked"


def test_link_target_trims_c0_controls_and_spaces_only() -> None:
    assert link_target("\x00 \t\nhttp://x/\u00a0 \r") == "http://x/\u00a0"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("short", "short"),
        ("a" * 63, "a" * 63),
        ("a" * 64, "a" * 63),
        ("a" * 62 + "€", "a" * 62),
        ("€" * 21 + "x", "€" * 21),
        ("bad\udcff", "bad?"),
    ],
)
def test_link_names_are_cut_at_63_bytes_on_a_character_boundary(name: str, expected: str) -> None:
    assert truncate_link_name(name) == expected
    assert len(truncate_link_name(name).encode()) <= LINK_NAME_MAX_BYTES


class _Refusing:
    """A minter that refuses every link and pixel the way tokens.RecipientLinks refuses an untrackable one."""

    def click_url(self, target_url: str, link_name: str, sublink: str | None, unsubscribe: bool) -> str:
        raise EngagedError("only http and https links are tracked")

    def open_url(self, initial: bool) -> str:
        raise EngagedError("no key")


def test_a_refusing_minter_leaves_the_link_and_pixel_out_with_a_warning() -> None:
    warnings: list[str] = []
    assert mint_click(_Refusing(), "http://a/", "n", None, False, warnings) is None
    assert mint_open(_Refusing(), True, warnings) is None
    assert warnings == [
        "link left untracked: only http and https links are tracked",
        "open pixel left out: no key",
    ]


def test_other_minter_errors_propagate() -> None:
    class Broken:
        def click_url(self, target_url: str, link_name: str, sublink: str | None, unsubscribe: bool) -> str:
            raise KeyError("bug")

        def open_url(self, initial: bool) -> str:
            raise KeyError("bug")

    with pytest.raises(KeyError):
        mint_click(Broken(), "http://a/", "n", None, False, [])
