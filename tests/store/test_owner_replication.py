"""The shard owner's replication paths on a simulated disk: replicated records keep the primary's
positions and order, installs are one logged batch, and a restart rebuilds the replication tails."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from dakera_actors.config import Config
from dakera_actors.store import owner as owner_module
from dakera_actors.store.model import Memory
from dakera_actors.store.owner import Install
from dakera_actors.wal.memory import SimDisk
from dakera_actors.wal.record import WalRecord

from ..wal.test_memory_disk import FakeNode, no_threads  # noqa: F401 - a fixture

CONFIG = Config(shards=4, embedder="hashing")  # raw 384-dim vectors below; meaning is not tested here


def memory_record(mid: str, agent: str = "a") -> list[Any]:
    memory = Memory(id=mid, agent_id=agent, content=f"fact {mid}", created_at=1.0, updated_at=1.0)
    return [memory.to_record(), bytes(4 * 384)]


async def started(disk: SimDisk, nursery: trio.Nursery) -> FakeNode:
    node = FakeNode(disk, nursery, CONFIG)
    await node.start_storage()
    return node


async def test_replicated_records_apply_in_order_and_survive_a_restart(autojump_clock: trio.testing.MockClock,
                                                                      no_threads: None) -> None:  # noqa: F811
    disk = SimDisk("replica")
    async with trio.open_nursery() as nursery:
        node = await started(disk, nursery)
        assert node.memory is not None
        shards, owner = node.memory.shards, node.memory.owner
        shard = shards.shard_of("a")
        put = lambda mid, seq: WalRecord(0, shard, "put", {"m": memory_record(mid)[0], "v": memory_record(mid)[1]},  # noqa: E731
                                         1.0, seq, 7)
        assert await owner.replicate([put("m1", 1), put("m2", 2)]) == 2
        assert await owner.replicate([put("m2", 2), put("m4", 4)]) == 0  # a repeat, then a gap: nothing
        assert await owner.replicate([put("m3", 3)]) == 1
        assert shards.shard(shard).position == (7, 3)
        assert node.memory.owner.tails[shard].last == (7, 3)
        disk.crash()  # before the cancellation, which must not be able to sync anything
        nursery.cancel_scope.cancel()
    async with trio.open_nursery() as nursery:
        node = await started(disk, nursery)
        assert node.memory is not None
        assert node.memory.shards.shard(shard).position == (7, 3)
        tail = node.memory.owner.tails[shard]
        assert tail.last == (7, 3) and [e.seq for e in tail.entries] == [1, 2, 3]  # rebuilt from the log
        nursery.cancel_scope.cancel()


async def test_an_install_is_all_or_position_zero(autojump_clock: trio.testing.MockClock, no_threads: None,  # noqa: F811
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(owner_module, "LOAD_RECORD_BYTES", 32 * 1024)  # load records are cut by bytes
    disk = SimDisk("copy")
    async with trio.open_nursery() as nursery:
        node = await started(disk, nursery)
        assert node.memory is not None
        shard = node.memory.shards.shard_of("a")
        memories = [memory_record(f"m{i}") for i in range(600)]  # several load records
        await node.memory.owner.install(Install(shard, memories, seq=900, epoch=12))
        assert node.memory.shards.shard(shard).position == (12, 900)
        assert node.memory.shards.shard(shard).memory_count == 600
        assert node.memory.owner.tails[shard].last == (12, 900)
        disk.crash()  # before the cancellation, which must not be able to sync anything
        nursery.cancel_scope.cancel()
    async with trio.open_nursery() as nursery:
        node = await started(disk, nursery)
        assert node.memory is not None
        assert node.memory.shards.shard(shard).position == (12, 900)
        assert node.memory.shards.shard(shard).memory_count == 600
        nursery.cancel_scope.cancel()
    # a crash that keeps only part of an install batch leaves the shard empty at position 0
    log = disk.open_log()
    frames = disk._wal.frames
    assert log.last_lsn >= 5
    disk._wal.frames = frames[:-2]  # torn: the last load and the mark are gone
    disk._wal.synced = len(disk._wal.frames)
    async with trio.open_nursery() as nursery:
        node = await started(disk, nursery)
        assert node.memory is not None
        assert node.memory.shards.shard(shard).position == (0, 0)
        nursery.cancel_scope.cancel()
