"""The stream's shape, as other consumers may rely on it: subjects, payload, headers; and its checks (pure)."""

from __future__ import annotations

from typing import Final

from nats.js.api import RetentionPolicy, StreamConfig

from engaged.config import BusConfig
from engaged.events.model import Event, event_type

SUBJECT_PREFIX: Final = "engaged.events."
SUBJECTS: Final = ("engaged.events.>",)
MSG_ID: Final = "Nats-Msg-Id"
TYPE_HEADER: Final = "Engaged-Event-Type"


def subject_of(event: Event) -> str:
    """`engaged.events.<type>` (SparkPost's type: delivery, click, initial_open …)."""
    return SUBJECT_PREFIX + event_type(event)


def headers_of(event: Event) -> dict[str, str]:
    """`Nats-Msg-Id` (the event_id: JetStream drops a repeat within its duplicate window) and the type."""
    return {MSG_ID: event.event_id, TYPE_HEADER: event_type(event)}


def _covers(subjects: list[str]) -> bool:
    return any(subject in ("engaged.events.>", "engaged.>", ">") for subject in subjects)


def stream_problems(stream: StreamConfig, bus: BusConfig) -> tuple[list[str], list[str]]:
    """(fatal, notes) for an existing stream: fatal ones stop publishing, notes are logged once.

    Fatal: it does not take `engaged.events.>`, or it is a work queue or interest stream (our durable
    consumer would compete with others, or messages would vanish before the store has them).
    """
    fatal: list[str] = []
    notes: list[str] = []
    subjects = list(stream.subjects or [])
    if not _covers(subjects):
        fatal.append(f"its subjects ({', '.join(subjects) or 'none'}) do not include engaged.events.>")
    if stream.retention not in (None, RetentionPolicy.LIMITS):
        retention = stream.retention.value if stream.retention is not None else "?"
        fatal.append(f"retention is {retention}; engaged needs limits (the default)")
    if stream.num_replicas is not None and stream.num_replicas != bus.replicas:
        notes.append(f"has {stream.num_replicas} replica(s), [bus] replicas says {bus.replicas}; keeping the stream's")
    window = stream.duplicate_window or 0
    if window < 30:
        notes.append(f"duplicate window {window:.0f} s: a publish retried later than that is stored twice in the "
                     "stream (the store still keeps one row per event_id)")
    if stream.max_age:
        notes.append(f"max_age {stream.max_age:.0f} s: events not consumed within it are lost to the store")
    if stream.max_msgs not in (None, -1) or stream.max_bytes not in (None, -1):
        notes.append("max_msgs/max_bytes set: a lagging consumer may lose old events")
    return fatal, notes
