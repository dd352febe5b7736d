"""The SuppressionStore contract, run against SQLite and PostgreSQL."""

from __future__ import annotations

from engaged.suppression.model import (
    BOUNCE_RULE,
    LIST_UNSUBSCRIBE,
    MANUAL,
    SuppressionEntry,
    SuppressionSearch,
    SuppressionStore,
)
from tests.suppressionstores import SuppressionMaker

T0 = 1_700_000_000.0


def entry(recipient: str, kind: str = "non_transactional", *, at: float = T0, source: str = MANUAL,
          description: str = "") -> SuppressionEntry:
    return SuppressionEntry(recipient=recipient, type="transactional" if kind == "transactional" else
                            "non_transactional", source=source, description=description, created=at, updated=at)


async def test_an_upserted_entry_is_found_by_recipient_and_type(suppressions: SuppressionStore) -> None:
    await suppressions.upsert([entry("a@example.com", description="asked to stop")])
    found = await suppressions.search(SuppressionSearch(recipients=("a@example.com",)))
    assert found == [entry("a@example.com", description="asked to stop")]
    assert await suppressions.suppressed(["a@example.com", "b@example.com"], "non_transactional") == {"a@example.com"}
    assert await suppressions.suppressed(["a@example.com"], "transactional") == set()


async def test_an_update_keeps_created_and_replaces_the_rest(suppressions: SuppressionStore) -> None:
    await suppressions.upsert([entry("a@example.com", at=T0)])
    await suppressions.upsert([entry("a@example.com", at=T0 + 60, source=BOUNCE_RULE, description="hard bounce")])
    [found] = await suppressions.search(SuppressionSearch())
    assert (found.created, found.updated, found.source, found.description) == (T0, T0 + 60, BOUNCE_RULE, "hard bounce")


async def test_both_types_are_separate_entries_and_delete_takes_the_given_types(
        suppressions: SuppressionStore) -> None:
    await suppressions.upsert([entry("a@example.com", "transactional"), entry("a@example.com")])
    assert await suppressions.count(SuppressionSearch(), 100) == 2
    assert await suppressions.delete("a@example.com", ["transactional"]) == 1
    assert [found.type for found in await suppressions.search(SuppressionSearch())] == ["non_transactional"]
    assert await suppressions.delete("a@example.com") == 1
    assert await suppressions.delete("a@example.com") == 0


async def test_filters_domain_sources_types_description_and_time(suppressions: SuppressionStore) -> None:
    await suppressions.upsert([
        entry("a@one.example", at=T0, description="Unsubscribed via the 100% header"),
        entry("b@two.example", "transactional", at=T0 + 10, source=BOUNCE_RULE, description="550 5.1.1"),
        entry("c@one.example", at=T0 + 20, source=LIST_UNSUBSCRIBE, description="one-click"),
    ])

    async def recipients(**filters: object) -> list[str]:
        return [found.recipient for found in await suppressions.search(SuppressionSearch(**filters))]  # type: ignore[arg-type]

    assert await recipients(domain="ONE.example") == ["c@one.example", "a@one.example"]
    assert await recipients(sources=(BOUNCE_RULE,)) == ["b@two.example"]
    assert await recipients(types=("transactional",)) == ["b@two.example"]
    assert await recipients(description="100%") == ["a@one.example"]
    assert await recipients(description="1_0") == []  # LIKE wildcards are literal
    assert await recipients(description="ONE-CLICK") == ["c@one.example"]
    assert await recipients(description="one", description_strict=True) == []
    assert await recipients(since=T0 + 5, until=T0 + 20) == ["b@two.example"]
    assert await recipients(ascending=True) == ["a@one.example", "b@two.example", "c@one.example"]


async def test_keyset_paging_visits_every_entry_once_in_both_orders(suppressions: SuppressionStore) -> None:
    await suppressions.upsert([entry(f"r{n:03}@example.com", kind, at=T0 + n % 7)
                               for n in range(60) for kind in ("transactional", "non_transactional")])
    for ascending in (False, True):
        seen: list[tuple[str, str]] = []
        after: tuple[float, str, str] | None = None
        while True:
            page = await suppressions.search(SuppressionSearch(limit=13, after=after, ascending=ascending))
            seen.extend((found.recipient, found.type) for found in page)
            if len(page) < 13:
                break
            last = page[-1]
            after = (last.updated, last.recipient, last.type)
        assert len(seen) == 120 and len(set(seen)) == 120
    assert await suppressions.count(SuppressionSearch(), 50) == 50


async def test_the_batch_check_handles_more_recipients_than_one_statement_takes(
        suppressions: SuppressionStore) -> None:
    await suppressions.upsert([entry(f"r{n}@example.com") for n in range(0, 3000, 3)])
    found = await suppressions.suppressed([f"r{n}@example.com" for n in range(3000)], "non_transactional")
    assert found == {f"r{n}@example.com" for n in range(0, 3000, 3)}


async def test_entries_survive_a_restart_of_the_store(make_suppressions: SuppressionMaker) -> None:
    first = make_suppressions()
    await first.open()
    await first.upsert([SuppressionEntry(recipient="a@example.com", type="transactional", created=1, updated=1)])
    await first.close()
    second = make_suppressions()
    await second.open()
    assert await second.suppressed(["a@example.com"], "transactional") == {"a@example.com"}
    await second.close()
