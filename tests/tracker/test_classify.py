"""Tests of machine-engagement classification: user agents, HEAD, bursts, time since injection, Apple MPP."""

from __future__ import annotations

from typing import Any

import pytest
import ua_parser

from engaged.tracker.classify import (
    APPLE_MPP,
    BURST_LINKS,
    GOOGLE_IMAGE_PROXY,
    HUMAN,
    KINDS,
    PREFETCH,
    SECURITY_SCANNER,
    BurstDetector,
    Classifier,
    Engagement,
    classify_user_agent,
    default_resolver,
    is_apple_address,
)

T0 = 1_700_000_000.0
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")
IPHONE_SAFARI = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                 "Version/17.1 Mobile/15E148 Safari/604.1")
OUTLOOK = ("Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 10.0; WOW64; Trident/7.0; .NET4.0C; .NET4.0E; "
           "Microsoft Outlook 16.0.4266; ms-office; MSOffice 16)")
APPLE_MAIL = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"


def engagement(**changes: Any) -> Engagement:
    fields: dict[str, Any] = {"method": "GET", "user_agent": CHROME, "ip_address": "198.51.100.7", "is_click": True,
                              "message_id": "m1", "link": "https://shop.example.com/", "now": T0,
                              "injection_time": int(T0) - 3600}
    fields.update(changes)
    return Engagement(**fields)


@pytest.fixture
def classifier() -> Classifier:
    return Classifier()


def test_the_fast_rust_resolver_is_the_one_in_use() -> None:
    assert ua_parser.RegexResolver is not None
    assert type(default_resolver()).__module__ == "ua_parser.regex"  # backed by ua-parser-rs


def test_each_distinct_user_agent_is_parsed_once_then_answered_from_the_cache() -> None:
    # Behaviour, not wall-clock time: the resolver (the expensive part) runs once per distinct string.
    calls: list[str] = []
    resolver = default_resolver()

    def counting(text: str, domains: Any) -> Any:
        calls.append(text)
        return resolver(text, domains)

    classifier = Classifier(resolver=counting)
    agents = [f"{CHROME} Build/{n}" for n in range(200)]
    first = [classifier.user_agent_class(agent) for agent in agents]
    again = [classifier.user_agent_class(agent) for agent in agents]
    assert first == again
    assert sorted(calls) == sorted(agents)


FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
CUBOT = ("Mozilla/5.0 (Linux; Android 9; CUBOT X19) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/99.0.4844.88 "
         "Mobile Safari/537.36")


@pytest.mark.parametrize("user_agent", [CHROME, IPHONE_SAFARI, FIREFOX, CUBOT, OUTLOOK])
def test_an_ordinary_browser_an_hour_after_injection_is_a_person(classifier: Classifier, user_agent: str) -> None:
    assert classifier.classify(engagement(user_agent=user_agent)) == HUMAN
    assert classifier.classify(engagement(user_agent=user_agent, is_click=False)) == HUMAN
    assert HUMAN.kind is None


def test_head_requests_are_prefetches_whatever_the_user_agent(classifier: Classifier) -> None:
    verdict = classifier.classify(engagement(method="HEAD"))
    assert (verdict.kind, verdict.reason) == (PREFETCH, "HEAD request")


@pytest.mark.parametrize(("user_agent", "kind"), [
    (GMAIL_PROXY, GOOGLE_IMAGE_PROXY),
    ("Mozilla/5.0", APPLE_MPP),
    (" Mozilla/5.0 ", APPLE_MPP),
    ("", SECURITY_SCANNER),
    ("Mozilla/5.0 (compatible; Barracuda Sentinel (EE))", SECURITY_SCANNER),
    ("Mimecast-URL-Protect/1.0", SECURITY_SCANNER),
    ("Proofpoint URL Defense", SECURITY_SCANNER),
    ("Microsoft Office Existence Discovery", SECURITY_SCANNER),
    ("curl/8.5.0", SECURITY_SCANNER),
    ("python-requests/2.31.0", SECURITY_SCANNER),
    ("Go-http-client/1.1", SECURITY_SCANNER),
    ("Java/17.0.2", SECURITY_SCANNER),
    ("Wget/1.21.3", SECURITY_SCANNER),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 "
     "Safari/537.36", SECURITY_SCANNER),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", SECURITY_SCANNER),
    ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", PREFETCH),
    ("facebookexternalhit/1.1", PREFETCH),
])
def test_user_agents_of_software_are_flagged_with_their_kind(classifier: Classifier, user_agent: str,
                                                              kind: str) -> None:
    verdict = classifier.classify(engagement(user_agent=user_agent))
    assert verdict.kind == kind
    assert verdict.reason
    assert verdict.kind in KINDS


def test_yahoos_image_proxy_fetching_for_a_reader_is_a_person_and_says_so(classifier: Classifier) -> None:
    verdict = classifier.classify(engagement(is_click=False, user_agent="YahooMailProxy; "
                                             "https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"))
    assert verdict.kind is None
    assert verdict.reason == "Yahoo Mail image proxy, fetching for the reader"


def test_ua_parser_recognises_crawlers_the_substring_lists_do_not_name() -> None:
    crawler = classify_user_agent("Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
                                  default_resolver())
    assert crawler.verdict is not None and crawler.verdict.kind == SECURITY_SCANNER


