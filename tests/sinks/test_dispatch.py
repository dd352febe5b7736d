"""[[webhooks]] entries as records, and the validation every definition goes through."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from engaged.app import ApiApp
from engaged.config import ApiConfig, Config, WebhookConfig
from engaged.errors import ConfigError
from engaged.events.store_sqlite import SqliteEventStore
from engaged.prometheus import Metrics
from engaged.sinks.dispatch import config_problems
from engaged.sinks.webhooks import backoff
from engaged.types import WebhookRecord
from engaged.webhook_rules import config_webhook_id, problems_of, record_from_config


def test_a_configured_webhook_gets_a_stable_id_and_the_defaults_for_keys_it_lacks() -> None:
    hook = WebhookConfig(name="crm", target="https://crm.example/h", events=["click"], auth_token="t",
                         allow_private_targets=True)
    record = record_from_config(hook, created=5.0)
    assert record == WebhookRecord(id=config_webhook_id("crm"), name="crm", target="https://crm.example/h",
                                   events=("click",), auth_token="t", allow_private_targets=True, source="config",
                                   created=5.0)
    assert config_webhook_id("crm") == config_webhook_id("crm") != config_webhook_id("crm2")
    assert problems_of(record) == []


def test_every_invalid_field_is_reported() -> None:
    record = msgspec.structs.replace(
        WebhookRecord(id="w", name="", target="https://x.example/"), events=("click", "nope"), auth_type="basic",
        batch_size=10001, batch_age=0.0, timeout=-1.0)
    assert [field for field, _ in problems_of(record)] == [
        "name", "events", "auth_credentials", "batch_size", "batch_age", "timeout"]


def test_backoff_doubles_from_the_base_with_jitter_and_a_cap() -> None:
    assert [backoff(5.0, n, 1.0) for n in range(1, 5)] == [5.0, 10.0, 20.0, 40.0]
    assert backoff(5.0, 3, 0.0) == 10.0
    assert backoff(5.0, 40, 1.0) == 1800.0


async def test_invalid_configured_webhooks_are_reported_with_their_key() -> None:
    hooks = [
        WebhookConfig(name="a", target="http://127.0.0.1:9/h"),
        WebhookConfig(name="b", target="http://127.0.0.1:9/h", allow_private_targets=True, events=["nope"]),
        WebhookConfig(name="b", target="https://nonexistent.invalid/h"),
    ]
    problems = await config_problems(hooks)
    assert sorted(problem.split(":", 1)[0] for problem in problems) == [
        "webhooks[0].target", "webhooks[1].events", "webhooks[2].name"]


async def test_a_service_refuses_to_start_with_an_invalid_configured_webhook(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "events.sqlite3")
    await store.open()
    config = Config(data_dir=str(tmp_path), api=ApiConfig(listen="127.0.0.1:0"),
                    webhooks=[WebhookConfig(name="a", target="http://169.254.169.254/latest")])
    service = ApiApp(config, store, metrics=Metrics())
    try:
        with pytest.raises(ConfigError) as raised:
            await service.start()
        assert raised.value.problems[0].startswith("webhooks[0].target: ")
        assert await store.webhooks() == []
    finally:
        await store.close()
