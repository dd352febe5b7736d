"""Read-only SQL behind the dashboard pages, over the event store's own read path (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from engaged.errors import StoreError
from engaged.events.model import decode_event
from engaged.events.query import METRICS, StoreQueries, where_clause
from engaged.events.store_sqlite import SqliteEventStore
from engaged.types import EventQuery, EventStore, StoredEvent
from engaged.web.agents import AgentParser, machine_label
from engaged.web.feed import BOUNCE_CLASSES
from engaged.web.timerange import TimeRange, bucket_width

ENGAGEMENTS = "('open', 'initial_open', 'click', 'link_unsubscribe')"
RECIPIENT = "message_id || ' ' || rcpt_to"
LOOKUP_LIMIT = 1000
_MAX_BUCKETS = 2000
_MAX_AGENTS = 5000
_ROW_METRICS = ("count_injected", "count_delivered", "count_bounce", "count_delayed",
                "count_unique_confirmed_opened", "count_unique_human_confirmed_opened",
                "count_unique_clicked", "count_unique_human_clicked", "count_unsubscribe", "count_spam_complaint")


class CampaignRow(msgspec.Struct, frozen=True, kw_only=True):
    """One campaign's counts. Opens are SparkPost's unique confirmed opens (an open or a click);
    `*_machine` counts recipients whose engagements were all machine-made; ctr is human unique clicks
    over deliveries."""

    campaign_id: str
    injected: int = 0
    delivered: int = 0
    bounced: int = 0
    delayed: int = 0
    opens_human: int = 0
    opens_machine: int = 0
    clicks_human: int = 0
    clicks_machine: int = 0
    ctr: float | None = None
    unsubscribes: int = 0
    complaints: int = 0
    unsubscribe_rate: float | None = None
    complaint_rate: float | None = None
    last_activity: float = 0.0


SORTS: dict[str, Any] = {
    "campaign": lambda row: row.campaign_id, "injected": lambda row: row.injected,
    "delivered": lambda row: row.delivered, "bounced": lambda row: row.bounced,
    "delayed": lambda row: row.delayed, "opens_human": lambda row: row.opens_human,
    "unsubscribe_rate": lambda row: row.unsubscribe_rate or 0.0,
    "complaint_rate": lambda row: row.complaint_rate or 0.0,
    "opens_machine": lambda row: row.opens_machine, "clicks_human": lambda row: row.clicks_human,
    "clicks_machine": lambda row: row.clicks_machine, "ctr": lambda row: -1.0 if row.ctr is None else row.ctr,
    "last_activity": lambda row: row.last_activity,
}


class Series(msgspec.Struct, frozen=True, kw_only=True):
    """Opens (distinct recipients per bucket) and clicks (events) over time, human and machine apart."""

    width: int
    start: list[int]
    opens_human: list[int]
    opens_machine: list[int]
    clicks_human: list[int]
    clicks_machine: list[int]


class Breakdown(msgspec.Struct, frozen=True, kw_only=True):
    """A table row of engagements (or clicks) split into human and machine."""

    label: str
    human: int = 0
    machine: int = 0
    detail: str = ""
    unique_human: int = 0


class Timeline(msgspec.Struct, frozen=True, kw_only=True):
    """Every stored event of one message for one recipient, oldest first."""

    message_id: str
    rcpt_to: str
    campaign_id: str
    events: list[StoredEvent]


def sort_rows(rows: list[CampaignRow], key: str, descending: bool) -> list[CampaignRow]:
    """Rows by a SORTS key (ties broken by campaign id)."""
    ordered = sorted(rows, key=lambda row: row.campaign_id)
    return sorted(ordered, key=SORTS[key], reverse=descending)


class DashboardQueries:
    """Aggregates for the pages. SQL uses the stores' shared `?` dialect; JSON fields are read per backend."""

    def __init__(self, store: EventStore) -> None:
        self._store = store if isinstance(store, StoreQueries) else None
        self._sqlite = isinstance(store, SqliteEventStore)
        self._agents = AgentParser()

    async def _rows(self, sql: str, params: list[object]) -> list[tuple[Any, ...]]:
        if self._store is None:
            raise StoreError("the dashboard needs one of engaged's SQL event stores")
        return await self._store._fetch(sql, params)

    def _field(self, *path: str) -> str:
        if self._sqlite:
            return f"json_extract(CAST(body AS TEXT), '$.{'.'.join(path)}')"
        return f"(convert_from(body, 'UTF8')::json #>> '{{{','.join(path)}}}')"

    def _bucket(self, width: int) -> str:
        return f"CAST(ts / {width} AS INTEGER)" if self._sqlite else f"FLOOR(ts / {width})::bigint"

    async def campaigns(self, span: TimeRange, campaign: str | None = None) -> list[CampaignRow]:
        """One row per campaign with events in the range (the metrics API's counts, plus last activity)."""
        query = EventQuery(since=span.since, until=span.until, campaigns=(campaign,) if campaign is not None else ())
        where, params = where_clause(query)
        columns = ", ".join(METRICS[name] for name in _ROW_METRICS)
        # Grouping by an expression keeps SQLite from walking events_campaign (a table lookup per row):
        # over a million events a plain scan is about 1.5x faster. One campaign uses that index as it should.
        group = "campaign_id || ''" if self._sqlite and campaign is None else "campaign_id"
        rows = await self._rows(f"SELECT campaign_id, MAX(ts), {columns} FROM events WHERE {where}"
                                f" GROUP BY {group}", params)
        result = []
        for campaign_id, last, *counts in rows:
            (injected, delivered, bounced, delayed, opens, human_opens, clicks, human_clicks, unsubscribes,
             complaints) = (int(value or 0) for value in counts)
            result.append(CampaignRow(
                campaign_id=str(campaign_id), injected=injected, delivered=delivered, bounced=bounced,
                delayed=delayed, opens_human=human_opens, opens_machine=opens - human_opens,
                clicks_human=human_clicks, clicks_machine=clicks - human_clicks,
                ctr=human_clicks / delivered if delivered else None, last_activity=float(last or 0.0),
                unsubscribes=unsubscribes, complaints=complaints,
                unsubscribe_rate=unsubscribes / delivered if delivered else None,
                complaint_rate=complaints / delivered if delivered else None))
        return result

    async def _bounds(self, campaign: str, span: TimeRange, now: float) -> tuple[float, float]:
        if span.since is not None:
            return span.since, span.until if span.until is not None else now
        rows = await self._rows("SELECT MIN(ts) FROM events WHERE campaign_id = ?", [campaign])
        first = float(rows[0][0]) if rows and rows[0][0] is not None else now - 3600
        return min(first, now - 60), span.until if span.until is not None else now

    def _scope(self, campaign: str, span: TimeRange) -> tuple[str, list[object]]:
        clauses, params = ["campaign_id = ?"], list[object]([campaign])
        if span.since is not None:
            clauses.append("ts >= ?")
            params.append(span.since)
        if span.until is not None:
            clauses.append("ts < ?")
            params.append(span.until)
        return " AND ".join(clauses), params

    async def series(self, campaign: str, span: TimeRange, now: float) -> Series:
        """Per-minute buckets for an hour or less, per hour up to 14 days, per day beyond (at most 2000)."""
        since, until = await self._bounds(campaign, span, now)
        width = bucket_width(since, until)
        last = int(max(until - 0.001, since) // width)
        first = max(int(since // width), last - _MAX_BUCKETS + 1)
        sql = (f"SELECT {self._bucket(width)}, type = 'click', machine IS NULL, COUNT(DISTINCT {RECIPIENT}),"
               " COUNT(*) FROM events WHERE campaign_id = ? AND type IN ('open', 'initial_open', 'click')"
               f" AND ts >= ? AND ts < ? GROUP BY 1, 2, 3")
        rows = await self._rows(sql, [campaign, float(first * width), float((last + 1) * width)])
        size = last - first + 1
        values = {key: [0] * size for key in ("opens_human", "opens_machine", "clicks_human", "clicks_machine")}
        for bucket, is_click, is_human, recipients, events in rows:
            index = int(bucket) - first
            if 0 <= index < size:
                key = ("clicks_" if is_click else "opens_") + ("human" if is_human else "machine")
                values[key][index] += int(events if is_click else recipients)
        return Series(width=width, start=[(first + n) * width for n in range(size)], **values)

    async def top_links(self, campaign: str, span: TimeRange, limit: int = 20) -> list[Breakdown]:
        """Links by clicks: label is target_link_name, detail the URL; unique_human counts human clickers."""
        where, params = self._scope(campaign, span)
        name, url = self._field("target_link_name"), self._field("target_link_url")
        rows = await self._rows(f"SELECT {name}, {url}, machine IS NULL, COUNT(*), COUNT(DISTINCT {RECIPIENT})"
                                f" FROM events WHERE {where} AND type = 'click' GROUP BY 1, 2, 3", params)
        links: dict[tuple[str, str], dict[str, int]] = {}
        for link_name, link_url, is_human, clicks, clickers in rows:
            counts = links.setdefault((str(link_name or ""), str(link_url or "")), Counter())
            counts["human" if is_human else "machine"] += int(clicks)
            if is_human:
                counts["unique_human"] += int(clickers)
        ordered = sorted(links.items(), key=lambda item: (-(item[1]["human"] + item[1]["machine"]), item[0]))
        return [Breakdown(label=link_name, detail=link_url, **counts) for (link_name, link_url), counts in
                ordered[:limit]]

    async def bounce_classes(self, campaign: str, span: TimeRange) -> list[Breakdown]:
        """Per bounce_class: bounces in `human`, delays in `machine` (the template names the columns)."""
        where, params = self._scope(campaign, span)
        rows = await self._rows(f"SELECT {self._field('bounce_class')}, type, COUNT(*) FROM events"
                                f" WHERE {where} AND type IN ('bounce', 'delay') GROUP BY 1, 2", params)
        classes: dict[str, Counter[str]] = {}
        for code, kind, count in rows:
            classes.setdefault(str(code or ""), Counter())[str(kind)] += int(count)
        return [Breakdown(label=code, detail=BOUNCE_CLASSES.get(code, "unknown"), human=counts["bounce"],
                          machine=counts["delay"])
                for code, counts in sorted(classes.items(), key=lambda item: -sum(item[1].values()))]

    async def agents(self, campaign: str, span: TimeRange) -> tuple[list[Breakdown], list[Breakdown]]:
        """(mail clients, devices) by engagements; machine engagements are listed under their machine kind."""
        where, params = self._scope(campaign, span)
        rows = await self._rows(f"SELECT {self._field('user_agent')}, machine, COUNT(*) FROM events"
                                f" WHERE {where} AND type IN {ENGAGEMENTS} GROUP BY 1, 2"
                                f" ORDER BY 3 DESC LIMIT {_MAX_AGENTS}", params)
        clients: dict[str, Counter[str]] = {}
        devices: dict[str, Counter[str]] = {}
        for agent, machine, count in rows:
            client, device = self._agents.parse(str(agent or ""))
            side = "human" if machine is None else "machine"
            clients.setdefault(client if machine is None else machine_label(machine), Counter())[side] += int(count)
            devices.setdefault(device, Counter())[side] += int(count)
        return _ranked(clients), _ranked(devices)

    async def countries(self, campaign: str, span: TimeRange) -> list[Breakdown]:
        """Engagements by geo_ip.country (empty when no GeoIP database is configured)."""
        where, params = self._scope(campaign, span)
        rows = await self._rows(f"SELECT {self._field('geo_ip', 'country')}, machine IS NULL, COUNT(*) FROM events"
                                f" WHERE {where} AND type IN {ENGAGEMENTS} GROUP BY 1, 2", params)
        countries: dict[str, Counter[str]] = {}
        for country, is_human, count in rows:
            if country:
                countries.setdefault(str(country), Counter())["human" if is_human else "machine"] += int(count)
        return _ranked(countries)

    async def recent(self, query: EventQuery, limit: int) -> list[StoredEvent]:
        """The newest matching events, newest first."""
        where, params = where_clause(query)
        rows = await self._rows(f"SELECT seq, body FROM events WHERE {where} ORDER BY seq DESC LIMIT ?",
                                [*params, limit])
        return [StoredEvent(int(seq), decode_event(bytes(body))) for seq, body in rows]

    async def lookup(self, term: str) -> tuple[list[Timeline], bool]:
        """Timelines of the messages whose message_id is `term` or sent to recipient `term` (newest first),
        and whether the newest LOOKUP_LIMIT events cut some off."""
        rows = await self._rows("SELECT seq, body FROM events WHERE message_id = ? OR rcpt_to = ?"
                                " ORDER BY seq DESC LIMIT ?", [term, term.lower(), LOOKUP_LIMIT])
        groups: dict[tuple[str, str], list[StoredEvent]] = {}
        for seq, body in rows:
            event = decode_event(bytes(body))
            groups.setdefault((event.message_id, event.rcpt_to), []).append(StoredEvent(int(seq), event))
        timelines = []
        for (message_id, rcpt_to), events in groups.items():
            events.sort(key=lambda item: (float(item.event.timestamp), item.seq))
            timelines.append(Timeline(message_id=message_id, rcpt_to=rcpt_to,
                                      campaign_id=events[0].event.campaign_id, events=events))
        timelines.sort(key=lambda line: -float(line.events[0].event.timestamp))
        return timelines, len(rows) == LOOKUP_LIMIT


def _ranked(groups: dict[str, Counter[str]], limit: int = 20) -> list[Breakdown]:
    ordered = sorted(groups.items(), key=lambda item: (-(item[1]["human"] + item[1]["machine"]), item[0]))
    return [Breakdown(label=label, human=counts["human"], machine=counts["machine"]) for label, counts in
            ordered[:limit]]
