"""BusConnection: TLS to the servers, credentials refused or taken, the stream created with the configured replicas."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import nats
import trustme

from engaged.bus.connection import BusConnection, tls_context
from engaged.config import BusConfig
from engaged.testing.server import wait_until
from tests.bus.cluster import NATS_SERVER, _answers, free_port
from tests.conftest import require_tool


def test_plain_servers_get_no_tls_context_and_tls_servers_verify_by_default() -> None:
    assert tls_context(BusConfig(servers=["nats://127.0.0.1:4222"])) is None
    context = tls_context(BusConfig(servers=["tls://nats.example:4222"]))
    assert context is not None and context.check_hostname


def start_server(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    require_tool("nats-server", NATS_SERVER)
    port = free_port()
    process = subprocess.Popen([NATS_SERVER, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path / "js"),
                                *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: _answers(port), 30)
    return process, port


async def test_tls_with_the_configured_ca_and_a_token_connect_and_create_the_stream(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    process, port = start_server(tmp_path, "--tls", "--tlscert", str(tmp_path / "server.crt"),
                                 "--tlskey", str(tmp_path / "server.key"), "--auth", "s3cret")
    try:
        bus = BusConfig(servers=[f"tls://127.0.0.1:{port}"], tls_ca=str(tmp_path / "ca.pem"), token="s3cret")
        connection = BusConnection(bus)
        connection.start()
        try:
            await asyncio.wait_for(connection.ready.wait(), 30)
            info = await connection.jetstream().stream_info("ENGAGED_EVENTS")
            assert info.config.subjects == ["engaged.events.>"] and info.config.num_replicas == 1
        finally:
            await connection.stop()
        wrong = BusConnection(BusConfig(servers=bus.servers, tls_ca=bus.tls_ca, token="wrong"))
        wrong.start()
        try:
            for _ in range(200):
                if "uthorization" in wrong.problem:
                    break
                await asyncio.sleep(0.05)
            assert "uthorization" in wrong.problem and not wrong.ready.is_set()
        finally:
            await wrong.stop()
    finally:
        process.kill()
        process.wait(10)


async def test_an_existing_stream_is_used_as_it_is(tmp_path: Path) -> None:
    process, port = start_server(tmp_path)
    try:
        client = await nats.connect(f"nats://127.0.0.1:{port}")
        await client.jetstream().add_stream(name="ENGAGED_EVENTS", subjects=["engaged.events.>"], max_msgs=10**6)
        await client.close()
        connection = BusConnection(BusConfig(servers=[f"nats://127.0.0.1:{port}"]))
        connection.start()
        try:
            await asyncio.wait_for(connection.ready.wait(), 30)
            info = await connection.jetstream().stream_info("ENGAGED_EVENTS")
            assert info.config.max_msgs == 10**6
        finally:
            await connection.stop()
    finally:
        process.kill()
        process.wait(10)
