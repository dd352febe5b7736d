"""Connection caps shared by the workers: counted per worker row, admitted on the sums."""

from __future__ import annotations

import os

from engaged.server.gate import SharedCounts


def test_caps_hold_across_workers() -> None:
    counts = SharedCounts(2)
    zero, one = counts.gate(0, max_total=3, max_per_ip=2), counts.gate(1, max_total=3, max_per_ip=2)
    assert zero.admit("192.0.2.1") and one.admit("192.0.2.1")
    assert not zero.admit("192.0.2.1") and not one.admit("192.0.2.1")
    assert one.admit("192.0.2.2")
    assert not zero.admit("192.0.2.3")  # the total cap, reached over both workers
    zero.release("192.0.2.1")
    assert one.admit("192.0.2.1")


def test_a_dead_workers_connections_are_forgotten() -> None:
    counts = SharedCounts(2)
    zero, one = counts.gate(0, max_total=10, max_per_ip=1), counts.gate(1, max_total=10, max_per_ip=1)
    assert zero.admit("192.0.2.1")
    assert not one.admit("192.0.2.1")
    counts.clear(0)  # the supervisor reaped worker 0
    assert one.admit("192.0.2.1")
    assert counts.total() == 1


def test_forked_workers_see_each_others_counts() -> None:
    counts = SharedCounts(2)
    pid = os.fork()
    if pid == 0:
        gate = counts.gate(1, max_total=10, max_per_ip=5)
        os._exit(0 if all(gate.admit("198.51.100.7") for _ in range(5)) else 1)
    assert os.waitpid(pid, 0)[1] == 0
    assert not counts.gate(0, max_total=10, max_per_ip=5).admit("198.51.100.7")
