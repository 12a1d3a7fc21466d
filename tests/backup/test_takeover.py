"""Jobs that outlive their runner, against a fake cluster under MockClock: several services share
one backup store, the test says who leads with which token, and moves the lease mid-job."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

from dakera_actors.backup import jobs
from dakera_actors.backup.bundle import Part
from dakera_actors.backup.model import BackupInfo
from dakera_actors.backup.service import Backups
from dakera_actors.backup.store import BackupStore
from dakera_actors.errors import Unavailable
from dakera_actors.log import get_logger
from dakera_actors.storage.memory import MemoryObjectStore

from ..waiting import eventually, eventually_async


def memory(mid: str, agent: str) -> list[Any]:
    return [{"id": mid, "a": agent, "c": f"content of {mid} " + "x" * 40}, b"\x00" * 8]


BACKED_UP = {"a": {f"a{i:02}" for i in range(24)}, "b": {f"b{i}" for i in range(4)}}


class World:
    """One cluster's data (restore_agent applied as the store applies it, retain and prune included), who
    leads with which token, and every write tagged with the node that sent it."""

    def __init__(self) -> None:
        self.data = {0: Part(0, 5, 10, [memory(m, "a") for m in sorted(BACKED_UP["a"])]),
                     1: Part(1, 5, 3, [memory(m, "b") for m in sorted(BACKED_UP["b"])])}
        self.held: dict[str, set[str]] = {"a": {"stale"}, "b": set()}  # overwrite removes "stale"
        self.lead: dict[str, int] = {}
        self.writes: list[tuple[str, str, str]] = []  # (node, agent, first id of the batch)
        self.write_time = 1.0
        self.copy_time = 0.01

    def leader(self) -> str | None:
        return max(self.lead, key=lambda n: self.lead[n]) if self.lead else None


class NodeView:
    """The fake cluster as one node's backup service sees it."""

    def __init__(self, world: World, node_id: str) -> None:
        self.world = world
        self.node_id = node_id

    def map_key(self) -> int:
        return 1

    def primaries(self) -> list[str]:
        return ["n1", "n2"]

    async def copy_shard(self, shard: int, member: str) -> Part:
        await trio.sleep(self.world.copy_time)
        return self.world.data[shard]

    async def run(self, op: str, body: bytes) -> tuple[int, Any]:
        assert op == "restore_agent"
        req = json.loads(body)
        await trio.sleep(self.world.write_time)
        agent, sent = req["agent_id"], {m[0]["id"] for m in req["memories"]}
        held = self.world.held.setdefault(agent, set())
        if req["overwrite"] and req.get("prune", True):
            held &= sent | set(req.get("retain", []))
        held |= sent
        self.world.writes.append((self.node_id, agent, req["memories"][0][0]["id"]))
        return 200, {"restored": len(sent)}


def services(nursery: trio.Nursery, world: World, objects: MemoryObjectStore,
             names: tuple[str, ...] = ("n1", "n2", "n3")) -> dict[str, Backups]:
    out: dict[str, Backups] = {}

    async def forward(leader: str, kind: str, request: Any) -> Any:
        return await out[leader].serve(kind, json.loads(json.dumps(request)))

    for name in names:
        out[name] = Backups(node_id=name, store=BackupStore(objects, location="mem:/"), cluster=NodeView(world, name),
                            cluster_id="c1", shards=2, key=None, bundle_limit=1 << 24, log=get_logger("test"),
                            nursery=nursery, shared=True, leading=lambda name=name: world.lead.get(name),
                            leader=world.leader, forward=forward)
        nursery.start_soon(out[name].run_jobs)
    return out


async def backup(svc: Backups) -> str:
    info = await svc.create({})
    await eventually(lambda: info.status != "inprogress", timeout=60)
    assert info.status == "completed", info
    return info.backup_id


@pytest.fixture(autouse=True)
def small_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "RESTORE_REQUEST_BYTES", 300)  # agent a spreads over several batches