def test_a_click_within_two_seconds_of_injection_is_a_scanner(classifier: Classifier) -> None:
    verdict = classifier.classify(engagement(now=T0 + 1.5, injection_time=int(T0)))
    assert verdict.kind == SECURITY_SCANNER
    assert verdict.reason == "click 1.5 s after injection"


def test_an_open_within_two_seconds_of_injection_is_a_prefetch(classifier: Classifier) -> None:
    verdict = classifier.classify(engagement(is_click=False, now=T0 + 0.4, injection_time=int(T0)))
    assert (verdict.kind, verdict.reason) == (PREFETCH, "open 0.4 s after injection")


def test_injection_time_in_whole_seconds_never_lets_a_click_under_two_seconds_pass(classifier: Classifier) -> None:
    # Injected at T0 + 0.9 (the token says T0); clicked 1.9 s later.
    assert classifier.classify(engagement(now=T0 + 2.8, injection_time=int(T0))).kind == SECURITY_SCANNER
    assert classifier.classify(engagement(now=T0 + 3.1, injection_time=int(T0))) == HUMAN


def test_an_unknown_injection_time_disables_the_timing_rule(classifier: Classifier) -> None:
    assert classifier.classify(engagement(now=T0, injection_time=0)) == HUMAN


def test_the_third_different_link_of_a_message_within_a_second_from_one_address_is_a_scanner(
        classifier: Classifier) -> None:
    verdicts = [classifier.classify(engagement(link=f"https://shop.example.com/{n}", now=T0 + n * 0.2))
                for n in range(4)]
    assert [verdict.kind for verdict in verdicts] == [None, None, SECURITY_SCANNER, SECURITY_SCANNER]
    assert verdicts[2].reason == f"{BURST_LINKS} links of the message within 1 s from one address"


def test_repeated_clicks_on_one_link_are_not_a_burst(classifier: Classifier) -> None:
    verdicts = [classifier.classify(engagement(now=T0 + n * 0.1)) for n in range(10)]
    assert all(verdict == HUMAN for verdict in verdicts)


def test_links_hit_from_different_addresses_or_messages_or_slowly_are_not_a_burst(classifier: Classifier) -> None:
    for n in range(3):
        assert classifier.classify(engagement(link=f"https://a.example/{n}", ip_address=f"198.51.100.{n}")) == HUMAN
        assert classifier.classify(engagement(link=f"https://b.example/{n}", message_id=f"m{n}")) == HUMAN
        assert classifier.classify(engagement(link=f"https://c.example/{n}", message_id="slow",
                                              now=T0 + n * 1.5)) == HUMAN


def test_opens_do_not_count_towards_a_burst(classifier: Classifier) -> None:
    for n in range(5):
        assert classifier.classify(engagement(is_click=False, now=T0 + n * 0.01)) == HUMAN
    assert classifier.classify(engagement()) == HUMAN


def test_the_burst_detector_keeps_a_bounded_number_of_messages() -> None:
    bursts = BurstDetector(max_messages=100)
    for n in range(1000):
        bursts.observe(f"m{n}", "198.51.100.7", "https://a.example/", T0)
    assert len(bursts) == 100
    assert bursts.observe("m999", "198.51.100.7", "https://b.example/", T0) == 2  # the newest are kept
    assert bursts.observe("m0", "198.51.100.7", "https://b.example/", T0) == 1  # the oldest were dropped


def test_apple_mail_opening_from_apples_own_network_is_mpp(classifier: Classifier) -> None:
    verdict = classifier.classify(engagement(user_agent=APPLE_MAIL, is_click=False, ip_address="17.58.1.2"))
    assert verdict.kind == APPLE_MPP
    assert "17.0.0.0/8" in verdict.reason


def test_apple_mail_opening_within_a_minute_of_injection_is_likely_mpp(classifier: Classifier) -> None:
    verdict = classifier.classify(engagement(user_agent=APPLE_MAIL, is_click=False, now=T0 + 30,
                                             injection_time=int(T0)))
    assert verdict.kind == APPLE_MPP
    assert "likely MPP" in verdict.reason


def test_apple_mail_opening_later_from_elsewhere_or_clicking_is_a_person(classifier: Classifier) -> None:
    assert classifier.classify(engagement(user_agent=APPLE_MAIL, is_click=False)) == HUMAN
    assert classifier.classify(engagement(user_agent=APPLE_MAIL, ip_address="17.58.1.2")) == HUMAN


@pytest.mark.parametrize(("address", "apple"), [("17.0.0.1", True), ("::ffff:17.1.2.3", True),
                                                 ("170.1.2.3", False), ("117.1.2.3", False), ("2001:db8::17", False)])
def test_only_17_slash_8_counts_as_apples_network(address: str, apple: bool) -> None:
    assert is_apple_address(address) is apple


def test_user_agent_verdicts_are_cached_with_a_bounded_size() -> None:
    classifier = Classifier(cache_size=10)
    for n in range(50):
        classifier.user_agent_class(f"agent {n}")
    assert len(classifier._cache) == 10
    assert classifier.user_agent_class("agent 49") is classifier.user_agent_class("agent 49")
