"""Real HTTP against a running tracker: every endpoint, tampered and re-encoded tokens, events and their fields."""

from __future__ import annotations

import base64
import errno
import os
import random
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from engaged.events.ids import EventIdGenerator
from engaged.events.model import ClickEvent, InitialOpenEvent, LinkUnsubscribeEvent, MachineEngagement, OpenEvent
from engaged.tokens import MAX_TOKEN_CHARS
from engaged.tracker.classify import HUMAN, PREFETCH, Classifier
from engaged.tracker.handler import MAX_SEGMENT_CHARS, ROBOTS_TXT, Tracker, location_of
from engaged.tracker.pixel import PIXEL_GIF
from tests.tracker.conftest import BROWSER_UA, RunningTracker, TrackerFactory, build_mmdb

TARGET = "https://shop.example.com/spring?utm_source=email&utm_medium=newsletter#top"
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
NO_CACHE = "no-store, no-cache, must-revalidate, private"


def split_token(url: str) -> tuple[str, str]:
    """(everything up to the token, the token) of a tracked URL."""
    head, _, token = url.rpartition("/")
    return head + "/", token


def assert_common_headers(response: httpx.Response) -> None:
    assert response.headers["server"] == "engaged"
    assert response.headers["x-content-type-options"] == "nosniff"


# --- pixels ---------------------------------------------------------------------------------------


async def test_the_top_pixel_serves_the_gif_and_records_an_initial_open(tracker: RunningTracker) -> None:
    response = await tracker.get(tracker.links().open_url(True), **{"accept-language": "fr-FR,fr;q=0.9"})
    assert response.status_code == 200
    assert response.content == PIXEL_GIF
    assert response.headers["content-type"] == "image/gif"
    assert response.headers["cache-control"] == NO_CACHE
    assert response.headers["pragma"] == "no-cache"
    assert response.headers["expires"] == "0"
    assert_common_headers(response)
    [event] = await tracker.events()
    assert isinstance(event, InitialOpenEvent)
    assert event.user_agent == BROWSER_UA
    assert event.accept_language == "fr-FR,fr;q=0.9"
    assert event.ip_address == "127.0.0.1"
    assert event.machine_engagement == HUMAN
    assert event.user_agent_parsed is not None and event.user_agent_parsed.agent_family != "Other"
    assert not event.user_agent_parsed.is_prefetched and event.delv_method


async def test_the_bottom_pixel_records_an_open_with_every_field_the_token_carries(tracker: RunningTracker) -> None:
    before = time.time()
    links = tracker.links(rcpt_type="cc")
    response = await tracker.get(links.open_url(False))
    assert response.status_code == 200
    [event] = await tracker.events()
    assert isinstance(event, OpenEvent)
    assert (event.message_id, event.transmission_id, event.campaign_id, event.customer_id) == (
        "000443ee14578172be22", "65832150921904138", "spring_sale", "42")
    assert (event.rcpt_to, event.raw_rcpt_to, event.rcpt_type) == ("alice@example.com", "Alice@Example.com", "cc")
    assert event.rcpt_meta == {"user_id": "123", "plan": "gold"}
    assert event.rcpt_tags == ["promo", "newsletter"]
    assert event.sending_ip == "192.0.2.10"
    assert event.injection_time.endswith("+00:00")
    assert before <= float(event.timestamp) <= time.time()
    assert event.timestamp.count(".") == 1 and len(event.timestamp.split(".")[1]) == 3
    assert event.event_id.isdigit()


async def test_the_o_path_is_an_alias_of_q(tracker: RunningTracker) -> None:
    url = tracker.links().open_url(False).replace("/q/", "/o/")
    response = await tracker.get(url)
    assert (response.status_code, response.content) == (200, PIXEL_GIF)
    assert len(await tracker.events()) == 1


