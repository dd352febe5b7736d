"""Scenario fixtures: a landing site that tracked links redirect to."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tests.helpers import LandingSite


@pytest.fixture
def landing() -> Iterator[tuple[str, list[str]]]:
    """(base URL, the paths requested so far) of a LandingSite that runs for the test."""
    site = LandingSite()
    threading.Thread(target=site.serve_forever, daemon=True).start()
    yield site.base, site.hits
    site.shutdown()
    site.server_close()
