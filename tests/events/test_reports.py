"""The EventReports contract beyond `aggregate` (tests/api/test_metrics.py), on both stores."""

from __future__ import annotations

import msgspec
import pytest

from engaged.events.model import MachineEngagement
from engaged.types import EventQuery, EventStore, SeriesPoint, Tally
from tests.sample_events import make_event

NOW = 1_800_000_000.0
SCANNER = MachineEngagement(kind="security_scanner", reason="all links within 1 s")


@pytest.fixture
async def stored(store: EventStore) -> EventStore:
    events = [
        make_event("delivery", 1, rcpt="a@x.org", ts=NOW - 100),
        make_event("click", 2, rcpt="a@x.org", ts=NOW - 90),
        make_event("click", 3, rcpt="a@x.org", ts=NOW - 80),
        make_event("click", 4, rcpt="b@x.org", ts=NOW - 70),
        msgspec.structs.replace(make_event("click", 5, rcpt="b@x.org", ts=NOW - 10), machine_engagement=SCANNER),
        make_event("open", 6, rcpt="b@x.org", ts=NOW - 5),
        make_event("delivery", 7, rcpt="c@x.org", campaign="fall", ts=NOW - 1000),
    ]
    await store.append(events)
    return store


async def test_campaign_totals_give_each_campaigns_oldest_and_newest_event(stored: EventStore) -> None:
    rows = {row.campaign_id: row for row in await stored.campaign_totals(EventQuery(), ["count_delivered"])}
    assert sorted(rows) == ["fall", "spring"]
    assert (rows["spring"].first_activity, rows["spring"].last_activity) == (NOW - 100, NOW - 5)
    assert rows["spring"].counts == {"count_delivered": 1}
    (only,) = await stored.campaign_totals(EventQuery(campaigns=("fall",)), [])
    assert (only.campaign_id, only.counts) == ("fall", {})


async def test_tally_groups_by_fields_and_machine_kind_largest_first(stored: EventStore) -> None:
    clicks = EventQuery(types=("click",))
    tallies = await stored.tally(clicks, ("rcpt_to",), recipients=True)
    assert tallies[0] == Tally(("a@x.org",), None, 2, 1)
    assert sorted(tallies[1:], key=lambda tally: str(tally.machine)) == [
        Tally(("b@x.org",), None, 1, 1), Tally(("b@x.org",), "security_scanner", 1, 1)]
    assert await stored.tally(clicks, ("rcpt_to",), limit=1) == [Tally(("a@x.org",), None, 2)]
    assert await stored.tally(EventQuery(types=("open",)), ("type", "geo_ip.country")) == [
        Tally(("open", "DE"), "proxy", 1)]


async def test_tally_refuses_what_is_not_an_event_field(stored: EventStore) -> None:
    with pytest.raises(ValueError, match="not an event field"):
        await stored.tally(EventQuery(), ("rcpt_to; DROP TABLE events",))


async def test_series_counts_opens_and_clicks_per_bucket_and_nothing_else(stored: EventStore) -> None:
    points = await stored.series(EventQuery(since=NOW - 100, until=NOW), 60)
    bucket = int((NOW - 100) // 60)
    assert sorted(points, key=lambda point: (point.bucket, point.click, point.human)) == [
        SeriesPoint(bucket, True, True, 2, 3),
        SeriesPoint(bucket + 1, False, False, 1, 1),
        SeriesPoint(bucket + 1, True, False, 1, 1),
    ]
    assert await stored.series(EventQuery(types=("delivery",)), 60) == []