async def test_head_on_a_pixel_answers_like_get_without_a_body_and_is_flagged_prefetch(
        tracker: RunningTracker) -> None:
    response = await tracker.client.head(tracker.links().open_url(False), headers={"user-agent": BROWSER_UA})
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == "43"
    [event] = await tracker.events()
    assert event.machine_engagement == MachineEngagement(kind=PREFETCH, reason="HEAD request")


# --- clicks ---------------------------------------------------------------------------------------


async def test_a_click_redirects_to_the_target_with_an_empty_body_and_records_a_click(
        tracker: RunningTracker) -> None:
    response = await tracker.get(tracker.links().click_url(TARGET, "banner", "promo", False))
    assert response.status_code == 302
    assert response.headers["location"] == TARGET
    assert response.content == b""
    assert response.headers["content-length"] == "0"
    assert response.headers["cache-control"] == NO_CACHE
    assert_common_headers(response)
    [event] = await tracker.events()
    assert isinstance(event, ClickEvent)
    assert (event.target_link_url, event.target_link_name) == (TARGET, "banner")
    assert event.rcpt_meta == {"user_id": "123", "plan": "gold"}
    assert event.machine_engagement == HUMAN


async def test_the_link_name_defaults_to_the_url(tracker: RunningTracker) -> None:
    await tracker.get(tracker.links().click_url(TARGET, TARGET, None, False))
    [event] = await tracker.events()
    assert isinstance(event, ClickEvent)
    assert event.target_link_name == TARGET


async def test_an_unsubscribe_link_records_link_unsubscribe(tracker: RunningTracker) -> None:
    response = await tracker.get(tracker.links().click_url("https://example.com/unsub?u=1", "unsub", None, True))
    assert (response.status_code, response.headers["location"]) == (302, "https://example.com/unsub?u=1")
    [event] = await tracker.events()
    assert isinstance(event, LinkUnsubscribeEvent)
    assert event.target_link_url == "https://example.com/unsub?u=1"


async def test_a_click_without_metadata_in_its_link_records_empty_rcpt_meta(tracker: RunningTracker) -> None:
    links = tracker.links(include_metadata_in_clicks=False)
    await tracker.get(links.click_url(TARGET, "x", None, False))
    await tracker.get(links.open_url(False))
    click, opened = await tracker.events()
    assert click.rcpt_meta == {}
    assert opened.rcpt_meta == {"user_id": "123", "plan": "gold"}


async def test_a_non_ascii_target_is_redirected_percent_encoded(tracker: RunningTracker) -> None:
    response = await tracker.get(tracker.links().click_url("https://exämple.com/pâge?q=ü ö", "x", None, False))
    assert response.headers["location"] == "https://ex%C3%A4mple.com/p%C3%A2ge?q=%C3%BC%20%C3%B6"
    [event] = await tracker.events()
    assert isinstance(event, ClickEvent)
    assert event.target_link_url == "https://exämple.com/pâge?q=ü ö"


async def test_head_on_a_click_redirects_without_counting_a_person(tracker: RunningTracker) -> None:
    response = await tracker.client.head(tracker.links().click_url(TARGET, "x", None, False))
    assert (response.status_code, response.headers["location"]) == (302, TARGET)
    [event] = await tracker.events()
    assert event.machine_engagement is not None and event.machine_engagement.kind == PREFETCH


async def test_an_expired_link_still_redirects_and_serves_the_pixel_but_records_nothing(
        tracker: RunningTracker) -> None:
    links = tracker.links(expires=int(time.time()) - 1)
    click = await tracker.get(links.click_url(TARGET, "x", None, False))
    pixel = await tracker.get(links.open_url(True))
    assert (click.status_code, click.headers["location"]) == (302, TARGET)
    assert (pixel.status_code, pixel.content) == (200, PIXEL_GIF)
    assert await tracker.events() == []
    assert tracker.service.tracker.stats.expired == 2


# --- refusals -------------------------------------------------------------------------------------