async def test_a_restore_survives_a_leader_change_resumed_once_by_one_of_two_candidates(
        autojump_clock: trio.testing.MockClock) -> None:
    world, objects = World(), MemoryObjectStore()
    world.lead = {"n1": 1}
    async with trio.open_nursery() as nursery:
        svc = services(nursery, world, objects)
        backup_id = await backup(svc["n1"])
        job = await svc["n2"].restore({"backup_id": backup_id, "overwrite": True})  # forwarded to the leader
        assert job.runner == "n1" and job.token == 1 and job.status == "inprogress"
        store = svc["n1"].store
        # n1 runs it until its progress is on the record, then loses the lease to two candidates
        await eventually(lambda: len(world.writes) >= jobs.SAVE_EVERY_BATCHES + 1, timeout=120)
        saved = await store.restore(job.restore_id)
        assert saved is not None and 0 < saved.done < (saved.batches or 0)
        world.lead = {"n2": 2, "n3": 2}
        handed_at = len(world.writes)

        async def over() -> bool:
            record = await store.restore(job.restore_id)
            return record is not None and record.status != "inprogress"

        await eventually_async(over, timeout=300)
        final = await store.restore(job.restore_id)
        assert final is not None and final.status == "completed", final
        assert final.token == 2 and final.runner in ("n2", "n3") and final.done == final.batches
        assert final.progress_percent == 100.0
        # the old runner stopped at its next batch: at most the one it was writing came after
        assert sum(1 for w in world.writes[handed_at:] if w[0] == "n1") <= 1
        runners = {w[0] for w in world.writes if w[0] != "n1"}
        assert runners == {final.runner}  # claimed once: one of the two candidates ran it
        claims = [k for k in objects.objects if k.startswith(f"claims/restores/{job.restore_id}/")]
        assert claims == [f"claims/restores/{job.restore_id}/2"]
        # every batch applied, the resumed runner went on from the record's done, not from 0
        plan = jobs.plan_batches(list(world.data.values()), None)
        applied = {(a, first) for _n, a, first in world.writes}
        assert applied == {(b.agent, b.memories[0][0]["id"]) for b in plan}
        assert len(world.writes) <= len(plan) + jobs.SAVE_EVERY_BATCHES
        assert sum(1 for w in world.writes if w[0] == final.runner) == len(plan) - saved.done
        assert world.held == BACKED_UP  # all of a's batches kept; "stale" removed
        nursery.cancel_scope.cancel()


async def test_a_restore_whose_bundle_is_gone_fails_and_an_unfinished_backup_fails_saying_why(
        autojump_clock: trio.testing.MockClock) -> None:
    world, objects = World(), MemoryObjectStore()
    world.lead = {"n1": 1}
    async with trio.open_nursery() as nursery:
        svc = services(nursery, world, objects, ("n1", "n2"))
        backup_id = await backup(svc["n1"])
        job = await svc["n1"].restore({"backup_id": backup_id})
        await eventually(lambda: len(world.writes) >= 2, timeout=60)
        world.copy_time = 1000.0  # a backup whose cut is still being taken when the lease moves
        slow = await svc["n1"].create({"name": "slow"})
        world.lead = {"n2": 2}
        await svc["n2"].store.delete(backup_id)  # the restore's source is gone before n2 takes it over

        async def over() -> bool:
            record = await svc["n2"].store.restore(job.restore_id)
            return record is not None and record.status != "inprogress"

        await eventually_async(over, timeout=60)
        failed = await svc["n2"].store.restore(job.restore_id)
        assert failed is not None and failed.status == "failed" and "source is gone" in (failed.error or "")
        info = await svc["n2"].get(slow.backup_id)
        assert info.status == "failed" and info.error == "runner n1 lost the lease mid-backup; nothing was stored"
        await trio.sleep(2000)  # the old runner's cut ends: it stores nothing and leaves the record alone
        assert (await svc["n2"].get(slow.backup_id)).status == "failed"
        assert not any(k.startswith(f"backups/{slow.backup_id}/bundle") for k in objects.objects)
        nursery.cancel_scope.cancel()


async def test_no_leader_is_a_503_that_stores_nothing(autojump_clock: trio.testing.MockClock) -> None:
    world, objects = World(), MemoryObjectStore()
    world.lead = {"n1": 1}
    async with trio.open_nursery() as nursery:
        svc = services(nursery, world, objects, ("n1", "n2"))
        backup_id = await backup(svc["n1"])
        bundle = await svc["n1"].download(backup_id)
        before = dict(objects.objects)
        world.lead = {}
        for start in (lambda: svc["n2"].create({}), lambda: svc["n2"].restore({"backup_id": backup_id}),
                      lambda: svc["n2"].restore({}, bundle=bundle)):
            with pytest.raises(Unavailable, match="no leader"):
                await start()
        assert objects.objects == before
        nursery.cancel_scope.cancel()


async def test_a_node_local_store_resumes_its_own_restore_after_a_restart(
        autojump_clock: trio.testing.MockClock) -> None:
    world, objects = World(), MemoryObjectStore()

    def local(nursery: trio.Nursery) -> Backups:
        svc = Backups(node_id="n1", store=BackupStore(objects, location="mem:/"), cluster=NodeView(world, "n1"),
                      cluster_id="c1", shards=2, key=None, bundle_limit=1 << 24, log=get_logger("test"),
                      nursery=nursery)
        nursery.start_soon(svc.run_jobs)
        return svc

    async with trio.open_nursery() as nursery:  # the node's first life, cut short mid-restore
        svc = local(nursery)
        backup_id = await backup(svc)
        job = await svc.restore({"backup_id": backup_id, "overwrite": True})
        assert job.runner == "n1" and job.token is None
        await eventually(lambda: len(world.writes) >= jobs.SAVE_EVERY_BATCHES + 2, timeout=120)
        nursery.cancel_scope.cancel()
    saved = await BackupStore(objects, location="mem:/").restore(job.restore_id)
    assert saved is not None and saved.status == "inprogress" and 0 < saved.done < (saved.batches or 0)
    first_life = len(world.writes)
    async with trio.open_nursery() as nursery:  # restarted: it goes on from the record's done
        svc = local(nursery)
        with trio.fail_after(300):
            while (record := await svc.restore_status(job.restore_id)).status == "inprogress":
                await svc.finished.wait()
        assert record.status == "completed" and record.done == record.batches
        assert len(world.writes) - first_life == (record.batches or 0) - saved.done
        assert world.held == BACKED_UP
        nursery.cancel_scope.cancel()


