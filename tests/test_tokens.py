"""Tests of signed tracked-URL tokens: round trips, tampering, limits, metadata rules, URL minting."""

from __future__ import annotations

import base64
import hmac
import random
import zlib
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engaged.keys import KEY_BYTES, Keyring, load_keyring, rotate_key
from engaged.recipient import RecipientIdentity, TrackingPlan
from engaged.tokens import (
    CLICK_KINDS,
    DEFAULT_SUBLINK,
    MAX_BODY_BYTES,
    MAX_TOKEN_CHARS,
    OPEN_KINDS,
    TAG_BYTES,
    TOKEN_VERSION,
    InvalidToken,
    RecipientLinks,
    TokenKind,
    TokenPayload,
    TokenTooLong,
    UntrackableLink,
    _deflate,
    _inflate,
    decode_token,
    is_expired,
    normalise_token,
    sanitise_sublink,
    sign_token,
    truncate_metadata,
)
from engaged.types import LinkMinter

KEYRING = Keyring(current_id=1, keys={1: bytes(range(KEY_BYTES))})
ALL_KINDS = frozenset(TokenKind)
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
TARGET = "https://shop.example.com/spring?utm_source=email&utm_medium=newsletter&utm_campaign=spring_sale#top"
METADATA: dict[str, Any] = {"user_id": "123456", "plan": "gold", "segment": "spring-2024", "locale": "en-US"}


_PAYLOAD_FIELDS = frozenset(TokenPayload.__struct_fields__)
_PLAN_FIELDS = frozenset(TrackingPlan.__struct_fields__)
INJECTED = 1_735_689_600
EXPIRES = 1_767_225_600


def _identity(**changes: Any) -> RecipientIdentity:
    fields: dict[str, Any] = {
        "message_id": "000443ee14578172be22",
        "transmission_id": "65832150921904138",
        "rcpt_to": "alice@example.com",
        "raw_rcpt_to": "Alice@Example.com",
        "injection_time": float(INJECTED),
        "campaign_id": "spring_sale",
        "customer_id": "42",
        "tags": ("promo", "newsletter"),
        "metadata": METADATA,
        "sending_ip": "192.0.2.10",
    }
    fields.update(changes)
    return RecipientIdentity(**fields)


def _payload(kind: TokenKind = TokenKind.CLICK, **changes: Any) -> TokenPayload:
    """A payload; `changes` set payload or identity fields, `metadata=None` means "not carried"."""
    clicks = kind in CLICK_KINDS
    fields: dict[str, Any] = {
        "target_url": TARGET if clicks else "",
        "link_name": "banner" if clicks else "",
        "expires": EXPIRES,
    }
    identity = {name: changes.pop(name) for name in list(changes) if name not in _PAYLOAD_FIELDS}
    if "metadata" in identity and identity["metadata"] is None:
        identity["metadata"] = {}
        fields["metadata_included"] = False
    fields.update(changes)
    return TokenPayload(kind=kind, identity=_identity(**identity), **fields)


def _link_data(**changes: Any) -> tuple[RecipientIdentity, TrackingPlan]:
    """A recipient's identity and plan; `changes` set either (metadata=None: none; expires: the expiry)."""
    plan: dict[str, Any] = {"open_scheme": "http", "click_scheme": "https", "tracking_domain": "t.example.com",
                            "link_expiry": EXPIRES - INJECTED}
    identity: dict[str, Any] = {"tags": ("promo",)}
    if "expires" in changes:
        plan["link_expiry"] = changes.pop("expires") - INJECTED
    for name, value in changes.items():
        (plan if name in _PLAN_FIELDS else identity)[name] = value
    if "metadata" in identity and identity["metadata"] is None:
        identity["metadata"] = {}
    return _identity(**identity), TrackingPlan(**plan)


def _raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def _text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _resign(signed: bytes, key: bytes) -> str:
    """A token whose tag is genuine for `signed` (header and body as given)."""
    return _text(signed + hmac.digest(key, signed, "sha256")[:TAG_BYTES])


def _key(keyring: Keyring) -> bytes:
    key = keyring.key(keyring.current_id)
    if key is None:
        raise AssertionError("keyring without a current key")
    return key


def _incompressible(length: int) -> str:
    """`length` characters of seeded random base64url: deflate gains nothing on them."""
    return base64.urlsafe_b64encode(random.Random(length).randbytes(length)).decode("ascii")[:length]


