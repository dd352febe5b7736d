"""A real Postfix bounces what engaged relayed to it: its DSN reaches the inbound listener, becomes out_of_band,
and suppresses the recipient.

engaged relays (VERP return path) to a private Postfix instance, which accepts each copy and then meets a
next hop that refuses one recipient with 550 5.1.1; Postfix's own bounce daemon writes the DSN and sends it
to the return path, routed to engaged's [inbound] listener.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engaged.testing.server import ServerProcess, wait_until
from engaged.testing.sink import SinkServer, free_port
from tests.conftest import IN_CI, ServerFactory, require_tool
from tests.helpers import RawSmtp, queued_id, stored_events, wait_events

DOMAIN = "bounces.example.com"
GONE = "gone@dest.example"


class Postfix:
    """A private Postfix instance in its own directory: smtpd on `port`, relaying to `relay`, bounce mail for
    the bounce domain sent to `inbound`."""

    def __init__(self, postfix: str, root: Path, *, port: int, relay: str, inbound: tuple[str, int]) -> None:
        self.postfix = postfix
        self.etc = root / "etc"
        self.log = root / "maillog"
        for directory in (self.etc, root / "spool", root / "data"):
            directory.mkdir(parents=True)
        shutil.chown(root / "data", "postfix")
        master = Path("/etc/postfix/master.cf").read_text().splitlines()
        (self.etc / "master.cf").write_text("\n".join(
            f"127.0.0.1:{port} inet n - n - - smtpd" if line.startswith("smtp ") and " inet " in line else line
            for line in master) + "\n")
        (self.etc / "main.cf").write_text(f"""compatibility_level = 3.6
queue_directory = {root / "spool"}
data_directory = {root / "data"}
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.relay.example
mydomain = relay.example
myorigin = relay.example
mydestination =
mynetworks = 127.0.0.0/8
inet_interfaces = loopback-only
inet_protocols = ipv4
relayhost = [{relay.rpartition(":")[0]}]:{relay.rpartition(":")[2]}
transport_maps = inline:{{ {DOMAIN}=smtp:[{inbound[0]}]:{inbound[1]} }}
smtp_tls_security_level = none
notify_classes =
bounce_queue_lifetime = 0
maximal_queue_lifetime = 0
maillog_file = {self.log}
maillog_file_prefixes = {root}
daemon_directory = /usr/lib/postfix/sbin
command_directory = /usr/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
""")

    def run(self, command: str) -> None:
        result = subprocess.run([self.postfix, "-c", str(self.etc), command], capture_output=True, text=True,
                                check=False, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"postfix {command}: {result.stdout}{result.stderr}")

    def maillog(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@pytest.fixture
def postfix_root() -> Iterator[Path]:
    """A directory Postfix's own users can reach (pytest's tmp_path is root's only)."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("a private Postfix instance must be started as root under CI=true")
        pytest.skip("starting a private Postfix instance needs root")
    root = Path(tempfile.mkdtemp(prefix="engaged-postfix-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def entry(server: ServerProcess, rcpt: str) -> list[dict[str, object]] | None:
    host, port = server.address("api")
    reply = httpx.get(f"http://{host}:{port}/api/v1/suppression-list/{rcpt}", timeout=30)
    return reply.json()["results"] if reply.status_code == 200 else None


def send(server: ServerProcess, rcpts: list[str]) -> str:
    client = RawSmtp(server.smtp)
    try:
        client.transaction(rcpts)
        client.command("DATA")
        client.send(b'From: Shop <shop@example.org>\r\nSubject: Spring sale\r\nX-MSYS-API: {"campaign_id": "spring"}'
                    b"\r\n\r\nHello\r\n.\r\n")
        return client.reply()
    finally:
        client.close()


def test_a_postfix_dsn_for_a_relayed_copy_is_out_of_band_and_suppresses(
        engaged_server: ServerFactory, postfix_root: Path) -> None:
    postfix = require_tool("postfix", "/usr/sbin/postfix")
    next_hop = SinkServer().start()
    next_hop.rcpt_reply = lambda address: (f"550 5.1.1 <{GONE}>: Recipient address rejected: User unknown"
                                           if GONE in address else None)
    port = free_port()
    server = engaged_server(f'[delivery]\nmode = "relay"\nrelay = "127.0.0.1:{port}"\ntls = "none"\n'
                            f'retry_base = 0.2\n[inbound]\nlisten = ["127.0.0.1:0"]\nbounce_domain = "{DOMAIN}"\n')
    instance = Postfix(postfix, postfix_root, port=port, relay=next_hop.address, inbound=server.address("inbound"))
    instance.run("start")
    try:
        message_id = queued_id(send(server, [GONE, "kept@dest.example"]))
        wait_events(server, message_id, {"delivery"}, timeout=30)  # Postfix took both copies

        def out_of_band() -> list[dict[str, object]]:
            return [event for event in stored_events(server) if event["type"] == "out_of_band"]

        try:
            [event] = wait_until(out_of_band, 60)
        except TimeoutError:
            pytest.fail(f"no out_of_band event; Postfix's log ends:\n{instance.maillog()[-3000:]}")
        assert event["message_id"] == message_id and event["rcpt_to"] == GONE
        assert (event["bounce_class"], event["error_code"], event["campaign_id"]) == ("10", "550", "spring")
        assert str(event["reason"]).startswith("550 5.1.1")
        assert "sender non-delivery notification" in instance.maillog()  # Postfix's bounce daemon wrote it
        [found] = wait_until(lambda: entry(server, GONE), 30)
        assert found["source"] == "Bounce Rule" and found["type"] == "non_transactional"
        assert entry(server, "kept@dest.example") is None
        assert send(server, [GONE]).startswith("550 5.7.1")
    finally:
        instance.run("stop")
        next_hop.stop()
