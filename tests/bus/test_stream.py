"""The stream's checks (pure): which existing streams engaged refuses, and what it only notes."""

from __future__ import annotations

from nats.js.api import RetentionPolicy, StreamConfig

from engaged.bus.stream import headers_of, stream_problems, subject_of
from engaged.config import BusConfig
from tests.bus.publishing import open_event


def test_the_subject_is_the_sparkpost_type_and_the_msg_id_the_event_id() -> None:
    event = open_event(3)
    assert subject_of(event) == "engaged.events.open"
    assert headers_of(event) == {"Nats-Msg-Id": event.event_id, "Engaged-Event-Type": "open"}


def test_a_stream_engaged_would_create_has_no_problems() -> None:
    stream = StreamConfig(name="ENGAGED_EVENTS", subjects=["engaged.events.>"], num_replicas=3,
                          duplicate_window=120, retention=RetentionPolicy.LIMITS)
    assert stream_problems(stream, BusConfig(replicas=3)) == ([], [])


def test_other_subjects_or_a_work_queue_are_refused() -> None:
    fatal, _ = stream_problems(StreamConfig(subjects=["orders.>"], retention=RetentionPolicy.WORK_QUEUE,
                                            duplicate_window=120), BusConfig())
    assert fatal == ["its subjects (orders.>) do not include engaged.events.>",
                     "retention is workqueue; engaged needs limits (the default)"]


def test_limits_that_may_lose_events_are_noted_not_refused() -> None:
    fatal, notes = stream_problems(StreamConfig(subjects=[">"], num_replicas=1, duplicate_window=5, max_age=60,
                                                max_msgs=1000), BusConfig(replicas=3))
    assert fatal == [] and len(notes) == 4