def _token_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


# Round trips and kinds


@pytest.mark.parametrize("kind", list(TokenKind))
def test_every_kind_round_trips(kind: TokenKind) -> None:
    payload = _payload(kind)
    assert decode_token(sign_token(payload, KEYRING), KEYRING, expect={kind}) == payload


@pytest.mark.parametrize("kind", sorted(CLICK_KINDS))
def test_a_click_token_is_rejected_where_an_open_is_expected(kind: TokenKind) -> None:
    with pytest.raises(InvalidToken, match="expected"):
        decode_token(sign_token(_payload(kind), KEYRING), KEYRING, expect=OPEN_KINDS)


@pytest.mark.parametrize("kind", sorted(OPEN_KINDS))
def test_an_open_token_is_rejected_where_a_click_is_expected(kind: TokenKind) -> None:
    with pytest.raises(InvalidToken, match="expected"):
        decode_token(sign_token(_payload(kind), KEYRING), KEYRING, expect=CLICK_KINDS)


def test_changing_the_kind_byte_breaks_the_signature() -> None:
    raw = bytearray(_raw(sign_token(_payload(TokenKind.CLICK), KEYRING)))
    raw[2] = (raw[2] & 0xF0) | TokenKind.OPEN
    with pytest.raises(InvalidToken, match="signature"):
        decode_token(_text(bytes(raw)), KEYRING, expect=OPEN_KINDS)


def test_raw_rcpt_to_and_link_name_equal_to_their_defaults_round_trip_and_cost_nothing() -> None:
    same = _payload(raw_rcpt_to="alice@example.com", link_name=TARGET, metadata=None)
    different = _payload(raw_rcpt_to="Alice@example.com", link_name=TARGET + "x", metadata=None)
    same_token = sign_token(same, KEYRING)
    assert decode_token(same_token, KEYRING, expect=CLICK_KINDS) == same
    assert len(same_token) < len(sign_token(different, KEYRING))


def test_a_compressible_payload_is_deflated_and_a_short_one_is_not() -> None:
    long_token = sign_token(_payload(), KEYRING)
    short = _payload(
        TokenKind.OPEN,
        message_id="m1",
        transmission_id="t1",
        rcpt_to="a@b.c",
        raw_rcpt_to="a@b.c",
        campaign_id="",
        customer_id="",
        tags=(),
        metadata=None,
        sending_ip="",
        injection_time=0,
    )
    short_token = sign_token(short, KEYRING)
    assert _raw(long_token)[2] & 0x80
    assert not _raw(short_token)[2] & 0x80
    assert decode_token(short_token, KEYRING, expect=OPEN_KINDS).kind is TokenKind.OPEN


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=70_000) | st.text(alphabet="abc{}\":,0123456789", max_size=70_000).map(str.encode))
def test_the_fitted_deflate_window_round_trips_and_is_no_longer_than_a_full_window(data: bytes) -> None:
    packed = _deflate(data)
    assert zlib.decompress(packed, -15) == data  # what the tracker's inflater (window 2**15) reads
    assert len(packed) <= len(zlib.compress(data, 9, -15)) + 8


@pytest.mark.parametrize("length", [0, 249, 250, 251, 762, 763, 3000, 40_000, 64 * 1024])
def test_the_fitted_deflate_window_round_trips_at_each_window_boundary(length: int) -> None:
    data = (b'{"user":"%d",' * length)[:length]
    assert _inflate(_deflate(data)) == data


def test_an_open_payload_with_a_target_is_refused() -> None:
    with pytest.raises(ValueError, match="open tokens"):
        sign_token(_payload(TokenKind.OPEN, target_url=TARGET), KEYRING)


@pytest.mark.parametrize(
    "target", ["mailto:a@example.com", "javascript:alert(1)", "//example.com/", "ftp://x/", "https://a/\r\nX: y"]
)
def test_sign_token_refuses_untrackable_click_targets(target: str) -> None:
    with pytest.raises(UntrackableLink):
        sign_token(_payload(target_url=target), KEYRING)


# Tampering


