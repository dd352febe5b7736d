"""Machine engagement: whether an open or click came from a person or from software (pure: no I/O, no clock).

Every open and click is recorded; this only labels it. The first rule that matches wins:

1. `HEAD` → prefetch (browsers and people GET; link checkers and previewers HEAD).
2. The user agent (parsed once per distinct string with ua-parser's Rust resolver, verdicts cached):
   no User-Agent → security_scanner; GoogleImageProxy / ggpht.com → google_image_proxy (Gmail fetches
   images through it when the reader opens the message, so it is a real open whose client is hidden);
   exactly `Mozilla/5.0` → apple_mpp (what Mail Privacy Protection's prefetcher sends); Yahoo's image
   proxy → a person (kind None, the reason names the proxy); link unfurlers (Slack, Teams, WhatsApp…)
   → prefetch; mail-security gateways (Barracuda, Mimecast, Proofpoint, Microsoft Safe Links…), HTTP
   libraries (curl, python-requests, Go-http-client…), headless browsers and anything ua-parser calls
   a Spider → security_scanner.
3. Bursts: a click on the 3rd different link of one message within 1 s from one address → security_scanner
   (a person cannot read and click that fast; scanners follow every link). The clicks before it were
   already answered and stay unflagged.
4. Time since injection (the token carries it in whole seconds, so the window is 2–3 s of real time): a
   click that soon → security_scanner, an open that soon → prefetch.
5. Apple Mail without MPP's bare user agent: an open whose user agent ua-parser calls Apple Mail, from
   Apple's own 17.0.0.0/8 or within 60 s of injection → apple_mpp. MPP's egress also runs through CDN
   partners whose ranges are not available offline, so this rule is a heuristic and says so in its reason.

Anything else is a person: `MachineEngagement(kind=None, reason="no machine signal")`.
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from typing import Any, Final

import msgspec
import ua_parser

from engaged.events.model import MachineEngagement

APPLE_MPP: Final = "apple_mpp"
GOOGLE_IMAGE_PROXY: Final = "google_image_proxy"
SECURITY_SCANNER: Final = "security_scanner"
PREFETCH: Final = "prefetch"
KINDS: Final = frozenset({APPLE_MPP, GOOGLE_IMAGE_PROXY, SECURITY_SCANNER, PREFETCH})

HUMAN: Final = MachineEngagement(kind=None, reason="no machine signal")
QUICK_SECONDS: Final = 2.0
MPP_WINDOW_SECONDS: Final = 60.0
BURST_SECONDS: Final = 1.0
BURST_LINKS: Final = 3

log = logging.getLogger("engaged")

_GOOGLE = ("googleimageproxy", "ggpht.com")
# Other providers' image proxies fetch when the reader opens the message: a person, behind a proxy.
_READER_PROXIES = (("yahoomailproxy", "Yahoo Mail image proxy"),)
_PREVIEWERS = (
    ("slackbot", "Slack"), ("microsoftpreview", "Microsoft Teams"), ("skypeuripreview", "Skype"),
    ("whatsapp", "WhatsApp"), ("telegrambot", "Telegram"), ("discordbot", "Discord"),
    ("facebookexternalhit", "Facebook"), ("twitterbot", "Twitter"), ("linkedinbot", "LinkedIn"),
    ("bingpreview", "Bing preview"),
)
_SCANNERS = (
    ("barracuda", "Barracuda"), ("mimecast", "Mimecast"), ("proofpoint", "Proofpoint"),
    ("urldefense", "Proofpoint URL Defense"), ("safelinks", "Microsoft Safe Links"),
    ("microsoft office existence discovery", "Microsoft Office link check"),
    ("trendmicro", "Trend Micro"), ("trend micro", "Trend Micro"), ("symantec", "Symantec"),
    ("messagelabs", "Symantec MessageLabs"), ("forcepoint", "Forcepoint"), ("sophos", "Sophos"),
    ("fireeye", "FireEye"), ("ironport", "Cisco IronPort"), ("zscaler", "Zscaler"), ("fortiguard", "Fortinet"),
    ("checkpoint", "Check Point"), ("spamtitan", "SpamTitan"), ("cloudmark", "Cloudmark"),
    ("hornetsecurity", "Hornetsecurity"), ("libraesva", "Libraesva"), ("avanan", "Avanan"),
    ("curl/", "curl"), ("wget/", "Wget"), ("python-requests", "python-requests"), ("python-urllib", "Python urllib"),
    ("python-httpx", "httpx"), ("aiohttp", "aiohttp"), ("go-http-client", "Go-http-client"), ("java/", "Java"),
    ("okhttp", "OkHttp"), ("apache-httpclient", "Apache HttpClient"), ("libwww-perl", "libwww-perl"),
    ("node-fetch", "node-fetch"), ("axios/", "axios"), ("scrapy", "Scrapy"), ("headlesschrome", "headless Chrome"),
    ("phantomjs", "PhantomJS"), ("puppeteer", "Puppeteer"), ("playwright", "Playwright"), ("selenium", "Selenium"),
)
_UA_CACHE_SIZE = 4096
_BURST_MESSAGES = 10_000
_BURST_LINKS_KEPT = 16


class Engagement(msgspec.Struct, frozen=True, kw_only=True):
    """What classification looks at in one open or click request."""

    method: str
    user_agent: str
    ip_address: str
    is_click: bool
    message_id: str
    link: str = ""
    now: float
    injection_time: int = 0  # epoch seconds, 0: unknown


class UserAgentClass(msgspec.Struct, frozen=True):
    """The user agent's verdict (None: it looks like a person's) and whether it is Apple Mail."""

    verdict: MachineEngagement | None
    apple_mail: bool = False


@functools.cache
def default_resolver() -> Any:
    """ua-parser's fastest resolver over its bundled regexes (built once: it takes ~0.25 s)."""
    if ua_parser.RegexResolver is not None:
        return ua_parser.RegexResolver(ua_parser.load_lazy_builtins())
    log.warning("ua-parser-rs is missing (install ua-parser[regex]); user agents parse ~50x slower")
    return ua_parser.CachingResolver(ua_parser.BasicResolver(ua_parser.load_builtins()), ua_parser.Cache(2000))


