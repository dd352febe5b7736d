"""Which X-MSYS-API fields and options engaged honours, ignores as SparkPost does, or refuses (550 5.6.0).

Pure: the decoded header object in, a refusal reason or None out. Nothing in the header may be
accepted and then silently do nothing, except where SparkPost's SMTP API ignores it too
(`substitution_data`: the template language is not supported over SMTP).
"""

from __future__ import annotations

from typing import Any

__all__ = ["HONOURED_FIELDS", "HONOURED_OPTIONS", "IGNORED_FIELDS", "REFUSED_FIELDS", "REFUSED_OPTIONS", "refusal"]

HONOURED_FIELDS = frozenset({"campaign_id", "metadata", "tags", "options",
                             "cc", "bcc", "archive"})  # copies of their own (addresses.py, inject.py)
HONOURED_OPTIONS = frozenset({
    "open_tracking", "click_tracking", "transactional", "sandbox", "ip_pool",
    "skip_suppression",  # inject.py skips the suppression check for the message
    "inline_css",  # <style> rules inlined before tracking (rewrite/)
    "dkim_key",  # the [[dkim]] key to sign with (delivery/dkim.py); an unknown key: sent unsigned, warned
})
REFUSED_OPTIONS: dict[str, str] = {}
"""SparkPost options engaged does not implement yet (move each to HONOURED_OPTIONS with its implementation)."""
IGNORED_FIELDS = frozenset({"substitution_data"})
"""Accepted and ignored, as SparkPost's SMTP API ignores them."""
REFUSED_FIELDS: dict[str, str] = {}
"""SparkPost fields engaged does not implement yet: refused rather than dropped."""


def refusal(data: dict[str, Any], *, refused: dict[str, str] | None = None) -> str | None:
    """Why the header must be refused with 550 5.6.0 (None: every field and option is honoured or ignored)."""
    refused_fields = REFUSED_FIELDS if refused is None else refused
    for name in data:
        if name in refused_fields:
            return refused_fields[name]
        if name not in HONOURED_FIELDS and name not in IGNORED_FIELDS:
            return f"X-MSYS-API field '{name}' is not supported"
    options = data.get("options")
    if isinstance(options, dict):
        for name in options:
            if name in REFUSED_OPTIONS:
                return REFUSED_OPTIONS[name]
            if name not in HONOURED_OPTIONS:
                return f"X-MSYS-API option 'options.{name}' is not supported"
    return None