def test_every_character_of_the_token_replaced_is_rejected() -> None:
    token = sign_token(_payload(), KEYRING)
    replacements = [*ALPHABET, "+", "/", "=", "%", " ", ".", "é", "\n"]
    for position, original in enumerate(token):
        for replacement in replacements:
            if replacement == original:
                continue
            forged = token[:position] + replacement + token[position + 1 :]
            with pytest.raises(InvalidToken):
                decode_token(forged, KEYRING, expect=ALL_KINDS)


@pytest.mark.parametrize("kind", list(TokenKind))
def test_every_bit_of_every_raw_byte_flipped_is_rejected(kind: TokenKind) -> None:
    raw = _raw(sign_token(_payload(kind), KEYRING))
    for position in range(len(raw)):
        for bit in range(8):
            forged = bytearray(raw)
            forged[position] ^= 1 << bit
            with pytest.raises(InvalidToken):
                decode_token(_text(bytes(forged)), KEYRING, expect=ALL_KINDS)


def test_truncation_at_every_length_is_rejected() -> None:
    token = sign_token(_payload(), KEYRING)
    raw = _raw(token)
    for length in range(len(token)):
        with pytest.raises(InvalidToken):
            decode_token(token[:length], KEYRING, expect=ALL_KINDS)
    for length in range(len(raw)):
        with pytest.raises(InvalidToken):
            decode_token(_text(raw[:length]), KEYRING, expect=ALL_KINDS)


def test_appended_characters_and_bytes_are_rejected() -> None:
    token = sign_token(_payload(), KEYRING)
    for extra in [*ALPHABET, "AA", "AAA", "AAAA", "=", "==", "%20", ">"]:
        with pytest.raises(InvalidToken):
            decode_token(token + extra, KEYRING, expect=ALL_KINDS)
    raw = _raw(token)
    for extra in (b"\x00", b"\x00\x00", b"\xff\xff\xff", raw[-TAG_BYTES:]):
        with pytest.raises(InvalidToken):
            decode_token(_text(raw + extra), KEYRING, expect=ALL_KINDS)


def test_a_token_with_non_canonical_trailing_bits_is_rejected() -> None:
    token = sign_token(_payload(), KEYRING)
    if len(token) % 4 == 0:
        token = sign_token(_payload(campaign_id="spring_sale_x"), KEYRING)
    assert len(token) % 4 in (2, 3)
    last = ALPHABET.index(token[-1])
    forged = token[:-1] + ALPHABET[last | 1]
    assert _raw(forged) == _raw(token)
    with pytest.raises(InvalidToken, match="canonical"):
        decode_token(forged, KEYRING, expect=ALL_KINDS)


def test_swapping_bodies_between_tokens_is_rejected() -> None:
    one = _raw(sign_token(_payload(target_url="https://one.example/"), KEYRING))
    two = _raw(sign_token(_payload(target_url="https://two.example/"), KEYRING))
    with pytest.raises(InvalidToken):
        decode_token(_text(one[:-TAG_BYTES] + two[-TAG_BYTES:]), KEYRING, expect=ALL_KINDS)


def test_a_token_of_an_unknown_key_id_is_rejected() -> None:
    other = Keyring(current_id=2, keys={2: b"\x07" * KEY_BYTES})
    with pytest.raises(InvalidToken, match="unknown key id"):
        decode_token(sign_token(_payload(), KEYRING), other, expect=ALL_KINDS)
    raw = bytearray(_raw(sign_token(_payload(), KEYRING)))
    raw[1] = 9
    with pytest.raises(InvalidToken, match="unknown key id"):
        decode_token(_resign(bytes(raw[:-TAG_BYTES]), _key(KEYRING)), KEYRING, expect=ALL_KINDS)


def test_a_token_signed_with_another_key_under_the_same_id_is_rejected() -> None:
    impostor = Keyring(current_id=1, keys={1: b"\x07" * KEY_BYTES})
    with pytest.raises(InvalidToken, match="signature"):
        decode_token(sign_token(_payload(), impostor), KEYRING, expect=ALL_KINDS)


def test_a_genuinely_signed_token_of_another_version_is_rejected() -> None:
    signed = bytearray(_raw(sign_token(_payload(), KEYRING))[:-TAG_BYTES])
    signed[0] = TOKEN_VERSION + 1
    with pytest.raises(InvalidToken, match="version"):
        decode_token(_resign(bytes(signed), _key(KEYRING)), KEYRING, expect=ALL_KINDS)


