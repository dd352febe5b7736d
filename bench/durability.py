"""Durability primitive under several processes: one syncfs per group commit against fdatasync of the files.

Two writer processes (as two workers) each write 20 KB files into their own shard directory,
rename them in, and make them durable in group commits: every commit covers the files written by
the `--sessions` concurrent writers of that process since the previous one. Modes:

- `syncfs`: one syncfs(2) of the filesystem per commit (today's default);
- `fdatasync`: fdatasync of each file of the commit, then one fsync of the directory;
- `fdatasync+sfr`: sync_file_range(WRITE) of every file first (their data goes out together, so
  the first fdatasync's journal commit covers all of them), then fdatasync each, fsync the directory.

Each runs with and without a neighbour that keeps dirtying page cache on the same filesystem (a
database or log writer on a real server), which syncfs also has to write out. Prints files/s.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engaged.spool.sync import fsync_dir, syncfs

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_SYNC_FILE_RANGE_WRITE = 2
BODY = os.urandom(10 * 1024).hex().encode()[: 20 * 1024]


def sync_file_range(fd: int) -> None:
    _libc.sync_file_range(fd, ctypes.c_longlong(0), ctypes.c_longlong(0), _SYNC_FILE_RANGE_WRITE)


def writer(directory: Path, mode: str, sessions: int, seconds: float, result: multiprocessing.Queue[int]) -> None:
    """One 'worker': `sessions` threads write files; a committer thread makes them durable in groups."""
    (directory / "tmp").mkdir(parents=True, exist_ok=True)
    lock = threading.Condition()
    pending: list[tuple[Path, threading.Event]] = []
    stop = time.monotonic() + seconds
    done = [0]

    def commit_loop() -> None:
        while time.monotonic() < stop + 1:
            with lock:
                while not pending and time.monotonic() < stop + 1:
                    lock.wait(0.05)
                batch = pending[:]
                pending.clear()
            if not batch:
                continue
            if mode == "syncfs":
                syncfs(directory)
            else:
                fds = [os.open(path, os.O_RDONLY) for path, _ in batch]
                if mode == "fdatasync+sfr":
                    for fd in fds:
                        sync_file_range(fd)
                for fd in fds:
                    os.fdatasync(fd)
                    os.close(fd)
                fsync_dir(directory)
            for _, event in batch:
                event.set()

    def session(number: int) -> None:
        serial = 0
        while time.monotonic() < stop:
            serial += 1
            name = f"{os.getpid()}-{number}-{serial}.msg"
            tmp = directory / "tmp" / name
            with open(tmp, "wb") as handle:
                handle.write(BODY)
            final = directory / name
            os.rename(tmp, final)
            event = threading.Event()
            with lock:
                pending.append((final, event))
                lock.notify()
            event.wait()
            done[0] += 1
            final.unlink()

    committer = threading.Thread(target=commit_loop)
    committer.start()
    threads = [threading.Thread(target=session, args=(n,)) for n in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    committer.join()
    result.put(done[0])


def neighbour(directory: Path, stop: multiprocessing.synchronize.Event) -> None:
    """Keeps dirtying page cache (64 MiB file rewritten in 1 MiB writes, never synced)."""
    chunk = os.urandom(1 << 20)
    path = directory / "neighbour.dat"
    while not stop.is_set():
        with open(path, "wb") as handle:
            for _ in range(64):
                if stop.is_set():
                    break
                handle.write(chunk)
                time.sleep(0.005)


def run(base: Path, mode: str, workers: int, sessions: int, seconds: float, noisy: bool) -> float:
    result: multiprocessing.Queue[int] = multiprocessing.Queue()
    stop = multiprocessing.Event()
    helper = multiprocessing.Process(target=neighbour, args=(base, stop)) if noisy else None
    if helper is not None:
        helper.start()
        time.sleep(0.5)
    processes = [multiprocessing.Process(target=writer, args=(base / "spool" / str(n), mode, sessions, seconds, result))
                 for n in range(workers)]
    began = time.monotonic()
    for process in processes:
        process.start()
    total = sum(result.get() for _ in processes)
    elapsed = time.monotonic() - began
    for process in processes:
        process.join()
    if helper is not None:
        stop.set()
        helper.join()
    return total / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sessions", type=int, default=10, help="concurrent writers per worker")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary directory under .)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="engaged-durability-", dir=args.dir or "."))
    try:
        print(f"{args.workers} processes x {args.sessions} writers, 20 KB files, {args.seconds:.0f} s each, in {base}")
        print(f"{'mode':16} {'quiet files/s':>14} {'with neighbour':>15}")
        for mode in ("syncfs", "fdatasync", "fdatasync+sfr"):
            quiet = run(base, mode, args.workers, args.sessions, args.seconds, noisy=False)
            noisy = run(base, mode, args.workers, args.sessions, args.seconds, noisy=True)
            print(f"{mode:16} {quiet:14.0f} {noisy:15.0f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
