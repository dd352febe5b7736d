"""GET /api/v1/metrics/deliverability and /deliverability/campaign: SparkPost's counts plus human-only ones."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest

from engaged.app import ApiApp
from engaged.events.model import Event, MachineEngagement
from engaged.events.query import METRICS
from engaged.types import EventStore
from tests.eventstores import Services
from tests.sample_events import T0, make_event

APPLE = MachineEngagement(kind="apple_mpp", reason="Apple proxy range")
HUMAN = MachineEngagement(kind=None, reason="")


def story() -> list[Event]:
    """Campaign "spring": ann (human) and bob (a machine) engage; "fall" has only a bounce and a delay."""
    n = iter(range(1000))

    def event(kind: str, rcpt: str, campaign: str = "spring", machine: MachineEngagement | None = None,
              message: str = "m-1") -> Event:
        made = make_event(kind, next(n), rcpt=rcpt, campaign=campaign, message_id=message)
        if kind in ("open", "initial_open", "click", "link_unsubscribe", "list_unsubscribe"):
            made = msgspec.structs.replace(made, machine_engagement=machine)
        return made

    return [
        *(event("injection", rcpt) for rcpt in ("ann@x.org", "bob@x.org", "cy@x.org")),
        *(event("delivery", rcpt) for rcpt in ("ann@x.org", "bob@x.org", "cy@x.org")),
        event("initial_open", "ann@x.org", machine=HUMAN),
        event("open", "ann@x.org"),
        event("open", "ann@x.org"),
        event("open", "bob@x.org", machine=APPLE),
        event("initial_open", "bob@x.org", machine=APPLE),
        event("click", "ann@x.org"),
        event("click", "bob@x.org", machine=MachineEngagement(kind="scanner", reason="all links in 1 s")),
        event("link_unsubscribe", "cy@x.org"),
        event("injection", "dee@x.org", campaign="fall", message="m-2"),
        event("delay", "dee@x.org", campaign="fall", message="m-2"),
        event("delay", "dee@x.org", campaign="fall", message="m-2"),
        event("bounce", "dee@x.org", campaign="fall", message="m-2"),
        event("policy_rejection", "eve@x.org", campaign="fall", message="m-3"),
        event("list_unsubscribe", "ann@x.org", machine=HUMAN),
        event("out_of_band", "dee@x.org", campaign="fall", message="m-2"),
        event("spam_complaint", "bob@x.org"),
    ]


SPRING = {
    **dict.fromkeys(METRICS, 0),
    "count_targeted": 3, "count_injected": 3, "count_sent": 3, "count_accepted": 3, "count_delivered": 3,
    "count_delivered_subsequent": 3, "total_msg_volume": 3 * 2048, "total_delivery_time_subsequent": 3 * 120,
    "count_rendered": 3, "count_unique_rendered": 2, "count_initial_rendered": 2, "count_unique_initial_rendered": 2,
    "count_clicked": 2, "count_raw_clicked": 2, "count_unique_clicked": 2, "count_unique_confirmed_opened": 3,
    "count_nonprefetched_rendered": 2, "count_nonprefetched_unique_rendered": 1,
    "count_nonprefetched_initial_rendered": 1, "count_nonprefetched_unique_initial_rendered": 1,
    "count_nonprefetched_unique_confirmed_opened": 2,
    "count_human_rendered": 2, "count_unique_human_rendered": 1, "count_human_initial_rendered": 1,
    "count_unique_human_initial_rendered": 1, "count_human_clicked": 1, "count_unique_human_clicked": 1,
    "count_unique_human_confirmed_opened": 2, "count_unsubscribe": 2, "count_spam_complaint": 1,
}
FALL = {**dict.fromkeys(METRICS, 0), "count_targeted": 2, "count_injected": 1, "count_sent": 1, "count_bounce": 2,
        "count_inband_bounce": 1, "count_outofband_bounce": 1, "count_hard_bounce": 2, "count_accepted": -1,
        "count_delayed": 2, "count_rejected": 1, "count_policy_rejection": 1}


async def metrics(service: ApiApp, path: str = "", **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://{service.address}") as client:
        return await client.get(f"/api/v1/metrics/deliverability{path}", params=params)


async def test_every_metric_counts_events_and_distinct_recipients(store: EventStore, start_service: Services) -> None:
    await store.append(story())
    service = await start_service(store)
    response = await metrics(service)
    assert response.headers["content-type"] == "application/json"
    assert response.json()["results"] == [{name: SPRING[name] + FALL[name] for name in METRICS}]


async def test_the_campaign_breakdown_has_one_entry_per_campaign(store: EventStore, start_service: Services) -> None:
    await store.append(story())
    service = await start_service(store)
    assert (await metrics(service, "/campaign")).json() == {"results": [
        {"campaign_id": "fall", **FALL}, {"campaign_id": "spring", **SPRING}]}
    assert (await metrics(service, "/campaign", campaigns="spring")).json() == {"results": [
        {"campaign_id": "spring", **SPRING}]}


async def test_from_to_and_metrics_narrow_the_answer(store: EventStore, start_service: Services) -> None:
    await store.append(story())
    service = await start_service(store)
    chosen = "count_injected,count_unique_human_confirmed_opened"
    assert (await metrics(service, metrics=chosen, **{"from": str(T0 + 6)})).json()["results"] == [
        {"count_injected": 1, "count_unique_human_confirmed_opened": 2}]
    assert (await metrics(service, metrics="count_injected", to=str(T0 + 2))).json()["results"] == [
        {"count_injected": 2}]
    assert (await metrics(service, campaigns="nope")).json()["results"] == [dict.fromkeys(METRICS, 0)]
    assert (await metrics(service, "/campaign", campaigns="nope")).json() == {"results": []}


async def test_unknown_metrics_and_bad_times_answer_400(store: EventStore, start_service: Services) -> None:
    service = await start_service(store)
    for params, param in (({"metrics": "count_injected,count_magic"}, "metrics"), ({"from": "soon"}, "from"),
                          ({"from": "20", "to": "10"}, "from")):
        response = await metrics(service, **params)
        assert response.status_code == 400 and response.json()["errors"][0]["param"] == param


async def get_json(service: ApiApp, path: str, **params: Any) -> Any:
    async with httpx.AsyncClient(base_url=f"http://{service.address}") as client:
        response = await client.get(f"/api/v1/metrics{path}", params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_group_bys_report_one_row_per_value_under_sparkposts_key(
        store: EventStore, start_service: Services) -> None:
    await store.append(story())
    service = await start_service(store)
    by_domain = await get_json(service, "/deliverability/domain", metrics="count_injected,count_delivered")
    assert by_domain["results"] == [{"domain": "x.org", "count_injected": 4, "count_delivered": 3}]
    watched = await get_json(service, "/deliverability/watched-domain", metrics="count_injected")
    assert watched["results"] == [{"watched_domain": "x.org", "count_injected": 4}]
    pools = await get_json(service, "/deliverability/ip-pool", metrics="count_injected")
    assert pools["results"] == [{"ip_pool": "", "count_injected": 0}, {"ip_pool": "default", "count_injected": 4}]
    ordered = await get_json(service, "/deliverability/campaign", metrics="count_injected,count_bounce",
                             order_by="count_bounce", limit="1")
    assert ordered["results"] == [{"campaign_id": "fall", "count_injected": 1, "count_bounce": 2}]
    accounts = await get_json(service, "/deliverability/subaccount", metrics="count_targeted")
    assert accounts["results"] == [{"subaccount_id": "7", "count_targeted": 5}]
    for name in ("sending-ip", "template", "mailbox-provider", "mailbox-provider-region", "sending-domain"):
        assert "results" in await get_json(service, f"/deliverability/{name}", metrics="count_injected")


async def test_the_time_series_has_every_step_in_the_timezone(store: EventStore, start_service: Services) -> None:
    start = datetime(2024, 5, 1, 12, 0, tzinfo=UTC).timestamp()
    await store.append([make_event("injection", n, ts=start + 3600 * hour) for n, hour in enumerate((0, 0, 2))])
    service = await start_service(store)
    window = {"from": "2024-05-01T14:00", "to": "2024-05-01T17:00", "timezone": "Europe/Berlin"}
    series = await get_json(service, "/deliverability/time-series", metrics="count_injected", precision="hour",
                            **window)
    assert series["results"] == [
        {"count_injected": 2, "ts": "2024-05-01T14:00:00+02:00"},
        {"count_injected": 0, "ts": "2024-05-01T15:00:00+02:00"},
        {"count_injected": 1, "ts": "2024-05-01T16:00:00+02:00"}]
    daily = await get_json(service, "/deliverability/time-series", metrics="count_injected", precision="day",
                           **{"from": "2024-04-30T00:00", "to": "2024-05-02T00:00"})
    assert daily["results"] == [{"count_injected": 0, "ts": "2024-04-30T00:00:00+00:00"},
                                {"count_injected": 3, "ts": "2024-05-01T00:00:00+00:00"}]
    monthly = await get_json(service, "/deliverability/time-series", metrics="count_injected", precision="month",
                             **{"from": "2024-04-10T00:00", "to": "2024-05-20T00:00"})
    assert [row["count_injected"] for row in monthly["results"]] == [0, 3]


async def test_reason_endpoints_group_bounces_rejections_delays_and_links(
        store: EventStore, start_service: Services) -> None:
    await store.append(story())
    service = await start_service(store)
    (bounce,) = (await get_json(service, "/deliverability/bounce-reason"))["results"]
    assert bounce == {"reason": "550 5.1.1 <ann@example.com>: unknown user", "bounce_class_name": "Invalid Recipient",
                      "bounce_class_description": "The recipient is invalid.", "bounce_category_id": 1,
                      "bounce_category_name": "Hard", "classification_id": 10, "count_bounce": 2,
                      "count_inband_bounce": 1, "count_outofband_bounce": 1}
    (by_domain,) = (await get_json(service, "/deliverability/bounce-reason/domain"))["results"]
    assert by_domain["domain"] == "x.org"
    (classified,) = (await get_json(service, "/deliverability/bounce-classification"))["results"]
    assert classified["classification_id"] == 10 and "reason" not in classified
    (rejected,) = (await get_json(service, "/deliverability/rejection-reason"))["results"]
    assert rejected["count_rejected"] == 1 and rejected["rejection_type"] == "Policy Rejection"
    (delayed,) = (await get_json(service, "/deliverability/delay-reason"))["results"]
    assert delayed["count_delayed"] == 2 and delayed["count_delayed_first"] == 0
    (link,) = (await get_json(service, "/deliverability/link-name"))["results"]
    assert link == {"link_name": "sale", "count_clicked": 2, "count_raw_clicked": 2}
    attempts = await get_json(service, "/deliverability/attempt")
    assert attempts["results"] == [{"attempt": "2", "count_delivered": 3}]


async def test_lists_name_what_the_metrics_hold(store: EventStore, start_service: Services) -> None:
    await store.append(story())
    service = await start_service(store)
    assert (await get_json(service, "/campaigns"))["results"] == {"campaigns": ["fall", "spring"]}
    assert (await get_json(service, "/campaigns", match="SPR"))["results"] == {"campaigns": ["spring"]}
    assert (await get_json(service, "/campaigns", limit="1"))["results"] == {"campaigns": ["fall"]}
    assert (await get_json(service, "/domains"))["results"] == {"domains": ["x.org"]}
    assert (await get_json(service, "/ip-pools"))["results"] == {"ip-pools": ["default"]}
    assert (await get_json(service, "/sending-domains"))["results"] == {"sending-domains": ["example.net"]}
    links = (await get_json(service, "/"))["links"]
    assert {"href": "/api/v1/metrics/campaigns", "rel": "campaigns", "method": "GET"} in links


@pytest.mark.parametrize(("path", "params", "param"), [
    ("/deliverability", {"metrics": "count_inbox_panel"}, "metrics"),
    ("/deliverability", {"query_filters": '{"groupings": [{"XOR": {}}]}'}, "query_filters"),
    ("/deliverability", {"subject_campaigns": "x"}, "subject_campaigns"),
    ("/deliverability", {"colour": "red"}, "colour"),
    ("/deliverability", {"precision": "2min"}, "precision"),
    ("/deliverability/time-series", {"precision": "hour"}, "from"),
    ("/deliverability/bounce-reason", {"metrics": "count_delivered"}, "metrics"),
    ("/deliverability/campaign", {"metrics": "count_injected", "order_by": "count_bounce"}, "order_by"),
])
async def test_what_engaged_cannot_answer_is_refused_with_a_reason(
        store: EventStore, start_service: Services, path: str, params: dict[str, str], param: str) -> None:
    service = await start_service(store)
    async with httpx.AsyncClient(base_url=f"http://{service.address}") as client:
        response = await client.get(f"/api/v1/metrics{path}", params=params)
    assert response.status_code == 400
    (problem,) = response.json()["errors"]
    assert problem["param"] == param and problem["code"] == "1200" and problem["description"]


def advanced_story() -> list[Event]:
    """Five injections whose campaigns and recipient domains the advanced filters pick among."""
    pairs = [("spring-333", "a@gmail.com"), ("spring-344", "b@yahoo.com"), ("fall-Friday", "c@hotmail.com"),
             ("stuff", "d@mail.example"), ("things", "e@other.org")]
    return [make_event("injection", n, campaign=campaign, rcpt=rcpt, message_id=f"m-{n}")
            for n, (campaign, rcpt) in enumerate(pairs)]


async def injected(service: ApiApp, filters: object, path: str = "", **params: str) -> Any:
    response = await metrics(service, path, metrics="count_injected", query_filters=json.dumps(filters), **params)
    assert response.status_code == 200, response.text
    return response.json()["results"]


async def test_query_filters_combine_groupings_with_and_and_conditions_by_their_operator(
        store: EventStore, start_service: Services) -> None:
    await store.append(advanced_story())
    service = await start_service(store)
    eq = {"groupings": [{"AND": {"domains": {"eq": ["gmail.com", "yahoo.com"]}}}]}
    assert await injected(service, eq) == [{"count_injected": 2}]
    either = {"groupings": [{"OR": {"domains": {"eq": ["gmail.com"]}, "campaigns": {"like": ["FRIDAY"]}}}]}
    assert await injected(service, either) == [{"count_injected": 2}]
    both = {"groupings": [{"OR": {"domains": {"like": ["mail"]}}},
                          {"AND": {"campaigns": {"notEq": ["stuff"], "notLike": ["fri"]}}}]}
    assert await injected(service, both) == [{"count_injected": 1}]
    assert await injected(service, both, "/campaign") == [{"campaign_id": "spring-333", "count_injected": 1}]
    # notEq holds for events without the field at all (no template here), as "not that template" does.
    assert await injected(service, {"groupings": [{"AND": {"templates": {"notEq": ["welcome"]}}}]}) == [
        {"count_injected": 5}]
    assert await injected(service, {"groupings": [{"AND": {"templates": {"eq": ["welcome"]}}}]}) == [
        {"count_injected": 0}]
    # SparkPost ignores the simple filters beside query_filters (its own example sends `{}`).
    assert await injected(service, {}, campaigns="nope") == [{"count_injected": 5}]
    series = await injected(service, either, "/time-series", precision="day", **{"from": str(T0 - 60)})
    assert sum(step["count_injected"] for step in series) == 2


async def test_query_filters_that_break_the_schema_answer_400_with_each_violation(
        store: EventStore, start_service: Services) -> None:
    service = await start_service(store)
    broken = {"groupings": [{"AND": {"domains": {"like": ["ab"]}, "colours": {"eq": ["red"]}}},
                            {"AND": {}, "OR": {}}]}
    response = await metrics(service, query_filters=json.dumps(broken))
    assert response.status_code == 400
    (problem,) = response.json()["errors"]
    assert problem["param"] == "query_filters" and problem["code"] == "1200"
    assert [item["path"] for item in problem["validationErrors"]] == [
        "groupings[0].AND.domains.like[0]", "groupings[0].AND.colours", "groupings[1]"]
    assert (await metrics(service, query_filters="{nope")).json()["errors"][0]["validationErrors"][0]["path"] == ""


async def test_the_query_filters_schema_is_served(store: EventStore, start_service: Services) -> None:
    service = await start_service(store)
    schema = (await get_json(service, "/deliverability/query-filters-schema"))["results"]
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema"
    assert set(schema["$defs"]) >= {"groupings", "filters", "logicalOperators"}
    assert "domains" in schema["$defs"]["filters"]["properties"]
