"""DashboardQueries over each store's EventReports (a real SQLite file and a PostgreSQL database)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from engaged.types import EventQuery, EventStore
from engaged.web.agents import AgentParser, machine_label
from engaged.web.feed import BOUNCE_CLASSES
from engaged.web.queries import LOOKUP_LIMIT, Breakdown, DashboardQueries
from engaged.web.timerange import TimeRange
from tests.sample_events import make_event
from tests.web.conftest import DAY, IPHONE, story

NOW = 1_800_000_000.0
"""A whole minute: the story's two opens by ann (500 and 499 s ago) share one chart bucket."""
ALL = TimeRange(name="all", since=None, until=None)
LAST_HOUR = TimeRange(name="1h", since=NOW - 3600, until=NOW)


@pytest.fixture
async def queries(store: EventStore) -> AsyncIterator[DashboardQueries]:
    await store.append(story(NOW))
    yield DashboardQueries(store)


def counts(rows: list[Breakdown]) -> dict[str, tuple[int, int]]:
    return {row.label: (row.human, row.machine) for row in rows}


async def test_campaign_rows_count_injections_deliveries_and_human_and_machine_engagement(
        queries: DashboardQueries) -> None:
    rows = {row.campaign_id: row for row in await queries.campaigns(ALL)}
    assert sorted(rows) == ["fall", "spring", "winter"]
    spring = rows["spring"]
    assert (spring.injected, spring.delivered, spring.bounced, spring.delayed) == (3, 2, 1, 1)
    assert (spring.opens_human, spring.opens_machine, spring.clicks_human, spring.clicks_machine) == (1, 1, 1, 1)
    assert spring.ctr == 0.5 and spring.last_activity == NOW - 300
    assert rows["winter"].ctr is None and rows["winter"].injected == 1


async def test_campaign_rows_keep_to_the_range_and_to_one_campaign_when_asked(queries: DashboardQueries) -> None:
    assert [row.campaign_id for row in await queries.campaigns(LAST_HOUR)] == ["spring"]
    week = TimeRange(name="7d", since=NOW - 7 * DAY, until=None)
    assert sorted(row.campaign_id for row in await queries.campaigns(week)) == ["fall", "spring"]
    (fall,) = await queries.campaigns(ALL, "fall")
    assert (fall.campaign_id, fall.injected, fall.delivered, fall.opens_human) == ("fall", 1, 1, 1)
    assert await queries.campaigns(ALL, "nope") == []


async def test_the_series_counts_opening_recipients_and_clicks_per_bucket(queries: DashboardQueries) -> None:
    series = await queries.series("spring", LAST_HOUR, NOW)
    assert series.width == 60 and len(series.start) == 60 and series.start[-1] == int(NOW) - 60
    assert (sum(series.opens_human), sum(series.opens_machine)) == (1, 1)
    assert (sum(series.clicks_human), sum(series.clicks_machine)) == (2, 1)
    minute = series.start.index(int(NOW) - 540)  # ann's initial_open and open, 500 and 499 s ago
    assert series.opens_human[minute] == 1


async def test_the_series_of_all_time_starts_at_the_campaigns_first_event(queries: DashboardQueries) -> None:
    series = await queries.series("fall", ALL, NOW)
    assert series.width == 3600 and series.start[0] <= NOW - 3 * DAY < series.start[0] + 3600
    assert sum(series.opens_human) == 1 and sum(series.clicks_human) == 0


async def test_top_links_rank_by_clicks_and_count_human_clickers(queries: DashboardQueries) -> None:
    offer, terms = await queries.top_links("spring", ALL)
    assert (offer.label, offer.detail, offer.human, offer.machine, offer.unique_human) == \
        ("offer", "https://shop.example/offer?id=7", 2, 0, 1)
    assert (terms.label, terms.detail, terms.human, terms.machine, terms.unique_human) == \
        ("terms", "https://shop.example/terms", 0, 1, 0)
    assert await queries.top_links("spring", ALL, limit=1) == [offer]


async def test_bounce_classes_put_bounces_and_delays_apart(queries: DashboardQueries) -> None:
    rows = await queries.bounce_classes("spring", ALL)
    assert counts(rows) == {"10": (1, 0), "22": (0, 1)}
    assert {row.label: row.detail for row in rows} == {"10": BOUNCE_CLASSES["10"], "22": BOUNCE_CLASSES["22"]}


async def test_agents_name_clients_for_people_and_machine_kinds_for_machines(queries: DashboardQueries) -> None:
    clients, devices = await queries.agents("spring", ALL)
    iphone_client, iphone_device = AgentParser().parse(IPHONE)
    assert counts(clients) == {iphone_client: (4, 0), machine_label("apple_mpp"): (0, 1),
                               machine_label("security_scanner"): (0, 1)}
    assert counts(devices)[iphone_device] == (4, 0)
    assert sum(machine for _, machine in counts(devices).values()) == 2


async def test_countries_count_engagements_by_geo_ip_country(queries: DashboardQueries) -> None:
    assert counts(await queries.countries("spring", ALL)) == {"DE": (4, 0), "US": (0, 1)}
    assert await queries.countries("fall", ALL) == []


async def test_recent_gives_the_newest_matching_events_first(queries: DashboardQueries, store: EventStore) -> None:
    everything = await store.query(EventQuery(campaigns=("spring",)))
    recent = await queries.recent(EventQuery(campaigns=("spring",)), 3)
    assert [item.seq for item in recent] == [item.seq for item in reversed(everything)][:3]


async def test_lookup_finds_a_message_or_a_recipient_as_timelines(queries: DashboardQueries) -> None:
    timelines, truncated = await queries.lookup("m-1")
    assert not truncated
    assert sorted(line.rcpt_to for line in timelines) == ["ann@x.org", "bob@x.org", "cy@x.org"]
    (ann,), _ = await queries.lookup("ANN@x.org")
    assert (ann.message_id, ann.campaign_id) == ("m-1", "spring")
    stamps = [float(item.event.timestamp) for item in ann.events]
    assert stamps == sorted(stamps) and len(stamps) == 6
    assert await queries.lookup("nobody@x.org") == ([], False)


async def test_lookup_says_when_the_newest_events_cut_older_ones_off(store: EventStore) -> None:
    events = [make_event("delivery", n, rcpt="many@x.org", message_id=f"m-{n}", ts=NOW - n)
              for n in range(1, LOOKUP_LIMIT + 2)]
    await store.append(events)
    timelines, truncated = await DashboardQueries(store).lookup("many@x.org")
    assert truncated and len(timelines) == LOOKUP_LIMIT


async def test_out_of_band_bounces_count_with_the_bounces_of_their_class(queries: DashboardQueries,
                                                                         store: EventStore) -> None:
    late = make_event("out_of_band", 900, rcpt="dan@x.org", ts=NOW - 200)  # spring, class 10
    await store.append([late, make_event("spam_complaint", 901, rcpt="ann@x.org", ts=NOW - 100)])
    assert counts(await queries.bounce_classes("spring", ALL)) == {"10": (2, 0), "22": (0, 1)}
