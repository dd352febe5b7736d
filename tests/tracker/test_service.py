"""Tests of TrackerService: lifecycle, journal replay, SIGKILL mid-load, and two trackers sharing PostgreSQL."""

from __future__ import annotations

import http.client
import logging
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from engaged.config import Config, EngagementTrackerConfig
from engaged.events.ids import EventIdGenerator
from engaged.events.store_postgres import PostgresEventStore
from engaged.keys import load_keyring
from engaged.testing.server import wait_until
from engaged.tokens import RecipientLinks
from engaged.tracker.journal import JOURNAL_DIR, JournalError
from engaged.tracker.service import TrackerService
from engaged.types import EventQuery
from tests.tracker.conftest import MemoryStore, RunningTracker, TrackerFactory, link_data
from tests.tracker.test_journal import event_line

CHILD = Path(__file__).with_name("tracker_child.py")
TARGET = "https://shop.example.com/"


async def test_start_binds_port_zero_and_logs_the_line_the_test_harness_reads(
        start_tracker: TrackerFactory, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="engaged"):
        tracker = await start_tracker()
    host, _, port = tracker.service.address.rpartition(":")
    assert host == "127.0.0.1" and int(port) > 0
    assert f"tracker listening on {tracker.service.address}" in caplog.messages


async def test_stop_loads_every_answered_event_and_leaves_an_empty_journal(tmp_path: Path) -> None:
    store = MemoryStore()
    config = Config(data_dir=str(tmp_path), engagement_tracker=EngagementTrackerConfig(listen="127.0.0.1:0"))
    keyring = load_keyring(tmp_path)
    service = TrackerService(config, store, keyring, ids=EventIdGenerator())
    await service.start()
    links = RecipientLinks(keyring, link_data(service.address))
    async with httpx.AsyncClient() as client:
        for _ in range(20):
            assert (await client.get(links.click_url(TARGET, "x", None, False))).status_code == 302
    await service.stop()
    assert len(store.events) == 20
    assert list((tmp_path / JOURNAL_DIR).glob("*.jsonl")) == []


async def test_a_busy_port_makes_start_fail(start_tracker: TrackerFactory, tmp_path: Path) -> None:
    first = await start_tracker()
    config = Config(data_dir=str(tmp_path / "other"),
                    engagement_tracker=EngagementTrackerConfig(listen=first.service.address))
    service = TrackerService(config, MemoryStore(), first.keyring, ids=EventIdGenerator())
    with pytest.raises(OSError):
        await service.start()
    assert not list((tmp_path / "other" / JOURNAL_DIR).glob("*.jsonl"))  # start cleaned up after itself


async def test_a_second_tracker_on_the_same_data_dir_is_refused(tracker: RunningTracker) -> None:
    config = Config(data_dir=str(tracker.data_dir), engagement_tracker=EngagementTrackerConfig(listen="127.0.0.1:0"))
    service = TrackerService(config, MemoryStore(), tracker.keyring, ids=EventIdGenerator())
    with pytest.raises(JournalError):
        await service.start()


async def test_events_left_in_the_journal_are_in_the_store_when_start_returns(tmp_path: Path) -> None:
    journal = tmp_path / JOURNAL_DIR
    journal.mkdir()
    (journal / "000000000007.jsonl").write_bytes(event_line(1) + event_line(2))
    store = MemoryStore()
    config = Config(data_dir=str(tmp_path), engagement_tracker=EngagementTrackerConfig(listen="127.0.0.1:0"))
    service = TrackerService(config, store, load_keyring(tmp_path), ids=EventIdGenerator())
    await service.start()
    assert sorted(store.events) == ["1000001", "1000002"]
    await service.stop()


async def test_responses_with_a_body_are_not_held_back_by_delayed_acks(tracker: RunningTracker) -> None:
    url = tracker.links().open_url(False)
    began = time.perf_counter()
    for _ in range(20):
        assert (await tracker.get(url)).status_code == 200
    assert time.perf_counter() - began < 0.8  # Nagle + delayed ACK would cost 40 ms a request


async def test_an_ipv6_listener_reports_a_bracketed_address(start_tracker: TrackerFactory) -> None:
    try:
        tracker = await start_tracker(listen="[::1]:0")
    except OSError as error:
        pytest.skip(f"no IPv6 loopback: {error}")
    assert tracker.service.address.startswith("[::1]:")
    assert (await tracker.get(tracker.links().open_url(True))).status_code == 200


