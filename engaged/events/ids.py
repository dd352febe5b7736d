"""Event ids: unique, time-ordered decimal strings (Snowflake layout), as SparkPost's event_id."""

from __future__ import annotations

import secrets
import threading
import time

_SEQ_BITS = 12
_NODE_BITS = 10
_SEQ_MASK = (1 << _SEQ_BITS) - 1


class EventIdGenerator:
    """Mints 63-bit ids: milliseconds since the epoch, a node number, a per-millisecond sequence.

    Ids from one generator are strictly increasing; generators with different node numbers never
    collide. The node number is random per process unless given, so several processes sharing one
    store collide only if they draw the same node in the same millisecond with the same sequence.
    """

    def __init__(self, node: int | None = None) -> None:
        self._node = (secrets.randbits(_NODE_BITS) if node is None else node) & ((1 << _NODE_BITS) - 1)
        self._last_ms = 0
        self._seq = 0
        self._lock = threading.Lock()

    def next_id(self, now: float | None = None) -> str:
        """A new id for an event happening at `now` (epoch seconds; default: the clock)."""
        ms = int((time.time() if now is None else now) * 1000)
        with self._lock:
            if ms <= self._last_ms:
                ms = self._last_ms
                self._seq = (self._seq + 1) & _SEQ_MASK
                if self._seq == 0:
                    ms += 1
            else:
                self._seq = 0
            self._last_ms = ms
            value = (ms << (_NODE_BITS + _SEQ_BITS)) | (self._node << _SEQ_BITS) | self._seq
        return str(value)


def timestamp_of(event_id: str) -> float:
    """The epoch seconds encoded in an id made by EventIdGenerator."""
    return (int(event_id) >> (_NODE_BITS + _SEQ_BITS)) / 1000.0
