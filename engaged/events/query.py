"""SQL shared by both event stores beyond appends: counts, deliverability aggregates, webhook cursors, dead letters."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import msgspec

from engaged.events.dialect import SQLITE, Dialect
from engaged.events.metrics import metric_sql
from engaged.events.model import Event, encode_event, event_type
from engaged.types import (
    BatchStatus,
    DeadLetter,
    EventQuery,
    FieldFilter,
    WebhookRecord,
    WebhookRow,
    WebhookState,
)

Row = tuple[str, str, float, str, str, str, str, str | None, bytes]
"""The columns of one `events` row, in insert order (the last is the JSON body)."""

Step = tuple[str, Sequence[object], bool]
"""One statement of a transaction: SQL with `?` placeholders, parameters, and whether it must change a row."""

EVENT_COLUMNS = "event_id, type, ts, message_id, transmission_id, campaign_id, rcpt_to, machine, body"
TRACK_TYPES = ("open", "initial_open", "click", "link_unsubscribe")


def machine_of(event: Event) -> str | None:
    """The tracker's machine kind for an engagement it flagged as not human, else None."""
    machine = getattr(event, "machine_engagement", None)
    return None if machine is None else machine.kind


def row_of(event: Event) -> Row:
    """The indexed columns and the JSON body of one event, as both stores write them.

    Raises ValueError for a timestamp that is not finite epoch seconds or text that is not Unicode.
    """
    ts = float(event.timestamp)
    if not math.isfinite(ts):
        raise ValueError(f"timestamp is not epoch seconds: {event.timestamp!r}")
    return (
        event.event_id,
        event_type(event),
        ts,
        event.message_id,
        event.transmission_id,
        event.campaign_id,
        event.rcpt_to,
        machine_of(event),
        encode_event(event),
    )


def keyword_pattern(value: str) -> list[str]:
    """LIKE patterns (`\\` escapes) that must all match for SparkPost's keyword search of `value`."""
    words = value.lower().split()
    escaped = [word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("*", "%")
               for word in words]
    return [f"%{word}%" for word in escaped]


def _field_clause(dialect: Dialect, item: FieldFilter, placeholder: str) -> tuple[str, list[object]]:
    if item.negated:
        clause, values = _field_clause(dialect, msgspec.structs.replace(item, negated=False), placeholder)
        return f"NOT COALESCE({clause}, FALSE)", values  # an event without the field has no such value
    expression = dialect.field(item.field)
    if item.substring:
        escaped = [value.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                   for value in item.values]
        return ("(" + " OR ".join(f"LOWER({expression}) LIKE {placeholder} ESCAPE '\\'" for _ in escaped) + ")",
                [f"%{value}%" for value in escaped])
    if not item.keyword:
        return f"{expression} IN ({', '.join(placeholder for _ in item.values)})", list(item.values)
    alternatives: list[str] = []
    params: list[object] = []
    for value in item.values:
        patterns = keyword_pattern(value)
        if not patterns:
            continue
        alternatives.append("(" + " AND ".join(f"LOWER({expression}) LIKE {placeholder} ESCAPE '\\'"
                                               for _ in patterns) + ")")
        params.extend(patterns)
    return ("(" + " OR ".join(alternatives) + ")" if alternatives else "1 = 0"), params


def where_clause(query: EventQuery, placeholder: str = "?", dialect: Dialect = SQLITE) -> tuple[str, list[object]]:
    """SQL WHERE text and parameters for a query (shared by the SQLite and PostgreSQL stores)."""
    clauses = ["seq > " + placeholder]
    params: list[object] = [query.after_seq]
    if query.before_seq > 0:
        clauses.append("seq < " + placeholder)
        params.append(query.before_seq)
    for column, values in (("type", query.types), ("message_id", query.message_ids),
                           ("campaign_id", query.campaigns), ("rcpt_to", query.recipients),
                           ("transmission_id", query.transmissions)):
        if values:
            clauses.append(f"{column} IN ({', '.join(placeholder for _ in values)})")
            params.extend(values)
    for item in query.fields:
        clause, field_params = _field_clause(dialect, item, placeholder)
        clauses.append(clause)
        params.extend(field_params)
    for group in query.groups:
        parts = [_field_clause(dialect, item, placeholder) for item in group.filters]
        clauses.append("(" + (" OR " if group.any_of else " AND ").join(part for part, _ in parts) + ")")
        params.extend(param for _, part_params in parts for param in part_params)
    if query.since is not None:
        clauses.append("ts >= " + placeholder)
        params.append(query.since)
    if query.until is not None:
        clauses.append("ts < " + placeholder)
        params.append(query.until)
    return " AND ".join(clauses), params


METRICS: dict[str, str] = metric_sql(SQLITE)
"""Every metric name and its aggregate over `events` rows (engaged.events.metrics; SQLite's spelling)."""

