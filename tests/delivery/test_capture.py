"""Capture transport: each copy and its sidecar, written on the event loop unless the disk is slow."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from engaged.delivery import capture
from engaged.delivery.capture import CaptureTransport
from engaged.delivery.outcome import Delivered, OutboundMessage
from engaged.spool.sync import Durability


def _copy(number: int) -> OutboundMessage:
    return OutboundMessage(message_id=f"m{number}", rcpt_index=0, mail_from="a@example.org", rcpt_to="b@example.com",
                           data=b"Subject: x\r\n\r\nbody %d\r\n" % number)


async def test_a_copy_and_its_sidecar_are_written_and_nothing_is_left_behind(tmp_path: Path) -> None:
    transport = CaptureTransport(tmp_path / "captured", durability=Durability("syncfs", tmp_path))
    try:
        assert isinstance(await transport.deliver(_copy(1)), Delivered)
    finally:
        await transport.close()
    assert (tmp_path / "captured" / "m1.0.eml").read_bytes() == _copy(1).data
    sidecar = json.loads((tmp_path / "captured" / "m1.0.json").read_text())
    assert (sidecar["message_id"], sidecar["mail_from"], sidecar["rcpt_to"]) == ("m1", "a@example.org", "b@example.com")
    assert sorted(path.name for path in (tmp_path / "captured").iterdir()) == ["m1.0.eml", "m1.0.json"]


async def test_after_a_slow_write_on_the_loop_copies_are_written_on_the_threads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    transport = CaptureTransport(tmp_path / "captured", durability=Durability("syncfs", tmp_path))
    writers: list[str] = []
    write = transport._write

    def recorded(message: OutboundMessage) -> None:
        writers.append(threading.current_thread().name)
        write(message)

    monkeypatch.setattr(transport, "_write", recorded)
    try:
        await transport.deliver(_copy(1))
        monkeypatch.setattr(capture, "INLINE_BUDGET", -1.0)  # every write now counts as slow
        await transport.deliver(_copy(2))
        await transport.deliver(_copy(3))
    finally:
        await transport.close()
    main = threading.main_thread().name
    assert writers[:2] == [main, main]  # the slow one was on the loop, and it sent the next to a thread
    assert writers[2].startswith("capture")
    assert (tmp_path / "captured" / "m3.0.eml").read_bytes() == _copy(3).data
