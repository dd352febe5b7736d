"""Shared Protocols: the seams between the parts of the message path (event store, spool, transports)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from engaged.events.model import Event

if TYPE_CHECKING:
    from engaged.events.dialect import Dialect


class FieldFilter(msgspec.Struct, frozen=True):
    """One more condition on a SparkPost event field: any of `values`, exactly or by keywords.

    `keyword` matching is SparkPost's for campaigns, subjects, reasons and the like: case-insensitive,
    every word of a value must occur in the field, and `*` stands for any run of characters.
    `field` is a SparkPost field name, or `recipient_domain`/`sending_domain` (the domain of
    `rcpt_to`/`msg_from`).
    """

    field: str
    values: tuple[str, ...]
    keyword: bool = False
    substring: bool = False  # any value occurs in the field, case-insensitive (query_filters' like)
    negated: bool = False  # holds when the condition does not (notEq, notLike); an event without the field holds


class FilterGroup(msgspec.Struct, frozen=True):
    """One compare group of the Metrics API's `query_filters`: its conditions joined by AND, or by OR."""

    filters: tuple[FieldFilter, ...]
    any_of: bool = False


class EventQuery(msgspec.Struct, frozen=True, kw_only=True):
    """A filter over stored events; empty tuples mean "any".

    Results come in store order (`seq`): oldest first after `after_seq`, or with `newest_first`,
    newest first below `before_seq` (0: from the newest).
    """

    types: tuple[str, ...] = ()
    message_ids: tuple[str, ...] = ()
    campaigns: tuple[str, ...] = ()
    recipients: tuple[str, ...] = ()
    transmissions: tuple[str, ...] = ()
    fields: tuple[FieldFilter, ...] = ()
    groups: tuple[FilterGroup, ...] = ()  # every group must hold, as well as `fields`
    since: float | None = None
    until: float | None = None
    after_seq: int = 0
    before_seq: int = 0
    newest_first: bool = False
    limit: int = 1000


class StoredEvent(msgspec.Struct, frozen=True):
    """An event with its position in the store (a cursor for paging and live follow)."""

    seq: int
    event: Event


class Aggregate(msgspec.Struct, frozen=True):
    """Deliverability counts for one group of events (`campaign_id` is "" when not grouped)."""

    campaign_id: str
    counts: dict[str, int]


class AppendSignal:
    """Wakes waiters in this process when a store commits an append (other processes must poll)."""

    def __init__(self) -> None:
        self.version = 0
        self._waiters: set[asyncio.Future[None]] = set()

    def notify(self) -> None:
        """Called by the store, on its event loop, after a commit."""
        self.version += 1
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, version: int, timeout: float) -> None:
        """Return once `version` is stale (an append committed since it was read) or `timeout` passes."""
        if self.version != version or timeout <= 0:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await asyncio.wait({waiter}, timeout=timeout)
        finally:
            self._waiters.discard(waiter)
            waiter.cancel()


async def wait_for_append(store: EventReader, version: int | None, stopping: asyncio.Event, timeout: float) -> None:
    """Return after `timeout`, at shutdown, or (given the version last seen) at the next local append."""
    waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(stopping.wait())}
    if version is not None:
        waits.add(asyncio.ensure_future(store.appends.wait(version, timeout)))
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waits:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter


class WebhookRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A webhook's definition (SparkPost's fields plus ours); stored as one JSON document."""

    id: str
    name: str
    target: str
    events: tuple[str, ...] = ()
    auth_type: str = "none"
    auth_token: str = ""
    auth_credentials: dict[str, str] = msgspec.field(default_factory=dict)
    auth_request_details: dict[str, Any] = msgspec.field(default_factory=dict)
    custom_headers: dict[str, str] = msgspec.field(default_factory=dict)
    exception_subaccounts: tuple[str, ...] = ()
    active: bool = True
    allow_private_targets: bool = False
    batch_size: int = 1000
    batch_age: float = 1.0
    timeout: float = 10.0
    retry_base: float = 5.0
    retry_max_age: float = 28800.0
    source: str = "api"
    created: float = 0.0


class WebhookState(msgspec.Struct, frozen=True, kw_only=True):
    """A webhook's durable cursor: events up to `cursor` are acknowledged (or dead-lettered).

    A batch in flight covers the matching events in (cursor, pending_last]; it is recorded before its
    first attempt, so a restart resends the same batch (same batch id) with its retry clock intact.
    """

    cursor: int = 0
    pending_last: int = 0
    attempts: int = 0
    first_attempt: float = 0.0
    next_attempt: float = 0.0
    last_error: str = ""


class BatchStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of a webhook batch's latest attempt (SparkPost's batch-status entry)."""

    batch_id: str
    ts: float
    attempts: int
    response_code: str
    ok: bool
    latency: int = 0
    """Milliseconds the target took to answer (0 when it did not answer)."""
    failed_at: float = 0.0
    """When an attempt at this batch last failed (0: never)."""


class WebhookRow(msgspec.Struct, frozen=True):
    """A stored webhook: definition, signing secret and delivery state."""

    record: WebhookRecord
    secret: str
    state: WebhookState


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A batch that was not acknowledged within its webhook's retry_max_age; kept until replayed.

    The events are not copied: the batch is rebuilt from the event store ((after_seq, last_seq] and
    `types`), so replay sends the same events under the same batch id. `state` is `dead`, `queued`
    (replay requested) or `replayed` (delivered by a replay).
    """

    id: int = 0
    webhook_id: str
    batch_id: str
    after_seq: int
    last_seq: int
    types: tuple[str, ...] = ()
    events: int = 0
    attempts: int = 0
    first_attempt: float = 0.0
    failed_at: float = 0.0
    last_error: str = ""
    state: str = "dead"


class CampaignTotals(msgspec.Struct, frozen=True):
    """A campaign's deliverability counts and the times of its oldest and newest events in the range."""

    campaign_id: str
    first_activity: float
    last_activity: float
    counts: dict[str, int]


class SeriesPoint(msgspec.Struct, frozen=True):
    """Engagements in one time bucket (`ts // width`): opens or clicks, human or machine-made."""

    bucket: int
    click: bool
    human: bool
    recipients: int
    """Distinct (message_id, rcpt_to) pairs."""
    events: int


class Tally(msgspec.Struct, frozen=True):
    """Events with one combination of field values (`values`, in the order asked) and machine kind."""

    values: tuple[str | None, ...]
    machine: str | None
    events: int
    recipients: int = 0
    """Distinct (message_id, rcpt_to) pairs, when asked for (else 0)."""


class EventSink(Protocol):
    """Anything events can be appended to; `append` returns when they are durable."""

    async def append(self, events: Sequence[Event]) -> None: ...


class EventReader(Protocol):
    """The event log read by position: searches, counts, the head, and a wake-up on local commits."""

    async def query(self, query: EventQuery) -> list[StoredEvent]: ...

    @property
    def appends(self) -> AppendSignal:
        """Notified after every local commit; followers wait on it between polls."""
        ...

    async def head(self) -> int:
        """The highest stored seq (0 when empty); every smaller seq is already visible."""
        ...

    async def count(self, query: EventQuery, cap: int) -> int:
        """How many events match (ignoring `limit`), counting at most `cap`."""
        ...


class EventLog(EventSink, EventReader, Protocol):
    """The event log, written and read (delivery, inbound mail, the journal loader, followers)."""


