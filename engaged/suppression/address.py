"""What the suppression list accepts as a recipient address."""

from __future__ import annotations

import re

_LOCAL = re.compile(r'[^\s@<>()\[\]\\,;:"\x00-\x1f\x7f]{1,64}|"[^"\\\r\n\x00]{0,62}"')
_LABEL = re.compile(r"(?!-)[^\s@<>()\[\]\\,;:\"'/.\x00-\x1f\x7f]{1,63}(?<!-)")
MAX_LENGTH = 254


def normalise(address: str) -> str | None:
    """The address lower-cased for lookup, or None when it is not `local@domain.tld` (length ≤ 254)."""
    text = address.strip()
    if not text or len(text) > MAX_LENGTH:
        return None
    local, at, domain = text.rpartition("@")
    if not at or _LOCAL.fullmatch(local) is None:
        return None
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        return None
    return text.lower()
