"""Test factories for what injection builds: RecipientIdentity, SpoolRecipient and SpoolRecord."""

from __future__ import annotations

from typing import Any

from engaged.recipient import RecipientIdentity, TrackingPlan, identify
from engaged.spool.record import SpoolRecipient, SpoolRecord

MESSAGE_ID = "000443ee14578172be22"
TRANSMISSION_ID = "65832150921904138"


def recipient_identity(raw_rcpt_to: str = "Alice@Example.com", **changes: Any) -> RecipientIdentity:
    """An identity as injection builds it (`identify`), with `changes` applied on top."""
    base = identify(raw_rcpt_to, message_id=changes.pop("message_id", MESSAGE_ID),
                    transmission_id=changes.pop("transmission_id", TRANSMISSION_ID),
                    injection_time=changes.pop("injection_time", 1_700_000_000.0))
    fields = {name: getattr(base, name) for name in RecipientIdentity.__struct_fields__}
    fields.update(changes)
    return RecipientIdentity(**fields)


def spool_record(
    *recipients: tuple[RecipientIdentity, TrackingPlan],
    message_id: str = MESSAGE_ID,
    transmission_id: str = TRANSMISSION_ID,
    received_at: float = 1_700_000_000.0,
    mail_from: str = "a@x.com",
    **fields: Any,
) -> SpoolRecord:
    """A record holding `recipients` (identity, plan) with injection event ids "1", "2", …"""
    return SpoolRecord(
        message_id=message_id, transmission_id=transmission_id, received_at=received_at, mail_from=mail_from,
        recipients=[SpoolRecipient(identity=identity, plan=plan, injection_event_id=str(n + 1))
                    for n, (identity, plan) in enumerate(recipients)],
        **fields,
    )