@pytest.mark.parametrize(("version", "flags"), [(2, 0x30), (1, 0x10), (1, 0x20), (1, 0x40)])
def test_a_genuinely_signed_token_with_reserved_flags_is_rejected(version: int, flags: int) -> None:
    signed = bytearray(_raw(V1_CLICK if version == 1 else sign_token(_payload(), KEYRING))[:-TAG_BYTES])
    signed[2] |= flags
    with pytest.raises(InvalidToken, match="flags"):
        decode_token(_resign(bytes(signed), _key(KEYRING)), KEYRING, expect=ALL_KINDS)


def _v2_body(recipient: bytes, link: bytes = b"") -> bytes:
    return len(recipient).to_bytes(2, "big") + recipient + link


@pytest.mark.parametrize("version", [1, TOKEN_VERSION])
def test_a_genuinely_signed_token_with_a_malformed_body_is_rejected(version: int) -> None:
    header = bytes((version, 1, TokenKind.CLICK))
    for junk in (b"\x91\x01", b"\xc1", b"junk-that-is-not-msgpack"):
        body = junk if version == 1 else _v2_body(junk)
        with pytest.raises(InvalidToken, match="malformed"):
            decode_token(_resign(header + body, _key(KEYRING)), KEYRING, expect=ALL_KINDS)
    deflated_header = bytes((version, 1, TokenKind.CLICK | 0x80))
    body = b"\xff\xff" if version == 1 else _v2_body(b"\xff\xff")
    with pytest.raises(InvalidToken, match="deflate"):
        decode_token(_resign(deflated_header + body, _key(KEYRING)), KEYRING, expect=ALL_KINDS)


def test_a_version_2_body_shorter_than_its_recipient_length_is_rejected() -> None:
    header = bytes((TOKEN_VERSION, 1, TokenKind.CLICK))
    with pytest.raises(InvalidToken, match="malformed"):
        decode_token(_resign(header + b"\x00\x40\x91", _key(KEYRING)), KEYRING, expect=ALL_KINDS)


def test_nonzero_pad_bytes_are_rejected() -> None:
    raw = _raw(sign_token(_payload(TokenKind.OPEN), KEYRING))[:-TAG_BYTES]
    pad = (raw[2] >> 4) & 3
    forged = raw[:2] + bytes((raw[2] | 0x30 if pad == 0 else raw[2],)) + raw[3:]
    if pad:
        forged = forged[:-1] + b"\x01"
    with pytest.raises(InvalidToken):
        decode_token(_resign(forged, _key(KEYRING)), KEYRING, expect=ALL_KINDS)


def test_an_open_token_with_a_link_part_is_rejected() -> None:
    genuine = _raw(sign_token(_payload(TokenKind.OPEN), KEYRING))[:-TAG_BYTES]
    with pytest.raises(InvalidToken, match="no link"):
        decode_token(_resign(genuine + b"\x90", _key(KEYRING)), KEYRING, expect=ALL_KINDS)


@pytest.mark.parametrize("version", [1, TOKEN_VERSION])
def test_a_decompression_bomb_is_refused(version: int) -> None:
    bomb = zlib.compress(b"\x00" * 2_000_000, 9, -15)
    body = bomb if version == 1 else _v2_body(bomb)
    token = _resign(bytes((version, 1, TokenKind.CLICK | 0x80)) + body, _key(KEYRING))
    assert len(token) <= MAX_TOKEN_CHARS
    with pytest.raises(InvalidToken, match="too large"):
        decode_token(token, KEYRING, expect=ALL_KINDS)


# Version 1 tokens, minted before RecipientIdentity, are in mail already sent: they keep verifying.
V1_CLICK = (
    "AQGDm3cuM3QnwxYDAwMTE-PUVEMTU3MLQ3OjpFQjo41mphbGRoamBpZGhpYGJobGFhsTczKTUx1SKxJzC3JS9ZLzczc6gkVcESKriwuKMv"
    "PS44sTc1IXmRhNXFpQlJ-bf0SkWqm0OLUoPjNFyUrJ0MjYxNRMqXZ_RklJQbGVvn5xRn6BHpKx-hBDliUl5uWlFq0ytDTSM9Az0jM0OJde0t"
    "qwKDkZAKd2VWEdVId2ivJxfcwhAoE"
)
V1_OPEN = (
    "AQEBns5pVbkAtDAwMDQ0M2VlMTQ1NzgxNzJiZTIysTY1ODMyMTUwOTIxOTA0MTM4sWFsaWNlQGV4YW1wbGUuY29twKCgkMCgwKAAoIRM2bG"
    "hYLx1loXLsPyg3Jg"
)


