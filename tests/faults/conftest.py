"""Fault-injection fixtures: a small tmpfs the test mounts itself (root only; required under CI=true)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI

SmallDisk = Callable[[int], Path]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """Mount tmpfs filesystems of a given size in MiB under tmp_path; each is unmounted afterwards."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("fault tests mount a tmpfs and must run as root under CI=true")
        pytest.skip("mounting a small tmpfs needs root")
    mounted: list[Path] = []

    def mount(mib: int) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m,mode=0700", "tmpfs", str(point)],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            if IN_CI:
                pytest.fail(f"cannot mount a tmpfs: {result.stderr.strip()}")
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)


def fill(directory: Path) -> Path:
    """Write a filler file until the filesystem is full; remove it to give the space back."""
    filler = directory / "filler"
    chunk = b"\0" * (1 << 16)
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(chunk)
        except OSError:
            pass
        for size in (4096, 512, 1):  # the last partial blocks, so that no write of any size fits
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError:
                pass
    return filler
