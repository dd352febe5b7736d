"""Story: an operator replaces the tracker's certificate and sends SIGHUP to `engaged serve`; new connections get it."""

from __future__ import annotations

import signal
import socket
import ssl
from pathlib import Path

import trustme

from engaged.testing.server import wait_until
from tests.conftest import ServerFactory


def served_certificate(address: tuple[str, int]) -> bytes:
    """The leaf certificate (DER) a new TLS connection to the tracker is shown."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(address, timeout=10) as raw, context.wrap_socket(raw) as tls:
        certificate = tls.getpeercert(binary_form=True)
    if certificate is None:
        raise AssertionError("no certificate")
    return certificate


def issue(cert: Path, key: Path) -> bytes:
    leaf = trustme.CA().issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


def test_sighup_makes_every_worker_serve_the_replaced_certificate(engaged_server: ServerFactory,
                                                                  tmp_path: Path) -> None:
    cert, key = tmp_path / "tracker.pem", tmp_path / "tracker.key"
    first = issue(cert, key)
    server = engaged_server(f'[server]\nworkers = 2\n[engagement_tracker]\nlisten = "127.0.0.1:0"\n'
                            f'tls_cert = "{cert}"\ntls_key = "{key}"\n')
    assert served_certificate(server.tracker) == first
    second = issue(cert, key)
    assert server.process is not None
    server.process.send_signal(signal.SIGHUP)  # the supervisor forwards it to every worker
    # SO_REUSEPORT spreads new connections over both workers: a run of them all showing the new
    # certificate means each worker reloaded.
    wait_until(lambda: all(served_certificate(server.tracker) == second for _ in range(20)), timeout=30)
    assert server.process.poll() is None
