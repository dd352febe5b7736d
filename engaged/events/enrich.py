"""SparkPost's derived event fields, pure: `mailbox_provider` from the recipient domain, `user_agent_parsed`.

SparkPost names the mailbox provider behind a recipient domain (from its MX records) and parses the
User-Agent of opens and clicks. engaged does the same without network lookups: a table of the
domains of the large providers (the MX lookup SparkPost does would answer the same for them; any
other domain is "Other"), and ua-parser for the agent, with `is_proxy`/`is_prefetched` taken from
the tracker's machine classification.
"""

from __future__ import annotations

from typing import Any

import ua_parser

from engaged.events.model import UserAgentParsed

__all__ = ["UserAgentParser", "default_resolver", "mailbox_provider", "parse_user_agent"]

_PROVIDERS: dict[str, tuple[str, str]] = {}
for _names, _provider, _region in (
    (("gmail.com", "googlemail.com"), "Gmail", "Global"),
    (("outlook.com", "hotmail.com", "live.com", "msn.com", "hotmail.co.uk", "hotmail.fr", "hotmail.de",
      "hotmail.it", "hotmail.es", "live.co.uk", "live.fr", "live.de", "outlook.de", "outlook.fr"),
     "Hotmail / Outlook", "Global"),
    (("yahoo.com", "ymail.com", "rocketmail.com", "aol.com", "aim.com", "yahoo.co.uk", "yahoo.fr", "yahoo.de",
      "yahoo.co.jp", "yahoo.com.br", "verizon.net"), "Verizon Media Group", "Global"),
    (("icloud.com", "me.com", "mac.com"), "Apple", "Global"),
    (("comcast.net",), "Comcast", "North America - United States"),
    (("att.net", "sbcglobal.net", "bellsouth.net"), "AT&T", "North America - United States"),
    (("gmx.de", "gmx.net", "gmx.at", "gmx.ch", "gmx.com"), "GMX", "Europe - Germany"),
    (("web.de",), "Web.de", "Europe - Germany"),
    (("t-online.de",), "T-Online", "Europe - Germany"),
    (("orange.fr", "wanadoo.fr"), "Orange", "Europe - France"),
    (("free.fr",), "Free.fr", "Europe - France"),
    (("laposte.net",), "La Poste", "Europe - France"),
    (("libero.it",), "Libero", "Europe - Italy"),
    (("mail.ru", "inbox.ru", "list.ru", "bk.ru"), "Mail.ru", "Europe - Russia"),
    (("yandex.ru", "yandex.com"), "Yandex", "Europe - Russia"),
    (("qq.com",), "QQ", "APAC - China"),
    (("163.com", "126.com"), "NetEase", "APAC - China"),
    (("naver.com",), "Naver", "APAC - South Korea"),
    (("protonmail.com", "proton.me", "pm.me"), "Proton Mail", "Global"),
    (("zoho.com",), "Zoho", "Global"),
):
    for _name in _names:
        _PROVIDERS[_name] = (_provider, _region)


def mailbox_provider(domain: str) -> tuple[str, str]:
    """(mailbox_provider, mailbox_provider_region) for a recipient domain; ("Other", "Global") when unknown."""
    return _PROVIDERS.get(domain.strip().lower().rstrip("."), ("Other", "Global"))


_PROXY_KINDS = ("google_image_proxy", "apple_mpp")
_PREFETCH_KINDS = ("apple_mpp", "prefetch", "security_scanner", "scanner")
_MOBILE_OS = ("iOS", "Android", "iPadOS", "Windows Phone", "BlackBerry OS", "KaiOS")


def default_resolver() -> Any:
    """ua-parser's fastest available resolver (the Rust one when installed)."""
    if ua_parser.RegexResolver is not None:
        return ua_parser.RegexResolver(ua_parser.load_lazy_builtins())
    return ua_parser.CachingResolver(ua_parser.BasicResolver(ua_parser.load_builtins()), ua_parser.Cache(2000))


def parse_user_agent(user_agent: str, machine_kind: str | None, resolver: Any) -> UserAgentParsed | None:
    """The parsed agent (None without a User-Agent); `machine_kind` is the tracker's classification."""
    text = user_agent.strip()
    if not text:
        return None
    parsed = resolver(text, ua_parser.Domain.ALL)
    agent, system, device = parsed.user_agent, parsed.os, parsed.device
    os_family = system.family if system is not None else "Other"
    version = ".".join(part for part in (system.major, system.minor) if part) if system is not None else ""
    device_family = device.family if device is not None else "Other"
    return UserAgentParsed(
        agent_family=agent.family if agent is not None else "Other",
        device_brand=(device.brand or "") if device is not None else "",
        device_family=device_family,
        os_family=os_family,
        os_version=version,
        is_mobile=os_family in _MOBILE_OS or device_family in ("iPhone", "iPod", "Generic Smartphone"),
        is_proxy=machine_kind in _PROXY_KINDS,
        is_prefetched=machine_kind in _PREFETCH_KINDS,
    )


class UserAgentParser:
    """parse_user_agent with the last `size` distinct (User-Agent, machine kind) answers kept."""

    def __init__(self, resolver: Any = None, size: int = 4096) -> None:
        self._resolver = resolver
        self._size = size
        self._cache: dict[tuple[str, str | None], UserAgentParsed | None] = {}

    def parse(self, user_agent: str, machine_kind: str | None) -> UserAgentParsed | None:
        key = (user_agent, machine_kind)
        if key in self._cache:
            return self._cache[key]
        if self._resolver is None:
            self._resolver = default_resolver()
        parsed = parse_user_agent(user_agent, machine_kind, self._resolver)
        if len(self._cache) >= self._size:
            self._cache.clear()
        self._cache[key] = parsed
        return parsed
