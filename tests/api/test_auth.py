"""API access: keys in the Authorization header, or loopback clients only when no keys are configured."""

from __future__ import annotations

import base64

import httpx
import pytest

from engaged.api.auth import authorize, is_loopback
from engaged.types import EventStore
from tests.eventstores import Services

KEYS = ["k-one", "k-two-longer"]


@pytest.mark.parametrize(("header", "expected"), [
    ("k-one", None), ("k-two-longer", None), ("Bearer k-one", None), ("bearer  k-two-longer ", None),
    (None, 401), ("", 401), ("k-on", 401), ("k-one-", 401), ("Basic k-one", 401), ("Bearer", 401),
])
def test_with_keys_only_a_configured_key_is_accepted_from_any_address(header: str | None, expected: int | None) -> None:
    assert authorize(KEYS, header, "203.0.113.5") == expected
    assert authorize(KEYS, header, "127.0.0.1") == expected


@pytest.mark.parametrize(("host", "expected"), [
    ("127.0.0.1", None), ("127.8.9.10", None), ("::1", None), ("::ffff:127.0.0.1", None),
    ("10.0.0.1", 403), ("192.168.1.2", 403), ("203.0.113.5", 403), ("::ffff:10.0.0.1", 403), ("fe80::1%eth0", 403),
    (None, 403), ("", 403), ("not-an-ip", 403),
])
def test_without_keys_only_loopback_clients_are_answered(host: str | None, expected: int | None) -> None:
    assert authorize([], None, host) == expected
    assert authorize([], "anything", host) == expected
    assert is_loopback(host) is (expected is None)


async def test_the_listener_asks_for_a_key_when_keys_are_configured(store: EventStore, start_service: Services) -> None:
    service = await start_service(store, keys=KEYS)
    async with httpx.AsyncClient(base_url=f"http://{service.address}") as client:
        for path in ("/api/v1/events/message", "/api/v1/webhooks", "/api/v1/metrics/deliverability", "/metrics"):
            refused = await client.get(path)
            assert refused.status_code == 401 and refused.headers["content-type"] == "application/json"
            assert refused.json() == {"errors": [{
                "message": "Unauthorized.", "code": "1100",
                "description": "the Authorization header must carry one of the [api] keys"}]}
            assert (await client.get(path, headers={"Authorization": "wrong"})).status_code == 401
            assert (await client.get(path, headers={"Authorization": "k-two-longer"})).status_code == 200
            assert (await client.get(path, headers={"Authorization": "Bearer k-one"})).status_code == 200
            basic = "Basic " + base64.b64encode(b"k-one:").decode()  # SparkPost's Basic form: key as user name
            assert (await client.get(path, headers={"Authorization": basic})).status_code == 200
            wrong = "Basic " + base64.b64encode(b"k-none:").decode()
            assert (await client.get(path, headers={"Authorization": wrong})).status_code == 401
            assert (await client.get(path, headers={"Authorization": "Basic %%%"})).status_code == 401


async def test_without_keys_a_loopback_client_is_answered(store: EventStore, start_service: Services) -> None:
    service = await start_service(store)
    async with httpx.AsyncClient(base_url=f"http://{service.address}") as client:
        assert (await client.get("/api/v1/events/message")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
        missing = await client.get("/api/v1/nothing")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"
