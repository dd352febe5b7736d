"""Spool shards per worker, prepared by the supervisor before any worker starts.

Worker n owns `data_dir/spool/<n>/`. Before the workers start:
- a spool from before shards (messages straight in `data_dir/spool/`) becomes shard 0;
- shards numbered `workers` or more (the setting shrank) are handed to shard `n % workers`, whose
  worker resumes them like its own.
Every step is a rename on one filesystem, so an interrupted preparation is finished by the next one
(a message's state log moves before its `.msg`, and the `.msg` is what a worker resumes). Tracker
journals need nothing here: the journal loader follows every `tracker-journal/<n>/` (and what an
older version left at its top) until it is loaded, whether a worker still writes it or not.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from engaged.app import shard_path
from engaged.spool.sync import fsync_dir

log = logging.getLogger("engaged")

_SPOOL_SUBDIRS = ("tmp", "free", "quarantine")


def _numbered(directory: Path) -> list[int]:
    if not directory.is_dir():
        return []
    return sorted(int(path.name) for path in directory.iterdir() if path.name.isdigit() and path.is_dir())


def _move_spool(source: Path, target: Path) -> int:
    """Move the messages (state log first) and quarantined files of one spool directory into another."""
    target.mkdir(parents=True, exist_ok=True)
    moved = 0
    logs = sorted(source.glob("*.log"))
    for path in logs:
        os.replace(path, target / path.name)
    for path in sorted(source.glob("*.msg")):
        os.replace(path, target / path.name)
        moved += 1
    quarantine = source / "quarantine"
    if quarantine.is_dir():
        (target / "quarantine").mkdir(exist_ok=True)
        for path in quarantine.iterdir():
            os.replace(path, target / "quarantine" / path.name)
    for name in ("tmp", "free"):  # never answered 250 / finished files kept for reuse
        leftovers = source / name
        if leftovers.is_dir():
            for path in leftovers.iterdir():
                path.unlink(missing_ok=True)
    if moved or logs:
        fsync_dir(target)
        fsync_dir(source)
    return moved


def _remove_if_empty(directory: Path) -> None:
    for name in _SPOOL_SUBDIRS:
        with contextlib.suppress(OSError):
            (directory / name).rmdir()
    with contextlib.suppress(OSError):
        (directory / ".lock").unlink()
    with contextlib.suppress(OSError):
        directory.rmdir()


def prepare(data_dir: Path, workers: int) -> None:
    """Make shards 0..workers-1 hold every spooled message (see the module doc)."""
    spool = data_dir / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    if any(spool.glob("*.msg")) or any(spool.glob("*.log")) or (spool / "quarantine").is_dir():
        moved = _move_spool(spool, shard_path(data_dir, 0))
        for name in _SPOOL_SUBDIRS:
            with contextlib.suppress(OSError):
                (spool / name).rmdir()
        log.info("spool: %d message(s) from the unsharded spool moved to shard 0", moved)
    for number in _numbered(spool):
        if number >= workers:
            target = number % workers
            moved = _move_spool(spool / str(number), shard_path(data_dir, target))
            _remove_if_empty(spool / str(number))
            log.info("spool shard %d: %d message(s) handed to shard %d (workers = %d)", number, moved, target,
                     workers)
    for index in range(workers):
        shard_path(data_dir, index).mkdir(parents=True, exist_ok=True)