def test_a_version_1_click_token_still_verifies_into_the_same_identity() -> None:
    payload = decode_token(V1_CLICK, KEYRING, expect=CLICK_KINDS)
    assert payload == TokenPayload(
        kind=TokenKind.CLICK,
        identity=RecipientIdentity(
            message_id="000443ee14578172be22", transmission_id="65832150921904138", rcpt_to="alice@example.com",
            raw_rcpt_to="Alice@Example.com", injection_time=float(INJECTED), campaign_id="spring_sale",
            customer_id="42", tags=("promo",), metadata={"user_id": "123456"}, sending_ip="192.0.2.10",
            rcpt_type="cc", routing_domain="example.com",
        ),
        expires=EXPIRES,
        target_url="https://shop.example.com/spring",
        link_name="banner",
    )


def test_a_version_1_open_token_without_metadata_still_verifies() -> None:
    payload = decode_token(V1_OPEN, KEYRING, expect=OPEN_KINDS)
    assert payload.kind is TokenKind.OPEN
    assert not payload.metadata_included and payload.identity.metadata == {}
    assert (payload.identity.raw_rcpt_to, payload.identity.injection_time) == ("alice@example.com", 0.0)


def test_a_tampered_version_1_token_is_rejected() -> None:
    raw = bytearray(_raw(V1_CLICK))
    raw[10] ^= 1
    with pytest.raises(InvalidToken, match="signature"):
        decode_token(_text(bytes(raw)), KEYRING, expect=CLICK_KINDS)


def test_every_link_of_a_copy_shares_one_recipient_part() -> None:
    links = RecipientLinks(KEYRING, *_link_data())
    first = _raw(_token_of(links.click_url(TARGET, "a", None, False)))
    second = _raw(_token_of(links.click_url(TARGET + "2", "b", None, False)))
    length = int.from_bytes(first[3:5], "big")
    assert first[: 5 + length] == second[: 5 + length]
    assert first[5 + length :] != second[5 + length :]


def test_tokens_over_4096_characters_are_refused_before_any_work() -> None:
    with pytest.raises(InvalidToken, match="too long"):
        decode_token("A" * (MAX_TOKEN_CHARS + 1), KEYRING, expect=ALL_KINDS)


def test_signing_refuses_a_payload_that_would_exceed_4096_characters() -> None:
    with pytest.raises(TokenTooLong):
        sign_token(_payload(target_url="https://x.example/" + _incompressible(4000)), KEYRING)
    with pytest.raises(TokenTooLong):
        sign_token(_payload(metadata={"big": "a" * (MAX_BODY_BYTES + 1)}), KEYRING)


def test_a_long_compressible_url_near_the_link_limit_round_trips() -> None:
    target = "https://shop.example.com/?" + "&".join(f"utm_param_{i}=value" for i in range(200))
    target = target[:4000]
    payload = _payload(target_url=target, link_name=target)
    token = sign_token(payload, KEYRING)
    assert len(token) <= MAX_TOKEN_CHARS
    assert decode_token(token, KEYRING, expect=CLICK_KINDS) == payload


# Keys


def test_a_token_signed_with_an_old_key_verifies_after_rotation_and_new_tokens_use_the_new_key(
    tmp_path: Path,
) -> None:
    old_token = sign_token(_payload(), load_keyring(tmp_path))
    new_id = rotate_key(tmp_path)
    keyring = load_keyring(tmp_path)
    assert decode_token(old_token, keyring, expect=CLICK_KINDS) == _payload()
    new_token = sign_token(_payload(), keyring)
    assert _raw(old_token)[1] == 1
    assert _raw(new_token)[1] == new_id
    assert decode_token(new_token, keyring, expect=CLICK_KINDS) == _payload()
    links = RecipientLinks(keyring, *_link_data())
    assert _raw(_token_of(links.open_url(False)))[1] == new_id


# Expiry


def test_is_expired_only_after_the_expiry_second() -> None:
    payload = _payload(expires=1000)
    assert not is_expired(payload, 999.5)
    assert not is_expired(payload, 1000)
    assert is_expired(payload, 1000.001)


