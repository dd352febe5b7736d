"""The SSRF guard: which addresses webhooks may reach, checked at creation and per connection."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from engaged.sinks.guard import TargetRefused, check_target, guarded_transport, is_forbidden_address, parse_networks


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.255.0.9", "::1", "0.0.0.0", "::", "10.0.0.1", "172.16.5.4", "192.168.0.1", "169.254.169.254",
    "100.64.0.1", "fc00::1", "fd12::3", "fe80::1", "224.0.0.1", "239.1.2.3", "ff02::1", "::ffff:127.0.0.1",
    "::ffff:10.0.0.1", "2002:7f00:1::", "192.0.2.1", "198.51.100.7", "255.255.255.255",
])
def test_private_loopback_link_local_and_reserved_addresses_are_forbidden(address: str) -> None:
    assert is_forbidden_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_unicast_addresses_are_allowed(address: str) -> None:
    assert not is_forbidden_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("target", [
    "http://127.0.0.1/x", "http://localhost:8080/x", "http://[::1]/x", "http://0.0.0.0/x", "http://2130706433/x",
    "http://0x7f000001/x", "http://017700000001/x", "http://169.254.169.254/latest/meta-data", "https://10.0.0.8/",
    "http://[::ffff:127.0.0.1]/x",
])
async def test_check_target_refuses_urls_that_reach_private_addresses(target: str) -> None:
    problem = await check_target(target, allow_private=False)
    assert problem is not None and "allow_private_targets" in problem and "webhook_private_networks" in problem
    assert await check_target(target, allow_private=True) is None


async def test_an_operator_may_allow_private_networks_and_only_those() -> None:
    networks = parse_networks(["10.0.0.0/8", "::1/128"])
    assert await check_target("https://10.0.0.8/", allow_private=False, networks=networks) is None
    assert await check_target("http://[::1]/x", allow_private=False, networks=networks) is None
    assert await check_target("http://127.0.0.1/x", allow_private=False, networks=networks) is not None
    assert await check_target("http://169.254.169.254/x", allow_private=False, networks=networks) is not None


@pytest.mark.parametrize("target", ["ftp://example.com/", "example.com/hook", "http:///nohost", "http://[::1/x"])
async def test_check_target_refuses_what_is_not_an_http_url(target: str) -> None:
    assert await check_target(target, allow_private=True) is not None


async def test_check_target_accepts_a_public_literal_address() -> None:
    assert await check_target("https://93.184.216.34/hook", allow_private=False) is None


async def test_the_guarded_transport_refuses_to_connect_to_loopback() -> None:
    async with httpx.AsyncClient(transport=guarded_transport(allow_private=False)) as client:
        with pytest.raises(httpx.ConnectError) as raised:
            await client.post("http://localhost:9/hook", content=b"[]")
    assert isinstance(raised.value.__cause__, TargetRefused)
