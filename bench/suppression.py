"""What the suppression check costs at injection: msg/s with it on (100,000 entries) and off, and smtp-sink."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import free_port, measure, pin_self, settle_filesystem, start_engaged, start_smtp_sink
from injection import plain_1k

CASES = [("1 KB plain, 1 session", 1, 600), ("1 KB plain, 20 sessions", 20, 60)]


def fill(api: tuple[str, int], entries: int) -> None:
    """Suppress `entries` addresses (none of them the benchmark's recipient) through the API."""
    with httpx.Client(base_url=f"http://{api[0]}:{api[1]}", timeout=120) as client:
        for start in range(0, entries, 10_000):
            batch = [{"recipient": f"r{n}@example.net", "type": "non_transactional"}
                     for n in range(start, min(entries, start + 10_000))]
            client.put("/api/v1/suppression-list", json={"recipients": batch}).raise_for_status()


def main() -> int:
    pin_self(1)
    sink_port = free_port()
    sink = start_smtp_sink(sink_port)
    on, on_tmp = start_engaged()
    off, off_tmp = start_engaged("[suppression]\nenabled = false\n")
    fill(on.address("api"), 100_000)
    settle_filesystem(Path(off_tmp.name))  # both servers deliver by capture: two new files a copy
    print(f"{'case':26} {'check on':>9} {'check off':>10} {'smtp-sink':>10} {'on/off':>7} {'on/sink':>8}")
    try:
        for name, sessions, per_session in CASES:
            body = plain_1k()
            with_check = measure(*on.smtp, body, sessions, per_session)
            without = measure(*off.smtp, body, sessions, per_session)
            baseline = measure("127.0.0.1", sink_port, body, sessions, per_session) if sink else float("nan")
            print(f"{name:26} {with_check:9.0f} {without:10.0f} {baseline:10.0f} {with_check / without:7.2f}"
                  f" {with_check / baseline:8.2f}")
    finally:
        for server, tmp in ((on, on_tmp), (off, off_tmp)):
            server.stop()
            tmp.cleanup()
        if sink is not None:
            sink.kill()
    print("machine shared with other jobs: absolute figures are noisy, compare the ratios of one run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