async def test_two_trackers_sharing_one_postgresql_store_both_record(
        start_tracker: TrackerFactory, postgres_dsn: str, tmp_path: Path) -> None:
    stores = [PostgresEventStore(postgres_dsn), PostgresEventStore(postgres_dsn)]
    for store in stores:
        await store.open()
    try:
        first = await start_tracker(store=stores[0], data_dir=tmp_path / "node-a")
        second = await start_tracker(store=stores[1], data_dir=tmp_path / "node-b", keyring=first.keyring)
        run = f"pg-{time.time_ns()}"
        for node, tracker in (("a", first), ("b", second)):
            links = tracker.links(message_id=f"{run}-{node}")
            assert (await tracker.get(links.click_url(TARGET, "x", None, False))).status_code == 302
            assert (await tracker.get(links.open_url(True))).status_code == 200
        stateless = first.links(message_id=f"{run}-minted-by-a").click_url(TARGET, "x", None, False)
        assert (await second.get(stateless.replace(first.service.address, second.service.address))).status_code == 302
        await first.service.flush()
        await second.service.flush()
        stored = await stores[0].query(EventQuery(limit=10_000))
        mine = Counter((event.event.message_id, type(event.event).__name__) for event in stored
                       if event.event.message_id.startswith(run))
        assert mine == Counter({(f"{run}-a", "ClickEvent"): 1, (f"{run}-a", "InitialOpenEvent"): 1,
                                (f"{run}-b", "ClickEvent"): 1, (f"{run}-b", "InitialOpenEvent"): 1,
                                (f"{run}-minted-by-a", "ClickEvent"): 1})
    finally:
        await first.service.stop()
        await second.service.stop()
        for store in stores:
            await store.close()


# --- the kill test --------------------------------------------------------------------------------


class TrackerChild:
    """tracker_child.py in its own process; `address` comes from its `tracker listening on` line."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.process: subprocess.Popen[str] | None = None
        self.address = ""
        self.log: list[str] = []

    def start(self) -> TrackerChild:
        self.address = ""
        self.process = subprocess.Popen([sys.executable, str(CHILD), str(self.data_dir)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()
        wait_until(lambda: self.address or self.process is None or self.process.poll() is not None, 30)
        if not self.address:
            raise RuntimeError("the tracker did not start:\n" + "\n".join(self.log))
        return self

    def _read(self, process: subprocess.Popen[str]) -> None:
        if process.stderr is None:
            return
        for line in process.stderr:
            self.log.append(line.rstrip("\n"))
            if line.startswith("engaged: tracker listening on "):
                self.address = line.split()[-1]

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> int:
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


def fire(address: str, paths: queue.Queue[tuple[str, str]], answered: dict[str, int]) -> None:
    """Send queued requests on one keep-alive connection; record the status of each response received."""
    host, _, port = address.rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    while True:
        try:
            message_id, path = paths.get_nowait()
        except queue.Empty:
            break
        try:
            connection.request("GET", path, headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0"})
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            continue
        if response.status in (200, 302):
            answered[message_id] = response.status


def stored_message_ids(data_dir: Path) -> Counter[str]:
    connection = sqlite3.connect(f"file:{data_dir / 'events.sqlite3'}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT message_id FROM events").fetchall()
    finally:
        connection.close()
    return Counter(row[0] for row in rows)


def test_sigkill_mid_load_loses_no_answered_event_and_stores_none_twice(tmp_path: Path) -> None:
    data = tmp_path / "data"
    keyring = load_keyring(data)
    child = TrackerChild(data).start()
    paths: queue.Queue[tuple[str, str]] = queue.Queue()
    for n in range(3000):
        links = RecipientLinks(keyring, link_data(child.address, message_id=f"kill-{n:05d}"))
        url = links.click_url(f"{TARGET}{n}", "x", None, False) if n % 2 else links.open_url(n % 4 == 0)
        paths.put((f"kill-{n:05d}", url.split(child.address, 1)[1]))
    answered: dict[str, int] = {}
    workers = [threading.Thread(target=fire, args=(child.address, paths, answered)) for _ in range(16)]
    for worker in workers:
        worker.start()
    try:
        wait_until(lambda: len(answered) >= 400, 60)
    finally:
        child.kill()
    for worker in workers:
        worker.join(60)
    assert 400 <= len(answered) < 3000  # killed mid-load
    restarted = TrackerChild(data).start()  # start() loads the journal before it listens
    before_stop = stored_message_ids(data)
    assert restarted.stop() == 0
    stored = stored_message_ids(data)
    assert stored == before_stop
    missing = sorted(message_id for message_id in answered if stored[message_id] != 1)
    assert missing == []
    assert max(stored.values()) == 1
    assert not list((data / JOURNAL_DIR).glob("*.jsonl"))


def test_the_child_entry_point_journals_before_it_answers(tmp_path: Path) -> None:
    # The kill test relies on tracker_child.py running the real service; pin what it writes.
    data = tmp_path / "data"
    keyring = load_keyring(data)
    child = TrackerChild(data).start()
    try:
        host, _, port = child.address.rpartition(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        url = RecipientLinks(keyring, link_data(child.address, message_id="pinned")).open_url(True)
        connection.request("GET", url.split(child.address, 1)[1])
        assert connection.getresponse().status == 200
        journaled = b"".join(path.read_bytes() for path in (data / JOURNAL_DIR).glob("*.jsonl"))
        assert b'"type":"initial_open"' in journaled and b'"message_id":"pinned"' in journaled
    finally:
        assert child.stop() == 0
    assert stored_message_ids(data)["pinned"] == 1
