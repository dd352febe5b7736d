"""Shared Protocols: the seams between the parts of the message path (event store, spool, transports)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from engaged.events.model import Event


class EventQuery(msgspec.Struct, frozen=True, kw_only=True):
    """A filter over stored events; empty tuples mean "any"."""

    types: tuple[str, ...] = ()
    message_ids: tuple[str, ...] = ()
    campaigns: tuple[str, ...] = ()
    recipients: tuple[str, ...] = ()
    transmissions: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None
    after_seq: int = 0
    limit: int = 1000


class StoredEvent(msgspec.Struct, frozen=True):
    """An event with its position in the store (a cursor for paging and live follow)."""

    seq: int
    event: Event


class EventStore(Protocol):
    """Where events are kept. `append` returns only when the events are durable (committed)."""

    async def open(self) -> None: ...

    async def append(self, events: Sequence[Event]) -> None: ...

    async def query(self, query: EventQuery) -> list[StoredEvent]: ...

    async def close(self) -> None: ...


class LinkMinter(Protocol):
    """Builds the tracked URLs for one recipient's copy; the rewriter's only view of tokens and keys."""

    def click_url(self, target_url: str, link_name: str, sublink: str | None, unsubscribe: bool) -> str:
        """The click-tracked URL that redirects to `target_url` (already HTML-decoded)."""
        ...

    def open_url(self, initial: bool) -> str:
        """The open-pixel URL; `initial` is the top pixel (initial_open), else the bottom one (open)."""
        ...