async def test_a_token_of_the_wrong_kind_for_the_path_is_404(tracker: RunningTracker) -> None:
    links = tracker.links()
    _, open_token = split_token(links.open_url(False))
    _, click_token = split_token(links.click_url(TARGET, "x", None, False))
    as_click = await tracker.get(f"{tracker.base}/f/a/{open_token}")
    as_open = await tracker.get(f"{tracker.base}/q/{click_token}")
    assert (as_click.status_code, as_open.status_code) == (404, 404)
    assert "location" not in as_click.headers
    assert as_click.content == as_open.content == b"Not Found\n"
    assert await tracker.events() == []


async def test_every_byte_of_a_token_changed_is_refused_in_process(tracker: RunningTracker) -> None:
    app = tracker.service.tracker
    links = tracker.links()
    for url in (links.click_url(TARGET, "x", None, False), links.open_url(True)):
        head, token = split_token(url)
        path = head.split(tracker.service.address, 1)[1]
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        variants = set()
        for position in range(len(raw)):
            for bit in (0x01, 0x80):
                flipped = bytearray(raw)
                flipped[position] ^= bit
                variants.add(base64.urlsafe_b64encode(bytes(flipped)).decode().rstrip("="))
        for position, char in enumerate(token):
            replacement = ALPHABET[(ALPHABET.index(char) + 1) % 64]
            variants.add(token[:position] + replacement + token[position + 1:])
        variants |= {token[:cut] for cut in range(len(token))} | {token + "A", token + "AA", token.swapcase()}
        variants.discard(token)
        statuses = {call(app, path + variant) for variant in variants}
        assert statuses == {404}, url
    assert await tracker.events() == []


async def test_a_sample_of_tampered_tokens_over_http_are_404_and_never_redirect(tracker: RunningTracker) -> None:
    head, token = split_token(tracker.links().click_url(TARGET, "x", None, False))
    rng = random.Random(4)
    for position in rng.sample(range(len(token)), min(50, len(token))):
        replacement = ALPHABET[(ALPHABET.index(token[position]) + rng.randrange(1, 64)) % 64]
        response = await tracker.get(head + token[:position] + replacement + token[position + 1:])
        assert response.status_code == 404
        assert "location" not in response.headers
    assert await tracker.events() == []


async def test_a_token_signed_with_an_unknown_key_is_404(tracker: RunningTracker) -> None:
    from engaged.keys import Keyring
    from engaged.tokens import RecipientLinks
    from tests.tracker.conftest import link_data

    stranger = RecipientLinks(Keyring(current_id=1, keys={1: os.urandom(32)}), *link_data(tracker.service.address))
    response = await tracker.get(stranger.click_url(TARGET, "x", None, False))
    assert response.status_code == 404


async def test_tokens_over_4096_characters_are_refused(tracker: RunningTracker) -> None:
    too_long = await tracker.get(f"{tracker.base}/f/a/{'A' * (MAX_TOKEN_CHARS + 1)}")
    far_too_long = await tracker.get(f"{tracker.base}/q/{'A' * (MAX_SEGMENT_CHARS + 1)}")
    assert (too_long.status_code, far_too_long.status_code) == (414, 414)
    assert await tracker.events() == []


async def test_a_request_line_beyond_the_server_bound_is_414_before_the_token_is_read(tracker: RunningTracker) -> None:
    response = await tracker.get(f"{tracker.base}/q/{'A' * 40_000}")
    assert response.status_code == 414


async def test_too_many_headers_are_rejected(tracker: RunningTracker) -> None:
    headers = {f"x-h{n}": "v" for n in range(150)}
    response = await tracker.client.get(f"{tracker.base}/robots.txt", headers=headers)
    assert response.status_code == 400


@pytest.mark.parametrize("path", ["/", "/q", "/q/", "/f/a", "/f/a/", "/f//x", "/favicon.ico", "/robots.txt/x",
                                  "/Q/abc", "/f/a/b/c"])
