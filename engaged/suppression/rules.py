"""Automatic suppression entries: follows the event store and suppresses recipients that bounced hard,
unsubscribed or complained (SparkPost's rules; idempotent, so any number of followers may run)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from engaged.errors import StoreError
from engaged.events.model import Event, event_type
from engaged.suppression.model import (
    BOUNCE_RULE,
    LINK_UNSUBSCRIBE,
    LIST_UNSUBSCRIBE,
    SPAM_COMPLAINT,
    SuppressionEntry,
    SuppressionStore,
)
from engaged.types import EventQuery, EventReader, wait_for_append

log = logging.getLogger("engaged.suppression")

HARD_BOUNCE_CLASSES = frozenset({"10", "30", "90"})
"""SparkPost's "Hard" bounce classes: invalid recipient, no RCPT, unsubscribe request."""
WATCHED = ("bounce", "out_of_band", "link_unsubscribe", "list_unsubscribe", "spam_complaint")
_PAGE = 1000


def entry_for(event: Event) -> SuppressionEntry | None:
    """The entry an event makes, or None. Entries take the event's time, so replays change nothing.

    A hard bounce suppresses the type of the message that bounced; unsubscribes and complaints
    suppress non-transactional mail (SparkPost's rule: the recipient still gets receipts and resets).
    """
    kind = event_type(event)
    when = float(event.timestamp)
    recipient = event.rcpt_to.lower()
    if not recipient:
        return None
    if kind in ("bounce", "out_of_band"):
        bounce_class = str(getattr(event, "bounce_class", ""))
        if bounce_class not in HARD_BOUNCE_CLASSES:
            return None
        transactional = getattr(event, "transactional", "0") == "1"
        reason = str(getattr(event, "reason", ""))[:200]
        prefix = "out-of-band bounce" if kind == "out_of_band" else "bounce"
        return SuppressionEntry(recipient=recipient, type="transactional" if transactional else "non_transactional",
                                source=BOUNCE_RULE, description=f"{prefix} class {bounce_class}: {reason}".strip(),
                                created=when, updated=when)
    if kind == "link_unsubscribe":
        return SuppressionEntry(recipient=recipient, type="non_transactional", source=LINK_UNSUBSCRIBE,
                                description="Unsubscribed using an unsubscribe link", created=when, updated=when)
    if kind == "list_unsubscribe":
        return SuppressionEntry(recipient=recipient, type="non_transactional", source=LIST_UNSUBSCRIBE,
                                description="Unsubscribed using list unsubscribe header", created=when, updated=when)
    if kind == "spam_complaint":
        fbtype = str(getattr(event, "fbtype", "")) or "abuse"
        report_by = str(getattr(event, "report_by", ""))
        description = f"Spam complaint ({fbtype})" + (f" reported by {report_by}" if report_by else "")
        return SuppressionEntry(recipient=recipient, type="non_transactional", source=SPAM_COMPLAINT,
                                description=description[:200], created=when, updated=when)
    return None


def entries_for(events: Sequence[Event]) -> list[SuppressionEntry]:
    """One entry per (recipient, type): the latest event wins."""
    latest: dict[tuple[str, str], SuppressionEntry] = {}
    for event in events:
        entry = entry_for(event)
        if entry is not None:
            latest[(entry.recipient, entry.type)] = entry
    return list(latest.values())


class SuppressionRules:
    """Follows the event store and adds the entries `entry_for` makes.

    Where it got to is kept in the suppression store, in the transaction that adds the entries, so a
    restart goes on from there (a deleted entry is not brought back by its old event). A first start
    begins at the event store's head. Entries are idempotent, so two followers on one shared store
    (several nodes on PostgreSQL) do no harm.
    """

    def __init__(self, events: EventReader, suppressions: SuppressionStore, *, poll: float = 0.25) -> None:
        self._events = events
        self._suppressions = suppressions
        self._poll = poll
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.cursor = 0
        self.added = 0

    async def start(self) -> None:
        followed = await self._suppressions.followed()
        if followed is None:
            followed = await self._events.head()
            await self._suppressions.upsert([], followed=followed)
        self.cursor = followed
        self._stopping.clear()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            version = self._events.appends.version
            try:
                page = await self._events.query(EventQuery(types=WATCHED, after_seq=self.cursor, limit=_PAGE))
                if page:
                    entries = entries_for([stored.event for stored in page])
                    await self._suppressions.upsert(entries, followed=page[-1].seq)
                    self.added += len(entries)
                    self.cursor = page[-1].seq
                    continue
            except StoreError as error:
                log.warning("suppression rules: %s; retrying", error)
            await wait_for_append(self._events, version, self._stopping, self._poll)
