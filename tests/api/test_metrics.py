"""GET /api/v1/metrics/deliverability and /deliverability/campaign: SparkPost's counts plus human-only ones."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from engaged.api.service import ApiService
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
    "count_injected": 3, "count_delivered": 3, "count_bounce": 0, "count_delayed": 0, "count_policy_rejection": 0,
    "count_rendered": 3, "count_unique_rendered": 2, "count_initial_rendered": 2, "count_unique_initial_rendered": 2,
    "count_clicked": 2, "count_unique_clicked": 2, "count_unique_confirmed_opened": 3,
    "count_human_rendered": 2, "count_unique_human_rendered": 1, "count_human_initial_rendered": 1,
    "count_unique_human_initial_rendered": 1, "count_human_clicked": 1, "count_unique_human_clicked": 1,
    "count_unique_human_confirmed_opened": 2, "count_unsubscribe": 2, "count_spam_complaint": 1,
    "count_outofband_bounce": 0,
}
FALL = {**dict.fromkeys(METRICS, 0), "count_injected": 1, "count_bounce": 1, "count_delayed": 2,
        "count_policy_rejection": 1, "count_outofband_bounce": 1}


async def metrics(service: ApiService, path: str = "", **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://{service.address}") as client:
        return await client.get(f"/api/v1/metrics/deliverability{path}", params=params)


async def test_every_metric_counts_events_and_distinct_recipients(store: EventStore, start_service: Services) -> None:
    await store.append(story())
    service = await start_service(store)
    response = await metrics(service)
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"results": [{name: SPRING[name] + FALL[name] for name in METRICS}]}


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
    assert (await metrics(service, metrics=chosen, **{"from": str(T0 + 6)})).json() == {"results": [
        {"count_injected": 1, "count_unique_human_confirmed_opened": 2}]}
    assert (await metrics(service, metrics="count_injected", to=str(T0 + 2))).json() == {"results": [
        {"count_injected": 2}]}
    assert (await metrics(service, campaigns="nope")).json() == {"results": [dict.fromkeys(METRICS, 0)]}
    assert (await metrics(service, "/campaign", campaigns="nope")).json() == {"results": []}


async def test_unknown_metrics_and_bad_times_answer_400(store: EventStore, start_service: Services) -> None:
    service = await start_service(store)
    for params, param in (({"metrics": "count_injected,count_magic"}, "metrics"), ({"from": "soon"}, "from"),
                          ({"from": "20", "to": "10"}, "from")):
        response = await metrics(service, **params)
        assert response.status_code == 400 and response.json()["errors"][0]["param"] == param
