"""Recovery never skips silently: damage that valid records follow stops the log (strict) or is
dropped loudly (truncate); a torn tail is cut with a durable copy; the files are private."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
from crc32c import crc32c

from dakera_actors.config import Config, ConfigError
from dakera_actors.node import Node, open_node
from dakera_actors.wal import WalRecord, WalRecoveryError, WriteAheadLog, encode_record, find_record
from dakera_actors.wal.record import HEADER, MAGIC, SearchExhausted
from dakera_actors.wal.snapshot import SnapshotStore
from dakera_actors.wal.statefile import StateFile

from ..waiting import eventually

BIG = 1 << 20  # one segment holds every record of these tests


def entry(i: int, size: int = 40) -> tuple[int, str, Any, float]:
    return (0, "put", {"i": i, "pad": "x" * size}, 1000.0 + i)


def write_log(directory: Path, n: int, size: int = 40) -> tuple[Path, list[WalRecord], list[int]]:
    """``n`` records in one segment: its path, the records and where each one starts (plus the end)."""
    with WriteAheadLog.open(directory, segment_bytes=BIG) as wal:
        records = wal.append([entry(i, size) for i in range(n)])
        wal.sync()
    starts = [0]
    for rec in records:
        starts.append(starts[-1] + len(encode_record(rec)))
    (segment,) = directory.glob("*.wal")
    return segment, records, starts


def damage(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)  # what most systems run with: files would be 0644 unless asked otherwise
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every fsync and rename from now on, in order: ("fsync", path) and ("replace", target)."""
    seen: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        seen.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        real_replace(src, dst)
        seen.append(("replace", str(Path(dst).resolve())))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return seen


# -- damage in the middle of the active segment ---------------------------------------------------


def test_a_crc_error_followed_by_valid_records_stops_recovery_and_keeps_the_bytes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    segment, _records, starts = write_log(tmp_path, 10)
    bad = starts[4] + 20  # inside the payload of the 5th record: its crc no longer matches
    damage(segment, bad)
    before = segment.read_bytes()
    with caplog.at_level(logging.ERROR, logger="dakera_actors.wal"), \
            pytest.raises(WalRecoveryError) as raised:
        WriteAheadLog.open(tmp_path, segment_bytes=BIG)
    message = str(raised.value)
    assert f"{segment.name} is damaged at offset {starts[4]} (crc mismatch" in message
    assert "5 valid records follow (lsn 6..10)" in message
    assert raised.value.segment == segment.name and raised.value.offset == starts[4]
    assert segment.read_bytes() == before  # nothing was cut
    copy = tmp_path / f"{segment.name}.at-{starts[4]}.corrupt"
    assert copy.read_bytes() == before[starts[4]:] and mode(copy) == 0o600
    [line] = [r for r in caplog.records if r.getMessage() == "wal_damage_found"]
    assert vars(line)["offset"] == starts[4] and vars(line)["records_after"] == 5
    with pytest.raises(WalRecoveryError):  # a restart finds the same damage and keeps one copy
        WriteAheadLog.open(tmp_path, segment_bytes=BIG)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([segment.name, copy.name])


def test_an_undecodable_record_with_a_good_crc_followed_by_valid_records_stops_recovery(tmp_path: Path) -> None:
    segment, _records, starts = write_log(tmp_path, 6)
    payload = msgpack.packb(["not", "a", "record"])
    frame = HEADER.pack(MAGIC, len(payload), crc32c(payload)) + payload
    data = segment.read_bytes()
    segment.write_bytes(data[: starts[3]] + frame + data[starts[3]:])
    with pytest.raises(WalRecoveryError, match=f"damaged at offset {starts[3]} .payload is not a map"):
        WriteAheadLog.open(tmp_path, segment_bytes=BIG)


def test_find_record_skips_damage_and_needs_a_whole_verified_record(tmp_path: Path) -> None:
    segment, _records, starts = write_log(tmp_path, 3)
    data = bytearray(segment.read_bytes())
    assert find_record(data, 1) == starts[1]
    data[starts[1] + 12] ^= 1  # the second record's payload: only the third one verifies now
    assert find_record(data, 1) == starts[2]
    assert find_record(data[: starts[3] - 1], 1) is None  # the third cut short: nothing verifies
    assert find_record(b"\xda" * 4096) is None and find_record(b"") is None


def test_the_truncate_mode_drops_the_damage_and_says_what_it_dropped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    segment, records, starts = write_log(tmp_path, 10)
    damage(segment, starts[4] + 20)
    before = segment.read_bytes()
    with caplog.at_level(logging.ERROR, logger="dakera_actors.wal"):
        with WriteAheadLog.open(tmp_path, segment_bytes=BIG, recovery="truncate") as wal:
            assert list(wal.replay()) == records[:4]
            assert wal.recovery.records_dropped == 5 and wal.recovery.bytes_truncated == starts[10] - starts[4]
    [line] = [r for r in caplog.records if r.getMessage() == "wal_damage_dropped"]
    assert line.levelno == logging.ERROR
    fields = vars(line)
    assert (fields["segment"], fields["offset"], fields["bytes"]) == (segment.name, starts[4], starts[10] - starts[4])
    assert fields["records_dropped"] == 5 and fields["dropped_lsns"] == "6..10" and fields["mode"] == "truncate"
    assert (tmp_path / fields["kept_in"]).read_bytes() == before[starts[4]:]


