"""Webhook delivery: each webhook follows the event store from its durable cursor, batches, signs, POSTs, retries.

Per webhook, one batch is in flight at a time. A batch covers the matching events in (cursor, last]
and is recorded in the store before its first attempt, so a restart resends the same events under the
same batch id (at-least-once). A batch closes when it holds `batch_size` events, when it is
`batch_age` seconds old, or when no new event arrived for _QUIET seconds. Failed attempts are retried
with exponential backoff and jitter until `retry_max_age`, then the batch becomes a dead letter (kept,
replayable) and the cursor moves past it. A lease in the store lets processes sharing PostgreSQL run
one deliverer per webhook.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import httpx
import msgspec

from engaged.events.model import Event
from engaged.prometheus import Metrics
from engaged.sinks.guard import Networks, TargetRefused, guarded_transport
from engaged.sinks.oauth import TokenCache, TokenError
from engaged.sinks.signing import batch_body, batch_id, request_headers
from engaged.types import (
    BatchStatus,
    DeadLetter,
    EventQuery,
    StoredEvent,
    WebhookOutbox,
    WebhookRecord,
    WebhookRow,
    WebhookState,
)
from engaged.webhook_rules import LEASE, RENEW

log = logging.getLogger("engaged")

IDLE_POLL = 0.5
"""How often an idle worker polls the store for appends made by other processes."""
_QUIET = 0.1
_MAX_DELAY = 1800.0


class _Job(msgspec.Struct, kw_only=True):
    """One batch being delivered: the main cursor's batch, or a dead letter being replayed."""

    batch_id: str
    after_seq: int
    last_seq: int
    types: tuple[str, ...]
    limit: int
    attempts: int = 0
    first_attempt: float = 0.0
    next_attempt: float = 0.0
    letter: DeadLetter | None = None


def backoff(base: float, attempts: int, jitter: float) -> float:
    """Delay before the next attempt after `attempts` failures: base·2^(n-1), capped, times 0.5–1.0 (jitter)."""
    return float(min(base * 2.0 ** max(attempts - 1, 0), _MAX_DELAY) * (0.5 + jitter / 2))


