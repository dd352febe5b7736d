"""Dashboard latency with 100 campaigns and 1,000,000 events: time to first byte and to a rendered page.

Fills a SQLite store and a PostgreSQL database through the stores' batch append, starts the real
`engaged serve` on each, and times the pages and JSON endpoints over HTTP (median of 3 after one warm-up),
then the campaign page in headless Chromium (load event, and the charts drawn from their JSON).
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
import httpx

from bench._harness import PG_ADMIN_DSN, pg_database, pg_fetchval
from engaged.events.model import (
    BounceEvent,
    ClickEvent,
    DelayEvent,
    DeliveryEvent,
    Event,
    InitialOpenEvent,
    InjectionEvent,
    MachineEngagement,
    OpenEvent,
)
from engaged.events.store_postgres import PostgresEventStore
from engaged.events.store_sqlite import SqliteEventStore
from engaged.testing.server import ServerProcess, write_config
from engaged.types import EventStore

TOTAL = int(os.environ.get("ENGAGED_BENCH_DASHBOARD_EVENTS", "1000000"))
CAMPAIGNS = 100
CHUNK = 20_000
RUNS = 3
AGENTS = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.12026; Pro)",
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.3.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
]
MPP = MachineEngagement(kind="apple_mpp", reason="bare Mozilla/5.0 user agent (Apple MPP)")
SCANNER = MachineEngagement(kind="security_scanner", reason="Proofpoint user agent")
COUNTRIES = ["US", "DE", "FR", "GB", "BR", "JP", None]


def story(total: int, now: float) -> Iterator[list[Event]]:
    """Chunks of events: per recipient an injection, a delivery (or delay then bounce), opens and clicks."""
    rng = random.Random(7)
    made: list[Event] = []
    serial = 0
    recipient = 0
    while serial < total:
        campaign = recipient % CAMPAIGNS
        start = now - 6.5 * 86400 + campaign * 5400  # campaigns spread over the last week
        ts = start + rng.random() * 7200
        message = f"{recipient:016x}"
        rcpt = f"user{recipient}@example.com"
        common: dict[str, Any] = {
            "message_id": message, "transmission_id": f"t{campaign}", "campaign_id": f"campaign-{campaign:03d}",
            "customer_id": "1", "rcpt_to": rcpt, "raw_rcpt_to": rcpt, "rcpt_meta": {"user": str(recipient)},
            "rcpt_tags": ["bench"]}
        mail: dict[str, Any] = {
            **common, "friendly_from": "shop@example.org", "msg_from": "bounces@example.org", "msg_size": "4096",
            "subject": "Autumn sale", "ip_pool": "default", "routing_domain": "example.com",
            "recipient_domain": "example.com", "injection_time": "", "transactional": "0", "open_tracking": True,
            "click_tracking": True, "initial_pixel": True, "recv_method": "esmtp"}
        attempt: dict[str, Any] = {"delv_method": "esmtp", "ip_address": "192.0.2.25", "num_retries": "0"}
        batch: list[Event] = [InjectionEvent(event_id=str(serial), timestamp=f"{ts:.3f}", **mail)]
        fate = rng.random()
        if fate < 0.03:
            failure: dict[str, Any] = {"bounce_class": rng.choice(["10", "21", "22", "51"]), "error_code": "550",
                                       "reason": "550 5.1.1 user unknown", "raw_reason": "550 5.1.1 user unknown"}
            batch.append(DelayEvent(event_id=f"{serial}d", timestamp=f"{ts + 60:.3f}", **mail, **attempt,
                                    queue_time="60000", outbound_tls="0", **{**failure, "bounce_class": "20"}))
            batch.append(BounceEvent(event_id=f"{serial}b", timestamp=f"{ts + 600:.3f}", **mail, **attempt, **failure))
        else:
            batch.append(DeliveryEvent(event_id=f"{serial}v", timestamp=f"{ts + 2:.3f}", **mail, **attempt,
                                       queue_time="2000", outbound_tls="1"))
            agent = rng.choice(AGENTS)
            machine = MPP if rng.random() < 0.3 else None
            track: dict[str, Any] = {**common, "user_agent": "Mozilla/5.0" if machine else agent,
                                     "ip_address": "198.51.100.7", "machine_engagement": machine}
            country = rng.choice(COUNTRIES)
            if country:
                track["geo_ip"] = {"country": country}
            if rng.random() < 0.5:
                seen = ts + 60 + rng.random() * 20000
                batch.append(InitialOpenEvent(event_id=f"{serial}i", timestamp=f"{seen:.3f}", **track))
                batch.append(OpenEvent(event_id=f"{serial}o", timestamp=f"{seen + 1:.3f}", **track))
                if rng.random() < 0.25:
                    link = rng.choice(["offer", "docs", "shoes", "unsubscribe"])
                    clicker: dict[str, Any] = {**track, "machine_engagement": SCANNER if rng.random() < 0.1 else None}
                    batch.append(ClickEvent(event_id=f"{serial}c", timestamp=f"{seen + 30:.3f}", **clicker,
                                            target_link_name=link, target_link_url=f"https://shop.example/{link}"))
        made.extend(batch[:total - serial])
        serial += len(batch)
        recipient += 1
        if len(made) >= CHUNK:
            yield made
            made = []
    if made:
        yield made


async def fill(store: EventStore, now: float) -> float:
    """Seconds taken to append TOTAL events in chunks."""
    await store.open()
    began = time.perf_counter()
    try:
        for chunk in story(TOTAL, now):
            await store.append(chunk)
    finally:
        await store.close()
    return time.perf_counter() - began


PATHS = [
    ("campaigns, last 7 days", "/"),
    ("campaigns, all time", "/?range=all"),
    ("campaigns JSON (live refresh)", "/ui/campaigns.json"),
    ("campaign page, all time", "/campaign?id=campaign-050&range=all"),
    ("campaign JSON (counts + chart)", "/ui/campaign.json?id=campaign-050&range=all"),
    ("message lookup by recipient", "/message?q=user5000@example.com"),
    ("live feed", "/live"),
    ("metrics API by campaign (reference)", "/api/v1/metrics/deliverability/campaign"),
]


def timed(client: httpx.Client, path: str) -> tuple[float, float]:
    """(time to first byte, time to the last byte) in seconds."""
    began = time.perf_counter()
    with client.stream("GET", path) as response:
        first = time.perf_counter() - began
        response.read()
        if response.status_code != 200:
            raise SystemExit(f"{path}: HTTP {response.status_code}")
    return first, time.perf_counter() - began


def measure_http(base: str) -> dict[str, tuple[float, float]]:
    results = {}
    with httpx.Client(base_url=base, timeout=60) as client:
        for label, path in PATHS:
            timed(client, path)
            runs = [timed(client, path) for _ in range(RUNS)]
            results[label] = (statistics.median(run[0] for run in runs), statistics.median(run[1] for run in runs))
    return results


def measure_browser(base: str) -> tuple[float, float] | str:
    """Median (load event, charts drawn) for the campaign page in headless Chromium, or why not measured."""
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "playwright not installed"
    if chromium is None:
        return "chromium not installed"
    url = f"{base}/campaign?id=campaign-050&range=all"
    runs = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        for n in range(RUNS + 1):
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            began = time.perf_counter()
            page.goto(url, wait_until="load")
            loaded = time.perf_counter() - began
            page.wait_for_selector("#clicks-chart canvas", timeout=30_000)
            drawn = time.perf_counter() - began
            if n:
                runs.append((loaded, drawn))
            page.close()
        browser.close()
    return statistics.median(run[0] for run in runs), statistics.median(run[1] for run in runs)


def serve_and_measure(directory: Path, extra: str) -> tuple[dict[str, tuple[float, float]], tuple[float, float] | str]:
    server = ServerProcess(write_config(directory, extra)).start(timeout=120)
    try:
        host, port = server.address("api")
        base = f"http://{host}:{port}"
        return measure_http(base), measure_browser(base)
    finally:
        server.stop()


def bench_sqlite(now: float) -> tuple[float, dict[str, tuple[float, float]], tuple[float, float] | str]:
    with tempfile.TemporaryDirectory(prefix="engaged-bench-") as tmp:
        filled = asyncio.run(fill(SqliteEventStore(Path(tmp) / "data" / "events.sqlite3", synchronous="OFF"), now))
        return (filled, *serve_and_measure(Path(tmp), ""))




def bench_postgres(now: float) -> tuple[float, dict[str, tuple[float, float]], tuple[float, float] | str] | str:
    name = f"engaged_bench_{secrets.token_hex(4)}"
    try:
        asyncio.run(pg_fetchval(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        return f"PostgreSQL skipped: unreachable at {PG_ADMIN_DSN} ({error})"
    dsn = pg_database(name)
    try:
        filled = asyncio.run(fill(PostgresEventStore(dsn), now))
        asyncio.run(pg_fetchval("VACUUM ANALYZE events", dsn))
        with tempfile.TemporaryDirectory(prefix="engaged-bench-") as tmp:
            return (filled, *serve_and_measure(Path(tmp), f'[events]\nstore = "{dsn}"\n'))
    finally:
        asyncio.run(pg_fetchval(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main() -> int:
    now = time.time()
    sqlite = bench_sqlite(now)
    postgres = bench_postgres(now)
    print(f"dashboard with {CAMPAIGNS} campaigns and {TOTAL:,} events; median of {RUNS} after a warm-up,"
          " `engaged serve` on loopback")
    print(f"filled by batch append: SQLite {sqlite[0]:.0f} s"
          + ("" if isinstance(postgres, str) else f", PostgreSQL {postgres[0]:.0f} s"))
    print(f"{'request':<38} {'SQLite TTFB':>12} {'total':>8} {'PostgreSQL TTFB':>16} {'total':>8}")
    for label, _ in PATHS:
        first, whole = sqlite[1][label]
        row = f"{label:<38} {first * 1000:>10.0f}ms {whole * 1000:>6.0f}ms"
        if not isinstance(postgres, str):
            pg_first, pg_whole = postgres[1][label]
            row += f" {pg_first * 1000:>14.0f}ms {pg_whole * 1000:>6.0f}ms"
        print(row)
    for backend, result in (("SQLite", sqlite), ("PostgreSQL", postgres)):
        if isinstance(result, str):
            print(result)
            continue
        browser = result[2]
        if isinstance(browser, str):
            print(f"{backend}: campaign page in Chromium not measured ({browser})")
        else:
            print(f"{backend}: campaign page in Chromium: load event {browser[0] * 1000:.0f} ms,"
                  f" charts drawn {browser[1] * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
