"""Webhook delivery against real HTTP receivers on loopback, on SQLite and on PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import httpx
import msgspec
import pytest

from engaged.app import ApiApp
from engaged.events.model import EVENT_TYPES, envelope_of
from engaged.sinks.signing import verify
from engaged.types import EventStore, WebhookRecord, WebhookState
from tests.eventstores import Services, StoreMaker, eventually
from tests.sample_events import eid, make_event
from tests.sinks.receiver import Receiver, always

_T = TypeVar("_T")
FAST = {"allow_private_targets": True, "batch_age": 0.05, "retry_base": 0.05, "timeout": 1.0}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    started = await Receiver().start()
    yield started
    await started.stop()


async def create(service: ApiApp, **fields: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=f"http://{service.address}") as client:
        response = await client.post("/api/v1/webhooks", json={"name": "crm", **fields})
    assert response.status_code == 200, response.text
    results: dict[str, Any] = response.json()["results"]
    return results


async def api(service: ApiApp, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://{service.address}") as client:
        return await client.request(method, path, **kwargs)


def delivered_ids(receiver: Receiver) -> Counter[str]:
    return Counter(str(event["event_id"]) for event in receiver.events())


async def test_a_batch_arrives_in_sparkposts_shape_with_valid_signatures(
        store: EventStore, start_service: Services, receiver: Receiver) -> None:
    service = await start_service(store)
    hook = await create(service, target=receiver.url, auth_token="tok-1", **FAST)
    events = [make_event(kind, n) for n, kind in enumerate(EVENT_TYPES)]
    await store.append(events)
    await eventually(lambda: _async(len(receiver.events()) == len(events)))
    (request,) = receiver.accepted()
    body = msgspec.json.decode(request.body)
    assert [next(iter(item["msys"])) for item in body] == [envelope_of(kind) for kind in EVENT_TYPES]
    assert [next(iter(item["msys"].values())) for item in body] == [
        {**msgspec.to_builtins(e), "timestamp": int(float(e.timestamp))} for e in events]
    headers = request.headers
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("engaged-webhooks/")
    assert headers["x-messagesystems-webhook-token"] == "tok-1"
    assert headers["x-messagesystems-batch-id"] == headers["webhook-id"]
    secret = hook["signing_secret"]
    assert verify(secret, headers["x-engaged-signature"], request.body, now=time.time())
    assert not verify(secret, headers["x-engaged-signature"], request.body + b" ", now=time.time())
    timestamp, _, signature = headers["x-engaged-signature"].partition(",")
    expected = hmac.new(secret.encode(), timestamp[2:].encode() + b"." + request.body, hashlib.sha256).hexdigest()
    assert signature == f"v1={expected}"  # the recipe in docs/api.md
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + request.body
    standard = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{standard}"


async def test_basic_and_bearer_auth_send_an_authorization_header(
        store: EventStore, start_service: Services, receiver: Receiver) -> None:
    service = await start_service(store)
    await create(service, target=receiver.url, auth_type="basic",
                 auth_credentials={"username": "u", "password": "p"}, **FAST)
    await create(service, target=receiver.url, auth_type="bearer", auth_credentials={"access_token": "at"}, **FAST)
    await store.append([make_event("click", 1)])
    await eventually(lambda: _async(len(receiver.accepted()) == 2))
    assert sorted(request.headers["authorization"] for request in receiver.accepted()) == [
        "Basic " + base64.b64encode(b"u:p").decode(), "Bearer at"]


async def test_a_target_answering_500_then_200_gets_the_same_batch_again(
        store: EventStore, start_service: Services, receiver: Receiver) -> None:
    receiver.behaviour = lambda n: 500 if n < 2 else 200
    service = await start_service(store)
    await create(service, target=receiver.url, **FAST)
    await store.append([make_event("open", n) for n in range(5)])
    await eventually(lambda: _async(receiver.accepted()))
    assert [request.status for request in receiver.requests] == [500, 500, 200]
    assert len({request.headers["x-messagesystems-batch-id"] for request in receiver.requests}) == 1
    assert len({request.body for request in receiver.requests}) == 1
    assert delivered_ids(receiver) == Counter(eid(n) for n in range(5))


async def test_a_target_that_hangs_past_the_timeout_is_retried(
        store: EventStore, start_service: Services, receiver: Receiver) -> None:
    receiver.behaviour = lambda n: "hang" if n == 0 else 200
    service = await start_service(store)
    hook = await create(service, target=receiver.url, **{**FAST, "timeout": 0.3})
    await store.append([make_event("click", 1)])
    await eventually(lambda: _async(receiver.accepted()))
    assert [request.status for request in receiver.requests] == [0, 200]
    state = await eventually(lambda: _state_when(store, hook["id"], lambda s: s.cursor > 0))
    assert state.attempts == 0 and state.pending_last == 0


async def test_a_receiver_down_for_a_while_gets_every_event_once_it_is_back(
        store: EventStore, start_service: Services, receiver: Receiver) -> None:
    service = await start_service(store)
    await create(service, target=receiver.url, batch_size=40, **FAST)
    await receiver.stop()  # connection refused from now on
    for start in range(0, 300, 30):
        await store.append([make_event("delivery", n) for n in range(start, start + 30)])
    hook_id = (await store.webhooks())[0].record.id
    await eventually(lambda: _state_when(store, hook_id, lambda s: s.attempts >= 2))
    await receiver.start()
    await eventually(lambda: _async(len(delivered_ids(receiver)) == 300))
    assert set(delivered_ids(receiver)) == {eid(n) for n in range(300)}
    assert all(len(msgspec.json.decode(request.body)) <= 40 for request in receiver.requests)


async def test_a_restart_in_the_middle_resends_the_unacknowledged_batch_and_loses_nothing(
        make_store: StoreMaker, start_service: Services, store: EventStore, receiver: Receiver) -> None:
    receiver.behaviour = always(500)
    first = await start_service(store, owner="node-a")
    await create(first, target=receiver.url, batch_size=25, **FAST)
    await store.append([make_event("delivery", n) for n in range(60)])
    await eventually(lambda: _async(len(receiver.requests) >= 2))
    failed_batch = receiver.requests[0].headers["x-messagesystems-batch-id"]
    await first.stop()
    await store.append([make_event("open", n) for n in range(60, 90)])  # stored while no one delivers

    reopened = make_store()
    await reopened.open()
    try:
        receiver.behaviour = always(200)
        await start_service(reopened, owner="node-b")  # another process may take over once the lease is released
        await eventually(lambda: _async(len(delivered_ids(receiver)) == 90))
        assert receiver.accepted()[0].headers["x-messagesystems-batch-id"] == failed_batch
        assert set(delivered_ids(receiver)) == {eid(n) for n in range(90)}
    finally:
        await reopened.close()


async def test_two_services_sharing_a_store_deliver_each_batch_once(
        make_store: StoreMaker, start_service: Services, store: EventStore, receiver: Receiver) -> None:
    other = make_store()
    await other.open()
    try:
        one = await start_service(store, owner="node-a")
        await start_service(other, owner="node-b")
        await create(one, target=receiver.url, batch_size=10, **FAST)
        for n in range(0, 100, 5):
            await (store if n % 2 else other).append([make_event("click", k) for k in range(n, n + 5)])
        await eventually(lambda: _async(len(delivered_ids(receiver)) == 100))
        batch_ids = Counter(request.headers["x-messagesystems-batch-id"] for request in receiver.accepted())
        assert max(batch_ids.values()) == 1 and max(delivered_ids(receiver).values()) == 1
    finally:
        await other.close()


async def test_an_undeliverable_batch_becomes_a_dead_letter_that_replays_under_its_batch_id(
        store: EventStore, start_service: Services, receiver: Receiver) -> None:
    receiver.behaviour = always(503)
    service = await start_service(store)
    # Long enough for a second attempt, and a request timeout no busy machine reaches (a timed-out attempt
    # would end with another last_error), even when one round trip takes most of a second.
    hook = await create(service, target=receiver.url, retry_max_age=3.0, **{**FAST, "timeout": 20.0})
    await store.append([make_event("bounce", n) for n in range(3)])
    letters = await eventually(lambda: _letters(service, hook["id"]))
    (letter,) = letters
    assert letter["state"] == "dead" and letter["events"] == 3 and letter["last_error"] == "HTTP 503"
    assert letter["batch_id"] == receiver.requests[0].headers["x-messagesystems-batch-id"]
    assert letter["attempts"] == len(receiver.requests) >= 2

    receiver.behaviour = always(200)
    await store.append([make_event("click", 10)])  # the cursor moved past the dead batch
    await eventually(lambda: _async(delivered_ids(receiver) == Counter({eid(10): 1})))
    replay = await api(service, "POST", f"/api/v1/webhooks/{hook['id']}/dead-letters/replay")
    assert replay.json() == {"results": {"queued": 1}}
    await eventually(lambda: _async(len(delivered_ids(receiver)) == 4))
    assert receiver.accepted()[-1].headers["x-messagesystems-batch-id"] == letter["batch_id"]
    (replayed,) = await eventually(lambda: _letters(service, hook["id"], "replayed"))
    assert replayed["id"] == letter["id"]
    again = await api(service, "POST", f"/api/v1/webhooks/{hook['id']}/dead-letters/replay", json={"ids": [1, 2]})
    assert again.json() == {"results": {"queued": 0}}


async def test_private_targets_are_refused_at_creation_unless_allowed(
        store: EventStore, start_service: Services, receiver: Receiver) -> None:
    service = await start_service(store)
    for target in (receiver.url, "http://localhost/x", "http://[::1]/x", "http://169.254.169.254/latest",
                   "http://2130706433/x", "http://0.0.0.0/x", "http://10.1.2.3/x"):
        response = await api(service, "POST", "/api/v1/webhooks", json={"name": "x", "target": target})
        assert response.status_code == 400, target
        assert response.json()["errors"][0]["param"] == "target"
    assert (await api(service, "POST", "/api/v1/webhooks", json={"name": "x", "target": "ftp://a.example/"})
            ).status_code == 400
    assert await store.webhooks() == []
    await create(service, target=receiver.url, allow_private_targets=True)


async def test_a_target_that_turns_private_is_refused_at_send_time(
        store: EventStore, start_service: Services, receiver: Receiver) -> None:
    # As after DNS rebinding: the webhook passed its creation check, its address is checked again per connection.
    await store.put_webhook(WebhookRecord(id="w-1", name="rebound", target=receiver.url, batch_age=0.05,
                                          retry_base=0.05), "whsec_" + base64.b64encode(b"k" * 32).decode())
    await start_service(store)
    await store.append([make_event("click", 1)])
    state = await eventually(lambda: _state_when(store, "w-1", lambda s: s.attempts >= 1))
    assert "forbidden address" in state.last_error
    assert receiver.requests == []


async def test_a_redirect_counts_as_a_failure_and_is_not_followed(
        store: EventStore, start_service: Services, receiver: Receiver) -> None:
    receiver.behaviour = always(302)
    service = await start_service(store)
    hook = await create(service, target=receiver.url, **FAST)
    await store.append([make_event("click", 1)])
    state = await eventually(lambda: _state_when(store, hook["id"], lambda s: s.attempts >= 2))
    assert state.last_error == "HTTP 302" and state.cursor == 0


async def test_an_events_filter_sends_only_those_types_and_moves_the_cursor_past_the_rest(
        store: EventStore, start_service: Services, receiver: Receiver) -> None:
    service = await start_service(store)
    hook = await create(service, target=receiver.url, events=["click", "open"], **FAST)
    await store.append([make_event(kind, n) for n, kind in enumerate(["delivery", "click", "bounce", "open"] * 5)])
    await eventually(lambda: _async(len(receiver.events()) == 10))
    assert {event["type"] for event in receiver.events()} == {"click", "open"}
    await store.append([make_event("delivery", 50)])
    head = await store.head()
    await eventually(lambda: _state_when(store, hook["id"], lambda s: s.cursor == head))


async def test_batches_hold_at_most_batch_size_events(
        store: EventStore, start_service: Services, receiver: Receiver) -> None:
    service = await start_service(store)
    await create(service, target=receiver.url, batch_size=50, **{**FAST, "batch_age": 0.5})
    await store.append([make_event("open", n) for n in range(230)])
    await eventually(lambda: _async(len(delivered_ids(receiver)) == 230))
    assert [len(msgspec.json.decode(request.body)) for request in receiver.accepted()] == [50, 50, 50, 50, 30]


async def _async(value: _T) -> _T:
    return value


async def _state_when(store: EventStore, webhook_id: str,
                      condition: Callable[[WebhookState], bool]) -> WebhookState | None:
    row = await store.webhook(webhook_id)
    return row.state if row is not None and condition(row.state) else None


async def _letters(service: ApiApp, webhook_id: str, state: str = "dead") -> list[dict[str, Any]]:
    response = await api(service, "GET", f"/api/v1/webhooks/{webhook_id}/dead-letters")
    letters: list[dict[str, Any]] = response.json()["results"]
    return [letter for letter in letters if letter["state"] == state]
