"""Spool shards: the unsharded spool becomes shard 0, surplus shards are handed to the remaining ones."""

from __future__ import annotations

from pathlib import Path

from engaged.server.shards import prepare


def _message(directory: Path, message_id: str, *, log: bool = True) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{message_id}.msg").write_bytes(b"record " + message_id.encode())
    if log:
        (directory / f"{message_id}.log").write_bytes(b"state " + message_id.encode())


def test_an_unsharded_spool_becomes_shard_0(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    _message(spool, "a")
    _message(spool, "b", log=False)
    (spool / "tmp").mkdir()
    (spool / "tmp" / "half.msg").write_bytes(b"never answered 250")
    (spool / "quarantine").mkdir()
    (spool / "quarantine" / "bad.msg").write_bytes(b"damaged")
    prepare(tmp_path, 2)
    assert sorted(p.name for p in (spool / "0").iterdir() if p.is_file()) == ["a.log", "a.msg", "b.msg"]
    assert (spool / "0" / "a.log").read_bytes() == b"state a"
    assert (spool / "0" / "quarantine" / "bad.msg").read_bytes() == b"damaged"
    assert not list(spool.glob("*.msg")) and not (spool / "tmp").exists()
    assert (spool / "1").is_dir()


def test_surplus_shards_are_handed_to_the_remaining_workers(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    for shard in range(4):
        _message(spool / str(shard), f"m{shard}")
    prepare(tmp_path, 2)
    assert sorted(p.name for p in (spool / "0").glob("*.msg")) == ["m0.msg", "m2.msg"]
    assert sorted(p.name for p in (spool / "1").glob("*.msg")) == ["m1.msg", "m3.msg"]
    assert (spool / "1" / "m3.log").read_bytes() == b"state m3"
    assert not (spool / "2").exists() and not (spool / "3").exists()


def test_an_interrupted_hand_over_is_finished_by_the_next_start(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    _message(spool / "1", "m")
    (spool / "0").mkdir()
    (spool / "1" / "m.log").rename(spool / "0" / "m.log")  # the log was moved, then the start died
    prepare(tmp_path, 1)
    assert sorted(p.name for p in (spool / "0").iterdir() if p.is_file()) == ["m.log", "m.msg"]
