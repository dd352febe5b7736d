"""User agents to mail clients and devices (ua-parser), parsed once per distinct string and cached."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import ua_parser

MACHINE_LABELS = {
    "apple_mpp": "Apple Mail Privacy Protection",
    "google_image_proxy": "Google image proxy",
    "security_scanner": "Security scanner",
    "prefetch": "Link preview / prefetch",
}

_CLIENTS = {"Mobile Safari UI/WKWebView": "iOS Mail or in-app web view"}


def machine_label(kind: str | None) -> str:
    """A readable name for a machine_engagement kind."""
    if kind is None:
        return "human"
    return MACHINE_LABELS.get(kind, kind.replace("_", " "))


class AgentParser:
    """Maps a User-Agent to (mail client, device); keeps the last `size` distinct answers."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._cache: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._resolver: Any = None

    def parse(self, user_agent: str) -> tuple[str, str]:
        text = user_agent.strip()
        if not text:
            return "(no user agent)", "(unknown)"
        found = self._cache.get(text)
        if found is not None:
            self._cache.move_to_end(text)
            return found
        answer = self._parse(text)
        self._cache[text] = answer
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return answer

    def _parse(self, text: str) -> tuple[str, str]:
        if self._resolver is None:
            self._resolver = (ua_parser.RegexResolver(ua_parser.load_lazy_builtins())
                              if ua_parser.RegexResolver is not None
                              else ua_parser.BasicResolver(ua_parser.load_builtins()))
        parsed = self._resolver(text, ua_parser.Domain.ALL)
        client = parsed.user_agent.family if parsed.user_agent is not None else "Other"
        client = _CLIENTS.get(client, client)
        system = parsed.os.family if parsed.os is not None else "Other"
        device = parsed.device.family if parsed.device is not None else "Other"
        if device in ("Other", "Mac", "") or device == system:
            return client, system
        return client, f"{device} ({system})"
