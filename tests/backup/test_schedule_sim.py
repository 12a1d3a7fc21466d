"""Scheduled backups in a simulated cluster (MockClock): one backup per cron slot across leader
changes, run by the leader only, and retention pruning the oldest."""

from __future__ import annotations

import json

import trio
import trio.testing

from dakera_actors.backup.model import BackupInfo
from dakera_actors.backup.schedule import BackupSchedule, due_slot, next_slot, to_prune
from dakera_actors.storage.memory import MemoryObjectStore
from dakera_actors.testing import Cluster, open_cluster

from ..sim.test_crash import settled
from ..waiting import eventually


class RecordingStore(MemoryObjectStore):
    """Remembers every key ever written (retention deletes some: the history stays)."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[str] = []

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        await super().put(key, data, if_absent=if_absent)
        self.written.append(key)


def leader(cluster: Cluster) -> str | None:
    for node_id, node in cluster.nodes.items():
        if node.lease is not None and node.lease.view.value.is_self:
            return node_id
    return None


def scheduled(bucket: MemoryObjectStore) -> list[dict[str, object]]:
    return [json.loads(v) for k, v in bucket.objects.items()
            if k.startswith("backups/") and k.endswith("/info.json") and b'"scheduled-' in v]


async def test_one_backup_per_slot_across_two_leader_changes_and_retention_prunes_the_oldest(
        autojump_clock: trio.testing.MockClock) -> None:
    backups = RecordingStore()
    async with open_cluster(3, seed=41, config={"shards": 8}, objects=MemoryObjectStore(),
                            backup_objects=backups) as cluster:
        await eventually(lambda: settled(cluster), timeout=60)
        async with cluster.client("node-2") as http:
            r = await http.post("/v1/memory/store", json={"agent_id": "a", "content": "kept", "id": "k"})
            assert r.status_code == 200
            r = await http.post("/v1/admin/backups/schedule",
                                json={"enabled": True, "cron": "*/5 * * * *", "max_backups": 3})
            assert r.status_code == 200, r.text
            assert r.json()["next_backup_at"] is not None
        start = cluster.wall_clock()
        # the slots follow the wall clock: times below count from the first slot, so a kill never
        # lands on a slot whatever second the test starts at (a kill mid-backup fails that backup)
        first = next_slot("*/5 * * * *", start)
        end = first + 15 * 60 + 60  # four slots: one more than max_backups keeps, so one is pruned
        expected = []
        at = start
        while (at := next_slot("*/5 * * * *", at)) <= end:
            expected.append(at)
        assert len(expected) == 4
        for kill_at in (3 * 60, 8 * 60):  # two leader changes inside the run, 3 minutes after a slot
            await trio.sleep(first + kill_at - cluster.wall_clock())
            old = leader(cluster)
            assert old is not None
            cluster.kill(old)
            await eventually(lambda old=old: leader(cluster) not in (None, old), timeout=60)
            await cluster.restart(old)
        await trio.sleep(end - cluster.wall_clock())
        slots = sorted(k for k in backups.objects if k.startswith("schedule/slots/"))
        claims = [json.loads(backups.objects[k]) for k in slots]
        # every slot of the run claimed once, each by whoever led then
        assert sorted(c["slot"] for c in claims) == expected
        assert len({c["token"] for c in claims}) >= 3  # three leaders took turns
        made = {k.split("/")[1] for k in backups.written if k.startswith("backups/scheduled-") and k.endswith("bundle.tar.gz")}
        assert len(made) == len(expected)  # one backup per slot: no slot ran twice, none was lost
        kept = scheduled(backups)
        assert len(kept) == 3 and all(b["status"] == "completed" and b["vector_count"] == 1 for b in kept)
        newest = sorted(c["slot"] for c in claims)[-3:]
        assert sorted(b["created_at"] for b in kept)[0] >= newest[0]  # the oldest were pruned


def test_slots_catch_up_and_retention_rules() -> None:
    assert next_slot("*/5 * * * *", 1000.0) == 1200.0
    assert due_slot("*/5 * * * *", 1200.0) == 1200.0 and due_slot("*/5 * * * *", 1299.0) == 1200.0
    assert due_slot("0 3 * * *", 3 * 3600 + 601.0) is None  # missed by more than the catch-up window
    made = [BackupInfo(f"scheduled-{i}", f"scheduled-{i}", "full", "completed", 86_400.0 * i) for i in range(6)]
    made.append(BackupInfo("by-hand", "nightly", "full", "completed", 0.0))
    assert to_prune(made, 86_400.0 * 6, BackupSchedule(max_backups=10, retention_days=3)) == [
        "scheduled-2", "scheduled-1", "scheduled-0"]
    assert to_prune(made, 86_400.0 * 6, BackupSchedule(max_backups=2, retention_days=30)) == [
        "scheduled-3", "scheduled-2", "scheduled-1", "scheduled-0"]


def test_retention_never_prunes_a_base_that_a_kept_backup_needs() -> None:
    day = 86_400.0

    def made(bid: str, at: float, base: str | None = None, status: str = "completed", name: str = "") -> BackupInfo:
        return BackupInfo(bid, name or f"scheduled-{bid}", "incremental" if base else "full", status, at * day,
                          base_backup_id=base)

    chain = [made("f0", 0), made("i1", 1, "f0"), made("i5", 5, "i1")]
    rules = BackupSchedule(max_backups=10, retention_days=3)
    assert to_prune(chain, 6 * day, rules) == []  # f0 and i1 are past retention, but i5 is restored from them
    assert to_prune([*chain[:2], made("i5", 5, "i1", status="failed")], 6 * day, rules) == ["i1", "f0"]
    by_hand = [made("f0", 0), made("mine", 5, "f0", name="nightly")]  # never pruned, and keeps its base
    assert to_prune(by_hand, 6 * day, rules) == []
    assert to_prune([*chain, made("f9", 9)], 10 * day, rules) == ["i5", "i1", "f0"]  # a chain goes whole