class EventReports(EventReader, Protocol):
    """Grouped counts over the log, for the Metrics API and the dashboard; the SQL stays in each store.

    Every method filters by an `EventQuery` (its `limit` and paging are ignored) and answers with
    typed rows; fields are SparkPost field names, a dotted path for nested ones (`geo_ip.country`).
    """

    async def aggregate(self, query: EventQuery, *, by_campaign: bool = False,
                        group: Callable[[Dialect], str] | None = None, names: Sequence[str] | None = None,
                        order_by: str | None = None, limit: int | None = None) -> list[Aggregate]:
        """Deliverability counts (engaged.events.metrics) of the matching events: `names` (default all), in
        one row, or one row per campaign or per value of `group` (SQL for the store's Dialect), ordered by
        the key or by `order_by` descending, at most `limit` rows."""
        ...

    async def campaign_totals(self, query: EventQuery, names: Sequence[str]) -> list[CampaignTotals]:
        """One row per campaign with matching events: the metrics `names` and the oldest and newest ts."""
        ...

    async def series(self, query: EventQuery, width: int) -> list[SeriesPoint]:
        """Matching opens and clicks (open, initial_open, click) per bucket of `width` seconds."""
        ...

    async def tally(self, query: EventQuery, fields: Sequence[str], *, recipients: bool = False,
                    limit: int | None = None) -> list[Tally]:
        """Matching events grouped by `fields` and machine kind, the largest groups first (at most `limit`)."""
        ...


class WebhookRegistry(Protocol):
    """Webhook definitions and what the API shows of their delivery (batch status, dead letters)."""

    async def put_webhook(self, record: WebhookRecord, secret: str) -> None:
        """Insert a webhook (cursor at the current head) or replace its definition (state and secret kept)."""
        ...

    async def webhooks(self) -> list[WebhookRow]: ...

    async def webhook(self, webhook_id: str) -> WebhookRow | None: ...

    async def delete_webhook(self, webhook_id: str) -> bool:
        """Remove a webhook and its dead letters; False when there was none."""
        ...

    async def dead_letters(self, webhook_id: str, state: str | None = None) -> list[DeadLetter]:
        """The webhook's dead letters (only those in `state` when given), oldest first."""
        ...

    async def queue_dead_letters(self, webhook_id: str, ids: Sequence[int] | None) -> int:
        """Mark dead letters (all when `ids` is None) for replay; returns how many."""
        ...

    async def batch_statuses(self, webhook_id: str, limit: int) -> list[BatchStatus]:
        """The latest outcome of each recent batch of a webhook, newest first."""
        ...


class WebhookLeases(Protocol):
    """A webhook's delivery lease and the durable cursor its holder moves."""

    async def claim_webhook(self, webhook_id: str, owner: str, now: float, until: float) -> WebhookRow | None:
        """Take or renew the delivery lease; None when another owner holds it or the webhook is gone."""
        ...

    async def release_webhook(self, webhook_id: str, owner: str) -> None: ...

    async def save_webhook_state(self, webhook_id: str, owner: str, state: WebhookState) -> bool:
        """Store the state if `owner` still holds the lease."""
        ...

    async def add_dead_letter(self, letter: DeadLetter, owner: str, state: WebhookState) -> bool:
        """In one transaction: keep the letter and store the state (moving the cursor past it)."""
        ...

    async def finish_dead_letter(self, letter: DeadLetter) -> None:
        """Record a replay's outcome (state, attempts, failed_at, last_error)."""
        ...

    async def record_batch(self, webhook_id: str, status: BatchStatus) -> None:
        """Keep the latest attempt's outcome of a batch (its attempts counted), the newest 1000 per webhook."""
        ...


class WebhookOutbox(EventReader, WebhookRegistry, WebhookLeases, Protocol):
    """What webhook delivery needs: the log it reads batches from, the definitions and the leases."""


class EventStore(EventLog, EventReports, WebhookOutbox, Protocol):
    """Both stores implement every protocol above; only app.py (and tools) hold the whole store.

    `append` returns only when the events are durable (committed).
    """

    async def open(self) -> None: ...

    async def close(self) -> None: ...


class LinkMinter(Protocol):
    """Builds the tracked URLs for one recipient's copy; the rewriter's only view of tokens and keys."""

    def click_url(self, target_url: str, link_name: str, sublink: str | None, unsubscribe: bool) -> str:
        """The click-tracked URL that redirects to `target_url` (already HTML-decoded)."""
        ...

    def open_url(self, initial: bool) -> str:
        """The open-pixel URL; `initial` is the top pixel (initial_open), else the bottom one (open)."""
        ...
