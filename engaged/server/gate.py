"""Connection caps across worker processes: one shared table of counts, each worker writing its own row.

`[smtp] max_connections` and `max_connections_per_ip` are limits of the server, not of one worker.
The supervisor maps a small shared table before it forks; worker n counts its own connections in
row n (only it writes there, from its event loop, so no lock) and admits a connection when the
sums over every row stay under the caps. Counts per address are kept in a count-min sketch (two
hashed buckets per address, the smaller sum is the estimate): an estimate is never below the true
count, so a cap is never exceeded by more than two connections arriving at the same instant on
two workers, and a client is refused early only if both its buckets collide with busy clients.
The supervisor clears a worker's row when it dies, and the worker clears it again when it starts.
"""

from __future__ import annotations

import hashlib
import mmap

from engaged.smtp.gate import ConnectionGate

BUCKETS = 1 << 14
_ROW = 1 + 2 * BUCKETS  # total, then two bucket arrays
_INT = 4


class SharedCounts:
    """The table of `rows` rows (one per worker); create before forking, then `gate(n)` in worker n."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self._map = mmap.mmap(-1, rows * _ROW * _INT, flags=mmap.MAP_SHARED)
        self._cells = memoryview(self._map).cast("i")

    def clear(self, row: int) -> None:
        start = row * _ROW
        self._cells[start : start + _ROW] = memoryview(bytes(_ROW * _INT)).cast("i")

    def gate(self, row: int, max_total: int, max_per_ip: int, *, reserved: int = 0,
             max_idle_per_ip: int = 0) -> SharedGate:
        self.clear(row)
        return SharedGate(self, row, max_total, max_per_ip, reserved=reserved, max_idle_per_ip=max_idle_per_ip)

    def total(self) -> int:
        return sum(self._cells[row * _ROW] for row in range(self.rows))

    def add(self, row: int, slots: tuple[int, int], delta: int) -> None:
        base = row * _ROW
        cells = self._cells
        cells[base] += delta
        cells[base + slots[0]] += delta
        cells[base + slots[1]] += delta

    def estimate(self, slots: tuple[int, int]) -> int:
        cells = self._cells
        first = second = 0
        for row in range(self.rows):
            base = row * _ROW
            first += cells[base + slots[0]]
            second += cells[base + slots[1]]
        return min(first, second)


def _slots(ip: str) -> tuple[int, int]:
    digest = hashlib.blake2b(ip.encode(), digest_size=8).digest()
    first = int.from_bytes(digest[:4], "little") % BUCKETS
    second = int.from_bytes(digest[4:], "little") % BUCKETS
    return 1 + first, 1 + BUCKETS + second


class SharedGate(ConnectionGate):
    """ConnectionGate whose counts are the sums over every worker's row of a SharedCounts table.

    The caps (in all, per address, the trusted reserve) hold across workers; idle sessions and their
    eviction stay the worker's own (a worker closes only its own idle sessions to make room).
    """

    def __init__(self, counts: SharedCounts, row: int, max_total: int, max_per_ip: int, *, reserved: int = 0,
                 max_idle_per_ip: int = 0) -> None:
        super().__init__(max_total, max_per_ip, reserved=reserved, max_idle_per_ip=max_idle_per_ip)
        self._counts = counts
        self._row = row

    def admit(self, ip: str, *, trusted: bool = False) -> bool:
        slots = _slots(ip)
        if self._counts.estimate(slots) >= self._max_per_ip:
            self.refused += 1
            return False
        total = self._counts.total()
        full = total >= self._max_total - (0 if trusted else self._reserved)
        if full and (not trusted or (total >= self._max_total and not self._evict_untrusted())):
            self.refused += 1
            return False
        self._counts.add(self._row, slots, 1)
        return True

    def release(self, ip: str) -> None:
        self._counts.add(self._row, _slots(ip), -1)
