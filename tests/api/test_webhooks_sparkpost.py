"""SparkPost's webhook features: active, validate, batch-status, documentation and samples, custom headers,
OAuth 2.0 client credentials, exception_subaccounts, last_successful/last_failure, operator-allowed networks."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import httpx
import msgspec
import pytest

from engaged.app import ApiApp
from engaged.config import ApiConfig, Config
from engaged.events.model import EVENT_TYPES, envelope_of
from engaged.prometheus import Metrics
from engaged.types import EventStore
from tests.eventstores import Services, eventually
from tests.sample_events import make_event
from tests.sinks.receiver import Receiver, always

FAST = {"allow_private_targets": True, "batch_age": 0.05, "retry_base": 0.05, "timeout": 1.0}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    started = await Receiver().start()
    yield started
    await started.stop()


@pytest.fixture
async def token_server() -> AsyncIterator[Receiver]:
    started = await Receiver(reply=b'{"access_token": "tok-1", "token_type": "bearer", "expires_in": 3600}').start()
    yield started
    await started.stop()


async def api(service: ApiApp, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://{service.address}", timeout=10) as client:
        return await client.request(method, f"/api/v1/webhooks{path}", **kwargs)


async def create(service: ApiApp, **fields: Any) -> dict[str, Any]:
    response = await api(service, "POST", "", json={"name": "crm", **fields})
    assert response.status_code == 200, response.text
    results: dict[str, Any] = response.json()["results"]
    return results


async def _true(value: bool) -> bool:
    return value


async def test_an_inactive_webhook_receives_nothing_until_it_is_activated_again(
        store: EventStore, start_service: Services, receiver: Receiver) -> None:
    service = await start_service(store)
    hook = await create(service, target=receiver.url, active=False, **FAST)
    await store.append([make_event("click", 1)])
    marker = await create(service, name="marker", target=receiver.url, **FAST)  # an active one sees the next event
    await store.append([make_event("click", 2)])
    await eventually(lambda: _true(any(str(e["event_id"]).endswith("2") for e in receiver.events())))
    assert [str(e["event_id"])[-1] for e in receiver.events()] == ["2"]  # only the marker's delivery
    assert (await api(service, "GET", f"/{hook['id']}")).json()["results"]["active"] is False
    assert (await api(service, "PUT", f"/{hook['id']}", json={"active": True})).status_code == 200
    await store.append([make_event("click", 3)])
    await eventually(lambda: _true(sum(str(e["event_id"]).endswith("3") for e in receiver.events()) == 2))
    assert sum(str(e["event_id"]).endswith("1") for e in receiver.events()) == 0  # skipped while inactive
    assert marker["id"] != hook["id"]


async def test_validate_posts_sparkposts_sample_batch_and_reports_the_answer(
        store: EventStore, start_service: Services, receiver: Receiver) -> None:
    service = await start_service(store)
    hook = await create(service, target=receiver.url, custom_headers={"x-api-key": "abcd"}, **FAST)
    answer = await api(service, "POST", f"/{hook['id']}/validate")
    assert answer.status_code == 200
    assert answer.json()["results"]["msg"] == "Test POST to endpoint succeeded"
    assert answer.json()["results"]["response"]["status"] == 200
    created, request = receiver.validations  # the first came with the creation
    assert request.body == b'[{"msys":{}}]' and request.headers["x-api-key"] == "abcd"
    assert created.headers["x-engaged-signature"] and receiver.requests == []
    receiver.validation = always(500)
    failed = await api(service, "POST", f"/{hook['id']}/validate")
    assert failed.status_code == 400
    (problem,) = failed.json()["errors"]
    assert problem["message"] == "Test POST to endpoint failed" and problem["response"]["status"] == 500
    assert (await api(service, "POST", "/nope/validate")).status_code == 404


async def test_batch_status_and_last_successful_and_last_failure_follow_deliveries(
        store: EventStore, start_service: Services, receiver: Receiver) -> None:
    receiver.behaviour = lambda n: 503 if n == 0 else 200
    service = await start_service(store)
    hook = await create(service, target=receiver.url, **FAST)
    await store.append([make_event("click", 1)])
    await eventually(lambda: _true(len(receiver.accepted()) == 1))

    async def settled() -> list[dict[str, Any]] | None:
        results: list[dict[str, Any]] = (await api(service, "GET", f"/{hook['id']}/batch-status")).json()["results"]
        return results if results and results[0]["response_code"] == "200" else None

    (status,) = await eventually(settled)
    assert status["batch_id"] == receiver.requests[0].headers["x-messagesystems-batch-id"]
    assert status["attempts"] == 2 and status["ts"].endswith("Z") and status["latency"] >= 0
    assert "failure_code" not in status
    read = (await api(service, "GET", f"/{hook['id']}")).json()["results"]
    assert read["last_successful"] is not None and read["last_failure"] is not None
    assert len(read["last_successful"]) == len("2014-08-01 16:09:15")
    utc = datetime.strptime(read["last_successful"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    tokyo = (await api(service, "GET", f"/{hook['id']}", params={"timezone": "Asia/Tokyo"})).json()["results"]
    assert tokyo["last_successful"] == utc.astimezone(ZoneInfo("Asia/Tokyo")).strftime("%Y-%m-%d %H:%M:%S")
    (listed,) = (await api(service, "GET", "", params={"timezone": "Asia/Tokyo"})).json()["results"]
    assert listed["last_successful"] == tokyo["last_successful"]
    assert (await api(service, "GET", "", params={"timezone": "Mars/Olympus"})).status_code == 400
    assert {link["rel"] for link in read["links"]} >= {"urn.msys.webhooks.validate", "urn.msys.webhooks.batches"}


async def test_custom_headers_are_sent_and_restricted_ones_refused(
        store: EventStore, start_service: Services, receiver: Receiver) -> None:
    service = await start_service(store)
    await create(service, target=receiver.url, custom_headers={"x-api-key": "abcd", "X-Tenant": "7"}, **FAST)
    await store.append([make_event("open", 1)])
    await eventually(lambda: _true(len(receiver.accepted()) == 1))
    (request,) = receiver.accepted()
    assert request.headers["x-api-key"] == "abcd" and request.headers["x-tenant"] == "7"
    for headers in ({"Authorization": "x"}, {"X-MessageSystems-Batch-ID": "forged"}, {"bad name": "x"},
                    {"x-a": "line\r\nbreak"}):
        refused = await api(service, "POST", "", json={"name": "x", "target": receiver.url, "custom_headers": headers,
                                                       **FAST})
        assert refused.status_code == 422 and refused.json()["errors"][0]["param"] == "custom_headers", headers


async def test_oauth2_client_credentials_token_is_cached_and_renewed_after_a_401(
        store: EventStore, start_service: Services, receiver: Receiver, token_server: Receiver) -> None:
    receiver.behaviour = lambda n: 401 if n == 1 else 200
    service = await start_service(store)
    details = {"url": token_server.url, "body": {"client_id": "CLIENT123", "client_secret": "s3cret",
                                                 "grant_type": "client_credentials"}}
    await create(service, target=receiver.url, auth_type="oauth2", auth_request_details=details, **FAST)
    await store.append([make_event("open", 1)])
    await eventually(lambda: _true(len(receiver.accepted()) == 1))
    await store.append([make_event("open", 2)])  # answered 401 once: a new token, then delivered
    await eventually(lambda: _true(len(receiver.accepted()) == 2))
    assert all(request.headers["authorization"] == "Bearer tok-1" for request in receiver.requests)
    assert len(token_server.requests) == 3  # creation's test POST, then one reused until the 401, then a new one
    form = parse_qs(token_server.requests[0].body.decode())
    assert form == {"client_id": ["CLIENT123"], "client_secret": ["s3cret"], "grant_type": ["client_credentials"]}
    assert token_server.requests[0].headers["content-type"] == "application/x-www-form-urlencoded"
    refused = await api(service, "POST", "", json={"name": "y", "target": receiver.url, "auth_type": "oauth2", **FAST})
    assert refused.status_code == 422 and refused.json()["errors"][0]["param"] == "auth_request_details"
    token_server.behaviour = always(502)  # no token, no test POST, no webhook: SparkPost's 400
    failed = await api(service, "POST", "", json={"name": "z", "target": receiver.url, "auth_type": "oauth2",
                                                   "auth_request_details": details, **FAST})
    assert failed.status_code == 400
    (problem,) = failed.json()["errors"]
    assert (problem["message"], problem["param"]) == ("POST to webhook tokens URL failed", "auth_request_details")
    assert problem["response"]["status"] == 502
    token_server.behaviour, token_server.reply = always(200), b"{}"  # a 2xx without an access_token: no token
    asked = len(receiver.requests)
    failed = await api(service, "POST", "", json={"name": "w", "target": receiver.url, "auth_type": "oauth2",
                                                   "auth_request_details": details, **FAST})
    assert failed.status_code == 400, failed.text
    (problem,) = failed.json()["errors"]
    assert (problem["message"], problem["param"]) == ("POST to webhook tokens URL failed", "auth_request_details")
    assert "without an access_token" in problem["description"]
    assert len(receiver.requests) == asked  # the target was never sent the test POST
    assert [hook["name"] for hook in (await api(service, "GET", "")).json()["results"]] == ["crm"]


async def test_events_of_exception_subaccounts_are_left_out(
        store: EventStore, start_service: Services, receiver: Receiver) -> None:
    service = await start_service(store)
    await create(service, target=receiver.url, exception_subaccounts=[7], **FAST)
    other = msgspec.structs.replace(make_event("open", 2), subaccount_id="8")
    await store.append([make_event("open", 1), other])  # make_event's subaccount is "7"
    await eventually(lambda: _true(len(receiver.accepted()) == 1))
    assert [event["event_id"] for event in receiver.events()] == [other.event_id]


async def test_documentation_and_samples_describe_every_type_in_sparkposts_shapes(
        store: EventStore, start_service: Services) -> None:
    service = await start_service(store)
    documentation = (await api(service, "GET", "/events/documentation")).json()["results"]
    assert set(documentation) == {"message_event", "track_event", "unsubscribe_event"}
    click = documentation["track_event"]["events"]["click"]["event"]
    assert click["target_link_url"]["description"] and "sampleValue" in click["target_link_url"]
    samples = (await api(service, "GET", "/events/samples")).json()["results"]
    assert [next(iter(item["msys"])) for item in samples] == [envelope_of(name) for name in EVENT_TYPES]
    assert all(type(next(iter(item["msys"].values()))["timestamp"]) is int for item in samples)
    (bounce,) = (await api(service, "GET", "/events/samples", params={"events": "bounce"})).json()["results"]
    assert bounce["msys"]["message_event"]["type"] == "bounce"
    assert (await api(service, "GET", "/events/samples", params={"events": "teleport"})).status_code == 400
    async with httpx.AsyncClient(base_url=f"http://{service.address}") as client:
        events_docs = (await client.get("/api/v1/events/message/documentation")).json()["results"]
        events_samples = (await client.get("/api/v1/events/samples", params={"events": "open,click"})).json()
    assert [entry["type"]["sampleValue"] for entry in events_docs] == list(EVENT_TYPES)
    assert [event["type"] for event in events_samples["results"]] == ["open", "click"]
    assert events_samples["results"][0]["timestamp"].endswith("+00:00")


async def test_the_operator_allows_private_target_networks_in_the_configuration(
        store: EventStore, tmp_path: Path, receiver: Receiver) -> None:
    def service(networks: list[str]) -> ApiApp:
        config = Config(data_dir=str(tmp_path / "data"),
                        api=ApiConfig(listen="127.0.0.1:0", webhook_private_networks=networks))
        return ApiApp(config, store, metrics=Metrics(), owner=f"node-{time.monotonic_ns()}", keepalive=0.5)

    fields = {"batch_age": 0.05, "retry_base": 0.05, "timeout": 1.0}
    refusing = service([])
    await refusing.start()
    try:
        refused = await api(refusing, "POST", "", json={"name": "a", "target": receiver.url, **fields})
        assert refused.status_code == 400 and refused.json()["errors"][0]["param"] == "target"
    finally:
        await refusing.stop()
    allowing = service(["127.0.0.0/8"])
    await allowing.start()
    try:
        await create(allowing, target=receiver.url, **fields)
        await store.append([make_event("open", 1)])
        await eventually(lambda: _true(len(receiver.accepted()) == 1))
    finally:
        await allowing.stop()
