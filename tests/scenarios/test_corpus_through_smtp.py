"""Story: every corpus template and MIME message goes through SMTP with tracking on and comes out tracked."""

from __future__ import annotations

import email
import re
from collections.abc import Iterator
from email.message import Message
from email.policy import compat32
from pathlib import Path

import pytest

from engaged.keys import load_keyring
from engaged.rewrite.entities import decode_attribute
from engaged.testing.server import ServerProcess, write_config
from engaged.tokens import CLICK_KINDS, OPEN_KINDS, TokenKind, decode_token
from tests.conftest import SHARED
from tests.helpers import RawSmtp, queued_id, wait_captured

HTML_FILES = sorted((SHARED / "corpus" / "html").glob("*/*.html"))
MIME_FILES = sorted((SHARED / "corpus" / "mime").glob("*/*.eml"))
API = b'X-MSYS-API: {"campaign_id": "corpus", "metadata": {"user": "42"}, ' \
      b'"options": {"open_tracking": true, "click_tracking": true}}\r\n'
TRACKED = re.compile(r"https?://track\.example:8080/(q|f/[A-Za-z0-9._~%-]+)/([A-Za-z0-9_-]+)")
HREF = re.compile(r"""<(?:a|area|v:roundrect)\b[^>]*?\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.I | re.S)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("corpus")
    process = ServerProcess(write_config(directory, '[smtpapi]\ntracking_domain = "track.example:8080"\n')).start()
    yield process
    process.stop()


def inject(server: ServerProcess, message: bytes) -> bytes:
    client = RawSmtp(server.smtp, timeout=60)
    try:
        client.transaction()
        client.command("DATA")
        stuffed = message.replace(b"\r\n.", b"\r\n..")
        client.send((b"." + stuffed if stuffed.startswith(b".") else stuffed) + b".\r\n")
        message_id = queued_id(client.reply())
    finally:
        client.close()
    [copy] = wait_captured(server, message_id, timeout=60)
    return copy


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def decoded_parts(copy: bytes) -> Iterator[tuple[str, str]]:
    message: Message = email.message_from_bytes(copy, policy=compat32)
    for part in message.walk():
        if part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                yield part.get_content_type(), payload.decode(part.get_content_charset() or "utf-8", "replace")


def tracked_targets(server: ServerProcess, text: str) -> tuple[list[str], int]:
    keyring = load_keyring(server.config.parent / "data")
    targets: list[str] = []
    opens = 0
    for match in TRACKED.finditer(text):
        kinds = OPEN_KINDS if match.group(1) == "q" else CLICK_KINDS
        payload = decode_token(match.group(2), keyring, expect=kinds)
        assert payload.identity.campaign_id == "corpus"
        if payload.kind in (TokenKind.OPEN, TokenKind.INITIAL_OPEN):
            opens += 1
        else:
            targets.append(payload.target_url)
    return targets, opens


def eligible_links(html: str) -> list[str]:
    links = []
    for match in HREF.finditer(html):
        value = decode_attribute(next(g for g in match.groups() if g is not None)).strip()
        if re.match(r"https?://", value, re.I) and "{{" not in value and "*|" not in value and len(value) <= 4096:
            links.append(value)
    return links


@pytest.mark.parametrize("path", HTML_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_html_template_comes_out_tracked(server: ServerProcess, path: Path) -> None:
    html = path.read_bytes()
    message = API + b"From: app@example.org\r\nTo: bob@example.com\r\nSubject: corpus\r\nMIME-Version: 1.0\r\n" \
        b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    import quopri

    message += crlf(quopri.encodestring(crlf(html).replace(b"\r\n", b"\n"))).rstrip(b"\r\n") + b"\r\n"
    copy = inject(server, message)
    assert b"X-MSYS-API" not in copy
    [(_, text)] = list(decoded_parts(copy))
    targets, opens = tracked_targets(server, text)
    assert opens == 2
    original = eligible_links(html.decode("utf-8", "replace"))
    assert sorted(targets) == sorted(t for t in original if "data-msys-clicktrack" not in t)


@pytest.mark.parametrize("path", MIME_FILES, ids=lambda p: p.name)
def test_every_mime_message_comes_out_tracked_and_intact(server: ServerProcess, path: Path) -> None:
    raw = crlf(path.read_bytes())
    copy = inject(server, API + raw)
    original_parts = list(decoded_parts(raw))
    copy_parts = list(decoded_parts(copy))
    assert len(copy_parts) == len(original_parts)
    html_seen = False
    for (kind, before), (_, after) in zip(original_parts, copy_parts, strict=True):
        targets, opens = tracked_targets(server, after)
        if targets or opens:
            if kind == "text/html" and not html_seen:
                html_seen = True
                assert opens == 2
                assert sorted(targets) == sorted(eligible_links(before))
        else:
            assert after == before
