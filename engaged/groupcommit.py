"""Group commit: the items of many tasks written by one commit, and each waiter told its own item's outcome.

Used by both event stores. A commit that fails for a reason that may be one item's fault (the caller's
`is_item_error`: a row the database refuses) is split in halves and each half committed again, so a
bad item fails alone and every other item of its batch is still stored; any other failure (the disk,
the connection) fails the whole batch, since it says nothing about any one item.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

Committed = Callable[[list[T], float], None]
"""Called after each successful commit with its items and its duration in seconds."""


class GroupCommit(Generic[T]):
    """Gathers submitted items into batches of at most `max_weight` and commits one batch at a time.

    Items submitted while a commit runs wait for the next one, so N concurrent writers cost about one
    commit instead of N. `commit` must be atomic: all of a batch or nothing.
    """

    def __init__(self, commit: Callable[[list[T]], Awaitable[None]], *,
                 weight: Callable[[T], int] = lambda _: 1, max_weight: int = 1000,
                 is_item_error: Callable[[Exception], bool] = lambda _: False,
                 committed: Committed[T] | None = None) -> None:
        self._commit = commit
        self._weight = weight
        self._max_weight = max_weight
        self._is_item_error = is_item_error
        self._committed = committed
        self._pending: deque[tuple[T, asyncio.Future[None]]] = deque()
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> None:
        """Return once a commit holding `item` succeeded; raise the error of the commit that failed it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((item, future))
        if self._runner is None:
            self._runner = loop.create_task(self._run())
        await future

    async def settled(self) -> None:
        """Return once every submitted item is committed or failed."""
        while self._runner is not None:
            await asyncio.wait({self._runner})

    async def _run(self) -> None:
        batch: list[tuple[T, asyncio.Future[None]]] = []
        try:
            while self._pending:
                batch, weight = [], 0
                while self._pending and (not batch or weight + self._weight(self._pending[0][0]) <= self._max_weight):
                    item = self._pending.popleft()
                    batch.append(item)
                    weight += self._weight(item[0])
                await self._settle(batch)
        except asyncio.CancelledError:  # the loop is going away: nobody may wait for a commit that never comes
            for _, future in (*batch, *self._pending):
                future.cancel()
            self._pending.clear()
            raise
        finally:
            self._runner = None

    async def _settle(self, batch: list[tuple[T, asyncio.Future[None]]]) -> None:
        items = [item for item, _ in batch]
        began = time.perf_counter()
        try:
            await self._commit(items)
        except Exception as error:
            if len(batch) > 1 and self._is_item_error(error):
                middle = len(batch) // 2
                await self._settle(batch[:middle])
                await self._settle(batch[middle:])
                return
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for _, future in batch:
            if not future.done():
                future.set_result(None)
        if self._committed is not None:
            self._committed(items, time.perf_counter() - began)