async def test_anything_else_is_404_with_a_fixed_body(tracker: RunningTracker, path: str) -> None:
    response = await tracker.get(tracker.base + path)
    assert (response.status_code, response.content) == (404, b"Not Found\n")
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert_common_headers(response)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_methods_other_than_get_and_head_are_405_with_allow(tracker: RunningTracker, method: str) -> None:
    links = tracker.links()
    for url in (links.open_url(True), links.click_url(TARGET, "x", None, False), f"{tracker.base}/robots.txt"):
        response = await tracker.client.request(method, url)
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, HEAD"
    assert await tracker.events() == []


async def test_robots_txt_disallows_everything(tracker: RunningTracker) -> None:
    response = await tracker.get(f"{tracker.base}/robots.txt")
    assert (response.status_code, response.content) == (200, ROBOTS_TXT)
    assert response.text == "User-agent: *\nDisallow: /\n"
    head = await tracker.client.head(f"{tracker.base}/robots.txt")
    assert (head.status_code, head.content) == (200, b"")


# --- re-encoded links -----------------------------------------------------------------------------


async def test_links_a_mail_client_re_encoded_still_redirect_and_record(tracker: RunningTracker) -> None:
    head, token = split_token(tracker.links().click_url(TARGET, "x", None, False))
    spellings = [
        token + "%3E", token + "&amp;utm=1", token + "&amp;amp;x", token + "/", token + "%20", token + ").",
        "".join(f"%{ord(c):02X}" for c in token), quote(quote(token + ">", safe=""), safe=""),
    ]
    for spelling in spellings:
        response = await tracker.get(head + spelling)
        assert (response.status_code, response.headers.get("location")) == (302, TARGET), spelling
    encoded_slash = await tracker.get(f"{tracker.base}/f/a%2F{token}")
    assert encoded_slash.status_code == 302
    assert len(await tracker.events()) == len(spellings) + 1


# --- addresses, geo and markup --------------------------------------------------------------------


async def test_x_forwarded_for_is_ignored_without_trusted_proxies(tracker: RunningTracker) -> None:
    await tracker.get(tracker.links().open_url(False), **{"x-forwarded-for": "203.0.113.9"})
    [event] = await tracker.events()
    assert event.ip_address == "127.0.0.1"


async def test_x_forwarded_for_from_a_trusted_proxy_gives_the_right_most_untrusted_address(
        start_tracker: TrackerFactory) -> None:
    tracker = await start_tracker(trusted_proxies=["127.0.0.0/8", "10.0.0.0/8"])
    links = tracker.links()
    for forwarded in ("198.51.100.1, 203.0.113.9, 10.0.0.2", "[2001:db8::1]:443, 10.1.1.1:8080", "10.9.9.9",
                      "203.0.113.7, garbage, 10.0.0.3"):
        await tracker.get(links.open_url(False), **{"x-forwarded-for": forwarded})
    events = await tracker.events()
    assert [event.ip_address for event in events] == ["203.0.113.9", "2001:db8::1", "10.9.9.9", "10.0.0.3"]


async def test_a_proxy_that_is_not_trusted_cannot_forge_the_address(start_tracker: TrackerFactory) -> None:
    tracker = await start_tracker(trusted_proxies=["10.0.0.0/8"])
    await tracker.get(tracker.links().open_url(False), **{"x-forwarded-for": "203.0.113.9"})
    [event] = await tracker.events()
    assert event.ip_address == "127.0.0.1"


async def test_geo_ip_comes_from_the_configured_database(start_tracker: TrackerFactory, tmp_path: Path) -> None:
    database = build_mmdb(tmp_path / "city.mmdb")
    tracker = await start_tracker(trusted_proxies=["127.0.0.1/32"], geoip_database=str(database))
    links = tracker.links()
    await tracker.get(links.click_url(TARGET, "x", None, False), **{"x-forwarded-for": "203.0.113.9"})
    await tracker.get(links.open_url(False))
    click, loopback = await tracker.events()
    assert click.geo_ip == {"country": "US", "region": "MD", "city": "Columbia", "latitude": "39.1749",
                            "longitude": "-76.8375", "zip": "21044"}
    assert loopback.geo_ip is None