WEBHOOK_SCHEMA_SQLITE = """
CREATE TABLE IF NOT EXISTS webhooks (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    definition BLOB NOT NULL,
    secret TEXT NOT NULL,
    acked_seq INTEGER NOT NULL DEFAULT 0,
    pending_last INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    first_attempt REAL NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    owner TEXT,
    lease_until REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS webhook_dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    after_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    types TEXT NOT NULL,
    event_count INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    first_attempt REAL NOT NULL,
    failed_at REAL NOT NULL,
    last_error TEXT NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_dead_letters_hook ON webhook_dead_letters (webhook_id, state);
CREATE TABLE IF NOT EXISTS webhook_batches (
    webhook_id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    ts REAL NOT NULL,
    attempts INTEGER NOT NULL,
    response_code TEXT NOT NULL,
    ok INTEGER NOT NULL,
    latency INTEGER NOT NULL,
    failed_at REAL NOT NULL,
    PRIMARY KEY (webhook_id, batch_id)
);
CREATE INDEX IF NOT EXISTS webhook_batches_recent ON webhook_batches (webhook_id, ts);
"""

WEBHOOK_SCHEMA_POSTGRES = (
    WEBHOOK_SCHEMA_SQLITE
    .replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
    .replace("INTEGER", "BIGINT")
    .replace("REAL", "DOUBLE PRECISION")
    .replace("BLOB", "BYTEA")
)

_WEBHOOK_COLUMNS = "definition, secret, acked_seq, pending_last, attempts, first_attempt, next_attempt, last_error"
_LETTER_COLUMNS = ("webhook_id, batch_id, after_seq, last_seq, types, event_count, attempts, first_attempt, failed_at,"
                   " last_error, state")
_SAVE_STATE = ("UPDATE webhooks SET acked_seq = ?, pending_last = ?, attempts = ?, first_attempt = ?,"
               " next_attempt = ?, last_error = ? WHERE id = ? AND owner = ?")

_KEPT_BATCHES = 1000
_record_decoder = msgspec.json.Decoder(WebhookRecord)
_types_decoder = msgspec.json.Decoder(tuple[str, ...])


def _row(columns: Sequence[Any]) -> WebhookRow:
    definition, secret, acked, pending, attempts, first, next_attempt, error = columns
    state = WebhookState(cursor=int(acked), pending_last=int(pending), attempts=int(attempts),
                         first_attempt=float(first), next_attempt=float(next_attempt), last_error=str(error))
    return WebhookRow(_record_decoder.decode(bytes(definition)), str(secret), state)


def _letter(columns: Sequence[Any]) -> DeadLetter:
    (letter_id, webhook_id, batch_id, after_seq, last_seq, types, count, attempts, first, failed, error,
     state) = columns
    return DeadLetter(id=int(letter_id), webhook_id=webhook_id, batch_id=batch_id, after_seq=int(after_seq),
                      last_seq=int(last_seq), types=_types_decoder.decode(types), events=int(count),
                      attempts=int(attempts), first_attempt=float(first), failed_at=float(failed),
                      last_error=error, state=state)


def _state_params(webhook_id: str, owner: str, state: WebhookState) -> list[object]:
    return [state.cursor, state.pending_last, state.attempts, state.first_attempt, state.next_attempt,
            state.last_error, webhook_id, owner]


