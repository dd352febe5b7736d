"""Tests of the link-signing keyring: first-use creation, persistence, modes, rotation, concurrency."""

from __future__ import annotations

import multiprocessing
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from engaged.keys import (
    KEY_BYTES,
    KEYS_DIR,
    KEYS_FILE,
    MAX_KEY_ID,
    Keyring,
    KeyringError,
    load_keyring,
    rotate_key,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_load_keyring_creates_one_fresh_key_on_first_use(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    keyring = load_keyring(data_dir)
    assert keyring.current_id == 1
    assert sorted(keyring.keys) == [1]
    secret = keyring.key(1)
    assert secret is not None and len(secret) == KEY_BYTES
    assert (data_dir / KEYS_DIR / KEYS_FILE).is_file()


def test_keys_persist_across_load_keyring_calls(tmp_path: Path) -> None:
    assert load_keyring(tmp_path) == load_keyring(tmp_path)


def test_two_data_dirs_get_different_keys(tmp_path: Path) -> None:
    assert load_keyring(tmp_path / "a").key(1) != load_keyring(tmp_path / "b").key(1)


def test_keys_file_is_0600_and_keys_dir_0700(tmp_path: Path) -> None:
    load_keyring(tmp_path)
    assert _mode(tmp_path / KEYS_DIR) == 0o700
    assert _mode(tmp_path / KEYS_DIR / KEYS_FILE) == 0o600


def test_modes_hold_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        rotate_key(tmp_path)
    finally:
        os.umask(old)
    assert _mode(tmp_path / KEYS_DIR) == 0o700
    assert _mode(tmp_path / KEYS_DIR / KEYS_FILE) == 0o600


def test_creating_the_keyring_tightens_an_existing_keys_dir_to_0700(tmp_path: Path) -> None:
    (tmp_path / KEYS_DIR).mkdir(mode=0o755)
    os.chmod(tmp_path / KEYS_DIR, 0o755)
    load_keyring(tmp_path)
    assert _mode(tmp_path / KEYS_DIR) == 0o700


def test_writing_leaves_no_temporary_files(tmp_path: Path) -> None:
    load_keyring(tmp_path)
    rotate_key(tmp_path)
    names = {path.name for path in (tmp_path / KEYS_DIR).iterdir()}
    assert names == {KEYS_FILE, ".lock"}


def test_rotate_key_adds_a_current_key_and_keeps_the_old_one(tmp_path: Path) -> None:
    before = load_keyring(tmp_path)
    new_id = rotate_key(tmp_path)
    after = load_keyring(tmp_path)
    assert new_id == 2
    assert after.current_id == 2
    assert after.key(1) == before.key(1)
    assert after.key(2) is not None and after.key(2) != after.key(1)


def test_rotate_key_on_an_empty_data_dir_creates_key_one(tmp_path: Path) -> None:
    assert rotate_key(tmp_path) == 1
    assert load_keyring(tmp_path).current_id == 1


def test_rotate_key_refuses_past_255_keys(tmp_path: Path) -> None:
    load_keyring(tmp_path)
    for expected in range(2, MAX_KEY_ID + 1):
        assert rotate_key(tmp_path) == expected
    with pytest.raises(KeyringError, match="full"):
        rotate_key(tmp_path)
    keyring = load_keyring(tmp_path)
    assert keyring.current_id == MAX_KEY_ID
    assert len(keyring.keys) == MAX_KEY_ID


def test_concurrent_first_loads_in_threads_agree_on_one_key(tmp_path: Path) -> None:
    workers = 8
    barrier = threading.Barrier(workers)

    def load() -> Keyring:
        barrier.wait()
        return load_keyring(tmp_path)

    with ThreadPoolExecutor(workers) as pool:
        keyrings = list(pool.map(lambda _: load(), range(workers)))
    assert all(keyring == keyrings[0] for keyring in keyrings)
    assert load_keyring(tmp_path) == keyrings[0]


def _first_key_in_child(data_dir: str, barrier: threading.Barrier) -> bytes:
    barrier.wait()
    keyring = load_keyring(Path(data_dir))
    secret = keyring.key(keyring.current_id)
    if secret is None:
        raise RuntimeError("no current key")
    return secret


def test_concurrent_first_loads_in_processes_agree_on_one_key(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    workers = 4
    with context.Manager() as manager, context.Pool(workers) as pool:
        barrier = manager.Barrier(workers)
        secrets = pool.starmap(_first_key_in_child, [(str(tmp_path), barrier)] * workers)
    assert len(set(secrets)) == 1
    assert load_keyring(tmp_path).key(1) == secrets[0]


def test_concurrent_rotations_lose_no_key(tmp_path: Path) -> None:
    load_keyring(tmp_path)
    workers = 6
    barrier = threading.Barrier(workers)

    def rotate() -> int:
        barrier.wait()
        return rotate_key(tmp_path)

    with ThreadPoolExecutor(workers) as pool:
        ids = sorted(pool.map(lambda _: rotate(), range(workers)))
    assert ids == list(range(2, 2 + workers))
    assert sorted(load_keyring(tmp_path).keys) == list(range(1, 2 + workers))


def test_a_corrupt_keys_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    load_keyring(tmp_path)
    path = tmp_path / KEYS_DIR / KEYS_FILE
    path.write_text('{"version": 1, "current": 1, "keys": {"1": "c2hvcnQ="}}')
    with pytest.raises(KeyringError, match=str(path)):
        load_keyring(tmp_path)
    path.write_text("not json")
    with pytest.raises(KeyringError, match="invalid keyring"):
        load_keyring(tmp_path)


def test_a_keys_file_of_another_version_is_refused(tmp_path: Path) -> None:
    load_keyring(tmp_path)
    path = tmp_path / KEYS_DIR / KEYS_FILE
    path.write_text(path.read_text().replace('"version":1', '"version":2'))
    with pytest.raises(KeyringError, match="version"):
        load_keyring(tmp_path)


def test_keyring_repr_names_ids_but_no_secret() -> None:
    keyring = Keyring(current_id=2, keys={1: b"\x01" * KEY_BYTES, 2: b"\x02" * KEY_BYTES})
    assert repr(keyring) == "Keyring(current_id=2, key_ids=[1, 2])"


def test_keyring_key_of_an_unknown_id_is_none() -> None:
    assert Keyring(current_id=1, keys={1: b"k" * KEY_BYTES}).key(7) is None


def test_keyring_cannot_be_changed_after_construction() -> None:
    source = {1: b"k" * KEY_BYTES}
    keyring = Keyring(current_id=1, keys=source)
    source[2] = b"x" * KEY_BYTES
    assert keyring.key(2) is None
    with pytest.raises(TypeError):
        keyring.keys[2] = b"x" * KEY_BYTES  # type: ignore[index]


@pytest.mark.parametrize(
    ("current_id", "keys"),
    [
        (0, {0: b"k" * KEY_BYTES}),
        (256, {256: b"k" * KEY_BYTES}),
        (1, {1: b"short"}),
        (2, {1: b"k" * KEY_BYTES}),
    ],
)
def test_keyring_refuses_bad_ids_lengths_and_a_missing_current_key(current_id: int, keys: dict[int, bytes]) -> None:
    with pytest.raises(ValueError):
        Keyring(current_id=current_id, keys=keys)


def test_live_keyring_verifies_a_key_rotated_by_another_process(tmp_path: Path) -> None:
    from engaged.keys import LiveKeyring

    live = LiveKeyring(tmp_path, recheck=3600)
    first = live.current_id
    new_id = rotate_key(tmp_path)
    # An unknown id (a link signed after the rotation) makes the verifier read the file again.
    assert live.key(new_id) is not None
    assert live.current_id == new_id
    assert live.key(first) is not None


def test_live_keyring_signs_with_the_rotated_key_after_the_recheck_interval(tmp_path: Path) -> None:
    from engaged.keys import LiveKeyring

    live = LiveKeyring(tmp_path, recheck=0.0)
    new_id = rotate_key(tmp_path)
    import os

    os.utime(tmp_path / "keys" / "keys.json", (1, 1))  # a distinct mtime even on coarse clocks
    assert live.current_id == new_id


def test_live_keyring_does_not_reread_for_every_forged_key_id(tmp_path: Path) -> None:
    from engaged.keys import LiveKeyring

    live = LiveKeyring(tmp_path, recheck=3600)
    assert live.key(200) is None
    rotate_key(tmp_path)
    assert live.key(2) is None  # within 0.1 s of the last forced read: not read again
