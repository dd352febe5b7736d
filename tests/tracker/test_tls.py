"""HTTPS on the tracker: tls_cert and tls_key, answers over TLS, a reload picks up a new certificate."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import trustme

from engaged.tracker.pixel import PIXEL_GIF
from engaged.tracker.service import TrackerService
from tests.tracker.conftest import RunningTracker, TrackerFactory

TARGET = "https://shop.example.com/"


def issue(ca: trustme.CA, directory: Path, name: str) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost signed by `ca`, as PEM files."""
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    for blob in leaf.cert_chain_pems[1:]:
        blob.write_to_path(str(cert), append=True)
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


async def https_tracker(start_tracker: TrackerFactory, tmp_path: Path, ca: trustme.CA) -> RunningTracker:
    cert, key = issue(ca, tmp_path / "tls", "tracker")
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return await start_tracker(tls_cert=str(cert), tls_key=str(key), verify=context)


async def test_an_https_tracker_serves_pixels_and_redirects_and_records_them(
        start_tracker: TrackerFactory, tmp_path: Path) -> None:
    tracker = await https_tracker(start_tracker, tmp_path, trustme.CA())
    assert tracker.base.startswith("https://")
    links = tracker.links()
    pixel = await tracker.get(links.open_url(True).replace("http://", "https://"))
    click = await tracker.get(links.click_url(TARGET, "x", None, False).replace("http://", "https://"))
    assert (pixel.status_code, pixel.content) == (200, PIXEL_GIF)
    assert (click.status_code, click.headers["location"]) == (302, TARGET)
    assert [type(event).__name__ for event in await tracker.events()] == ["InitialOpenEvent", "ClickEvent"]


async def peer_certificate(address: str) -> bytes:
    host, _, port = address.rpartition(":")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    _, writer = await asyncio.open_connection(host, int(port), ssl=context)
    ssl_object = writer.get_extra_info("ssl_object")
    der: bytes = ssl_object.getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    return der


async def test_reload_tls_serves_the_new_certificate_to_new_connections(
        start_tracker: TrackerFactory, tmp_path: Path) -> None:
    first_ca = trustme.CA()
    tracker = await https_tracker(start_tracker, tmp_path, first_ca)
    before = await peer_certificate(tracker.service.address)
    issue(trustme.CA(), tmp_path / "tls", "tracker")  # the operator renews the files in place
    assert tracker.service.reload_tls()
    after = await peer_certificate(tracker.service.address)
    assert before != after


async def test_a_reload_of_files_that_do_not_load_keeps_the_current_certificate(
        start_tracker: TrackerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tracker = await https_tracker(start_tracker, tmp_path, trustme.CA())
    before = await peer_certificate(tracker.service.address)
    (tmp_path / "tls" / "tracker.pem").write_text("not a certificate")
    assert not tracker.service.reload_tls()
    assert "tracker TLS reload failed" in caplog.text
    assert await peer_certificate(tracker.service.address) == before


async def test_plain_http_to_an_https_tracker_is_refused_and_others_are_served(
        start_tracker: TrackerFactory, tmp_path: Path) -> None:
    tracker = await https_tracker(start_tracker, tmp_path, trustme.CA())
    host, _, port = tracker.service.address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /robots.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    assert not (await reader.read(65536)).startswith(b"HTTP/1.1 200")  # a TLS alert or nothing, then closed
    writer.close()
    response = await tracker.get(f"{tracker.base}/robots.txt")
    assert response.status_code == 200


def test_the_scheme_follows_the_configuration() -> None:
    from engaged.config import Config, EngagementTrackerConfig
    from engaged.events.ids import EventIdGenerator
    from engaged.keys import Keyring

    keyring = Keyring(current_id=1, keys={1: b"k" * 32})
    plain = TrackerService(Config(engagement_tracker=EngagementTrackerConfig()), keyring, ids=EventIdGenerator())
    secure = TrackerService(Config(engagement_tracker=EngagementTrackerConfig(tls_cert="c.pem")), keyring,
                            ids=EventIdGenerator())
    assert (plain.scheme, secure.scheme) == ("http", "https")


def test_a_certificate_that_does_not_load_is_a_configuration_error(tmp_path: Path) -> None:
    from engaged.config import load_config
    from engaged.errors import ConfigError

    cert, key = issue(trustme.CA(), tmp_path, "tracker")
    key.write_text("not a key")
    config = tmp_path / "engaged.toml"
    config.write_text(f'[engagement_tracker]\ntls_cert = "{cert}"\ntls_key = "{key}"\n')
    with pytest.raises(ConfigError) as refused:
        load_config(str(config), environ={})
    assert any("engagement_tracker.tls_cert: cannot load" in problem for problem in refused.value.problems)
    key.unlink()
    with pytest.raises(ConfigError) as missing:
        load_config(str(config), environ={})
    assert any("engagement_tracker.tls_key: file not found" in problem for problem in missing.value.problems)