def test_an_expired_token_still_decodes() -> None:
    payload = _payload(expires=1)
    assert decode_token(sign_token(payload, KEYRING), KEYRING, expect=CLICK_KINDS) == payload


# Metadata


def test_metadata_that_fits_is_kept_whole() -> None:
    assert truncate_metadata(METADATA, 1000) == METADATA


def test_metadata_truncation_drops_whole_keys_from_the_end() -> None:
    metadata = {"a": "1", "b": {"nested": [1, 2, 3]}, "c": "x" * 50, "d": "4"}
    assert truncate_metadata(metadata, len('{"a":"1","b":{"nested":[1,2,3]}}')) == {
        "a": "1",
        "b": {"nested": [1, 2, 3]},
    }
    assert truncate_metadata(metadata, len('{"a":"1","b":{"nested":[1,2,3]}}') - 1) == {"a": "1"}
    assert truncate_metadata(metadata, 5) == {}
    assert truncate_metadata(metadata, 0) == {}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
metadata_objects = st.dictionaries(st.text(max_size=12), json_values, max_size=8)


@given(metadata=metadata_objects, max_len=st.integers(min_value=-1, max_value=400))
def test_truncated_metadata_is_a_json_prefix_that_fits(metadata: dict[str, Any], max_len: int) -> None:
    kept = truncate_metadata(metadata, max_len)
    encoded = msgspec.json.encode(kept)
    assert msgspec.json.decode(encoded) == kept
    assert kept == {} or len(encoded) <= max_len
    assert list(kept) == list(metadata)[: len(kept)]
    assert all(kept[name] == metadata[name] for name in kept)
    if len(kept) < len(metadata):
        one_more = dict(kept)
        name = list(metadata)[len(kept)]
        one_more[name] = metadata[name]
        assert len(msgspec.json.encode(one_more)) > max_len


def test_links_carry_metadata_cut_to_max_metadata_len() -> None:
    metadata = {"first": "a" * 40, "second": "b" * 40, "third": "c" * 40}
    links = RecipientLinks(KEYRING, *_link_data(metadata=metadata, max_metadata_len=110))
    payload = decode_token(_token_of(links.click_url(TARGET, TARGET, None, False)), KEYRING, expect=CLICK_KINDS)
    assert payload.identity.metadata == {"first": "a" * 40, "second": "b" * 40}
    assert len(msgspec.json.encode(payload.identity.metadata)) <= 110
    opened = decode_token(_token_of(links.open_url(True)), KEYRING, expect=OPEN_KINDS)
    assert opened.identity.metadata == payload.identity.metadata


def test_clicks_carry_metadata_only_when_include_metadata_was_set_at_send_time() -> None:
    with_metadata = RecipientLinks(KEYRING, *_link_data(include_metadata_in_clicks=True))
    without = RecipientLinks(KEYRING, *_link_data(include_metadata_in_clicks=False))
    carried = decode_token(_token_of(with_metadata.click_url(TARGET, "n", None, False)), KEYRING, expect=CLICK_KINDS)
    absent = decode_token(_token_of(without.click_url(TARGET, "n", None, False)), KEYRING, expect=CLICK_KINDS)
    assert carried.metadata_included and carried.identity.metadata == METADATA
    assert not absent.metadata_included and absent.identity.metadata == {}
    opened = decode_token(_token_of(without.open_url(False)), KEYRING, expect=OPEN_KINDS)
    assert opened.metadata_included and opened.identity.metadata == METADATA


def test_a_message_without_metadata_yields_an_included_empty_object() -> None:
    links = RecipientLinks(KEYRING, *_link_data(metadata=None))
    payload = decode_token(_token_of(links.click_url(TARGET, "n", None, False)), KEYRING, expect=CLICK_KINDS)
    assert payload.metadata_included and payload.identity.metadata == {}


def test_a_click_too_long_with_metadata_is_minted_without_it() -> None:
    target = "https://x.example/" + _incompressible(3400)
    metadata = {"blob": _incompressible(900)}
    links = RecipientLinks(KEYRING, *_link_data(metadata=metadata))
    payload = decode_token(_token_of(links.click_url(target, target, None, False)), KEYRING, expect=CLICK_KINDS)
    assert payload.target_url == target
    assert not payload.metadata_included


