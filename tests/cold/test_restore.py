"""Reading a shard back from the archive: damaged objects are skipped or cut, never applied."""

from __future__ import annotations

import trio
import trio.testing

from dakera_actors.cold.format import SnapshotBody, chunk_key, encode_chunk, encode_snapshot, snapshot_key
from dakera_actors.cold.restore import load_shard
from dakera_actors.log import get_logger
from dakera_actors.runtime.offload import INLINE
from dakera_actors.storage.memory import MemoryObjectStore
from dakera_actors.wal.record import WalRecord

E = 2 << 32 | 1
LOG = get_logger("test")


def put(bucket: MemoryObjectStore, key: str, data: bytes) -> None:
    bucket.objects[key] = data


def records(first: int, last: int) -> list[WalRecord]:
    return [WalRecord(0, 1, "delete", {"a": "x", "ids": [f"m{s}"]}, 1.0, s, E) for s in range(first, last + 1)]


def archive() -> MemoryObjectStore:
    bucket = MemoryObjectStore()
    put(bucket, snapshot_key(1, E, 10), encode_snapshot(SnapshotBody(1, E, 10, E, [["old", b""]])))
    put(bucket, chunk_key(1, E, 11, 20), encode_chunk(1, E, records(11, 20)))
    put(bucket, snapshot_key(1, E, 20), encode_snapshot(SnapshotBody(1, E, 20, E, [["new", b""]])))
    put(bucket, chunk_key(1, E, 21, 25), encode_chunk(1, E, records(21, 25)))
    put(bucket, chunk_key(1, E, 26, 30), encode_chunk(1, E, records(26, 30)))
    return bucket


async def test_the_newest_snapshot_and_its_chunks(autojump_clock: trio.testing.MockClock) -> None:
    got = await load_shard(archive(), 1, INLINE, LOG)
    assert got is not None and got.memories == [["new", b""]] and got.position == (E, 30)
    assert [r.seq for r in got.records] == list(range(21, 31))


async def test_a_damaged_snapshot_falls_back_to_the_older_one(autojump_clock: trio.testing.MockClock) -> None:
    bucket = archive()
    raw = bytearray(bucket.objects[snapshot_key(1, E, 20)])
    raw[-3] ^= 0xFF
    bucket.objects[snapshot_key(1, E, 20)] = bytes(raw)
    got = await load_shard(bucket, 1, INLINE, LOG)
    assert got is not None and got.memories == [["old", b""]] and got.position == (E, 30)
    assert [r.seq for r in got.records] == list(range(11, 31))


async def test_a_damaged_or_renamed_chunk_cuts_the_restore_before_it(autojump_clock: trio.testing.MockClock) -> None:
    bucket = archive()
    bucket.objects[chunk_key(1, E, 26, 30)] = bucket.objects[chunk_key(1, E, 21, 25)]  # a chunk under another's name
    got = await load_shard(bucket, 1, INLINE, LOG)
    assert got is not None and got.position == (E, 25)
    bucket.objects[chunk_key(1, E, 21, 25)] = b"DKCT garbage"
    got = await load_shard(bucket, 1, INLINE, LOG)
    assert got is not None and got.position == (E, 20) and got.records == []


async def test_an_empty_or_foreign_archive_restores_nothing(autojump_clock: trio.testing.MockClock) -> None:
    assert await load_shard(MemoryObjectStore(), 1, INLINE, LOG) is None
    bucket = MemoryObjectStore()
    put(bucket, "shards/00001/not-a-chain/s-1", b"x")
    put(bucket, chunk_key(1, E, 1, 5), encode_chunk(1, E, records(1, 5)))  # chunks without a base
    assert await load_shard(bucket, 1, INLINE, LOG) is None
