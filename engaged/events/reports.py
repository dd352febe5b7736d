"""The EventReports SQL, written once for both stores: grouped counts for the Metrics API and the dashboard.

Each store supplies `_fetch` (one read statement with `?` placeholders) and its `_dialect`, which
spells what differs per backend (JSON fields, time buckets, the grouping key over every campaign).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from engaged.events.dialect import SQLITE, Dialect
from engaged.events.metrics import metric_sql
from engaged.events.query import where_clause
from engaged.types import Aggregate, CampaignTotals, EventQuery, SeriesPoint, Tally

_RECIPIENT = "message_id || ' ' || rcpt_to"
_SERIES_TYPES = ("open", "initial_open", "click")


class ReportQueries:
    """EventReports over `_fetch`; mixed into both event stores."""

    _dialect: Dialect = SQLITE

    async def _fetch(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        """Rows of one read statement (`?` placeholders)."""
        raise NotImplementedError

    async def aggregate(self, query: EventQuery, *, by_campaign: bool = False,
                        group: Callable[[Dialect], str] | None = None, names: Sequence[str] | None = None,
                        order_by: str | None = None, limit: int | None = None) -> list[Aggregate]:
        where, params = where_clause(query, dialect=self._dialect)
        sql_of = metric_sql(self._dialect)
        chosen = list(names) if names is not None else list(sql_of)
        columns = ", ".join(sql_of[name] for name in chosen)
        key = ("campaign_id" if by_campaign else f"COALESCE(CAST(({group(self._dialect)}) AS TEXT), '')"
               if group is not None else None)
        sql = f"SELECT {key or chr(39) * 2}, {columns} FROM events WHERE {where}"
        if key is not None:
            order = f"{1 + chosen.index(order_by) + 1} DESC, 1" if order_by in chosen else "1"
            sql += f" GROUP BY {key} ORDER BY {order}"
            if limit is not None:
                sql += " LIMIT ?"
                params.append(limit)
        rows = await self._fetch(sql, params)
        return [Aggregate("" if row[0] is None else str(row[0]),
                          {name: int(value or 0) for name, value in zip(chosen, row[1:], strict=True)})
                for row in rows]

    async def campaign_totals(self, query: EventQuery, names: Sequence[str]) -> list[CampaignTotals]:
        where, params = where_clause(query, dialect=self._dialect)
        sql_of = metric_sql(self._dialect)
        columns = ", ".join(["campaign_id", "MIN(ts)", "MAX(ts)", *(sql_of[name] for name in names)])
        group = "campaign_id" if len(query.campaigns) == 1 else self._dialect.every_campaign
        rows = await self._fetch(f"SELECT {columns} FROM events WHERE {where} GROUP BY {group}", params)
        return [CampaignTotals(str(campaign_id), float(first or 0.0), float(last or 0.0),
                               {name: int(value or 0) for name, value in zip(names, counts, strict=True)})
                for campaign_id, first, last, *counts in rows]

    async def series(self, query: EventQuery, width: int) -> list[SeriesPoint]:
        types = tuple(name for name in query.types or _SERIES_TYPES if name in _SERIES_TYPES)
        if not types:
            return []
        where, params = where_clause(msgspec.structs.replace(query, types=types), dialect=self._dialect)
        bucket = self._dialect.bucket.format(offset=0, width=int(width))
        rows = await self._fetch(f"SELECT {bucket}, type = 'click', machine IS NULL, COUNT(DISTINCT {_RECIPIENT}),"
                                 f" COUNT(*) FROM events WHERE {where} GROUP BY 1, 2, 3", params)
        return [SeriesPoint(int(bucket_of), bool(click), bool(human), int(recipients), int(events))
                for bucket_of, click, human, recipients, events in rows]

    async def tally(self, query: EventQuery, fields: Sequence[str], *, recipients: bool = False,
                    limit: int | None = None) -> list[Tally]:
        where, params = where_clause(query, dialect=self._dialect)
        keys = [self._dialect.field(name) for name in fields]
        distinct = f"COUNT(DISTINCT {_RECIPIENT})" if recipients else "0"
        positions = ", ".join(str(n) for n in range(1, len(keys) + 2))
        sql = (f"SELECT {', '.join([*keys, 'machine'])}, COUNT(*), {distinct} FROM events WHERE {where}"
               f" GROUP BY {positions} ORDER BY {len(keys) + 2} DESC")
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = await self._fetch(sql, params)
        size = len(keys)
        return [Tally(tuple(None if value is None else str(value) for value in row[:size]),
                      None if row[size] is None else str(row[size]), int(row[size + 1]), int(row[size + 2]))
                for row in rows]
