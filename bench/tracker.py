"""Tracker benchmark: clicks/s and p50/p99 with every event durable, against nginx `return 302`, driven by wrk.

Every answered click was appended and fdatasync'd to its worker's journal before its 302; a journal
loader in its own process stores the events. After each run the workers and then the loader are
stopped and the store is counted: stored must equal what the workers journaled (0 lost).

The one-worker -c50 case also runs without fdatasync (what the disk costs) and with the loader paused
while wrk runs (what the store's writes beside the worker cost: its syncs share the disk's flushes
with the journal's).

Cases: engaged with one worker (CPU 0; wrk and the loader on CPU 1) against nginx `worker_processes 1`
(CPU 0), and engaged with one worker per CPU against nginx `worker_processes auto` (all unpinned), each
at wrk -t1 -c50 and -c1000, with SQLite and with PostgreSQL. A few hundred rotating valid click links.

`--http-options` instead measures the HTTP layers the tracker could sit on (each answering a fixed 302)
next to nginx and the tracker itself; `--baseline DIR` adds the tracker of another checkout (DIR's
bench/_tracker_harness.py `serve`, e.g. the uvicorn tracker of an older main).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg

from bench._harness import PG_ADMIN_DSN, count_sqlite, free_port, pg_database, pg_fetchval
from bench._tracker_harness import (
    Child,
    TrackerWorkers,
    WrkResult,
    _wait_port,
    click_paths,
    run_wrk,
    start_nginx,
    write_lua,
)
from engaged.keys import load_keyring

SECONDS = 10
WARMUP = 2
CONNECTIONS = (50, 1000)
LINKS = 300
GOAL_RATIO = 0.3
GOAL_P99_MS = 5.0
HERE = Path(__file__).resolve().parent


def line(label: str, result: WrkResult) -> str:
    return (f"{label:<34} {result.requests_per_second:>9,.0f} req/s   p50 {result.p50_ms:6.2f} ms   "
            f"p99 {result.p99_ms:6.2f} ms" + (f"   ({result.errors})" if result.errors else ""))


@dataclass
class Case:
    workers: int
    connections: int
    label: str

    @property
    def cpu(self) -> int | None:
        return 1 if self.workers == 1 else None


class Nginx:
    """nginx with one worker (CPU 0) or `auto`, kept running while engaged is measured next to it."""

    def __init__(self, root: Path, workers: int) -> None:
        self.port = free_port()
        self.process = start_nginx(root / f"nginx{workers}", self.port, "1" if workers == 1 else "auto")
        self.script = write_lua(root / "nginx.lua", [f"/f/a/{n}" for n in range(LINKS)])

    def run(self, case: Case) -> WrkResult | None:
        if self.process is None:
            return None
        url = f"http://127.0.0.1:{self.port}"
        run_wrk(url, self.script, WARMUP, case.connections, case.cpu)
        result = run_wrk(url, self.script, SECONDS, case.connections, case.cpu)
        print(line(f"nginx {case.label} -c{case.connections}", result))
        return result

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)


def engaged_run(root: Path, case: Case, store: str, dsn: str | None, profile: Path | None,
                durable: bool = True, paused_loader: bool = False) -> WrkResult:
    """One case on a fresh tracker; prints the wrk result and the store count check.

    `paused_loader` stops the journal loader (SIGSTOP) while wrk runs and lets it go on after: the
    workers' own figure, without the store's writes and syncs beside them; the count check still runs."""
    mode = "paused" if paused_loader else "durable" if durable else "nosync"
    directory = root / f"{store}-{case.workers}-{case.connections}-{mode}"
    keyring = load_keyring(directory)
    tracker = TrackerWorkers(directory, case.workers, dsn, durable)
    spy: subprocess.Popen[bytes] | None = None
    try:
        script = write_lua(directory / "clicks.lua", click_paths(keyring, tracker.address, LINKS))
        url = f"http://{tracker.address}"
        run_wrk(url, script, WARMUP, case.connections, case.cpu)
        if profile is not None:
            spy = start_profile(profile, tracker.pids[0])
        if paused_loader:
            tracker.loader.process.send_signal(signal.SIGSTOP)
        try:
            result = run_wrk(url, script, SECONDS, case.connections, case.cpu)
        finally:
            if paused_loader:
                tracker.loader.process.send_signal(signal.SIGCONT)
    except BaseException:
        tracker.kill()
        raise
    finally:
        if spy is not None:
            spy.wait(60)
    began = time.monotonic()
    workers, loader = tracker.stop()
    drain = time.monotonic() - began
    if dsn:
        stored = int(asyncio.run(pg_fetchval("SELECT count(*) FROM events", dsn)))
        asyncio.run(pg_fetchval("TRUNCATE events", dsn))
    else:
        stored = count_sqlite(directory / "events.sqlite3")
    journaled = int(workers["journal_appended"])
    lost = journaled - stored + int(workers["journal_failed"])
    suffix = " loader paused" if paused_loader else "" if durable else " NO fdatasync"
    print(line(f"engaged {case.label} {store} -c{case.connections}{suffix}", result))
    print(f"{'':34} {stored:,} stored of {journaled:,} journaled (lost {lost}); "
          f"{journaled / max(1, workers['journal_batches']):.1f} events per write; loader "
          f"{loader['loader_batches']:.0f} batches, answer-to-store lag max "
          f"{loader['loader_lag_max_seconds']:.2f} s (drain after stop {drain:.2f} s)")
    return result


def start_profile(output: Path, pid: int) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not os.path.exists(spy):
        print("py-spy not installed: no profile")
        return None
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(SECONDS - 1), "--rate", "200",
                             "--format", "raw", "--output", str(output), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def mean_of(before: WrkResult | None, after: WrkResult | None) -> WrkResult | None:
    """The baseline of the runs between two nginx measurements: their mean rate and latencies."""
    if before is None or after is None:
        return before or after
    return WrkResult((before.requests_per_second + after.requests_per_second) / 2,
                     (before.p50_ms + after.p50_ms) / 2, (before.p99_ms + after.p99_ms) / 2,
                     before.requests + after.requests, before.errors or after.errors)


def ratio_line(label: str, case: Case, ours: WrkResult, baseline: WrkResult | None) -> None:
    if baseline is None:
        return
    ratio = ours.requests_per_second / baseline.requests_per_second
    goal = ""
    if case.workers == 1 and case.connections == CONNECTIONS[0]:
        met = ratio >= GOAL_RATIO and ours.p99_ms < GOAL_P99_MS
        goal = f"   goal >= {GOAL_RATIO}x and p99 < {GOAL_P99_MS:g} ms: {'met' if met else 'NOT met'}"
    print(f"  ratio {label} {case.label} -c{case.connections}: {ratio:.2f}x nginx (mean of before and after) "
          f"(p99 {ours.p99_ms:.1f} vs {baseline.p99_ms:.1f} ms){goal}")


def matrix(args: argparse.Namespace) -> None:
    cpus = os.cpu_count() or 1
    cases = [Case(1, connections, "1 worker") for connections in CONNECTIONS]
    cases += [Case(cpus, connections, f"{cpus} workers") for connections in CONNECTIONS]
    print(f"tracker bench: wrk -t1 -d{SECONDS}s, {LINKS} rotating click links, journal fdatasync before every answer;"
          " nginx measured before and after the engaged runs it is compared with")
    with tempfile.TemporaryDirectory(prefix="engaged-bench-tracker-") as tmp:
        root = Path(tmp)
        name = f"engaged_bench_{secrets.token_hex(4)}"
        dsn: str | None = pg_database(name)
        try:
            asyncio.run(pg_fetchval(f'CREATE DATABASE "{name}"'))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            print(f"PostgreSQL skipped: unreachable at {PG_ADMIN_DSN}: {error}")
            dsn = None
        try:
            for workers in sorted({case.workers for case in cases}):
                nginx = Nginx(root, workers)
                if nginx.process is None:
                    print("nginx is not installed (Debian nginx-light; make sysdeps): no baseline")
                try:
                    for case in (case for case in cases if case.workers == workers):
                        first = case.workers == 1 and case.connections == CONNECTIONS[0]
                        # nginx is measured before and after the engaged runs it is the baseline of, and the
                        # ratios use the mean: on this kind of machine two nginx runs a minute apart differed
                        # by up to 40 % (54k and 78k req/s).
                        before = nginx.run(case)
                        runs = [("SQLite", engaged_run(root, case, "SQLite", None, args.profile if first else None))]
                        if dsn is not None:
                            runs.append(("PostgreSQL", engaged_run(root, case, "PostgreSQL", dsn, None)))
                        after = nginx.run(case)
                        for label, result in runs:
                            ratio_line(label, case, result, mean_of(before, after))
                        if first:
                            nosync = engaged_run(root, case, "SQLite", None, None, durable=False)
                            before, after = after, nginx.run(case)
                            ratio_line("SQLite, no fdatasync", case, nosync, mean_of(before, after))
                            paused = engaged_run(root, case, "SQLite", None, None, paused_loader=True)
                            before, after = after, nginx.run(case)
                            ratio_line("SQLite, loader paused", case, paused, mean_of(before, after))
                finally:
                    nginx.stop()
        finally:
            if dsn is not None:
                asyncio.run(pg_fetchval(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def http_options(args: argparse.Namespace) -> None:
    """Each HTTP layer answering a fixed 302 on CPU 0 (wrk -c50 on CPU 1), then the tracker itself."""
    print(f"HTTP layers, fixed 302, wrk -t1 -c{CONNECTIONS[0]} -d{SECONDS}s, server on CPU 0")
    with tempfile.TemporaryDirectory(prefix="engaged-bench-http-") as tmp:
        root = Path(tmp)
        script = write_lua(root / "plain.lua", [f"/f/a/{n}" for n in range(LINKS)])

        def measure(label: str, port: int) -> None:
            url = f"http://127.0.0.1:{port}"
            run_wrk(url, script, WARMUP, CONNECTIONS[0])
            print(line(label, run_wrk(url, script, SECONDS, CONNECTIONS[0])))

        port = free_port()
        nginx = start_nginx(root / "nginx", port)
        if nginx is not None:
            try:
                measure("nginx return 302", port)
            finally:
                nginx.terminate()
                nginx.wait(10)
        options: list[tuple[str, list[str]]] = [
            ("uvicorn, empty ASGI app", [sys.executable, str(HERE / "_http_options.py"), "uvicorn"]),
            ("asyncio.Protocol on httptools", [sys.executable, str(HERE / "_http_options.py"), "protocol"]),
        ]
        granian = shutil.which("granian") or str(Path(sys.executable).with_name("granian"))
        if os.path.exists(granian):
            options.append(("granian, empty ASGI app", [granian, "--interface", "asgi", "--workers", "1",
                                                        "--loop", "uvloop", "--no-ws", "--log-level", "warning",
                                                        "--host", "127.0.0.1", "--working-dir", str(HERE),
                                                        "_http_options:app", "--port"]))
        else:
            print("granian is not installed (pip install granian): skipped")
        for label, command in options:
            port = free_port()
            process = subprocess.Popen(["taskset", "-c", "0", *command, str(port)], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            try:
                if _wait_port(port, process):
                    measure(label, port)
                else:
                    print(f"{label}: did not start")
            finally:
                process.terminate()
                process.wait(10)
        if args.baseline is not None:
            baseline_tracker(root, Path(args.baseline))
        if os.path.exists(granian):
            tracker_on_granian_vs_ours(root, granian)
        else:
            directory = root / "ours"
            keyring = load_keyring(directory)
            tracker = TrackerWorkers(directory, 1)
            try:
                paths = write_lua(directory / "clicks.lua", click_paths(keyring, tracker.address, LINKS))
                url = f"http://{tracker.address}"
                run_wrk(url, paths, WARMUP, CONNECTIONS[0])
                print(line("engaged tracker (this checkout)", run_wrk(url, paths, SECONDS, CONNECTIONS[0])))
            finally:
                tracker.stop()


ROUNDS = 3


def tracker_on_granian_vs_ours(root: Path, granian: str) -> None:
    """The same tracker (handler + journal with fdatasync) on granian's ASGI and on our server, alternating."""
    ours_dir, theirs_dir = root / "ours", root / "granian"
    ours = TrackerWorkers(ours_dir, 1)
    port = free_port()
    theirs_dir.mkdir(parents=True, exist_ok=True)
    load_keyring(theirs_dir)  # created before granian's app reads it
    process = subprocess.Popen(
        ["taskset", "-c", "0", granian, "--interface", "asgi", "--workers", "1", "--loop", "uvloop", "--no-ws",
         "--log-level", "warning", "--host", "127.0.0.1", "--working-dir", str(HERE), "_http_options:tracker_app",
         "--port", str(port)], env={**os.environ, "ENGAGED_BENCH_TRACKER_DIR": str(theirs_dir)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not _wait_port(port, process):
            print("granian with the tracker did not start")
            return
        targets = {
            "engaged tracker on granian (ASGI)": (f"127.0.0.1:{port}", load_keyring(theirs_dir)),
            "engaged tracker on its own server": (ours.address, load_keyring(ours_dir)),
        }
        scripts = {label: write_lua(root / f"{n}.lua", click_paths(keys, address, LINKS))
                   for n, (label, (address, keys)) in enumerate(targets.items())}
        rates: dict[str, list[WrkResult]] = {label: [] for label in targets}
        for label, (address, _) in targets.items():
            run_wrk(f"http://{address}", scripts[label], WARMUP, CONNECTIONS[0])
        for _ in range(ROUNDS):
            for label, (address, _) in targets.items():
                rates[label].append(run_wrk(f"http://{address}", scripts[label], SECONDS // 2, CONNECTIONS[0]))
        for label, results in rates.items():
            print(f"{label:<34} " + "  ".join(f"{result.requests_per_second:>7,.0f}" for result in results)
                  + f" req/s in {ROUNDS} alternating rounds; p99 "
                  + ", ".join(f"{result.p99_ms:.1f}" for result in results) + " ms")
    finally:
        process.terminate()
        process.wait(10)
        ours.stop()


def baseline_tracker(root: Path, checkout: Path) -> None:
    directory = root / "baseline"
    keyring = load_keyring(directory)
    child = Child(["serve", str(directory)], 0, "tracker listening on",
                  script=str(checkout / "bench" / "_tracker_harness.py"))
    try:
        paths = write_lua(directory / "clicks.lua", click_paths(keyring, child.address, LINKS))
        url = f"http://{child.address}"
        run_wrk(url, paths, WARMUP, CONNECTIONS[0])
        print(line(f"engaged tracker ({checkout.name})", run_wrk(url, paths, SECONDS, CONNECTIONS[0])))
    finally:
        child.stop()


def main() -> int:
    if shutil.which("wrk") is None:
        print("tracker bench skipped: wrk is not installed (make sysdeps installs it)")
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--http-options", action="store_true", help="measure the candidate HTTP layers instead")
    parser.add_argument("--baseline", metavar="CHECKOUT", help="with --http-options: also another checkout's tracker")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="py-spy raw profile of the one-worker SQLite -c50 run into FILE")
    args = parser.parse_args()
    if args.http_options:
        http_options(args)
    else:
        matrix(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
