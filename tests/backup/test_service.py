"""Backup and restore jobs against a fake cluster (MockClock, in-memory backup store)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import trio
import trio.testing

from dakera_actors.backup.bundle import Part
from dakera_actors.backup.service import Backups
from dakera_actors.backup.store import BackupStore
from dakera_actors.errors import Conflict, InvalidRequest, NotFound
from dakera_actors.log import get_logger
from dakera_actors.storage.memory import MemoryObjectStore

KEY = bytes(range(32))


def memory(mid: str, agent: str) -> list[Any]:
    return [{"id": mid, "a": agent, "c": f"content {mid}"}, b"\x00" * 8]


class FakeCluster:
    """Two shards; shard copies come from ``data``; writes are recorded."""

    def __init__(self) -> None:
        self.key = 1
        self.data = {0: Part(0, 5, 10, [memory("m1", "a"), memory("m2", "b")]), 1: Part(1, 5, 3, [memory("m3", "a")])}
        self.copies: list[tuple[int, str]] = []
        self.writes: list[dict[str, Any]] = []
        self.bump_during_cut = 0

    def map_key(self) -> int:
        return self.key

    def primaries(self) -> list[str]:
        return ["n1", "n2"]

    async def copy_shard(self, shard: int, member: str) -> Part:
        self.copies.append((shard, member))
        if self.bump_during_cut:
            self.bump_during_cut -= 1
            self.key += 1
        await trio.sleep(0.01)
        return self.data[shard]

    async def run(self, op: str, body: bytes) -> tuple[int, Any]:
        assert op == "restore_agent"
        req = json.loads(body)
        self.writes.append(req)
        return 200, {"restored": len(req["memories"])}


def service(nursery: trio.Nursery, cluster: FakeCluster, objects: MemoryObjectStore | None = None,
            key: bytes | None = KEY) -> Backups:
    return Backups(node_id="n1", store=BackupStore(objects or MemoryObjectStore(), location="mem:/"), cluster=cluster,
                   cluster_id="c1", shards=2, key=key, bundle_limit=1 << 24, log=get_logger("test"), nursery=nursery)


async def finished(svc: Backups) -> None:
    with trio.fail_after(120):  # simulated seconds: a restore write is retried for up to a minute
        await svc.finished.wait()


async def test_a_backup_cuts_every_shard_from_its_primary_and_restores_through_the_write_path(
        autojump_clock: trio.testing.MockClock) -> None:
    cluster = FakeCluster()
    async with trio.open_nursery() as nursery:
        svc = service(nursery, cluster)
        info = await svc.create({"name": "nightly", "encrypt": True})
        assert info.status == "inprogress"
        await finished(svc)
        done = await svc.get(info.backup_id)
        assert done.status == "completed" and done.vector_count == 3 and done.encrypted and done.size_bytes > 0
        assert sorted(cluster.copies) == [(0, "n1"), (1, "n2")]
        assert [b.backup_id for b in await svc.list_all()] == [info.backup_id]
        bundle = await svc.download(info.backup_id)
        job = await svc.restore({"backup_id": info.backup_id, "overwrite": True})
        await finished(svc)
        job = await svc.restore_status(job.restore_id)
        assert job.status == "completed" and job.vectors_restored == 3 and job.progress_percent == 100.0
        written = sorted((w["agent_id"], w["overwrite"], m[0]["id"]) for w in cluster.writes for m in w["memories"])
        assert written == [("a", True, "m1"), ("a", True, "m3"), ("b", True, "m2")]
        assert base64.b64decode(cluster.writes[0]["memories"][0][1]) == b"\x00" * 8
        # an uploaded bundle restores the same way, limited to some agents
        cluster.writes.clear()
        job = await svc.restore({"target_namespaces": ["b"]}, bundle=bundle)
        await finished(svc)
        assert [w["agent_id"] for w in cluster.writes] == ["b"]
        nursery.cancel_scope.cancel()


async def test_a_map_change_during_the_cut_takes_it_again(autojump_clock: trio.testing.MockClock) -> None:
    cluster = FakeCluster()
    cluster.bump_during_cut = 1
    async with trio.open_nursery() as nursery:
        svc = service(nursery, cluster)
        info = await svc.create({})
        await finished(svc)
        assert (await svc.get(info.backup_id)).status == "completed" and len(cluster.copies) == 4
        cluster.bump_during_cut = 10  # it never settles: the backup fails and says why
        info = await svc.create({})
        await finished(svc)
        failed = await svc.get(info.backup_id)
        assert failed.status == "failed" and "kept changing" in (failed.error or "")
        nursery.cancel_scope.cancel()


async def test_bad_requests_and_bad_bundles_change_nothing(autojump_clock: trio.testing.MockClock) -> None:
    cluster = FakeCluster()
    objects = MemoryObjectStore()
    async with trio.open_nursery() as nursery:
        svc = service(nursery, cluster, objects, key=None)
        # a field of the wrong type is refused, never read as its default (schemathesis found
        # "encrypt": "x", "namespaces": false and "name": 0 accepted against the OpenAPI schema)
        for bad, field in [({"backup_type": "weekly"}, "backup_type"), ({"namespaces": "a"}, "namespaces"),
                           ({"encrypt": True}, "encrypt"), ({"encrypt": "yes"}, "encrypt"),
                           ({"namespaces": False}, "namespaces"), ({"name": 0}, "name"), ({"backup_type": ""}, "backup_type"),
                           ({"backup_type": 0}, "backup_type"), ({"compression": "rar"}, "compression")]:
            with pytest.raises(InvalidRequest) as raised:
                await svc.create(bad)
            assert raised.value.extra.get("field") == field
        # a well-formed request the state cannot serve yet: a conflict (409), not bad input
        with pytest.raises(Conflict) as conflict:
            await svc.create({"backup_type": "incremental"})
        assert conflict.value.status == 409 and conflict.value.extra.get("field") == "backup_type"
        for bad, field in [({"backup_id": "x", "overwrite": "yes"}, "overwrite"), ({"backup_id": 5}, "backup_id"),
                           ({"backup_id": "x", "target_namespaces": ""}, "target_namespaces")]:
            with pytest.raises(InvalidRequest) as raised:
                await svc.restore(bad)
            assert raised.value.extra.get("field") == field
        for bad_bundle in [b"", b"\x1f\x8b\x08garbage", b"not gzip at all"]:
            with pytest.raises(InvalidRequest, match="bundle"):
                await svc.restore({}, bundle=bad_bundle)
        with pytest.raises(InvalidRequest, match="backup_id"):
            await svc.restore({"backup_id": "../etc"})
        with pytest.raises(NotFound):
            await svc.restore({"backup_id": "nope"})
        with pytest.raises(InvalidRequest, match="point_in_time"):
            await svc.restore({"backup_id": "x", "point_in_time": 5})
        assert objects.objects == {} and cluster.writes == [] and cluster.copies == []
        nursery.cancel_scope.cancel()


async def test_a_restore_write_that_meets_a_moving_shard_is_retried(autojump_clock: trio.testing.MockClock) -> None:
    cluster = FakeCluster()
    answers = [(503, {"error": "shard is being taken over"}), (503, {"error": "again"})]
    real_run = cluster.run

    async def flaky(op: str, body: bytes) -> tuple[int, Any]:
        if answers:
            return answers.pop(0)
        return await real_run(op, body)

    cluster.run = flaky  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        svc = service(nursery, cluster)
        info = await svc.create({})
        await finished(svc)
        job = await svc.restore({"backup_id": info.backup_id})
        await finished(svc)
        assert (await svc.restore_status(job.restore_id)).status == "completed" and not answers
        answers.extend([(503, {"error": "down"})] * 1000)  # never comes back: the job fails, saying why
        job = await svc.restore({"backup_id": info.backup_id})
        await finished(svc)
        failed = await svc.restore_status(job.restore_id)
        assert failed.status == "failed" and "503" in (failed.error or "")
        nursery.cancel_scope.cancel()


async def test_an_incremental_backup_stores_only_moved_shards_and_restores_the_whole_chain(
        autojump_clock: trio.testing.MockClock) -> None:
    cluster = FakeCluster()
    async with trio.open_nursery() as nursery:
        svc = service(nursery, cluster, key=None)
        with pytest.raises(Conflict, match="full one first"):
            await svc.create({"backup_type": "incremental"})
        full = await svc.create({})
        await finished(svc)
        cluster.data[1] = Part(1, 5, 4, [memory("m3", "a"), memory("m4", "c")])  # shard 1 moved on
        inc = await svc.create({"backup_type": "incremental"})
        await finished(svc)
        got = await svc.get(inc.backup_id)
        assert got.status == "completed" and got.base_backup_id == full.backup_id and got.vector_count == 2
        bundle = await svc.download(inc.backup_id)
        job = await svc.restore({}, bundle=bundle)  # the chain: shard 0 from the full one, shard 1 from this
        await finished(svc)
        assert (await svc.restore_status(job.restore_id)).status == "completed"
        written = sorted(m[0]["id"] for w in cluster.writes for m in w["memories"])
        assert written == ["m1", "m2", "m3", "m4"]
        with pytest.raises(Conflict, match="base of"):
            await svc.delete(full.backup_id)
        await svc.delete(inc.backup_id)
        await svc.delete(full.backup_id)
        with pytest.raises(InvalidRequest, match="base backup"):
            await svc.restore({}, bundle=bundle)  # its base is gone: refused before anything is written
        nursery.cancel_scope.cancel()


async def test_a_backup_whose_bundle_is_gone_is_failed_and_neither_downloads_nor_restores(
        autojump_clock: trio.testing.MockClock) -> None:
    cluster = FakeCluster()
    objects = MemoryObjectStore()
    async with trio.open_nursery() as nursery:
        svc = service(nursery, cluster, objects)
        info = await svc.create({"name": "soon-lost"})
        await finished(svc)
        assert (await svc.get(info.backup_id)).status == "completed"
        del objects.objects[f"backups/{info.backup_id}/bundle.tar.gz"]
        lost = await svc.get(info.backup_id)
        assert lost.status == "failed" and "bundle is missing" in (lost.error or "")
        with pytest.raises(NotFound, match="failed"):
            await svc.download(info.backup_id)
        with pytest.raises(NotFound, match="missing"):
            await svc.restore({"backup_id": info.backup_id})
        with pytest.raises(Conflict):  # nothing to add an incremental backup to
            await svc.create({"backup_type": "incremental"})
        assert cluster.writes == [] and await svc.store.restores() == []
        await svc.delete(info.backup_id)  # and it can be deleted
        assert await svc.list_all() == []
        nursery.cancel_scope.cancel()


async def test_scheduled_incremental_backups_chain_up_to_max_backups_and_retention_keeps_every_base_needed(
        autojump_clock: trio.testing.MockClock) -> None:
    """Each slot adds to the newest completed backup (a full one first, and again once a chain is
    max_backups long); retention prunes a chain only whole, when no kept backup needs it."""
    cluster = FakeCluster()
    t0 = 1_800_000_000.0 - 1_800_000_000.0 % 300 + 10  # 10 s past a slot boundary of */5
    async with trio.open_nursery() as nursery:
        svc = Backups(node_id="n1", store=BackupStore(MemoryObjectStore(), location="mem:/"), cluster=cluster,
                      cluster_id="c1", shards=2, key=KEY, bundle_limit=1 << 24, log=get_logger("test"),
                      nursery=nursery, wall_clock=lambda: t0 + trio.current_time())
        sched = await svc.set_schedule({"enabled": True, "cron": "*/5 * * * *", "backup_type": "incremental",
                                        "max_backups": 3, "retention_days": 30})
        assert sched.backup_type == "incremental"
        nursery.start_soon(svc.run_schedule, lambda: 0)
        made: list[tuple[str, str, str | None]] = []  # (id, type, base) of each slot's backup
        kept_after: list[set[str]] = []
        for slot in range(1, 9):
            part = cluster.data[0]  # shard 0 moves before every slot; shard 1 never does
            cluster.data[0] = Part(0, part.epoch, part.seq + 1, [*part.memories, memory(f"s{slot}", "a")])
            await trio.sleep(t0 - 10 + 300 * slot + 60 - svc.wall_clock())  # a minute past the slot
            listed = await svc.list_all()
            newest = listed[0]
            assert newest.status == "completed", newest
            made.append((newest.backup_id, newest.backup_type, newest.base_backup_id))
            kept_after.append({b.backup_id for b in listed})
            for b in listed:  # nothing kept lacks a base it is restored from
                assert b.base_backup_id is None or b.base_backup_id in kept_after[-1], (slot, b)
        ids = [m[0] for m in made]
        assert [m[1] for m in made] == ["full", "incremental", "incremental"] * 2 + ["full", "incremental"]
        assert [m[2] for m in made] == [None, ids[0], ids[1], None, ids[3], ids[4], None, ids[6]]
        assert [len(k) for k in kept_after] == [1, 2, 3, 4, 5, 3, 4, 5]  # a chain goes whole, when unneeded
        assert kept_after[-1] == set(ids[3:])
        last = await svc.get(ids[-1])
        assert last.vector_count == len(cluster.data[0].memories)  # only the shard that moved
        job = await svc.restore({"backup_id": ids[-1], "overwrite": True})  # the chain restores whole
        await finished(svc)
        assert (await svc.restore_status(job.restore_id)).status == "completed"
        assert {m[0]["id"] for w in cluster.writes for m in w["memories"]} == {
            "m1", "m2", "m3", *(f"s{i}" for i in range(1, 9))}
        nursery.cancel_scope.cancel()
