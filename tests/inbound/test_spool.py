"""The inbound spool on disk: durable files in new/, read back after a restart, unmatched mail kept with its reason."""

from __future__ import annotations

from pathlib import Path

from engaged.inbound.spool import InboundSpool


def spool_in(tmp_path: Path) -> InboundSpool:
    spool = InboundSpool(tmp_path / "inbound")
    spool.open()
    return spool


def test_a_stored_message_reads_back_byte_for_byte_with_its_envelope(tmp_path: Path) -> None:
    spool = spool_in(tmp_path)
    content = b"Subject: x\r\n\r\n\x00\xff binary stays\r\n"
    item = spool.store(peer="192.0.2.1", helo="mx.example", mail_from="", rcpt_tos=["b-x@bounces.example.com"],
                       content=content)
    assert item.path.parent == spool.new and not list((spool.root / "tmp").iterdir())
    again = spool.read(item.path)
    assert again is not None and again.content == content and again.envelope == item.envelope
    assert (again.envelope.peer, again.envelope.helo, again.envelope.rcpt_tos) == (
        "192.0.2.1", "mx.example", ["b-x@bounces.example.com"])


def test_pending_lists_new_mail_oldest_first_and_done_removes_it(tmp_path: Path) -> None:
    spool = spool_in(tmp_path)
    first = spool.store(peer="p", helo="h", mail_from="", rcpt_tos=["a@b.example"], content=b"1")
    second = spool.store(peer="p", helo="h", mail_from="", rcpt_tos=["a@b.example"], content=b"2")
    assert spool.pending() == [first.path, second.path] and spool.pending_count() == 2
    spool.done(first)
    assert spool.pending() == [second.path]
    assert spool.read(first.path) is None


def test_unmatched_mail_is_moved_with_its_reason_and_counted(tmp_path: Path) -> None:
    spool = spool_in(tmp_path)
    item = spool.store(peer="p", helo="h", mail_from="x@y.example", rcpt_tos=["a@b.example"], content=b"hello")
    kept = spool.keep_unmatched(item, "no copy of message 0 was sent")
    assert kept.parent == spool.unmatched and kept.read_bytes().endswith(b"hello")
    assert (spool.unmatched / f"{item.path.stem}.reason").read_text() == "no copy of message 0 was sent\n"
    assert spool.pending() == [] and spool.pending_count() == 0 and spool.unmatched_count() == 1


def test_a_file_that_is_not_an_inbound_spool_file_reads_as_nothing(tmp_path: Path) -> None:
    spool = spool_in(tmp_path)
    (spool.new / "junk.eml").write_bytes(b"From: nobody\r\n\r\nnot ours\r\n")
    (spool.new / "broken.eml").write_bytes(b"engaged-inbound 1\n{not json\nbody")
    assert spool.read(spool.new / "junk.eml") is None and spool.read(spool.new / "broken.eml") is None
