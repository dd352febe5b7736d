"""The suppression check at injection: which recipients of a message are on the list for its type."""

from __future__ import annotations

from collections.abc import Sequence

from engaged.suppression.model import SuppressionStore

SUPPRESSED_CODE = "554"
SUPPRESSED_REASON = "554 5.7.1 [internal] recipient address was suppressed due to customer policy"
"""SparkPost's wording for a suppressed recipient (policy_rejection `reason`)."""
NONE_QUEUED = "550 5.7.1 Every recipient is on the suppression list; nothing was queued"
"""The SMTP reply when the check refused every recipient of a message."""


class SuppressionCheck:
    """Looks recipients up in the suppression list, one query per type present in the message."""

    def __init__(self, store: SuppressionStore) -> None:
        self._store = store

    async def refused(self, recipients: Sequence[tuple[str, bool]]) -> set[int]:
        """Indexes of the (address, transactional) pairs whose address is suppressed for that type.

        Raises StoreError when the list cannot be read: the caller answers 451 rather than send.
        """
        refused: set[int] = set()
        for transactional in (False, True):
            wanted = [(index, address.lower()) for index, (address, kind) in enumerate(recipients)
                      if kind is transactional]
            if not wanted:
                continue
            found = await self._store.suppressed(sorted({address for _, address in wanted}),
                                                 "transactional" if transactional else "non_transactional")
            refused.update(index for index, address in wanted if address in found)
        return refused
