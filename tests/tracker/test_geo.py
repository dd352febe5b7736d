"""Tests of GeoIP lookups: SparkPost's geo_ip shape from a MaxMind-format database built by mmdb-writer."""

from __future__ import annotations

from pathlib import Path

import pytest

from engaged.tracker.geo import GEO_FIELDS, GeoIp, geo_ip_of
from tests.tracker.conftest import build_mmdb

COLUMBIA = {"country": "US", "region": "MD", "city": "Columbia", "latitude": "39.1749", "longitude": "-76.8375",
            "zip": "21044"}


@pytest.fixture
def geo(tmp_path: Path) -> GeoIp:
    return GeoIp(build_mmdb(tmp_path / "city.mmdb"))


def test_a_known_address_gets_every_field_as_a_string(geo: GeoIp) -> None:
    assert geo.lookup("203.0.113.9") == COLUMBIA
    assert tuple(COLUMBIA) == GEO_FIELDS


def test_an_ipv4_mapped_ipv6_address_is_looked_up_as_ipv4(geo: GeoIp) -> None:
    assert geo.lookup("::ffff:203.0.113.9") == COLUMBIA


def test_fields_the_database_does_not_know_are_empty(geo: GeoIp) -> None:
    assert geo.lookup("2001:db8::1") == {"country": "FR", "region": "", "city": "", "latitude": "", "longitude": "",
                                         "zip": ""}


@pytest.mark.parametrize("address", ["198.51.100.1", "127.0.0.1", "::1", "not an address", ""])
def test_unknown_or_malformed_addresses_have_no_geo_ip(geo: GeoIp, address: str) -> None:
    assert geo.lookup(address) is None


def test_lookups_are_cached_and_callers_cannot_change_the_cache(geo: GeoIp) -> None:
    first = geo.lookup("203.0.113.9")
    assert first is not None
    first["city"] = "changed"
    assert geo.lookup("203.0.113.9") == COLUMBIA


def test_a_region_without_iso_code_uses_its_english_name() -> None:
    record = {"country": {"iso_code": "DE"}, "subdivisions": [{"names": {"en": "Bavaria"}}],
              "location": {"latitude": 48, "longitude": 11.5755}}
    assert geo_ip_of(record) == {"country": "DE", "region": "Bavaria", "city": "", "latitude": "48.0",
                                 "longitude": "11.5755", "zip": ""}


@pytest.mark.parametrize("record", [None, {}, [], "US", {"country": "US"}, {"location": {"latitude": True}}])
def test_records_without_usable_fields_give_no_geo_ip(record: object) -> None:
    assert geo_ip_of(record) is None
