"""Snapshots: written atomically, read back only when whole, with a fall back to older ones."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from dakera_actors.wal import SnapshotStore
from dakera_actors.wal.snapshot import SNAPSHOT_HEADER

STATE: dict[str, Any] = {"m-1": {"text": "記憶 ✓", "vector": b"\x00\x01" * 512, "score": 0.25},
                         "m-2": {"text": "plain", "tags": ["a", "b"], "n": None}}


def damage(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_write_then_latest_round_trips(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snapshots")
    path = store.write(12, 1234, STATE)
    assert path.name == "shard-00012-00000000000000001234.snap"
    assert store.latest(12) == (1234, STATE)
    assert store.latest(13) is None and store.latest_lsn(12) == 1234


def test_the_header_carries_magic_version_shard_lsn(tmp_path: Path) -> None:
    path = SnapshotStore(tmp_path).write(3, 77, STATE)
    magic, version, shard, lsn, _crc, length = SNAPSHOT_HEADER.unpack_from(path.read_bytes())
    assert (magic, version, shard, lsn, length) == (b"DKSN", 1, 3, 77, path.stat().st_size - 29)


def test_latest_is_the_newest_by_lsn_not_by_name_order(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    for lsn in (9, 100, 10):
        store.write(1, lsn, {"at": lsn})
    assert store.latest(1) == (100, {"at": 100})


@pytest.mark.parametrize("how", ["flip_body", "flip_header", "truncate", "truncate_header", "empty"])
def test_a_bad_newest_snapshot_falls_back_to_the_older(tmp_path: Path, how: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    store = SnapshotStore(tmp_path)
    store.write(5, 10, {"old": True})
    newest = store.write(5, 20, STATE)
    size = newest.stat().st_size
    if how == "flip_body":
        damage(newest, size - 3)
    elif how == "flip_header":
        damage(newest, 0)
    elif how == "truncate":
        os.truncate(newest, size - 10)
    elif how == "truncate_header":
        os.truncate(newest, 10)
    else:
        os.truncate(newest, 0)
    with caplog.at_level(logging.WARNING, logger="dakera_actors.wal"):
        assert store.latest(5) == (10, {"old": True})
    assert [r.getMessage() for r in caplog.records] == ["snapshot_invalid"]
    assert store.all_latest() == {5: 10}


def test_a_renamed_snapshot_is_not_trusted(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    path = store.write(2, 50, STATE)
    path.rename(tmp_path / "shard-00002-00000000000000000060.snap")
    assert store.latest(2) is None


def test_no_valid_snapshot_is_none(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    os.truncate(store.write(0, 3, STATE), 40)
    assert store.latest(0) is None and store.all_latest() == {}


def test_prune_keeps_the_newest_valid_ones(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    for lsn in range(1, 6):
        store.write(4, lsn, {"at": lsn})
    store.write(7, 1, {})
    assert store.prune(4, keep=2) == 3
    assert [f.lsn for f in store.files(4)] == [4, 5] and [f.lsn for f in store.files(7)] == [1]
    damage(store.files(4)[-1].path, 30)  # the newest is damaged: it must not count as kept
    assert store.prune(4, keep=1) == 1
    assert [f.lsn for f in store.files(4)] == [4] and store.latest(4) == (4, {"at": 4})
    with pytest.raises(ValueError):
        store.prune(4, keep=0)


def test_an_interrupted_write_is_ignored_then_cleaned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SnapshotStore(tmp_path)
    store.write(1, 5, {"v": 1})
    leftover = tmp_path / "shard-00001-00000000000000000009.snap.tmp"
    leftover.write_bytes(b"half a snapshot")  # a crash mid-write
    assert store.latest(1) == (5, {"v": 1})
    SnapshotStore(tmp_path)
    assert not leftover.exists()

    def crash(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.write(1, 9, {"v": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-00001-00000000000000000005.snap"]


def test_all_latest(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.write(0, 10, {})
    store.write(0, 30, {})
    store.write(1, 20, {})
    assert store.all_latest() == {0: 30, 1: 20}


@pytest.mark.parametrize("state", [{(1, 2): "tuple keys"}, {1, 2}, object()])
def test_write_refuses_a_state_that_would_not_read_back(tmp_path: Path, state: object) -> None:
    store = SnapshotStore(tmp_path)
    with pytest.raises((TypeError, ValueError)):
        store.write(0, 1, state)
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_out_of_range_ids(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SnapshotStore(tmp_path).write(-1, 1, {})
