"""The dashboard without JavaScript: campaign table, sorting, time ranges, campaign page, lookup, live feed."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from engaged.events.query import METRICS
from tests.web.conftest import DAY, OpenDashboard
from tests.web.markup import Page, number


def utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M")


async def test_the_campaign_table_shows_the_metrics_api_counts_for_every_campaign(
        open_dashboard: OpenDashboard) -> None:
    client = await open_dashboard()
    page = await client.get("/", params={"range": "all"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    rows = Page(page.text).campaigns()
    api = (await client.get("/api/v1/metrics/deliverability/campaign")).json()["results"]
    assert sorted(rows) == sorted(result["campaign_id"] for result in api) == ["fall", "spring", "winter"]
    for result in api:
        row = rows[result["campaign_id"]]
        assert {name for name in METRICS} <= set(result)
        assert number(row.col("injected")) == result["count_injected"]
        assert number(row.col("delivered")) == result["count_delivered"]
        assert number(row.col("bounced")) == result["count_bounce"]
        assert number(row.col("delayed")) == result["count_delayed"]
        assert number(row.col("opens_human")) == result["count_unique_human_confirmed_opened"]
        assert number(row.col("opens_human")) + number(row.col("opens_machine")) == \
            result["count_unique_confirmed_opened"]
        assert number(row.col("clicks_human")) == result["count_unique_human_clicked"]
        assert number(row.col("clicks_human")) + number(row.col("clicks_machine")) == result["count_unique_clicked"]
    spring = rows["spring"]
    assert [spring.col(name) for name in ("injected", "delivered", "bounced", "delayed", "opens_human",
                                          "opens_machine", "clicks_human", "clicks_machine", "ctr")] == \
        ["3", "2", "1", "1", "1", "1", "1", "1", "50.0 %"]
    assert rows["winter"].col("ctr") == "–"


async def test_the_default_range_is_seven_days_and_the_presets_narrow_it(open_dashboard: OpenDashboard) -> None:
    client = await open_dashboard()

    async def campaigns(**params: str) -> list[str]:
        return sorted(Page((await client.get("/", params=params)).text).campaigns())

    assert await campaigns() == ["fall", "spring"]
    assert await campaigns(range="7d") == ["fall", "spring"]
    assert await campaigns(range="1d") == ["spring"]
    assert await campaigns(range="1h") == ["spring"]
    assert await campaigns(range="all") == ["fall", "spring", "winter"]
    presets = [attrs["href"] for tag, attrs in Page((await client.get("/")).text).elements
               if tag == "a" and "range=" in attrs.get("href", "") and attrs.get("href", "").startswith("/?")]
    assert any("range=1h" in href for href in presets) and any("range=all" in href for href in presets)


async def test_a_custom_range_selects_events_from_and_to_in_utc(open_dashboard: OpenDashboard) -> None:
    client = await open_dashboard()
    now = time.time()
    page = await client.get("/", params={"range": "custom", "from": utc(now - 4 * DAY), "to": utc(now - 2 * DAY)})
    assert sorted(Page(page.text).campaigns()) == ["fall"]
    open_ended = await client.get("/", params={"range": "custom", "from": utc(now - 11 * DAY), "to": ""})
    assert sorted(Page(open_ended.text).campaigns()) == ["fall", "spring", "winter"]
    backwards = await client.get("/", params={"range": "custom", "from": utc(now), "to": utc(now - DAY)})
    assert backwards.status_code == 400 and "from must be before to" in backwards.text
    assert (await client.get("/", params={"range": "forever"})).status_code == 400


async def test_sorting_happens_on_the_server_and_the_current_header_flips_direction(
        open_dashboard: OpenDashboard) -> None:
    client = await open_dashboard()

    async def order(**params: str) -> list[str]:
        page = Page((await client.get("/", params={"range": "all", **params})).text)
        return [row.attrs["data-campaign"] for row in page.table("campaigns")]

    assert await order(sort="injected", dir="desc") == ["spring", "fall", "winter"]
    assert await order(sort="injected", dir="asc") == ["fall", "winter", "spring"]
    assert await order(sort="campaign") == ["fall", "spring", "winter"]
    assert await order(sort="last_activity") == ["spring", "fall", "winter"]
    assert await order(sort="not-a-column") == ["spring", "fall", "winter"]
    html = (await client.get("/", params={"range": "all", "sort": "delivered", "dir": "desc"})).text
    [sorted_header] = [attrs for tag, attrs in Page(html).elements if tag == "th" and "aria-sort" in attrs]
    assert sorted_header["aria-sort"] == "descending"
    assert "/?range=all&amp;sort=delivered&amp;dir=asc" in html


async def test_the_campaign_page_shows_links_bounce_classes_clients_devices_countries_and_events(
        open_dashboard: OpenDashboard) -> None:
    client = await open_dashboard()
    page = Page((await client.get("/campaign", params={"id": "spring", "range": "1h"})).text)
    assert [row.texts for row in page.table("links")] == [
        ["offer", "https://shop.example/offer?id=7", "2", "0", "1"],
        ["terms", "https://shop.example/terms", "0", "1", "0"],
    ]
    text = page.text
    for expected in ("Bounces", "Delays", "Invalid recipient", "Mailbox full", "iOS Mail or in-app web view",
                     "Apple Mail Privacy Protection", "Security scanner", "iPhone (iOS)", "Countries", "DE", "US"):
        assert expected in text, expected
    feed = page.table("feed")
    assert len(feed) == 13 and [int(row.attrs["data-seq"]) for row in feed] == sorted(
        (int(row.attrs["data-seq"]) for row in feed), reverse=True)
    assert page.table("series-table"), "the chart's data is also a table"
    summary = {attrs["data-col"] for tag, attrs in page.elements if "data-col" in attrs}
    assert {"injected", "opens_human", "opens_machine", "clicks_human", "clicks_machine", "ctr"} <= summary
    fall = Page((await client.get("/campaign", params={"id": "fall", "range": "all"})).text)
    assert "Countries" not in fall.text  # no geo_ip on its engagements
    assert (await client.get("/campaign")).headers["location"] == "/"


async def test_the_campaign_json_buckets_per_minute_for_an_hour_and_per_hour_beyond(
        open_dashboard: OpenDashboard) -> None:
    client = await open_dashboard()
    hour = (await client.get("/ui/campaign.json", params={"id": "spring", "range": "1h"})).json()
    series = hour["series"]
    assert series["width"] == 60 and 60 <= len(series["start"]) <= 61
    assert (sum(series["clicks_human"]), sum(series["clicks_machine"]), sum(series["opens_machine"])) == (2, 1, 1)
    assert hour["summary"]["clicks_human"] == 1 and hour["summary"]["ctr"] == 0.5
    week = (await client.get("/ui/campaign.json", params={"id": "spring", "range": "7d"})).json()["series"]
    assert week["width"] == 3600 and sum(week["clicks_human"]) == 2
    rows = (await client.get("/ui/campaigns.json", params={"range": "all", "sort": "campaign"})).json()["rows"]
    assert [row["campaign_id"] for row in rows] == ["fall", "spring", "winter"]


async def test_message_lookup_shows_each_recipients_timeline_in_order(open_dashboard: OpenDashboard) -> None:
    client = await open_dashboard()
    page = Page((await client.get("/message", params={"q": "m-1"})).text)
    steps: dict[str, list[str]] = {}
    current = ""
    for tag, attrs in page.elements:
        if tag == "section" and "data-rcpt" in attrs:
            current = attrs["data-rcpt"]
        elif tag == "li" and "data-type" in attrs:
            steps.setdefault(current, []).append(attrs["data-type"])
    assert steps == {
        "ann@x.org": ["injection", "delivery", "initial_open", "open", "click", "click"],
        "bob@x.org": ["injection", "delivery", "initial_open", "click"],
        "cy@x.org": ["injection", "delay", "bounce"],
    }
    by_recipient = Page((await client.get("/message", params={"q": "ANN@x.org"})).text)
    assert [attrs["data-rcpt"] for tag, attrs in by_recipient.elements if "data-rcpt" in attrs] == ["ann@x.org"]
    assert "target_link_url" in by_recipient.text and "https://shop.example/offer?id=7" in by_recipient.text
    assert "No message with that message_id" in Page((await client.get("/message?q=nothing")).text).text


async def test_the_live_feed_lists_the_newest_events_first_with_the_api_filters(
        open_dashboard: OpenDashboard) -> None:
    client = await open_dashboard()
    everything = Page((await client.get("/live")).text).table("feed")
    assert len(everything) == 17
    clicks = Page((await client.get("/live?events=click&events=open&campaigns=spring")).text)
    kinds = [row.texts[1].split()[0] for row in clicks.table("feed")]
    assert sorted(kinds) == ["click", "click", "click", "open"]
    seqs = [int(row.attrs["data-seq"]) for row in clicks.table("feed")]
    assert seqs == sorted(seqs, reverse=True)
    checked = [attrs["value"] for tag, attrs in clicks.elements if tag == "input" and "checked" in attrs]
    assert checked == ["open", "click"]
    assert (await client.get("/live?events=bogus")).status_code == 400
