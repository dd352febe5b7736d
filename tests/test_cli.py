"""The command line: keys rotate, hash-password, events filters, version."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from engaged.app import build_store
from engaged.config import Config
from engaged.keys import load_keyring
from engaged.smtp.auth import verify_password
from tests.sample_events import T0, make_event


def run(*args: str, cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engaged", *args], capture_output=True, text=True, check=False,
                          cwd=cwd, input=stdin)


def test_keys_rotate_adds_a_current_key_and_keeps_the_old(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    first = load_keyring(tmp_path / "data")
    result = run("keys", "rotate", "--config", str(config))
    assert result.returncode == 0, result.stderr
    second = load_keyring(tmp_path / "data")
    assert second.current_id != first.current_id
    assert second.key(first.current_id) == first.key(first.current_id)
    assert f"current signing key is now {second.current_id}" in result.stdout


def test_hash_password_prints_a_verifiable_hash() -> None:
    result = run("hash-password", "--password", "s3cret")
    assert result.returncode == 0
    assert verify_password(b"s3cret", result.stdout.strip())


def test_events_on_an_empty_store_prints_nothing(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    result = run("events", "--config", str(config), "--since", "2026-01-01T00:00:00+00:00", "--limit", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_events_prints_what_the_events_api_shows_with_iso_timestamps(tmp_path: Path) -> None:
    data = tmp_path / "data"
    events = [make_event("delivery", 0, ts=T0 + 0.25), make_event("click", 1, ts=T0 + 61)]

    async def fill() -> None:
        store = build_store(Config(data_dir=str(data)))
        await store.open()
        try:
            await store.append(events)
        finally:
            await store.close()

    asyncio.run(fill())
    config = tmp_path / "c.toml"
    config.write_text(f'data_dir = "{data}"\n')
    result = run("events", "--config", str(config))
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    assert [event["event_id"] for event in printed] == [event.event_id for event in events]
    assert [event["timestamp"] for event in printed] == ["2023-11-14T22:13:20.250+00:00",
                                                          "2023-11-14T22:14:21.000+00:00"]
    clicked = run("events", "--config", str(config), "--type", "click")
    assert [json.loads(line)["type"] for line in clicked.stdout.splitlines()] == ["click"]


def test_events_rejects_a_bad_since() -> None:
    result = run("events", "--since", "yesterday-ish")
    assert result.returncode == 2
    assert "not an ISO-8601 time" in result.stderr


def test_version_is_printed() -> None:
    result = run("--version")
    assert result.returncode == 0 and "0.1.0" in result.stdout