def classify_user_agent(user_agent: str, resolver: Any) -> UserAgentClass:
    """Rule 2 for one User-Agent string; `resolver` is a ua_parser Resolver (see default_resolver)."""
    text = user_agent.strip()
    if not text:
        return UserAgentClass(MachineEngagement(kind=SECURITY_SCANNER, reason="no User-Agent header"))
    lowered = text.lower()
    if any(needle in lowered for needle in _GOOGLE):
        return UserAgentClass(MachineEngagement(kind=GOOGLE_IMAGE_PROXY, reason="GoogleImageProxy user agent"))
    if text == "Mozilla/5.0":
        return UserAgentClass(MachineEngagement(kind=APPLE_MPP, reason="bare Mozilla/5.0 user agent (Apple MPP)"))
    for needle, label in _READER_PROXIES:
        if needle in lowered:
            return UserAgentClass(MachineEngagement(kind=None, reason=f"{label}, fetching for the reader"))
    for needle, label in _PREVIEWERS:
        if needle in lowered:
            return UserAgentClass(MachineEngagement(kind=PREFETCH, reason=f"{label} link preview user agent"))
    for needle, label in _SCANNERS:
        if needle in lowered:
            return UserAgentClass(MachineEngagement(kind=SECURITY_SCANNER, reason=f"{label} user agent"))
    parsed = resolver(text, ua_parser.Domain.USER_AGENT | ua_parser.Domain.DEVICE)
    family = parsed.user_agent.family if parsed.user_agent is not None else ""
    if parsed.device is not None and parsed.device.family == "Spider":  # ua-parser's verdict for bots
        return UserAgentClass(MachineEngagement(kind=SECURITY_SCANNER, reason="crawler user agent"))
    return UserAgentClass(None, apple_mail=family == "Apple Mail")