def test_an_unknown_recovery_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="recovery must be one of strict, truncate"):
        WriteAheadLog.open(tmp_path, recovery="lenient")


# -- what a crash leaves: cut, with a durable copy ------------------------------------------------


def test_a_torn_tail_is_cut_and_its_copy_is_fsynced(tmp_path: Path, fsyncs: list[tuple[str, str]]) -> None:
    segment, records, starts = write_log(tmp_path, 5)
    os.truncate(segment, starts[5] - 7)  # the last record half written
    fsyncs.clear()
    with WriteAheadLog.open(tmp_path, segment_bytes=BIG) as wal:  # strict: a torn tail is no damage
        assert list(wal.replay()) == records[:4] and wal.recovery.reason == "torn"
    copy = tmp_path / f"{segment.name}.tail.corrupt"
    assert copy.stat().st_size == starts[5] - 7 - starts[4] and mode(copy) == 0o600
    synced = [path for kind, path in fsyncs if kind == "fsync"]
    assert str(copy) in synced  # the copy's data ...
    assert str(tmp_path) in synced[synced.index(str(copy)):]  # ... and then its name


def test_a_block_of_zeros_is_an_unfinished_write_and_is_cut(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    segment, records, starts = write_log(tmp_path, 40, size=300)
    data = bytearray(segment.read_bytes())
    hole = 2 * 4096  # a page the OS never wrote back: it reads as zeros
    data[hole : hole + 4096] = bytes(4096)
    segment.write_bytes(bytes(data))
    damaged = max(i for i, s in enumerate(starts) if s <= hole)
    with caplog.at_level(logging.WARNING, logger="dakera_actors.wal"):
        with WriteAheadLog.open(tmp_path, segment_bytes=BIG) as wal:
            assert list(wal.replay()) == records[:damaged]
            assert wal.recovery.records_dropped > 0
    assert "wal_unfinished_write_cut" in [r.getMessage() for r in caplog.records]
    assert (tmp_path / f"{segment.name}.tail.corrupt").read_bytes() == bytes(data[starts[damaged]:])


def test_zeros_at_the_end_of_a_sealed_segment_are_an_unfinished_write(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=300) as wal:
        records = wal.append([entry(i) for i in range(20)])
        wal.sync()
        sealed = wal.sealed_segments()
    last = len(encode_record(records[sealed[1].last_lsn - 1]))
    with open(sealed[1].path, "r+b") as f:  # its last record never reached the disk before the crash
        f.seek(sealed[1].size - last)
        f.write(bytes(last))
    with WriteAheadLog.open(tmp_path, segment_bytes=300) as wal:
        assert list(wal.replay()) == records[: sealed[1].last_lsn - 1]
        assert len(wal.recovery.quarantined) == len(sealed) - 1  # the later sealed ones and the active one
    assert mode(tmp_path / f"{sealed[1].path.name}.tail.corrupt") == 0o600


def test_a_sealed_segment_that_ends_early_stops_recovery(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=300) as wal:
        wal.append([entry(i) for i in range(20)])
        wal.sync()
        sealed = wal.sealed_segments()
    os.truncate(sealed[1].path, sealed[1].size - 5)  # as a bit flip in its last length field would read
    with pytest.raises(WalRecoveryError, match=f"{sealed[1].path.name} is damaged .* valid records follow"):
        WriteAheadLog.open(tmp_path, segment_bytes=300)


# -- file modes and durability --------------------------------------------------------------------


def test_log_snapshot_and_state_files_are_private(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path / "wal", segment_bytes=BIG) as wal:
        wal.append([entry(0)])
    SnapshotStore(tmp_path / "snapshots").write(0, 1, {"k": 1})
    StateFile("lease.msgpack", tmp_path).write(b"x")
    assert mode(tmp_path / "wal") == mode(tmp_path / "snapshots") == 0o700
    files = [*(tmp_path / "wal").iterdir(), *(tmp_path / "snapshots").iterdir(), tmp_path / "lease.msgpack"]
    assert len(files) == 3 and {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}


def test_the_node_id_file_is_fsynced_before_and_after_its_rename(tmp_path: Path, fsyncs: list[tuple[str, str]]) -> None:
    node = Node(Config(data_dir=tmp_path / "data"))
    node._prepare_data_dir()
    node._release_data_dir()
    data = (tmp_path / "data").resolve()
    id_file, tmp = data / "node_id", data / "node_id.tmp"
    assert id_file.read_text().strip() == node.node_id
    at = fsyncs.index(("replace", str(id_file)))
    assert ("fsync", str(tmp)) in fsyncs[:at]  # the content is on disk before the name points to it
    assert ("fsync", str(data)) in fsyncs[at:]  # and the rename itself is durable
    assert mode(data) == 0o700 and mode(id_file) == 0o600 and mode(data / "LOCK") == 0o600


# -- a node: snapshots, the WAL floor and gaps ----------------------------------------------------


@asynccontextmanager
async def node(data: Path, **config: Any) -> AsyncIterator[httpx.AsyncClient]:
    cfg = Config(data_dir=data, node_id="node-w", shards=1, checkpoint_records=50, wal_segment_bytes=64 * 1024,
                 **config)
    async with open_node(cfg, serve_http=False) as n:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=n.app), base_url="http://n") as client:
            yield client


