"""GET/POST/PUT/DELETE /api/v1/webhooks: SparkPost's shape, validation, and read-only [[webhooks]] entries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from engaged.app import ApiApp
from engaged.config import WebhookConfig
from engaged.types import EventStore
from engaged.webhook_rules import config_webhook_id
from tests.eventstores import Services, StoreMaker
from tests.sinks.receiver import Receiver, always

TARGET = "http://127.0.0.1:9/hook"
"""Nothing listens there: good enough where no test POST is made (refusals, [[webhooks]])."""


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    started = await Receiver().start()
    yield started
    await started.stop()


async def call(service: ApiApp, method: str, path: str = "", **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://{service.address}") as client:
        return await client.request(method, f"/api/v1/webhooks{path}", **kwargs)


async def test_a_webhook_is_created_listed_read_updated_and_deleted(
        store: EventStore, start_service: Services, receiver: Receiver) -> None:
    service = await start_service(store)
    created = await call(service, "POST", json={"name": "crm", "target": receiver.url, "events": ["click"],
                                                "auth_token": "t", "allow_private_targets": True, "active": True})
    assert created.status_code == 200
    results = created.json()["results"]
    hook_id, secret = results["id"], results["signing_secret"]
    assert results["name"] == "crm" and secret.startswith("whsec_")

    (listed,) = (await call(service, "GET")).json()["results"]
    assert listed["id"] == hook_id and listed["events"] == ["click"] and listed["source"] == "api"
    assert "signing_secret" not in listed and "auth_token" not in listed
    assert listed["delivery"] == {"cursor": 0, "batch_in_flight": None, "attempts": 0, "next_attempt": None,
                                  "last_error": None}
    assert listed["active"] is True and listed["last_successful"] is None and listed["last_failure"] is None

    read = (await call(service, "GET", f"/{hook_id}")).json()["results"]
    assert read["signing_secret"] == secret and read["auth_token"] == "t"

    updated = await call(service, "PUT", f"/{hook_id}", json={"events": ["open", "click"], "batch_size": 10})
    assert updated.json()["results"]["id"] == hook_id and updated.json()["results"]["name"] == "crm"
    assert updated.json()["results"]["links"][0]["href"] == f"/api/v1/webhooks/{hook_id}/validate"
    read = (await call(service, "GET", f"/{hook_id}")).json()["results"]
    assert read["events"] == ["open", "click"] and read["batch_size"] == 10 and read["target"] == receiver.url
    assert read["signing_secret"] == secret

    deleted = await call(service, "DELETE", f"/{hook_id}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert (await call(service, "GET", f"/{hook_id}")).status_code == 404
    assert (await call(service, "DELETE", f"/{hook_id}")).status_code == 404
    assert (await call(service, "PUT", f"/{hook_id}", json={})).status_code == 404
    assert (await call(service, "GET", f"/{hook_id}/dead-letters")).status_code == 404
    assert (await call(service, "GET")).json() == {"results": []}


@pytest.mark.parametrize(("body", "param"), [
    ({"target": TARGET}, "name"),
    ({"name": "x"}, "target"),
    ({"name": "x", "target": TARGET, "events": ["click", "teleport"]}, "events"),
    ({"name": "x", "target": TARGET, "auth_type": "oauth3"}, "auth_type"),
    ({"name": "x", "target": TARGET, "auth_type": "basic", "auth_credentials": {"username": "u"}}, "auth_credentials"),
    ({"name": "x", "target": TARGET, "auth_type": "bearer"}, "auth_credentials"),
    ({"name": "x", "target": TARGET, "batch_size": 0}, "batch_size"),
    ({"name": "x", "target": TARGET, "retry_max_age": -1}, "retry_max_age"),
    ({"name": " ", "target": TARGET}, "name"),
])
async def test_invalid_definitions_answer_422_with_sparkposts_code_naming_the_field(
        store: EventStore, start_service: Services, body: dict[str, Any], param: str) -> None:
    service = await start_service(store)
    response = await call(service, "POST", json={"allow_private_targets": True, **body})
    assert response.status_code == 422
    (problem,) = response.json()["errors"]
    assert problem["param"] == param
    assert problem["code"] in ("1300", "1400") and problem["message"] and param in problem["description"]
    assert await store.webhooks() == []


async def test_unknown_fields_and_bodies_that_are_not_json_objects_answer_422(
        store: EventStore, start_service: Services) -> None:
    service = await start_service(store)
    for content in (b'{"name": "x", "target": "http://a.example/", "colour": "red"}', b"[1]", b"{", b""):
        response = await call(service, "POST", content=content, headers={"content-type": "application/json"})
        assert response.status_code == 422, content
        assert response.headers["content-type"] == "application/json"
        assert response.json()["errors"][0]["code"] == "1300"


async def test_configured_webhooks_are_listed_read_only_and_keep_id_and_secret_across_restarts(
        make_store: StoreMaker, store: EventStore, start_service: Services) -> None:
    configured = WebhookConfig(name="ops", target=TARGET, events=["bounce"], allow_private_targets=True)
    first = await start_service(store, webhooks=[configured])
    (listed,) = (await call(first, "GET")).json()["results"]
    assert listed["id"] == config_webhook_id("ops") and listed["source"] == "config"
    assert listed["events"] == ["bounce"]
    secret = (await call(first, "GET", f"/{listed['id']}")).json()["results"]["signing_secret"]
    assert (await call(first, "PUT", f"/{listed['id']}", json={"events": []})).status_code == 409
    assert (await call(first, "DELETE", f"/{listed['id']}")).status_code == 409
    await first.stop()

    changed = WebhookConfig(name="ops", target=TARGET, events=["bounce", "delay"], allow_private_targets=True)
    second = await start_service(store, webhooks=[changed])
    read = (await call(second, "GET", f"/{listed['id']}")).json()["results"]
    assert read["signing_secret"] == secret and read["events"] == ["bounce", "delay"]
    await second.stop()

    await start_service(store, webhooks=[])
    assert await store.webhooks() == []


async def test_replaying_dead_letters_of_an_unknown_webhook_answers_404(
        store: EventStore, start_service: Services, receiver: Receiver) -> None:
    service = await start_service(store)
    assert (await call(service, "POST", "/nope/dead-letters/replay")).status_code == 404
    hook = (await call(service, "POST", json={"name": "x", "target": receiver.url,
                                              "allow_private_targets": True})).json()
    replay = await call(service, "POST", f"/{hook['results']['id']}/dead-letters/replay", json={"ids": "all"})
    assert replay.status_code == 422


async def test_creation_sends_a_signed_test_post_and_stores_nothing_unless_the_target_answers_2xx(
        store: EventStore, start_service: Services, receiver: Receiver) -> None:
    service = await start_service(store)
    body = {"name": "crm", "target": receiver.url, "allow_private_targets": True, "auth_token": "t", "timeout": 2}
    receiver.validation = always(500)
    refused = await call(service, "POST", json=body)
    assert refused.status_code == 400
    (problem,) = refused.json()["errors"]
    assert (problem["message"], problem["code"], problem["param"]) == ("Test POST to endpoint failed", "1200",
                                                                       "target")
    assert problem["description"] == "the target answered HTTP 500" and problem["response"]["status"] == 500
    assert (await call(service, "GET")).json() == {"results": []}

    unreachable = await call(service, "POST", json={**body, "target": TARGET})
    assert unreachable.status_code == 400 and unreachable.json()["errors"][0]["response"]["status"] == 0
    assert (await call(service, "GET")).json() == {"results": []}

    receiver.validation = always(204)
    created = await call(service, "POST", json=body)
    assert created.status_code == 200
    test_post = receiver.validations[-1]
    assert test_post.body == b'[{"msys":{}}]' and test_post.headers["x-messagesystems-webhook-token"] == "t"
    assert test_post.headers["x-engaged-signature"].startswith("t=")
    assert [hook["id"] for hook in (await call(service, "GET")).json()["results"]] == [created.json()["results"]["id"]]


async def test_a_changed_target_is_tested_before_the_change_is_applied(
        store: EventStore, start_service: Services, receiver: Receiver) -> None:
    service = await start_service(store)
    other = await Receiver().start()
    try:
        created = await call(service, "POST", json={"name": "crm", "target": receiver.url,
                                                    "allow_private_targets": True, "timeout": 2})
        hook_id = created.json()["results"]["id"]
        assert len(receiver.validations) == 1
        kept = await call(service, "PUT", f"/{hook_id}", json={"events": ["open"]})  # same target: no test POST
        assert kept.status_code == 200 and len(receiver.validations) == 1
        other.validation = always(503)
        refused = await call(service, "PUT", f"/{hook_id}", json={"target": other.url, "events": ["click"]})
        assert refused.status_code == 400 and len(other.validations) == 1
        read = (await call(service, "GET", f"/{hook_id}")).json()["results"]
        assert (read["target"], read["events"]) == (receiver.url, ["open"])  # nothing of the PUT applied
        other.validation = always(200)
        moved = await call(service, "PUT", f"/{hook_id}", json={"target": other.url})
        assert moved.status_code == 200
        assert (await call(service, "GET", f"/{hook_id}")).json()["results"]["target"] == other.url
    finally:
        await other.stop()
