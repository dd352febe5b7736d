"""SparkPost's own Python client (PyPI `sparkpost`) against engaged's API over HTTPS, unchanged but for its URL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme
from sparkpost import SparkPost
from sparkpost.base import RequestsTransport
from sparkpost.exceptions import SparkPostAPIException

from engaged.app import ApiApp
from engaged.config import ApiConfig, Config
from engaged.prometheus import Metrics
from engaged.suppression.store_sqlite import SqliteSuppressionStore
from engaged.types import EventStore
from tests.sample_events import make_event
from tests.sinks.receiver import Receiver, always

KEY = "14ac5499cfdd2bb2859e4476d2e5b1d2bad079bf"


@pytest.fixture
async def https_service(store: EventStore, tmp_path: Path) -> Any:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path, ca_path = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(cert_path), append=True)
    cert.private_key_pem.write_to_path(str(key_path))
    ca.cert_pem.write_to_path(str(ca_path))
    config = Config(data_dir=str(tmp_path / "data"), api=ApiConfig(
        listen="127.0.0.1:0", keys=[KEY], tls_cert=str(cert_path), tls_key=str(key_path),
        webhook_private_networks=["127.0.0.0/8"]))  # SparkPost's clients cannot send allow_private_targets
    suppressions = SqliteSuppressionStore(tmp_path / "suppression.sqlite3")
    await suppressions.open()
    service = ApiApp(config, store, metrics=Metrics(), owner="node-1", keepalive=0.5, suppressions=suppressions)
    await service.start()
    try:
        yield service, str(ca_path)
    finally:
        await service.stop()
        await suppressions.close()


def in_thread(call: Callable[[], Any]) -> Any:
    """The client is blocking: run it off the loop that serves the API."""
    return asyncio.to_thread(call)


async def test_the_metrics_lists_answer_sparkposts_client_over_https(
        store: EventStore, https_service: tuple[ApiApp, str]) -> None:
    service, ca = https_service
    await store.append([make_event("delivery", 1, campaign="spring", rcpt="ann@x.org"),
                        make_event("delivery", 2, campaign="fall", rcpt="bob@y.org")])
    client = SparkPost(KEY, base_uri=service.address)
    assert client.base_uri == f"https://{service.address}/api/v1"
    assert await in_thread(lambda: client.metrics.campaigns.list(verify=ca)) == ["fall", "spring"]
    assert await in_thread(lambda: client.metrics.domains.list(verify=ca)) == ["x.org", "y.org"]
    assert await in_thread(lambda: client.metrics.campaigns.list(params={"match": "spr"}, verify=ca)) == ["spring"]
    filters = {"groupings": [{"OR": {"domains": {"eq": ["y.org"]}, "campaigns": {"like": ["SPR"]}}},
                             {"AND": {"campaigns": {"notEq": ["fall"]}}}]}
    params = {"metrics": "count_delivered", "query_filters": json.dumps(filters)}
    summary = await in_thread(lambda: RequestsTransport().request(
        "GET", f"{client.base_uri}/metrics/deliverability", {"Authorization": KEY}, params=params, verify=ca))
    assert summary == [{"count_delivered": 1}]


async def test_events_and_webhooks_travel_through_the_clients_transport(
        store: EventStore, https_service: tuple[ApiApp, str]) -> None:
    service, ca = https_service
    event = make_event("click", 1)
    await store.append([event])
    client = SparkPost(KEY, base_uri=service.address)
    transport = RequestsTransport()
    headers = {"Authorization": KEY, "Content-Type": "application/json"}
    params = {"events": "click", "from": str(float(event.timestamp) - 60), "cursor": "initial"}
    results = await in_thread(lambda: transport.request("GET", f"{client.base_uri}/events/message", headers,
                                                        params=params, verify=ca))
    assert [item["event_id"] for item in results] == [event.event_id]
    assert results[0]["timestamp"].endswith("+00:00")
    receiver = await Receiver().start()
    try:
        body = {"name": "crm", "target": receiver.url, "events": ["click"], "active": False}
        created = await in_thread(lambda: transport.request("POST", f"{client.base_uri}/webhooks", headers,
                                                            json=body, verify=ca))
        listed = await in_thread(lambda: transport.request("GET", f"{client.base_uri}/webhooks", headers, verify=ca))
        assert [hook["id"] for hook in listed] == [created["id"]] and len(receiver.validations) == 1
        receiver.validation = always(500)  # SparkPost refuses a webhook whose target fails the test POST
        with pytest.raises(SparkPostAPIException) as failed:
            await in_thread(lambda: transport.request("POST", f"{client.base_uri}/webhooks", headers,
                                                      json={**body, "name": "other"}, verify=ca))
        assert failed.value.status == 400 and "Test POST to endpoint failed" in failed.value.errors[0]
    finally:
        await receiver.stop()
    with pytest.raises(SparkPostAPIException) as refused:
        await in_thread(lambda: transport.request("GET", f"{client.base_uri}/webhooks/nope", headers, verify=ca))
    assert refused.value.status == 404
    assert "Code: 1600" in refused.value.errors[0]


async def test_plain_http_is_not_answered_when_tls_is_configured(https_service: tuple[ApiApp, str]) -> None:
    service, _ = https_service
    with pytest.raises(requests.exceptions.ConnectionError):
        await in_thread(lambda: requests.get(f"http://{service.address}/api/v1/webhooks", timeout=5))


async def test_the_suppression_list_answers_sparkposts_client_unchanged_over_https(
        https_service: tuple[ApiApp, str], monkeypatch: pytest.MonkeyPatch) -> None:
    service, ca = https_service
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)  # its suppression_list methods take no verify=: as a user sets it
    sl = SparkPost(KEY, base_uri=service.address).suppression_list

    def calls() -> tuple[Any, Any, Any, Any]:
        created = sl.create({"email": "Bob@Example.com", "transactional": False, "non_transactional": True,
                             "description": "asked to stop"})
        return created, sl.get("bob@example.com"), sl.list(types=["non_transactional"], limit=10), sl.delete(
            "bob@example.com")

    created, got, listed, deleted = await in_thread(calls)
    assert created == {"message": "Suppression List successfully updated"}
    assert [(entry["recipient"], entry["type"], entry["source"]) for entry in got] == [
        ("bob@example.com", "non_transactional", "Manually Added")]
    assert [entry["recipient"] for entry in listed] == ["bob@example.com"] and deleted is True
    with pytest.raises(SparkPostAPIException) as missing:
        await in_thread(lambda: sl.get("bob@example.com"))
    assert missing.value.status == 404
