"""A full spool disk: the server answers 452 4.3.1, never a 250 for a message that is not on disk, and recovers.

The hostile run of issue 15 used a 20 MB tmpfs as `data_dir`. Here the test mounts its own, fills it to the
last byte while the server runs, injects, gives the space back and injects again. Every message that got a
250 must be on disk at that moment (in its spool shard, or already captured) and be delivered in the end;
every other one must have been refused with a 4xx, so that its client tries again.
"""

from __future__ import annotations

from pathlib import Path

from engaged.testing.server import ServerProcess, wait_until, write_config
from tests.conftest import TEST_SERVER_DEFAULTS
from tests.faults.conftest import SmallDisk, fill
from tests.helpers import RawSmtp, queued_id

BODY = b"Subject: full disk\r\n\r\n" + (b"0123456789abcdef" * 4 + b"\r\n") * 256  # 16 KiB
CONFIG = TEST_SERVER_DEFAULTS + "[delivery]\nretry_base = 0.2\n"


def send(server: ServerProcess, n: int) -> str:
    client = RawSmtp(server.smtp)
    try:
        client.transaction([f"rcpt{n}@example.com"])
        assert client.command("DATA").startswith("354")
        client.send(BODY.replace(b"full disk", b"full disk %d" % n) + b".\r\n")
        return client.reply()
    finally:
        client.close()


def on_disk(data: Path, message_id: str) -> bool:
    """Spooled or captured: the spool file leaves only after the captured copy is written, so look there first."""
    return any((data / "spool").glob(f"*/{message_id}.msg")) or any((data / "captured").glob(f"{message_id}.*.eml"))


def captured(data: Path, message_id: str) -> bool:
    return any((data / "captured").glob(f"{message_id}.*.eml"))


def test_a_full_spool_disk_answers_4xx_loses_no_250_and_recovers(small_disk: SmallDisk, tmp_path: Path) -> None:
    data = small_disk(32)
    server = ServerProcess(write_config(tmp_path, CONFIG, data_dir=data)).start()
    try:
        before = [send(server, n) for n in range(10)]
        accepted = {queued_id(reply): n for n, reply in enumerate(before) if reply.startswith("250")}
        assert len(accepted) == 10, f"before the disk filled: {before}"
        wait_until(lambda: all(captured(data, message_id) for message_id in accepted), 30)

        filler = fill(data)
        during: list[str] = []
        unbacked: list[str] = []
        for n in range(10, 40):
            reply = send(server, n)
            during.append(reply)
            if reply.startswith("250"):
                message_id = queued_id(reply)
                accepted[message_id] = n
                if not on_disk(data, message_id):
                    unbacked.append(message_id)
        refused = [reply for reply in during if reply[:1] == "4"]
        other = [reply for reply in during if reply[:1] not in "24"]
        counts = (f"disk full: {len(during) - len(refused) - len(other)} accepted, {len(refused)} refused with 4xx, "
                  f"{len(other)} other ({other[:3]}), {len(unbacked)} accepted but not on disk")
        assert not unbacked and not other, counts
        assert refused, counts  # the disk was full: at least the later messages cannot have been stored
        # RFC 5321's "insufficient system storage", not an internal error: the client knows to wait or go elsewhere
        assert all(reply.startswith("452 4.3.1 ") for reply in refused), f"{counts}: {sorted(set(refused))}"

        filler.unlink()
        after = [send(server, n) for n in range(40, 45)]
        assert all(reply.startswith("250") for reply in after), f"after the space came back: {after}"
        accepted.update({queued_id(reply): 40 + n for n, reply in enumerate(after)})
        wait_until(lambda: all(captured(data, message_id) for message_id in accepted), 60)
    finally:
        code = server.stop()
    delivered = sum(captured(data, message_id) for message_id in accepted)
    assert delivered == len(accepted), f"{delivered} of {len(accepted)} accepted messages delivered"
    assert code == 0, "\n".join(server.log[-30:])