async def test_markup_in_metadata_or_target_never_appears_in_a_response_body(tracker: RunningTracker) -> None:
    script = "<script>alert(1)</script>"
    links = tracker.links(metadata={"note": script}, campaign_id=script)
    target = f"https://example.com/?q={script}"
    urls = [links.click_url(target, script, script, False), links.open_url(True)]
    head, token = split_token(urls[0])
    urls += [head + token[:-3] + "xyz", head + token + quote(script), f"{tracker.base}/{quote(script)}",
             f"{tracker.base}/f/{quote(script)}/{token[:20]}"]
    for url in urls:
        response = await tracker.get(url)
        assert b"<" not in response.content and b"script" not in response.content
    events = await tracker.events()
    assert events[0].rcpt_meta == {"note": script}


# --- failures and helpers -------------------------------------------------------------------------


async def test_a_failing_journal_still_redirects_and_counts_the_loss(
        tracker: RunningTracker, monkeypatch: pytest.MonkeyPatch) -> None:
    links = tracker.links()

    def full(fd: int, data: bytes | memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    response = await tracker.get(links.click_url(TARGET, "x", None, False))
    assert (response.status_code, response.headers["location"]) == (302, TARGET)
    pixel = await tracker.get(links.open_url(True))
    assert (pixel.status_code, pixel.content) == (200, PIXEL_GIF)
    monkeypatch.undo()
    assert tracker.service.metrics()["journal_failed"] == 2
    assert (await tracker.get(links.open_url(False))).status_code == 200
    assert [type(event) for event in await tracker.events()] == [OpenEvent]


@pytest.mark.parametrize(("target", "location"), [
    ("https://a.example/x?y=1#z", b"https://a.example/x?y=1#z"),
    ("HTTP://A.EXAMPLE/", b"HTTP://A.EXAMPLE/"),
    ("https://a.example/ä b", b"https://a.example/%C3%A4%20b"),
    ("javascript:alert(1)", None),
    ("ftp://a.example/", None),
    ("//a.example/", None),
    ("https://a.example/\r\nSet-Cookie: x=1", None),
    ("https://a.example/\x00", None),
    ("https://a.example/\x85", None),
    ("https://a.example/\ud800", None),
])
def test_location_is_rechecked_and_escaped(target: str, location: bytes | None) -> None:
    assert location_of(target) == location


def call(tracker: Tracker, path: str, method: str = "GET") -> int:
    """The status of one request to the handler, without a socket."""
    answer = tracker.handle(method.encode(), path, BROWSER_UA.encode(), b"", b"", "127.0.0.1")
    status = int(answer.head.split(b" ", 2)[1])
    if status == 302:
        raise AssertionError(f"{path} redirected")
    return status


async def test_a_pixel_fetched_again_is_answered_from_the_verified_token_cache_and_recorded_each_time(
        tracker: RunningTracker, monkeypatch: pytest.MonkeyPatch) -> None:
    url = tracker.links().open_url(False)
    assert (await tracker.get(url)).status_code == 200
    import engaged.tracker.handler as handler

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached token was decoded again")

    monkeypatch.setattr(handler, "decode_token", refuse)  # an image proxy's prefetch, then the reader's own fetch
    for _ in range(3):
        assert (await tracker.get(url, **{"user-agent": "Mozilla/5.0"})).status_code == 200
    assert tracker.service.tracker.stats.token_cache_hits == 3
    events = await tracker.events()
    assert len(events) == 4 and len({event.event_id for event in events}) == 4
    assert [event.machine_engagement.kind if event.machine_engagement else None for event in events[1:]] == [
        "apple_mpp"] * 3


def test_the_verified_token_cache_is_bounded(tracker: RunningTracker) -> None:
    small = Tracker(keyring=tracker.keyring, ids=EventIdGenerator(), classifier=Classifier(), token_cache_size=3)
    for n in range(10):
        url = tracker.links(message_id=f"m{n}").open_url(False)
        assert small.handle(b"GET", url.split(tracker.service.address, 1)[1]).event is not None
    assert len(small._verified) == 3
