"""SparkPost's derived fields: mailbox_provider from the recipient domain and user_agent_parsed."""

from __future__ import annotations

import pytest

from engaged.events.enrich import default_resolver, mailbox_provider, parse_user_agent
from engaged.events.model import UserAgentParsed

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Mobile/15E148")
MAC_CHROME = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/120.0.0.0 Safari/537.36")


@pytest.mark.parametrize(("domain", "expected"), [
    ("gmail.com", ("Gmail", "Global")), ("GoogleMail.com.", ("Gmail", "Global")),
    ("hotmail.co.uk", ("Hotmail / Outlook", "Global")), ("aol.com", ("Verizon Media Group", "Global")),
    ("web.de", ("Web.de", "Europe - Germany")), ("example.org", ("Other", "Global")),
])
def test_the_mailbox_provider_is_named_for_the_large_providers_domains(domain: str, expected: tuple[str, str]) -> None:
    assert mailbox_provider(domain) == expected


def test_user_agents_parse_into_sparkposts_fields_with_the_trackers_classification() -> None:
    resolver = default_resolver()
    assert parse_user_agent(IPHONE, None, resolver) == UserAgentParsed(
        agent_family="Mobile Safari UI/WKWebView", device_brand="Apple", device_family="iPhone", os_family="iOS",
        os_version="17.4", is_mobile=True, is_proxy=False, is_prefetched=False)
    desktop = parse_user_agent(MAC_CHROME, "google_image_proxy", resolver)
    assert desktop is not None and (desktop.agent_family, desktop.os_family, desktop.os_version) == (
        "Chrome", "Mac OS X", "10.15")
    assert not desktop.is_mobile and desktop.is_proxy and not desktop.is_prefetched
    apple = parse_user_agent("Mozilla/5.0", "apple_mpp", resolver)
    assert apple is not None and apple.is_proxy and apple.is_prefetched
    assert parse_user_agent("  ", None, resolver) is None