def test_a_click_too_long_even_without_metadata_is_untrackable() -> None:
    target = "https://x.example/" + _incompressible(4000)
    links = RecipientLinks(KEYRING, *_link_data())
    with pytest.raises(UntrackableLink):
        links.click_url(target, target, None, False)


# Minting URLs


def test_recipient_links_is_a_link_minter() -> None:
    minter: LinkMinter = RecipientLinks(KEYRING, *_link_data())
    assert minter.open_url(True).startswith("http://t.example.com/q/")


def test_click_url_has_the_f_path_and_carries_the_link() -> None:
    links = RecipientLinks(KEYRING, *_link_data())
    url = links.click_url(TARGET, "banner", None, False)
    assert url.startswith(f"https://t.example.com/f/{DEFAULT_SUBLINK}/")
    payload = decode_token(_token_of(url), KEYRING, expect={TokenKind.CLICK})
    assert (payload.target_url, payload.link_name) == (TARGET, "banner")
    identity = payload.identity
    assert (identity.rcpt_to, identity.raw_rcpt_to) == ("alice@example.com", "Alice@Example.com")
    assert (identity.campaign_id, identity.customer_id, identity.tags) == ("spring_sale", "42", ("promo",))
    assert payload.expires == 1_767_225_600


def test_unsubscribe_links_get_unsubscribe_tokens() -> None:
    links = RecipientLinks(KEYRING, *_link_data())
    url = links.click_url(TARGET, TARGET, "unsub", True)
    assert "/f/unsub/" in url
    assert decode_token(_token_of(url), KEYRING, expect=CLICK_KINDS).kind is TokenKind.UNSUBSCRIBE


@pytest.mark.parametrize(("initial", "kind"), [(True, TokenKind.INITIAL_OPEN), (False, TokenKind.OPEN)])
def test_open_url_has_the_q_path_and_the_pixel_kind(initial: bool, kind: TokenKind) -> None:
    url = RecipientLinks(KEYRING, *_link_data()).open_url(initial)
    assert url.startswith("http://t.example.com/q/")
    payload = decode_token(_token_of(url), KEYRING, expect=OPEN_KINDS)
    assert payload.kind is kind
    assert (payload.target_url, payload.link_name) == ("", "")


def test_the_amp_minter_mints_amp_kinds_for_the_same_recipient() -> None:
    amp = RecipientLinks(KEYRING, *_link_data()).amp()
    click = decode_token(_token_of(amp.click_url(TARGET, "banner", None, False)), KEYRING, expect=CLICK_KINDS)
    assert (click.kind, click.target_url) == (TokenKind.AMP_CLICK, TARGET)
    kinds = [decode_token(_token_of(amp.open_url(initial)), KEYRING, expect=OPEN_KINDS).kind for initial in (True,
                                                                                                           False)]
    assert kinds == [TokenKind.AMP_INITIAL_OPEN, TokenKind.AMP_OPEN]
    unsubscribe = amp.click_url(TARGET, TARGET, None, True)
    assert decode_token(_token_of(unsubscribe), KEYRING, expect=CLICK_KINDS).kind is TokenKind.UNSUBSCRIBE


def test_click_url_removes_tabs_and_newlines_and_encodes_other_controls_like_a_browser() -> None:
    links = RecipientLinks(KEYRING, *_link_data())
    url = links.click_url("https://a.example/x\r\n\ty\x00z\x7f", "n", None, False)
    payload = decode_token(_token_of(url), KEYRING, expect=CLICK_KINDS)
    assert payload.target_url == "https://a.example/xy%00z%7F"


@pytest.mark.parametrize("target", ["mailto:a@example.com", "javascript:alert(1)", "https://a/\ud800"])
def test_click_url_refuses_untrackable_targets(target: str) -> None:
    with pytest.raises(UntrackableLink):
        RecipientLinks(KEYRING, *_link_data()).click_url(target, target, None, False)


def test_tracking_schemes_other_than_http_and_https_are_refused() -> None:
    with pytest.raises(ValueError, match="scheme"):
        RecipientLinks(KEYRING, *_link_data(click_scheme="javascript"))


