"""Fixtures for the rewriter tests: a transparent minter whose URLs carry their arguments, and its inverse."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable

import pytest

from engaged.types import LinkMinter

TRACKER = "https://t.example"
_CLICK = re.compile(r"(?P<quote>[\"']?)https://t\.example/f/a/(?P<token>[A-Za-z0-9_-]+)")

Click = tuple[str, str, str | None, bool]
"""What the rewriter passed to click_url: (target_url, link_name, sublink, unsubscribe)."""


class FakeMinter:
    """A LinkMinter whose click URLs are base64url JSON of the arguments, so any output can be mapped back."""

    def click_url(self, target_url: str, link_name: str, sublink: str | None, unsubscribe: bool) -> str:
        payload = json.dumps([target_url, link_name, sublink, unsubscribe]).encode()
        return f"{TRACKER}/f/a/{base64.urlsafe_b64encode(payload).decode().rstrip('=')}"

    def open_url(self, initial: bool) -> str:
        return f"{TRACKER}/q/{'i' if initial else 'b'}"


def read_click(token: str) -> Click:
    target, name, sublink, unsubscribe = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    return str(target), str(name), sublink, bool(unsubscribe)


def html_escape(value: str, quote: str) -> str:
    """How test documents write a URL into an attribute quoted with `quote` (independent of the package)."""
    return value.replace("&", "&amp;").replace(quote, "&quot;" if quote == '"' else "&#39;")


@pytest.fixture(scope="session")
def minter() -> LinkMinter:
    return FakeMinter()


@pytest.fixture(scope="session")
def clicks() -> Callable[[str], list[Click]]:
    """Every click URL of a text, decoded, in order."""
    return lambda text: [read_click(found.group("token")) for found in _CLICK.finditer(text)]


@pytest.fixture(scope="session")
def restore_html() -> Callable[[str], str]:
    """The document with each click URL replaced by its target, escaped for the attribute's quotes."""

    def restore(text: str) -> str:
        def original(found: re.Match[str]) -> str:
            quote = found.group("quote")
            return quote + html_escape(read_click(found.group("token"))[0], quote or '"')

        return _CLICK.sub(original, text)

    return restore


@pytest.fixture(scope="session")
def restore_text() -> Callable[[str], str]:
    """The text with each click URL replaced by its target."""
    return lambda text: _CLICK.sub(
        lambda found: found.group("quote") + read_click(found.group("token"))[0], text
    )


@pytest.fixture(scope="session")
def strip_pixels() -> Callable[[str], str]:
    """The document without the two open pixels, written out in full here to pin their markup."""
    top = (
        '<div style="color:transparent;visibility:hidden;opacity:0;font-size:0;border:0;max-height:1px;'
        "width:1px;margin:0;padding:0;border-width:0!important;display:none!important;line-height:0!important;"
        f'"><img border="0" width="1" height="1" alt="" src="{TRACKER}/q/i"></div>'
    )
    bottom = (f'<img border="0" width="1" height="1" alt="" style="display:block;width:1px;height:1px;border:0;'
              f'margin:0;padding:0" src="{TRACKER}/q/b">')
    return lambda text: text.replace(top, "", 1).replace(bottom, "", 1)
