"""The dashboard's numbers: campaign rows, series and breakdowns shaped from the store's EventReports."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from engaged.types import EventQuery, EventReports, StoredEvent
from engaged.web.agents import AgentParser, machine_label
from engaged.web.feed import BOUNCE_CLASSES
from engaged.web.timerange import TimeRange, bucket_width

ENGAGEMENTS = ("open", "initial_open", "click", "link_unsubscribe")
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
    """Aggregates for the pages, from the store's EventReports (its SQL stays in the store)."""

    def __init__(self, store: EventReports) -> None:
        self._store = store
        self._agents = AgentParser()

    async def campaigns(self, span: TimeRange, campaign: str | None = None) -> list[CampaignRow]:
        """One row per campaign with events in the range (the metrics API's counts, plus last activity)."""
        query = EventQuery(since=span.since, until=span.until, campaigns=(campaign,) if campaign is not None else ())
        result = []
        for totals in await self._store.campaign_totals(query, _ROW_METRICS):
            (injected, delivered, bounced, delayed, opens, human_opens, clicks, human_clicks, unsubscribes,
             complaints) = (totals.counts[name] for name in _ROW_METRICS)
            result.append(CampaignRow(
                campaign_id=totals.campaign_id, injected=injected, delivered=delivered, bounced=bounced,
                delayed=delayed, opens_human=human_opens, opens_machine=opens - human_opens,
                clicks_human=human_clicks, clicks_machine=clicks - human_clicks,
                ctr=human_clicks / delivered if delivered else None, last_activity=totals.last_activity,
                unsubscribes=unsubscribes, complaints=complaints,
                unsubscribe_rate=unsubscribes / delivered if delivered else None,
                complaint_rate=complaints / delivered if delivered else None))
        return result

    async def _bounds(self, campaign: str, span: TimeRange, now: float) -> tuple[float, float]:
        if span.since is not None:
            return span.since, span.until if span.until is not None else now
        totals = await self._store.campaign_totals(EventQuery(campaigns=(campaign,)), ())
        first = totals[0].first_activity if totals else now - 3600
        return min(first, now - 60), span.until if span.until is not None else now

    async def series(self, campaign: str, span: TimeRange, now: float) -> Series:
        """Per-minute buckets for an hour or less, per hour up to 14 days, per day beyond (at most 2000)."""
        since, until = await self._bounds(campaign, span, now)
        width = bucket_width(since, until)
        last = int(max(until - 0.001, since) // width)
        first = max(int(since // width), last - _MAX_BUCKETS + 1)
        query = EventQuery(campaigns=(campaign,), since=float(first * width), until=float((last + 1) * width))
        size = last - first + 1
        values = {key: [0] * size for key in ("opens_human", "opens_machine", "clicks_human", "clicks_machine")}
        for point in await self._store.series(query, width):
            index = point.bucket - first
            if 0 <= index < size:
                key = ("clicks_" if point.click else "opens_") + ("human" if point.human else "machine")
                values[key][index] += point.events if point.click else point.recipients
        return Series(width=width, start=[(first + n) * width for n in range(size)], **values)

    async def top_links(self, campaign: str, span: TimeRange, limit: int = 20) -> list[Breakdown]:
        """Links by clicks: label is target_link_name, detail the URL; unique_human counts human clickers."""
        tallies = await self._store.tally(_scope(campaign, span, "click"), ("target_link_name", "target_link_url"),
                                          recipients=True)
        links: dict[tuple[str, str], dict[str, int]] = {}
        for tally in tallies:
            link_name, link_url = tally.values
            counts = links.setdefault((link_name or "", link_url or ""), Counter())
            counts["human" if tally.machine is None else "machine"] += tally.events
            if tally.machine is None:
                counts["unique_human"] += tally.recipients
        ordered = sorted(links.items(), key=lambda item: (-(item[1]["human"] + item[1]["machine"]), item[0]))
        return [Breakdown(label=link_name, detail=link_url, **counts) for (link_name, link_url), counts in
                ordered[:limit]]

    async def bounce_classes(self, campaign: str, span: TimeRange) -> list[Breakdown]:
        """Per bounce_class: bounces (in-band and out-of-band) in `human`, delays in `machine` (the template names
        the columns)."""
        tallies = await self._store.tally(_scope(campaign, span, "bounce", "out_of_band", "delay"),
                                          ("bounce_class", "type"))
        classes: dict[str, Counter[str]] = {}
        for tally in tallies:
            code, kind = tally.values
            classes.setdefault(code or "", Counter())[kind or ""] += tally.events
        return [Breakdown(label=code, detail=BOUNCE_CLASSES.get(code, "unknown"),
                          human=counts["bounce"] + counts["out_of_band"], machine=counts["delay"])
                for code, counts in sorted(classes.items(), key=lambda item: -sum(item[1].values()))]

    async def agents(self, campaign: str, span: TimeRange) -> tuple[list[Breakdown], list[Breakdown]]:
        """(mail clients, devices) by engagements; machine engagements are listed under their machine kind."""
        tallies = await self._store.tally(_scope(campaign, span, *ENGAGEMENTS), ("user_agent",), limit=_MAX_AGENTS)
        clients: dict[str, Counter[str]] = {}
        devices: dict[str, Counter[str]] = {}
        for tally in tallies:
            client, device = self._agents.parse(tally.values[0] or "")
            machine = tally.machine
            side = "human" if machine is None else "machine"
            clients.setdefault(client if machine is None else machine_label(machine), Counter())[side] += tally.events
            devices.setdefault(device, Counter())[side] += tally.events
        return _ranked(clients), _ranked(devices)

    async def countries(self, campaign: str, span: TimeRange) -> list[Breakdown]:
        """Engagements by geo_ip.country (empty when no GeoIP database is configured)."""
        countries: dict[str, Counter[str]] = {}
        for tally in await self._store.tally(_scope(campaign, span, *ENGAGEMENTS), ("geo_ip.country",)):
            country = tally.values[0]
            if country:
                countries.setdefault(country, Counter())["human" if tally.machine is None else "machine"] += (
                    tally.events)
        return _ranked(countries)

    async def recent(self, query: EventQuery, limit: int) -> list[StoredEvent]:
        """The newest matching events, newest first."""
        return await self._store.query(msgspec.structs.replace(query, newest_first=True, limit=limit))

    async def lookup(self, term: str) -> tuple[list[Timeline], bool]:
        """Timelines of the messages whose message_id is `term` or sent to recipient `term` (newest first),
        and whether the newest LOOKUP_LIMIT events cut some off."""
        by_message, by_recipient = (
            await self._store.query(EventQuery(message_ids=(term,), newest_first=True, limit=LOOKUP_LIMIT)),
            await self._store.query(EventQuery(recipients=(term.lower(),), newest_first=True, limit=LOOKUP_LIMIT)))
        found = {stored.seq: stored for stored in (*by_message, *by_recipient)}
        newest = sorted(found.values(), key=lambda stored: -stored.seq)[:LOOKUP_LIMIT]
        groups: dict[tuple[str, str], list[StoredEvent]] = {}
        for stored in newest:
            groups.setdefault((stored.event.message_id, stored.event.rcpt_to), []).append(stored)
        timelines = []
        for (message_id, rcpt_to), events in groups.items():
            events.sort(key=lambda item: (float(item.event.timestamp), item.seq))
            timelines.append(Timeline(message_id=message_id, rcpt_to=rcpt_to,
                                      campaign_id=events[0].event.campaign_id, events=events))
        timelines.sort(key=lambda line: -float(line.events[0].event.timestamp))
        return timelines, len(newest) == LOOKUP_LIMIT


def _scope(campaign: str, span: TimeRange, *types: str) -> EventQuery:
    return EventQuery(campaigns=(campaign,), types=types, since=span.since, until=span.until)


def _ranked(groups: dict[str, Counter[str]], limit: int = 20) -> list[Breakdown]:
    ordered = sorted(groups.items(), key=lambda item: (-(item[1]["human"] + item[1]["machine"]), item[0]))
    return [Breakdown(label=label, human=counts["human"], machine=counts["machine"]) for label, counts in
            ordered[:limit]]
