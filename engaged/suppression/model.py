"""Suppression entries, the search over them, and the narrow store Protocol both backends implement."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import msgspec

SuppressionType = Literal["transactional", "non_transactional"]
TYPES: tuple[SuppressionType, ...] = ("transactional", "non_transactional")

MANUAL = "Manually Added"
BOUNCE_RULE = "Bounce Rule"
LIST_UNSUBSCRIBE = "List Unsubscribe"
LINK_UNSUBSCRIBE = "Unsubscribe Link"
SPAM_COMPLAINT = "Spam Complaint"
COMPLIANCE = "Compliance"
SOURCES: tuple[str, ...] = (SPAM_COMPLAINT, LIST_UNSUBSCRIBE, BOUNCE_RULE, LINK_UNSUBSCRIBE, MANUAL, COMPLIANCE)
"""SparkPost's source names, as its API writes them."""

_SOURCE_ALIASES = {"link unsubscribe": LINK_UNSUBSCRIBE, **{name.lower(): name for name in SOURCES}}


def source_named(text: str) -> str | None:
    """SparkPost's spelling of a source given in any case (`link unsubscribe` for `Unsubscribe Link` too)."""
    return _SOURCE_ALIASES.get(text.strip().lower())


class SuppressionEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One recipient suppressed for one type; `recipient` is lower-cased, times are epoch seconds."""

    recipient: str
    type: SuppressionType
    source: str = MANUAL
    description: str = ""
    created: float = 0.0
    updated: float = 0.0

    @property
    def domain(self) -> str:
        return self.recipient.rpartition("@")[2]


class SuppressionSearch(msgspec.Struct, frozen=True, kw_only=True):
    """A filter over entries, newest `updated` first unless `ascending`; empty tuples mean "any".

    `after` is a keyset cursor: the (updated, recipient, type) of the last entry of the previous page.
    """

    recipients: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    domain: str = ""
    description: str = ""
    description_strict: bool = False
    since: float | None = None
    until: float | None = None
    ascending: bool = False
    after: tuple[float, str, str] | None = None
    offset: int = 0
    limit: int = 1000


class SuppressionStore(Protocol):
    """Where the suppression list is kept; every write is durable when it returns."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def upsert(self, entries: Sequence[SuppressionEntry], *, followed: int | None = None) -> None:
        """Insert or replace entries by (recipient, type); a replaced entry keeps its `created`.

        `followed` moves the rules' event cursor (never backwards) in the same transaction.
        """
        ...

    async def followed(self) -> int | None:
        """The event seq up to which the automatic rules have run (None before their first run)."""
        ...

    async def search(self, search: SuppressionSearch) -> list[SuppressionEntry]: ...

    async def count(self, search: SuppressionSearch, cap: int) -> int:
        """How many entries match (ignoring paging), counting at most `cap`."""
        ...

    async def delete(self, recipient: str, types: Sequence[str] = TYPES) -> int:
        """Remove the recipient's entries of `types`; returns how many were removed."""
        ...

    async def suppressed(self, recipients: Sequence[str], type: SuppressionType) -> set[str]:
        """Which of `recipients` (lower-cased) have an entry of `type`."""
        ...
