"""GeoIP for engagement events: a MaxMind-format .mmdb looked up with maxminddb, shaped as SparkPost's geo_ip."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import maxminddb

GEO_FIELDS = ("country", "region", "city", "latitude", "longitude", "zip")
_CACHE_SIZE = 8192


def geo_ip_of(record: object) -> dict[str, str] | None:
    """SparkPost's geo_ip (every value a string, "" when unknown) from a GeoIP2/GeoLite2/DB-IP City record.

    None when the record says nothing about where the address is.
    """
    if not isinstance(record, Mapping):
        return None
    country = _get(record, "country", "iso_code") or _get(record, "registered_country", "iso_code")
    subdivisions = record.get("subdivisions")
    first = subdivisions[0] if isinstance(subdivisions, list) and subdivisions else {}
    region = _get(first, "iso_code") or _get(first, "names", "en")
    city = _get(record, "city", "names", "en")
    latitude = _get(record, "location", "latitude")
    longitude = _get(record, "location", "longitude")
    postal = _get(record, "postal", "code")
    values = (country, region, city, _coordinate(latitude), _coordinate(longitude), postal)
    if not any(values):
        return None
    return {name: value if isinstance(value, str) else "" for name, value in zip(GEO_FIELDS, values, strict=True)}


def _get(record: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(record, Mapping):
            return None
        record = record.get(key)
    return record


def _coordinate(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(round(float(value), 4))
    return ""


class GeoIp:
    """Lookups in one .mmdb file (memory-mapped C reader), cached per address."""

    def __init__(self, path: Path) -> None:
        self._reader = maxminddb.open_database(str(path))
        self._cache: dict[str, dict[str, str] | None] = {}

    def lookup(self, ip_address: str) -> dict[str, str] | None:
        """geo_ip for the address; None when the database does not know it or it is not an IP address."""
        if ip_address in self._cache:
            found = self._cache[ip_address]
            return None if found is None else dict(found)
        try:
            found = geo_ip_of(self._reader.get(ip_address.removeprefix("::ffff:")))
        except ValueError:
            found = None
        if len(self._cache) >= _CACHE_SIZE:
            del self._cache[next(iter(self._cache))]
        self._cache[ip_address] = found
        return None if found is None else dict(found)

    def close(self) -> None:
        self._reader.close()