class StoreQueries:
    """The EventReader counts and the webhook registry and leases, written once; each store supplies `_fetch`
    and `_transact` (and its `_dialect`). The reports are in engaged.events.reports."""

    _dialect: Dialect = SQLITE

    async def _fetch(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        """Rows of one read statement (`?` placeholders)."""
        raise NotImplementedError

    async def _transact(self, steps: Sequence[Step]) -> list[int] | None:
        """Run the steps in one transaction; row counts, or None (rolled back) if a required step changed nothing."""
        raise NotImplementedError

    async def head(self) -> int:
        rows = await self._fetch("SELECT COALESCE(MAX(seq), 0) FROM events", [])
        return int(rows[0][0])

    async def count(self, query: EventQuery, cap: int) -> int:
        where, params = where_clause(query, dialect=self._dialect)
        sql = f"SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE {where} LIMIT ?) AS matching"
        rows = await self._fetch(sql, [*params, cap])
        return int(rows[0][0])

    async def put_webhook(self, record: WebhookRecord, secret: str) -> None:
        await self._transact([(
            "INSERT INTO webhooks (id, source, definition, secret, acked_seq)"
            " VALUES (?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) FROM events))"
            " ON CONFLICT (id) DO UPDATE SET source = excluded.source, definition = excluded.definition",
            [record.id, record.source, msgspec.json.encode(record), secret], False,
        )])

    async def webhooks(self) -> list[WebhookRow]:
        rows = await self._fetch(f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks ORDER BY id", [])
        return [_row(row) for row in rows]

    async def webhook(self, webhook_id: str) -> WebhookRow | None:
        rows = await self._fetch(f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE id = ?", [webhook_id])
        return _row(rows[0]) if rows else None

    async def delete_webhook(self, webhook_id: str) -> bool:
        counts = await self._transact([
            ("DELETE FROM webhook_dead_letters WHERE webhook_id = ?", [webhook_id], False),
            ("DELETE FROM webhook_batches WHERE webhook_id = ?", [webhook_id], False),
            ("DELETE FROM webhooks WHERE id = ?", [webhook_id], False),
        ])
        return bool(counts and counts[-1])

    async def claim_webhook(self, webhook_id: str, owner: str, now: float, until: float) -> WebhookRow | None:
        claimed = await self._transact([(
            "UPDATE webhooks SET owner = ?, lease_until = ?"
            " WHERE id = ? AND (owner IS NULL OR owner = ? OR lease_until < ?)",
            [owner, until, webhook_id, owner, now], True,
        )])
        return None if claimed is None else await self.webhook(webhook_id)

    async def release_webhook(self, webhook_id: str, owner: str) -> None:
        await self._transact([("UPDATE webhooks SET owner = NULL, lease_until = 0 WHERE id = ? AND owner = ?",
                               [webhook_id, owner], False)])

    async def save_webhook_state(self, webhook_id: str, owner: str, state: WebhookState) -> bool:
        return await self._transact([(_SAVE_STATE, _state_params(webhook_id, owner, state), True)]) is not None

    async def add_dead_letter(self, letter: DeadLetter, owner: str, state: WebhookState) -> bool:
        marks = ", ".join("?" for _ in _LETTER_COLUMNS.split(","))
        values = [letter.webhook_id, letter.batch_id, letter.after_seq, letter.last_seq,
                  msgspec.json.encode(letter.types).decode(), letter.events, letter.attempts, letter.first_attempt,
                  letter.failed_at, letter.last_error, letter.state]
        return await self._transact([
            (f"INSERT INTO webhook_dead_letters ({_LETTER_COLUMNS}) VALUES ({marks})", values, True),
            (_SAVE_STATE, _state_params(letter.webhook_id, owner, state), True),
        ]) is not None

    async def dead_letters(self, webhook_id: str, state: str | None = None) -> list[DeadLetter]:
        sql = f"SELECT id, {_LETTER_COLUMNS} FROM webhook_dead_letters WHERE webhook_id = ?"
        params: list[object] = [webhook_id]
        if state is not None:
            sql += " AND state = ?"
            params.append(state)
        rows = await self._fetch(sql + " ORDER BY id", params)
        return [_letter(row) for row in rows]

    async def queue_dead_letters(self, webhook_id: str, ids: Sequence[int] | None) -> int:
        sql = "UPDATE webhook_dead_letters SET state = 'queued' WHERE webhook_id = ? AND state = 'dead'"
        params: list[object] = [webhook_id]
        if ids is not None:
            if not ids:
                return 0
            sql += f" AND id IN ({', '.join('?' for _ in ids)})"
            params.extend(ids)
        counts = await self._transact([(sql, params, False)])
        return counts[0] if counts else 0

    async def record_batch(self, webhook_id: str, status: BatchStatus) -> None:
        await self._transact([
            ("INSERT INTO webhook_batches (webhook_id, batch_id, ts, attempts, response_code, ok, latency, failed_at)"
             " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (webhook_id, batch_id) DO UPDATE SET ts = excluded.ts,"
             " attempts = webhook_batches.attempts + excluded.attempts, response_code = excluded.response_code,"
             " ok = excluded.ok, latency = excluded.latency,"
             " failed_at = CASE WHEN excluded.ok = 0 THEN excluded.ts ELSE webhook_batches.failed_at END",
             [webhook_id, status.batch_id, status.ts, status.attempts, status.response_code, int(status.ok),
              status.latency, 0.0 if status.ok else status.ts], False),
            ("DELETE FROM webhook_batches WHERE webhook_id = ? AND ts < (SELECT ts FROM webhook_batches"
             " WHERE webhook_id = ? ORDER BY ts DESC LIMIT 1 OFFSET ?)",
             [webhook_id, webhook_id, _KEPT_BATCHES - 1], False),
        ])

    async def batch_statuses(self, webhook_id: str, limit: int) -> list[BatchStatus]:
        rows = await self._fetch("SELECT batch_id, ts, attempts, response_code, ok, latency, failed_at"
                                 " FROM webhook_batches WHERE webhook_id = ? ORDER BY ts DESC LIMIT ?",
                                 [webhook_id, limit])
        return [BatchStatus(batch_id=str(batch), ts=float(ts), attempts=int(attempts), response_code=str(code),
                            ok=bool(ok), latency=int(latency), failed_at=float(failed))
                for batch, ts, attempts, code, ok, latency, failed in rows]

    async def finish_dead_letter(self, letter: DeadLetter) -> None:
        await self._transact([(
            "UPDATE webhook_dead_letters SET state = ?, attempts = ?, failed_at = ?, last_error = ? WHERE id = ?",
            [letter.state, letter.attempts, letter.failed_at, letter.last_error, letter.id], False,
        )])
