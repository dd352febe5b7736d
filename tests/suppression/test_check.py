"""The injection check: per type, case-insensitive, one lookup per type."""

from __future__ import annotations

from engaged.suppression.check import SuppressionCheck
from engaged.suppression.model import SuppressionEntry, SuppressionStore


async def test_the_check_refuses_by_address_and_the_messages_type(suppressions: SuppressionStore) -> None:
    await suppressions.upsert([
        SuppressionEntry(recipient="a@example.com", type="non_transactional", created=1, updated=1),
        SuppressionEntry(recipient="b@example.com", type="transactional", created=1, updated=1),
    ])
    check = SuppressionCheck(suppressions)
    assert await check.refused([("A@Example.com", False), ("b@example.com", False), ("c@example.com", False)]) == {0}
    assert await check.refused([("a@example.com", True), ("B@example.com", True)]) == {1}
    assert await check.refused([]) == set()