class WebhookWorker:
    """Delivers one webhook's events while this process holds its lease."""

    def __init__(self, webhook_id: str, store: WebhookOutbox, metrics: Metrics, owner: str, *,
                 clock: Callable[[], float] = time.time, jitter: Callable[[], float] = random.random,
                 networks: Networks = (), tokens: TokenCache | None = None) -> None:
        self.webhook_id = webhook_id
        self._networks = networks
        self._tokens = tokens or TokenCache()
        self._store = store
        self._metrics = metrics
        self._owner = owner
        self._clock = clock
        self._jitter = jitter
        self._stopping = asyncio.Event()
        self._replay: _Job | None = None
        self._cached: tuple[str, list[Event]] | None = None
        self._clients: dict[bool, httpx.AsyncClient] = {}
        self._renew_at = 0.0
        self._saved_idle_at = 0.0

    async def run(self) -> None:
        """Claim, deliver, repeat until stop(); every store or network failure is retried."""
        try:
            while not self._stopping.is_set():
                try:
                    row = await self._current()
                    if row is None:
                        await self._pause(RENEW)
                    else:
                        await self._step(row)
                except Exception:  # a store outage must not end delivery; log it and try again
                    log.exception("webhook %s: delivery step failed", self.webhook_id)
                    await self._pause(RENEW / 2)
        finally:
            for client in self._clients.values():
                await client.aclose()
            self._clients.clear()

    def stop(self) -> None:
        self._stopping.set()

    async def _current(self) -> WebhookRow | None:
        """The webhook's row while this worker holds the lease (renewed every RENEW seconds), else None."""
        now = self._clock()
        if now < self._renew_at:
            return await self._store.webhook(self.webhook_id)
        row = await self._store.claim_webhook(self.webhook_id, self._owner, now, now + LEASE)
        self._renew_at = now + RENEW if row is not None else 0.0
        return row

    async def _pause(self, seconds: float, version: int | None = None) -> None:
        """Sleep up to `seconds`; earlier on stop(), or on a local append when `version` is given."""
        stop = asyncio.ensure_future(self._stopping.wait())
        waits: set[asyncio.Future[Any]] = {stop}
        if version is not None:
            waits.add(asyncio.ensure_future(self._store.appends.wait(version, seconds)))
        try:
            await asyncio.wait(waits, timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    async def _step(self, row: WebhookRow) -> None:
        state = row.state
        if not row.record.active:  # SparkPost: an inactive webhook receives no batches; its events are skipped
            await self._skip_inactive(row)
            return
        if state.pending_last > state.cursor:
            job = _Job(batch_id=batch_id(row.record.id, state.cursor, state.pending_last), after_seq=state.cursor,
                       last_seq=state.pending_last, types=row.record.events, limit=row.record.batch_size,
                       attempts=state.attempts, first_attempt=state.first_attempt, next_attempt=state.next_attempt)
            await self._work(row, job)
            return
        if self._replay is None:
            queued = await self._store.dead_letters(row.record.id, "queued")
            if queued:
                letter = queued[0]
                self._replay = _Job(batch_id=letter.batch_id, after_seq=letter.after_seq, last_seq=letter.last_seq,
                                    types=letter.types, limit=max(letter.events, 1), first_attempt=self._clock(),
                                    letter=letter)
        if self._replay is not None:
            await self._work(row, self._replay)
            return
        await self._collect(row)

    async def _skip_inactive(self, row: WebhookRow) -> None:
        version = self._store.appends.version
        head = await self._store.head()
        if (head > row.state.cursor or row.state.pending_last) and time.monotonic() - self._saved_idle_at >= 1.0:
            self._saved_idle_at = time.monotonic()
            self._cached = None
            await self._store.save_webhook_state(row.record.id, self._owner, WebhookState(cursor=head))
        await self._pause(min(IDLE_POLL, RENEW), version)

    async def _collect(self, row: WebhookRow) -> None:
        """Wait for matching events after the cursor and close a batch of them (or move an idle cursor)."""
        record, cursor = row.record, row.state.cursor
        version = self._store.appends.version
        head = await self._store.head()
        events = await self._store.query(EventQuery(types=record.events, after_seq=cursor, limit=record.batch_size))
        self._metrics.webhook_lag_events.labels(record.name).set(max(head - cursor, 0))
        if not events:
            self._metrics.webhook_lag_seconds.labels(record.name).set(0)
            if head > cursor and time.monotonic() - self._saved_idle_at >= 1.0:  # skipped events: at most 1 write/s
                self._saved_idle_at = time.monotonic()
                await self._store.save_webhook_state(record.id, self._owner, WebhookState(cursor=head))
            await self._pause(min(IDLE_POLL, RENEW), version)
            return
        opened = last_growth = time.monotonic()
        quiet = min(_QUIET, record.batch_age)
        while len(events) < record.batch_size and not self._stopping.is_set():
            now = time.monotonic()
            left = min(opened + record.batch_age, last_growth + quiet) - now
            if left <= 0:
                break
            version = self._store.appends.version
            await self._pause(min(left, IDLE_POLL), version)
            head = await self._store.head()
            more = await self._store.query(EventQuery(types=record.events, after_seq=events[-1].seq,
                                                      limit=record.batch_size - len(events)))
            if more:
                events.extend(more)
                last_growth = time.monotonic()
        # Every matching event up to `head` was read unless the batch is full (the store shows seq n only
        # once every smaller seq is visible), so the batch may end at head and skip non-matching events.
        last = events[-1].seq if len(events) >= record.batch_size else max(head, events[-1].seq)
        now = self._clock()
        job = _Job(batch_id=batch_id(record.id, cursor, last), after_seq=cursor, last_seq=last, types=record.events,
                   limit=record.batch_size, first_attempt=now, next_attempt=now)
        pending = WebhookState(cursor=cursor, pending_last=last, first_attempt=now, next_attempt=now)
        if await self._store.save_webhook_state(record.id, self._owner, pending):
            self._cached = (job.batch_id, [item.event for item in events])
            await self._work(row, job)

    async def _work(self, row: WebhookRow, job: _Job) -> None:
        """One attempt at `job` when it is due, else wait (at most RENEW, so the lease stays fresh)."""
        wait = job.next_attempt - self._clock()
        if wait > 0:
            await self._pause(min(wait, RENEW))
            return
        record = row.record
        events = await self._events(job)
        self._metrics.webhook_lag_seconds.labels(record.name).set(
            max(self._clock() - float(events[0].timestamp), 0.0) if events else 0.0)
        reason, detail = await self._attempt(record, row.secret, job.batch_id, events)
        if reason is None:
            await self._acknowledge(record, job, len(events))
        else:
            self._metrics.webhook_failures.labels(record.name, reason).inc()
            await self._retry_later(record, job, len(events), detail)

    async def _events(self, job: _Job) -> list[Event]:
        if self._cached is not None and self._cached[0] == job.batch_id:
            return self._cached[1]
        stored: list[StoredEvent] = await self._store.query(
            EventQuery(types=job.types, after_seq=job.after_seq, limit=job.limit))
        events = [item.event for item in stored if item.seq <= job.last_seq]
        self._cached = (job.batch_id, events)
        return events

    async def _attempt(self, record: WebhookRecord, secret: str, batch: str,
                       events: list[Event]) -> tuple[str | None, str]:
        """POST the batch once: (None, "") on a 2xx answer within the timeout, else (reason, detail)."""
        if record.exception_subaccounts:
            excluded = set(record.exception_subaccounts)
            events = [event for event in events if event.subaccount_id not in excluded]
        if not events:
            return None, ""
        body = batch_body(events)
        client = self._client(record.allow_private_targets)
        access_token = None
        if record.auth_type == "oauth2":
            try:
                access_token = await self._tokens.token(record.id, record.auth_request_details, client,
                                                        record.timeout)
            except TokenError as error:
                await self._record(record, batch, "", ok=False, latency=0)
                return "oauth2", str(error)
        headers = request_headers(record, secret, batch, body, int(self._clock()), access_token=access_token)
        started = time.monotonic()
        try:
            response = await asyncio.wait_for(
                client.post(record.target, content=body, headers=headers, timeout=record.timeout), record.timeout)
        except (TimeoutError, httpx.TimeoutException):
            await self._record(record, batch, "", ok=False, latency=0)
            return "timeout", f"no answer within {record.timeout:g} s"
        except httpx.HTTPError as error:
            await self._record(record, batch, "", ok=False, latency=0)
            refused = isinstance(error.__cause__, TargetRefused)
            return ("refused" if refused else "connect"), f"{type(error).__name__}: {error}"
        latency = int((time.monotonic() - started) * 1000)
        ok = 200 <= response.status_code < 300
        await self._record(record, batch, str(response.status_code), ok=ok, latency=latency)
        if ok:
            return None, ""
        if access_token is not None and response.status_code in (400, 401):  # SparkPost: the token expired
            self._tokens.invalidate(record.id)
        return f"http_{response.status_code}", f"HTTP {response.status_code}"

    async def _record(self, record: WebhookRecord, batch: str, code: str, *, ok: bool, latency: int) -> None:
        """Keep the attempt's outcome for batch-status and last_successful/last_failure (never fails delivery)."""
        try:
            await self._store.record_batch(record.id, BatchStatus(batch_id=batch, ts=self._clock(), attempts=1,
                                                                  response_code=code, ok=ok, latency=latency))
        except Exception:  # a store hiccup must not turn a delivered batch into a retry; it is logged
            log.exception("webhook %s: cannot record the outcome of batch %s", record.name, batch)

    def _client(self, allow_private: bool) -> httpx.AsyncClient:
        client = self._clients.get(allow_private)
        if client is None:
            client = httpx.AsyncClient(transport=guarded_transport(allow_private, self._networks),
                                       follow_redirects=False, trust_env=False)
            self._clients[allow_private] = client
        return client

    async def _acknowledge(self, record: WebhookRecord, job: _Job, count: int) -> None:
        self._metrics.webhook_delivered.labels(record.name).inc(count)
        self._cached = None
        if job.letter is not None:
            self._replay = None
            await self._store.finish_dead_letter(msgspec.structs.replace(
                job.letter, state="replayed", attempts=job.letter.attempts + job.attempts + 1))
            return
        await self._store.save_webhook_state(record.id, self._owner, WebhookState(cursor=job.last_seq))
        self._metrics.webhook_lag_seconds.labels(record.name).set(0)

    async def _retry_later(self, record: WebhookRecord, job: _Job, count: int, detail: str) -> None:
        now = self._clock()
        job.attempts += 1
        deadline = job.first_attempt + record.retry_max_age
        if now < deadline:
            job.next_attempt = min(now + backoff(record.retry_base, job.attempts, self._jitter()), deadline)
            if job.attempts == 1:
                log.warning("webhook %s: batch %s (%d events) failed: %s; retrying for up to %g s", record.name,
                            job.batch_id, count, detail, record.retry_max_age)
            if job.letter is None:
                await self._store.save_webhook_state(record.id, self._owner, WebhookState(
                    cursor=job.after_seq, pending_last=job.last_seq, attempts=job.attempts,
                    first_attempt=job.first_attempt, next_attempt=job.next_attempt, last_error=detail))
            return
        self._metrics.webhook_dead_letters.labels(record.name).inc()
        self._cached = None
        log.warning("webhook %s: batch %s (%d events) undelivered after %d attempts, kept as a dead letter: %s",
                    record.name, job.batch_id, count, job.attempts, detail)
        if job.letter is not None:
            self._replay = None
            await self._store.finish_dead_letter(msgspec.structs.replace(
                job.letter, state="dead", attempts=job.letter.attempts + job.attempts, failed_at=now,
                last_error=detail))
            return
        letter = DeadLetter(webhook_id=record.id, batch_id=job.batch_id, after_seq=job.after_seq,
                            last_seq=job.last_seq, types=job.types, events=count, attempts=job.attempts,
                            first_attempt=job.first_attempt, failed_at=now, last_error=detail)
        await self._store.add_dead_letter(letter, self._owner, WebhookState(cursor=job.last_seq))


class ValidationAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """What the target answered a validation batch (`status` 0: it did not answer; `error` says why)."""

    status: int
    headers: dict[str, str]
    body: str
    error: str = ""
    stage: str = "target"  # "token": the OAuth 2.0 token URL failed, so the target was never asked

    @property
    def ok(self) -> bool:
        """The target itself answered 2xx (a token URL's 2xx without a usable token is a failure)."""
        return self.stage == "target" and 200 <= self.status < 300


VALIDATION_BATCH = b'[{"msys":{}}]'
"""SparkPost's validation batch: one empty msys object."""


async def send_test_batch(record: WebhookRecord, secret: str, *, networks: Networks = (),
                          tokens: TokenCache | None = None) -> ValidationAnswer:
    """POST the validation batch to the webhook's target with its headers, auth and signature, once."""
    async with httpx.AsyncClient(transport=guarded_transport(record.allow_private_targets, networks),
                                 follow_redirects=False, trust_env=False) as client:
        access_token = None
        if record.auth_type == "oauth2":
            try:
                access_token = await (tokens or TokenCache()).token(record.id, record.auth_request_details, client,
                                                                    record.timeout)
            except TokenError as error:
                return ValidationAnswer(status=error.status or 0, headers={}, body=error.body, error=str(error),
                                        stage="token")
        batch = f"validate-{int(time.time() * 1000)}"
        headers = request_headers(record, secret, batch, VALIDATION_BATCH, int(time.time()),
                                  access_token=access_token)
        try:
            response = await asyncio.wait_for(client.post(record.target, content=VALIDATION_BATCH, headers=headers,
                                                          timeout=record.timeout), record.timeout)
        except (TimeoutError, httpx.TimeoutException):
            return ValidationAnswer(status=0, headers={}, body="", error=f"no answer within {record.timeout:g} s")
        except httpx.HTTPError as error:
            return ValidationAnswer(status=0, headers={}, body="", error=f"{type(error).__name__}: {error}")
    return ValidationAnswer(status=response.status_code, headers=dict(response.headers), body=response.text[:10000])