@pytest.mark.parametrize(
    ("sublink", "segment"),
    [
        (None, "a"),
        ("", "a"),
        ("buy-now_2.0~x", "buy-now_2.0~x"),
        ("spring sale", "spring%20sale"),
        ("a/b", "a%2Fb"),
        ("é", "%C3%A9"),
        (".", "a"),
        ("..", "a"),
        ("x" * 65, "a"),
        ("é" * 20, "a"),
    ],
)
def test_sublinks_become_safe_path_segments(sublink: str | None, segment: str) -> None:
    assert sanitise_sublink(sublink) == segment
    url = RecipientLinks(KEYRING, *_link_data()).click_url(TARGET, TARGET, sublink, False)
    assert url.split("/")[4] == segment


# Normalising mangled tokens


def _mangled(token: str) -> list[str]:
    every_char_encoded = "".join(f"%{ord(char):02X}" for char in token)
    return [
        token,
        every_char_encoded,
        every_char_encoded.replace("%", "%25"),
        token + "%20",
        token + ">",
        token + ")",
        token + ").",
        token + "/",
        token + "&amp;utm_source=x",
        token + "&amp;amp;",
        token + "%26amp%3B",
        "%3C" + token + "%3E",
        token.replace("-", "&#45;").replace("_", "&#x5f;"),
    ]


def test_percent_encoded_and_html_mangled_tokens_normalise_back() -> None:
    token = sign_token(_payload(campaign_id="c-_-_"), KEYRING)
    for mangled in _mangled(token):
        assert normalise_token(mangled) == token, mangled
        assert decode_token(normalise_token(mangled), KEYRING, expect=CLICK_KINDS) == _payload(campaign_id="c-_-_")


def test_normalising_junk_yields_something_decode_rejects() -> None:
    for junk in ("", "%", "%%%", "&amp;", ">>>", "%ZZ"):
        with pytest.raises(InvalidToken):
            decode_token(normalise_token(junk), KEYRING, expect=ALL_KINDS)


# Properties

_text_field = st.text(max_size=40)
_url_tail = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=300)


@st.composite
def _payloads(draw: st.DrawFn) -> TokenPayload:
    kind = draw(st.sampled_from(list(TokenKind)))
    clicks = kind in CLICK_KINDS
    target = draw(st.sampled_from(["http://", "https://", "HTTPS://"])) + draw(_url_tail) if clicks else ""
    metadata = draw(st.none() | metadata_objects)
    identity = RecipientIdentity(
        message_id=draw(_text_field),
        transmission_id=draw(_text_field),
        rcpt_to=draw(_text_field),
        raw_rcpt_to=draw(_text_field),
        injection_time=draw(st.floats(min_value=0, max_value=2**40)),
        campaign_id=draw(_text_field),
        customer_id=draw(_text_field),
        tags=tuple(draw(st.lists(_text_field, max_size=5))),
        metadata=metadata or {},
        ip_pool=draw(_text_field),
        sending_ip=draw(_text_field),
        rcpt_type=draw(st.sampled_from(["", "to", "cc", "bcc", "archive"])),
        subject=draw(_text_field),
        friendly_from=draw(_text_field),
        msg_from=draw(_text_field),
        routing_domain=draw(_text_field),
        transactional=draw(st.booleans()),
        delv_method=draw(st.sampled_from(["", "esmtp", "capture"])),
    )
    return TokenPayload(
        kind=kind,
        identity=identity,
        metadata_included=metadata is not None,
        target_url=target,
        link_name=draw(st.just(target) | _text_field) if clicks else "",
        expires=draw(st.integers(min_value=0, max_value=2**63 - 1)),
    )


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(payload=_payloads())
def test_any_payload_survives_sign_then_decode(payload: TokenPayload) -> None:
    token = sign_token(payload, KEYRING)
    assert len(token) <= MAX_TOKEN_CHARS
    assert decode_token(token, KEYRING, expect={payload.kind}) == payload


@given(
    target=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=2500),
    sublink=st.none() | st.text(max_size=20),
    unsubscribe=st.booleans(),
)
def test_any_long_ascii_link_round_trips_through_click_url(target: str, sublink: str | None, unsubscribe: bool) -> None:
    url = "https://" + target
    links = RecipientLinks(KEYRING, *_link_data(metadata=None))
    minted = links.click_url(url, url, sublink, unsubscribe)
    payload = decode_token(normalise_token(_token_of(minted)), KEYRING, expect=CLICK_KINDS)
    assert payload.target_url == url
