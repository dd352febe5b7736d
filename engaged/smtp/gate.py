"""Connection caps for the SMTP listeners: in all, per client address, idle sessions, and a trusted reserve."""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Protocol


class Evictable(Protocol):
    """A session the gate may close to make room (it answers 421 and closes)."""

    def evict(self) -> None: ...


class ConnectionGate:
    """Counts open connections against the configured caps and picks idle sessions to close.

    Slowloris defence: a client address keeps at most `max_idle_per_ip` idle sessions (a new one
    closes its oldest idle one), and the last `reserved` connection slots are only for trusted
    clients (relay_networks); when even those are taken, a trusted client closes the oldest idle
    session of an untrusted one. Idle means no transaction and nothing being decided; the listener
    never marks sessions of trusted or authenticated clients idle.
    """

    def __init__(self, max_total: int, max_per_ip: int, *, reserved: int = 0, max_idle_per_ip: int = 0) -> None:
        self._max_total = max_total
        self._max_per_ip = max_per_ip
        self._reserved = min(reserved, max(max_total - 1, 0))
        self._max_idle_per_ip = max_idle_per_ip
        self._per_ip: Counter[str] = Counter()
        self._total = 0
        self._idle: dict[str, OrderedDict[int, Evictable]] = {}
        self._untrusted_idle: OrderedDict[int, Evictable] = OrderedDict()
        self.refused = 0

    def admit(self, ip: str, *, trusted: bool = False) -> bool:
        """Count a new connection, or False when a cap refuses it."""
        if self._per_ip[ip] >= self._max_per_ip:
            self.refused += 1
            return False
        full = self._total >= self._max_total - (0 if trusted else self._reserved)
        if full and (not trusted or (self._total >= self._max_total and not self._evict_untrusted())):
            self.refused += 1
            return False
        self._total += 1
        self._per_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self._total -= 1
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]

    def make_room(self, ip: str) -> None:
        """Before a new session from `ip`: close its oldest idle sessions beyond the idle cap."""
        idle = self._idle.get(ip)
        while self._max_idle_per_ip and idle and len(idle) >= self._max_idle_per_ip:
            _, oldest = idle.popitem(last=False)
            self._untrusted_idle.pop(id(oldest), None)
            oldest.evict()

    def set_idle(self, ip: str, session: Evictable, idle: bool, *, trusted: bool) -> None:
        """Mark a session idle (evictable) or busy."""
        key = id(session)
        if idle:
            self._idle.setdefault(ip, OrderedDict())[key] = session
            if not trusted:
                self._untrusted_idle[key] = session
            return
        sessions = self._idle.get(ip)
        if sessions is not None and sessions.pop(key, None) is not None and not sessions:
            del self._idle[ip]
        self._untrusted_idle.pop(key, None)

    def _evict_untrusted(self) -> bool:
        while self._untrusted_idle:
            key, session = self._untrusted_idle.popitem(last=False)
            for sessions in self._idle.values():
                sessions.pop(key, None)
            session.evict()
            return True
        return False