async def fill_node(data: Path, n: int, caplog: pytest.LogCaptureFixture) -> None:
    """``n`` memories of about 2 kB, one checkpoint every 50, the last one finished before the stop."""
    caplog.set_level(logging.INFO, logger="dakera_actors.store")
    async with node(data) as client:
        for i in range(n):
            r = await client.post("/v1/memory/store", json={"agent_id": "a1", "content": f"memory {i} " + "x" * 2000})
            assert r.status_code == 200, r.text
        await eventually(lambda: [r.getMessage() for r in caplog.records].count("checkpoint_done") == n // 50)


async def count(data: Path, **config: Any) -> int:
    async with node(data, **config) as client:
        r = await client.get("/v1/agents/a1/memories", params={"limit": 1000})
        return len(r.json())


def corrupt_newest_snapshot(data: Path) -> list[Path]:
    snaps = sorted((data / "snapshots").glob("*.snap"))
    assert len(snaps) == 2  # the checkpointer keeps two: recovery may fall back to the older
    damage(snaps[-1], snaps[-1].stat().st_size - 10)
    return snaps


def failure(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        (group,) = group.exceptions
    return group


async def test_a_damaged_newest_snapshot_falls_back_to_the_older_with_the_log_kept_for_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    await fill_node(data, 200, caplog)
    assert min((data / "wal").glob("*.wal")).name > f"{1:020d}.wal"  # the log was trimmed
    corrupt_newest_snapshot(data)
    assert await count(data) == 200  # every memory: replay started right after the older snapshot


async def test_a_gap_between_the_snapshot_and_the_log_is_refused(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    await fill_node(data, 200, caplog)
    snaps = corrupt_newest_snapshot(data)
    older = int(snaps[0].name.split("-")[2].split(".")[0])
    segments = sorted((data / "wal").glob("*.wal"))
    cut = [p for p in segments if int(p.name[:20]) <= older + 1]  # (none where the log was already cut)
    assert len(cut) < len(segments)
    for path in cut:  # the log now starts after the snapshot recovery has to use, as the old floor left it
        path.unlink()
    start = int(segments[len(cut)].name[:20])
    assert start > older + 1
    with pytest.raises(BaseException) as raised:  # noqa: PT011 - the node's nursery wraps it
        await count(data)
    error = failure(raised.value)
    assert isinstance(error, WalRecoveryError)
    assert f"starts at lsn {start} but shard 0 can only be rebuilt from lsn {older}" in str(error)
    assert f"records {older + 1}..{start - 1} are missing" in str(error)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="dakera_actors.store"):
        lost = 200 - await count(data, wal_recovery="truncate")  # the operator's explicit choice
    assert lost > 0
    [line] = [r for r in caplog.records if r.getMessage() == "wal_snapshot_gap"]
    assert vars(line)["missing_lsns"] == f"{older + 1}..{start - 1}" and vars(line)["mode"] == "truncate"
    assert await count(data) == 200 - lost  # accepted once: strict starts again, nothing more lost


async def test_every_file_of_a_node_is_private(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    await fill_node(data, 120, caplog)
    assert mode(data) == 0o700
    for path in data.rglob("*"):
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path


def test_crafted_candidates_cannot_make_the_search_for_valid_records_endless(tmp_path: Path) -> None:
    # what a client could smuggle into a body: a fake header (magic, a length reaching to the
    # end, a wrong crc) then a map byte, over and over: each would cost a crc of the rest
    n = 100_000
    fake = b"".join(b"\xda" + (10 * (n - i) - 9).to_bytes(4, "big") + bytes(4) + b"\x81" for i in range(n))
    with pytest.raises(SearchExhausted):
        find_record(fake, 0)
    segment, _records, starts = write_log(tmp_path, 3)
    data = segment.read_bytes()
    segment.write_bytes(data[: starts[2]] + b"\x00\x13" + fake + data[starts[2]:])
    with pytest.raises(WalRecoveryError, match="damaged at offset .* valid records may follow"):
        WriteAheadLog.open(tmp_path, segment_bytes=BIG)


def test_the_recovery_option_is_read_from_the_environment_and_checked() -> None:
    assert Config().wal_recovery == "strict"
    assert Config.from_env({"DAKERA_WAL_RECOVERY": "truncate"}).wal_recovery == "truncate"
    with pytest.raises(ConfigError, match="DAKERA_WAL_RECOVERY: must be one of strict, truncate, got 'lenient'"):
        Config.from_env({"DAKERA_WAL_RECOVERY": "lenient"})
