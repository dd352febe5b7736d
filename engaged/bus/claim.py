"""NodeClaim: a [bus] node_id is held by one node at a time, as a key with a time-to-live in a JetStream bucket.

Event ids carry the node id, and the stream drops a second message with the same id (`Nats-Msg-Id`): two
nodes given the same node_id would lose each other's events without a word. So a node claims
`node-<id>` in the key-value bucket `<stream>_NODES` when it starts and refreshes it while it runs; the
key outlives a crashed holder by CLAIM_TTL seconds. A claim held by another node (another host, or
another data_dir on this one) stops the node with `bus.node_id: …`; the same node restarting takes
its own claim over at once. While the bus is unreachable the check waits for it, and a node that
finds its id taken later stops then (what it holds locally stays there for its next start).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Final

import nats.errors
import nats.js.errors
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from engaged.bus.connection import BusConnection
from engaged.errors import ConfigError, StoreError

log = logging.getLogger("engaged")

CLAIM_TTL: Final = 30.0  # seconds a claim outlives the last refresh of its holder
FIRST_WAIT: Final = 3.0  # seconds `start` waits for the bus before it lets the node start unchecked


class NodeClaim:
    """Claims [bus] node_id for `holder` (host:data_dir) and keeps it fresh; reports a clash through `on_taken`."""

    def __init__(self, bus: BusConnection, node_id: int, holder: str, on_taken: Callable[[ConfigError], None],
                 *, ttl: float = CLAIM_TTL) -> None:
        self._bus = bus
        self._key = f"node-{node_id}"
        self._node_id = node_id
        self._holder = holder
        self._on_taken = on_taken
        self._ttl = ttl
        self._revision = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def bucket(self) -> str:
        return f"{self._bus.config.stream}_NODES"

    async def start(self) -> None:
        """Claim the id if the bus answers within FIRST_WAIT (ConfigError when another node holds it), then keep it."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._bus.ready.wait(), FIRST_WAIT)
        if self._bus.ready.is_set():
            with contextlib.suppress(_Unchecked):
                await self._claim()
        else:
            log.warning("bus: unreachable at start; node_id %d is checked once it answers", self._node_id)
        self._task = asyncio.get_running_loop().create_task(self._keep())

    async def stop(self) -> None:
        """Stop refreshing and give the id back, so that a node elsewhere may take it at once."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._revision:
            with contextlib.suppress(Exception):
                kv = await self._bucket()
                await asyncio.wait_for(kv.delete(self._key, last=self._revision), 2.0)

    async def _keep(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._bus.ready.wait()
                await self._claim()
            except ConfigError as taken:
                self._on_taken(taken)
                return
            except _Unchecked:
                pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._ttl / 6)

    async def _claim(self) -> None:
        """Create or refresh the key; ConfigError when another holder's claim is fresh, _Unchecked if the bus fails."""
        value = json.dumps({"holder": self._holder, "pid": os.getpid(), "at": time.time()}).encode()
        try:
            kv = await self._bucket()
            if self._revision:
                try:
                    self._revision = await kv.update(self._key, value, last=self._revision)
                    return
                except nats.js.errors.KeyWrongLastSequenceError:
                    self._revision = 0  # it expired under us (a long outage) or someone else wrote it: look
            try:
                self._revision = await kv.create(self._key, value)
                log.info("bus: node_id %d claimed (%s)", self._node_id, self.bucket)
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                entry = await kv.get(self._key)
            current = _decode(entry.value)
            if current.get("holder") != self._holder:
                age = time.time() - _number(current.get("at"))
                raise ConfigError([f"bus.node_id: node_id {self._node_id} is held by {current.get('holder', '?')} "
                                   f"(pid {current.get('pid', '?')}, refreshed {max(age, 0):.0f} s ago; a claim "
                                   f"lasts {self._ttl:.0f} s after its node stops): give each node its own node_id"])
            # this node again (a restart, or the claim of a process that died): take it over
            self._revision = await kv.update(self._key, value, last=entry.revision or 0)
            log.info("bus: node_id %d taken over from an earlier run of this node", self._node_id)
        except (nats.errors.Error, StoreError, OSError, TimeoutError) as error:
            if isinstance(error, nats.js.errors.KeyWrongLastSequenceError):  # a race with another claimant
                raise _Unchecked() from error
            log.warning("bus: cannot check node_id %d yet: %s", self._node_id, error or type(error).__name__)
            raise _Unchecked() from error

    async def _bucket(self) -> KeyValue:
        js = self._bus.jetstream()
        try:
            return await js.key_value(self.bucket)
        except nats.js.errors.BucketNotFoundError:
            return await js.create_key_value(KeyValueConfig(
                bucket=self.bucket, history=1, ttl=self._ttl, storage=StorageType.FILE,
                replicas=self._bus.config.replicas, description="engaged node ids in use (see docs/deployment.md)"))


class _Unchecked(Exception):
    """The bus could not answer the claim now; it is tried again."""


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def _decode(value: bytes | None) -> dict[str, object]:
    try:
        decoded = json.loads(value or b"{}")
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}
