"""What each copy carries so replies come back: List-Unsubscribe (RFC 2369/8058), the VERP return path, X-MSFBL."""

from __future__ import annotations

import email
import re
from email.policy import compat32
from pathlib import Path

import dkim
import msgspec

from engaged import verp
from engaged.config import DkimConfig
from engaged.delivery.compose import CopyComposer
from engaged.delivery.dkim import DkimSigner, generate_key, read_private_key, txt_record
from engaged.delivery.unsubscribe import ReturnHeaders, add_list_unsubscribe, has_header, list_unsubscribe_url
from engaged.keys import Keyring
from engaged.recipient import TrackingPlan, identify
from engaged.tokens import CLICK_KINDS, RecipientLinks, TokenKind, decode_token
from tests.records import recipient_identity, spool_record

KEYS = Keyring(current_id=1, keys={1: b"k" * 32})
MID = "0123456789abcdef0123"
DOMAIN = "bounces.example.com"
PLAN = TrackingPlan(tracking_domain="t.example.com", click_scheme="https")
MESSAGE = b"From: Shop <shop@example.org>\r\nSubject: Spring sale\r\n\r\nHello\r\n"
IDENTITY = identify("Bob@Example.com", message_id=MID, transmission_id="1", injection_time=1_700_000_000.0,
                    msg_from="app@example.org")


def header(copy: bytes, name: str) -> str | None:
    value = email.message_from_bytes(copy, policy=compat32).get(name)
    return None if value is None else " ".join(str(value).split())


def test_a_non_transactional_copy_gets_one_click_list_unsubscribe_verp_and_x_msfbl() -> None:
    returns = ReturnHeaders(KEYS, list_unsubscribe=True, bounce_domain=DOMAIN)
    copy, mail_from = returns(MESSAGE, IDENTITY, PLAN, "app@example.org")
    assert copy.endswith(MESSAGE)  # prepended: every byte of the message stays as it was
    value = header(copy, "List-Unsubscribe")
    assert value is not None and header(copy, "List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    url, mailto = (part.strip(" <>") for part in value.split(","))
    assert url.startswith("https://t.example.com/lu/")
    assert decode_token(url.rpartition("/")[2], KEYS, expect=CLICK_KINDS).kind is TokenKind.UNSUBSCRIBE
    local = mailto.removeprefix("mailto:").partition("?")[0]
    found = verp.match(KEYS, local, (DOMAIN,))
    assert found is not None and found.purpose == "u" and found.names("bob@example.com")
    returned = verp.match(KEYS, mail_from, (DOMAIN,))
    assert returned is not None and returned.purpose == "b" and returned.message_id == MID
    msfbl = header(copy, "X-MSFBL")
    assert msfbl is not None and verp.read_msfbl(KEYS, msfbl) == (MID, "bob@example.com")
    assert all(line.isascii() and len(line) <= 998 for line in copy.split(b"\r\n"))


def test_transactional_copies_and_copies_with_their_own_header_get_no_list_unsubscribe() -> None:
    returns = ReturnHeaders(KEYS, list_unsubscribe=True, bounce_domain=DOMAIN)
    receipt, _ = returns(MESSAGE, msgspec.structs.replace(IDENTITY, transactional=True), PLAN, "app@example.org")
    assert header(receipt, "List-Unsubscribe") is None and header(receipt, "X-MSFBL") is not None
    own = b"list-unsubscribe: <mailto:leave@example.org>\r\n" + MESSAGE
    kept, _ = returns(own, IDENTITY, PLAN, "app@example.org")
    assert header(kept, "List-Unsubscribe") == "<mailto:leave@example.org>"
    assert header(kept, "List-Unsubscribe-Post") is None


def test_without_a_bounce_domain_the_sender_is_kept_and_only_the_url_is_offered() -> None:
    returns = ReturnHeaders(KEYS, list_unsubscribe=True, bounce_domain="")
    copy, mail_from = returns(MESSAGE, IDENTITY, PLAN, "app@example.org")
    assert mail_from == "app@example.org" and header(copy, "X-MSFBL") is None
    value = header(copy, "List-Unsubscribe")
    assert value is not None and "mailto:" not in value
    assert not ReturnHeaders(KEYS, list_unsubscribe=False, bounce_domain="").active


def test_a_null_sender_stays_null_so_nothing_answers_a_bounce() -> None:
    returns = ReturnHeaders(KEYS, list_unsubscribe=False, bounce_domain=DOMAIN)
    copy, mail_from = returns(MESSAGE, IDENTITY, PLAN, "")
    assert mail_from == "" and header(copy, "X-MSFBL") is not None and header(copy, "List-Unsubscribe") is None


def test_the_url_is_the_unsubscribe_links_token_under_lu_and_headers_are_found_in_any_case() -> None:
    url = list_unsubscribe_url(RecipientLinks(KEYS, IDENTITY, PLAN))
    assert url.startswith("https://t.example.com/lu/") and "/f/" not in url
    assert has_header(b"LIST-UNSUBSCRIBE: <x>\r\n\r\nList-Unsubscribe: in the body\r\n", b"list-unsubscribe")
    assert not has_header(b"Subject: x\r\n\r\nList-Unsubscribe: in the body\r\n", b"list-unsubscribe")
    added = add_list_unsubscribe(MESSAGE, url)
    assert added.startswith(f"List-Unsubscribe: <{url}>\r\nList-Unsubscribe-Post: ".encode())


def test_a_dkim_signed_copy_covers_both_list_unsubscribe_fields(tmp_path: Path) -> None:
    """Gmail honours one-click only when List-Unsubscribe and List-Unsubscribe-Post are DKIM-signed."""
    key = tmp_path / "ed.key"
    key.write_bytes(generate_key("ed25519"))
    signer = DkimSigner.from_config([DkimConfig(domain="example.org", selector="s1", private_key=str(key))])
    material = read_private_key(str(key))
    assert not isinstance(material, str)
    name, strings = txt_record("example.org", "s1", material)
    compose = CopyComposer(KEYS, ReturnHeaders(KEYS, list_unsubscribe=True, bounce_domain=DOMAIN), dkim=signer)
    record = spool_record((recipient_identity("bob@example.com"), PLAN))
    copy = compose(MESSAGE, record, 0).data
    signature = header(copy, "DKIM-Signature")
    assert signature is not None and header(copy, "List-Unsubscribe") is not None
    signed = re.search(r"\bh=([^;]+)", signature)
    assert signed is not None
    names = [field.strip().lower() for field in signed.group(1).split(":")]
    assert "list-unsubscribe" in names and "list-unsubscribe-post" in names
    assert dkim.verify(copy, dnsfunc=lambda qname, timeout=5: "".join(strings).encode()
                       if qname.decode().rstrip(".") == name.rstrip(".") else None)
