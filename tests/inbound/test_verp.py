"""Signed return paths and X-MSFBL values: round trips, case folding, forgeries, rotation."""

from __future__ import annotations

from engaged.keys import Keyring
from engaged.verp import address, match, msfbl, read_msfbl

KEYS = Keyring(current_id=1, keys={1: b"k" * 32})
ROTATED = Keyring(current_id=2, keys={1: b"k" * 32, 2: b"j" * 32})
OTHER = Keyring(current_id=1, keys={1: b"x" * 32})
MID = "0123456789abcdef0123"
DOMAINS = ("bounces.example.com",)


def test_a_return_path_names_its_message_and_recipient_and_fits_a_local_part() -> None:
    path = address(KEYS, "b", MID, "Bob@Example.com", "bounces.example.com")
    local = path.split("@")[0]
    assert len(local) <= 64 and local == local.lower()
    found = match(KEYS, path, DOMAINS)
    assert found is not None and found.purpose == "b" and found.message_id == MID
    assert found.names("bob@example.com") and not found.names("eve@example.com")
    upper = match(KEYS, f"<{path.upper()}>", DOMAINS)  # folded by a remote MTA
    assert upper is not None and upper.message_id == MID
    assert match(ROTATED, path, DOMAINS) is not None  # old keys keep verifying


def test_forged_or_foreign_addresses_match_nothing() -> None:
    path = address(KEYS, "u", MID, "bob@example.com", "bounces.example.com")
    local, domain = path.split("@")
    assert match(OTHER, path, DOMAINS) is None
    assert match(KEYS, f"{local}@elsewhere.example", DOMAINS) is None
    assert match(KEYS, f"b{local[1:]}@{domain}", DOMAINS) is None  # a mailto is not a return path
    tampered = local[:-3] + ("aaa" if local[-3:] != "aaa" else "bbb")
    assert match(KEYS, f"{tampered}@{domain}", DOMAINS) is None
    for junk in ("", "postmaster@bounces.example.com", "b-@bounces.example.com", "b-!!!@bounces.example.com",
                 "b-" + "a" * 200 + "@bounces.example.com", "no-at-sign"):
        assert match(KEYS, junk, DOMAINS) is None


def test_x_msfbl_round_trips_and_refuses_forgeries() -> None:
    value = msfbl(KEYS, MID, "Bob@Example.com")
    assert read_msfbl(KEYS, value) == (MID, "bob@example.com")
    assert read_msfbl(KEYS, value[:40] + "\r\n " + value[40:]) == (MID, "bob@example.com")  # folded
    assert read_msfbl(OTHER, value) is None
    signature, data = value.split("|")
    assert read_msfbl(KEYS, f"{signature}|{data[:-4]}AAAA") is None
    for junk in ("", "|", "abc", "x|y", f"{signature}|not base64!"):
        assert read_msfbl(KEYS, junk) is None