async def test_a_node_starting_on_a_shared_filesystem_path_fails_only_its_own_unfinished_backups(
        autojump_clock: trio.testing.MockClock) -> None:
    """Two nodes on one filesystem path (not the cluster's store: each runs its own jobs). n2
    starting marks its own backup of a past life failed, never n1's, which is running."""
    world, objects = World(), MemoryObjectStore()
    world.copy_time = 50.0  # n1's cut takes a while

    def local(nursery: trio.Nursery, name: str) -> Backups:
        return Backups(node_id=name, store=BackupStore(objects, location="mem:/"), cluster=NodeView(world, name),
                       cluster_id="c1", shards=2, key=None, bundle_limit=1 << 24, log=get_logger("test"),
                       nursery=nursery)

    async with trio.open_nursery() as nursery:
        n1 = local(nursery, "n1")
        running = await n1.create({"name": "n1's"})
        mine = BackupInfo("backup-of-n2-past-life", "n2's", "full", "inprogress", 1.0, runner="n2")
        await n1.store.save_info(mine)
        await trio.sleep(1)
        n2 = local(nursery, "n2")
        await n2.run_jobs()  # a node-local store: one look at start
        assert (await n2.get(mine.backup_id)).status == "failed"
        assert "n2 restarted mid-backup" in ((await n2.get(mine.backup_id)).error or "")
        assert (await n2.get(running.backup_id)).status == "inprogress"  # n1's: left alone
        with trio.fail_after(300):
            while (await n1.get(running.backup_id)).status == "inprogress":
                await n1.finished.wait()
        assert (await n1.get(running.backup_id)).status == "completed"
        nursery.cancel_scope.cancel()


async def test_a_scheduled_backup_lost_with_its_leader_is_made_again_by_the_next_one(
        autojump_clock: trio.testing.MockClock) -> None:
    """Its slot is claimed (no later tick runs it): the leader that fails the lost backup makes the
    slot's backup itself, once."""
    world, objects = World(), MemoryObjectStore()
    world.lead = {"n1": 1}
    async with trio.open_nursery() as nursery:
        svc = services(nursery, world, objects, ("n1", "n2", "n3"))
        world.copy_time = 1000.0  # the scheduled backup's cut is still being taken when the lease moves
        lost = BackupInfo("scheduled-20261202T0005-0000abcd", "scheduled-20261202T0005", "full", "inprogress",
                          svc["n1"].wall_clock(), runner="n1", token=1)
        await svc["n1"].store.save_info(lost)
        nursery.start_soon(svc["n1"]._run_backup, lost)
        await trio.sleep(1)
        world.copy_time = 0.01
        world.lead = {"n2": 2}

        async def remade() -> bool:
            done = [b for b in await svc["n2"].list_all() if b.name == lost.name and b.status == "completed"]
            return len(done) == 1

        await eventually_async(remade, timeout=120)
        await trio.sleep(60)  # later looks of the same leader make no second one
        found = [b for b in await svc["n3"].list_all() if b.name == lost.name]
        assert sorted(b.status for b in found) == ["completed", "failed"]
        assert next(b for b in found if b.status == "completed").runner == "n2"
        nursery.cancel_scope.cancel()


class SlowRecords(MemoryObjectStore):
    """A store whose record writes are seen at once but answer late (a slow S3 PUT)."""

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        await super().put(key, data, if_absent=if_absent)
        if key.endswith("info.json") or key.startswith("restores/"):
            await trio.sleep(25)  # longer than the leader's look for jobs to take over


async def test_the_leader_never_fails_its_own_job_whose_first_record_is_still_being_saved(
        autojump_clock: trio.testing.MockClock) -> None:
    """Found by bench/backup.py: the leader's look for lost jobs read a new backup's record while
    the request that made it still awaited the save, and failed it as a lost runner's."""
    world, objects = World(), SlowRecords()
    world.lead = {"n1": 1}
    async with trio.open_nursery() as nursery:
        svc = services(nursery, world, objects, ("n1", "n2"))
        info = await svc["n1"].create({"name": "slow store"})

        async def backed_up() -> bool:
            return (await svc["n2"].get(info.backup_id)).status != "inprogress"

        await eventually_async(backed_up, timeout=600)
        done = await svc["n2"].get(info.backup_id)
        assert done.status == "completed", done
        # and a restore of it, on the same slow store
        job = await svc["n1"].restore({"backup_id": info.backup_id})

        async def restored() -> bool:
            return (await svc["n2"].restore_status(job.restore_id)).status != "inprogress"

        await eventually_async(restored, timeout=600)
        got = await svc["n2"].restore_status(job.restore_id)
        assert got.status == "completed", got
        nursery.cancel_scope.cancel()