class BurstDetector:
    """Recent clicks per message: a bounded LRU of message ids, each with the last time of each (address, link)."""

    def __init__(self, *, window: float = BURST_SECONDS, max_messages: int = _BURST_MESSAGES,
                 max_links: int = _BURST_LINKS_KEPT) -> None:
        self._window = window
        self._max_messages = max_messages
        self._max_links = max_links
        self._recent: OrderedDict[str, dict[tuple[str, str], float]] = OrderedDict()

    def observe(self, message_id: str, ip_address: str, link: str, now: float) -> int:
        """Record a click; how many different links of the message `ip_address` hit within the window."""
        seen = self._recent.get(message_id)
        if seen is None:
            seen = self._recent[message_id] = {}
            if len(self._recent) > self._max_messages:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(message_id)
        key = (ip_address, link)
        seen.pop(key, None)
        seen[key] = now  # newest last
        if len(seen) > self._max_links:
            del seen[next(iter(seen))]
        elif len(seen) == 1:  # the message's first click (the common case): only the one just recorded
            return 1
        window = self._window
        return sum(1 for (address, _), at in seen.items() if address == ip_address and 0 <= now - at <= window)

    def __len__(self) -> int:
        return len(self._recent)


class Classifier:
    """Labels opens and clicks; holds the user-agent verdict cache and the burst detector."""

    def __init__(self, *, resolver: Any = None, cache_size: int = _UA_CACHE_SIZE,
                 bursts: BurstDetector | None = None) -> None:
        self._resolver = default_resolver() if resolver is None else resolver
        self._cache: dict[str, UserAgentClass] = {}
        self._cache_size = cache_size
        self._bursts = BurstDetector() if bursts is None else bursts

    def user_agent_class(self, user_agent: str) -> UserAgentClass:
        """classify_user_agent, cached per distinct string (oldest entry evicted first)."""
        found = self._cache.get(user_agent)
        if found is None:
            found = classify_user_agent(user_agent, self._resolver)
            if len(self._cache) >= self._cache_size:
                del self._cache[next(iter(self._cache))]
            self._cache[user_agent] = found
        return found

    def classify(self, request: Engagement) -> MachineEngagement:
        """The machine_engagement of one open or click (every click also feeds the burst detector)."""
        links = 0
        if request.is_click:
            links = self._bursts.observe(request.message_id, request.ip_address, request.link, request.now)
        if request.method == "HEAD":
            return MachineEngagement(kind=PREFETCH, reason="HEAD request")
        agent = self.user_agent_class(request.user_agent)
        if agent.verdict is not None:
            return agent.verdict
        if links >= BURST_LINKS:
            return MachineEngagement(
                kind=SECURITY_SCANNER,
                reason=f"{links} links of the message within {BURST_SECONDS:g} s from one address")
        age = request.now - request.injection_time if request.injection_time else None
        # injection_time is truncated to whole seconds: allow one more so no real age under QUICK_SECONDS escapes.
        if age is not None and age < QUICK_SECONDS + 1.0:
            what = "click" if request.is_click else "open"
            kind = SECURITY_SCANNER if request.is_click else PREFETCH
            return MachineEngagement(kind=kind, reason=f"{what} {max(age, 0.0):.1f} s after injection")
        if agent.apple_mail and not request.is_click:
            if is_apple_address(request.ip_address):
                return MachineEngagement(kind=APPLE_MPP, reason="Apple Mail user agent from Apple's 17.0.0.0/8")
            if age is not None and age < MPP_WINDOW_SECONDS:
                return MachineEngagement(
                    kind=APPLE_MPP, reason=f"Apple Mail open {age:.0f} s after injection (likely MPP prefetch)")
        return HUMAN


def is_apple_address(ip_address: str) -> bool:
    """Whether the address is in 17.0.0.0/8, Apple's own block (also as an IPv4-mapped IPv6 address)."""
    return ip_address.removeprefix("::ffff:").startswith("17.")
