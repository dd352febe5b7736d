"""GroupCommit: concurrent items share commits, a refused item fails alone, other failures fail the batch."""

from __future__ import annotations

import asyncio

import pytest

from engaged.groupcommit import GroupCommit


class Refused(Exception):
    """What the fake backing raises for a batch holding a negative item."""


class Backing:
    """Commits lists of ints; refuses any batch with a negative one, or everything while `down`."""

    def __init__(self) -> None:
        self.commits: list[list[int]] = []
        self.stored: list[int] = []
        self.down = False
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()

    async def commit(self, items: list[int]) -> None:
        self.entered.set()
        await self.gate.wait()
        self.commits.append(items)
        if self.down:
            raise OSError(5, "I/O error")
        if any(item < 0 for item in items):
            raise Refused(f"refused {items}")
        self.stored.extend(items)


def group_of(backing: Backing, **options: object) -> GroupCommit[int]:
    return GroupCommit(backing.commit, is_item_error=lambda error: isinstance(error, Refused), **options)  # type: ignore[arg-type]


async def test_items_submitted_together_share_one_commit() -> None:
    backing = Backing()
    group = group_of(backing)
    await asyncio.gather(*(group.submit(n) for n in range(10)))
    assert backing.commits == [list(range(10))]


async def test_items_submitted_during_a_commit_wait_for_the_next_one() -> None:
    backing = Backing()
    group = group_of(backing)
    backing.gate.clear()
    first = asyncio.ensure_future(group.submit(1))
    await backing.entered.wait()
    later = [asyncio.ensure_future(group.submit(n)) for n in (2, 3)]
    await asyncio.sleep(0)
    backing.gate.set()
    await asyncio.gather(first, *later)
    assert backing.commits == [[1], [2, 3]]


async def test_a_refused_item_fails_alone_and_the_rest_of_its_batch_is_stored() -> None:
    backing = Backing()
    group = group_of(backing)
    results = await asyncio.gather(*(group.submit(n) for n in (1, 2, -3, 4, 5, 6, -7, 8)), return_exceptions=True)
    assert [isinstance(result, Refused) for result in results] == [False, False, True, False, False, False, True,
                                                                    False]
    assert sorted(backing.stored) == [1, 2, 4, 5, 6, 8]


async def test_a_failure_that_is_not_an_items_fault_fails_the_whole_batch_once() -> None:
    backing = Backing()
    backing.down = True
    group = group_of(backing)
    results = await asyncio.gather(*(group.submit(n) for n in (1, -2, 3)), return_exceptions=True)
    assert all(isinstance(result, OSError) for result in results)
    assert backing.commits == [[1, -2, 3]]


async def test_batches_hold_at_most_max_weight_but_a_heavier_item_still_goes_alone() -> None:
    backing = Backing()
    group = group_of(backing, weight=lambda item: item, max_weight=10)
    await asyncio.gather(*(group.submit(n) for n in (4, 5, 3, 20, 1)))
    assert backing.commits == [[4, 5], [3], [20], [1]]


async def test_committed_is_told_each_successful_commit_and_settled_waits_for_the_last() -> None:
    backing = Backing()
    seen: list[list[int]] = []
    group = group_of(backing, committed=lambda items, seconds: seen.append(items))
    submitted = [asyncio.ensure_future(group.submit(n)) for n in (1, -2)]
    await group.settled()
    await asyncio.gather(*submitted, return_exceptions=True)
    assert seen == [[1]] and all(future.done() for future in submitted)


async def test_a_cancelled_runner_leaves_no_waiter_hanging() -> None:
    backing = Backing()
    backing.gate.clear()
    group = group_of(backing)
    waiters = [asyncio.ensure_future(group.submit(n)) for n in (1, 2)]
    await backing.entered.wait()
    waiters.append(asyncio.ensure_future(group.submit(3)))
    await asyncio.sleep(0)
    (runner,) = asyncio.all_tasks() - {*waiters, asyncio.current_task()}
    runner.cancel()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(result, asyncio.CancelledError) for result in results)
    with pytest.raises(asyncio.CancelledError):
        await runner
