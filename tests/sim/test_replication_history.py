"""The history checker: clients store, update and forget memories and read them through random
nodes while nodes die, come back, are cut off and lose packets, and while shards move (a node
drained by maintenance, sometimes behind slow links so that flips happen with the new copy a
little behind, sometimes with a node killed mid-move), and sometimes a primary is killed right
after it acknowledged a write. ``history.py`` records every operation and judges the history: no
acknowledged write or update lost, no forgotten memory back, no read older than a write
acknowledged before it began (reads go to the primary: read-your-writes; reads through a node cut
off by a partition are excused, a known gap pinned below as a strict xfail), replicas equal to
their primaries at the end, and a minimum share of writes acknowledged so an unavailable cluster
cannot pass.

Each schedule is seeded (the seed is in the test id, and in the failure message). The suite runs
16 per configuration; ``REPLICATION_SCHEDULES=N`` runs N of each, and ``REPLICATION_SHARES=1``
prints each schedule's share of acknowledged writes and answered reads (run pytest with ``-s``).

Failures come one at a time (quorum of three survives one; `all` with RF=3 on five nodes survives two
at a time): after each fault the clients pause until the cluster is whole again (every member in
the map, no copy marked down, replicas equal to primaries), as the guarantee "survives any single
failure" means.

The schedules once found by random seeds are written out below as explicit scenarios: seed 111
(a cut-off primary acknowledging a write by counting itself after its shard moved) and a primary
killed right after an acknowledgement. (Seed 103 was no fault of the cluster: the checker took a
503 right after the cluster was whole again for a lost write; every read now asks again after a
503, as a client would.)"""

from __future__ import annotations

import os
import random
from typing import Any

import pytest
import trio
import trio.testing

from dakera_actors.store.shard import shard_of
from dakera_actors.testing import Cluster, open_cluster

from ..waiting import eventually
from .history import Client, History, call, instant, read_final
from .test_replication import one_map, replicas_equal_primaries, settled

MockClock = trio.testing.MockClock
SCHEDULES = int(os.environ.get("REPLICATION_SCHEDULES", "6"))  # make sim-sweep: 16
# (nodes, RF, ack mode, simultaneous failures)
SETUPS = [(3, 2, "quorum", 1), (3, 2, "all", 1), (5, 3, "quorum", 1), (5, 3, "all", 2)]
CASES = [(seed, *setup) for setup in SETUPS for seed in range(1, SCHEDULES + 1)]
#: schedules that found a real bug not fixed yet: (seed, *setup) -> what goes wrong. Not strict:
#: Trio shuffles the order of tasks woken together, so a schedule does not replay exactly.
KNOWN: dict[tuple[int, int, int, str, int], str] = {
    (4, 5, 3, "quorum", 1): "a read through a node just restarted on an old stored map answered 404 for a "
                            "memory acknowledged 1.8 s before the read began (drain+kill; once in 7 runs)",
    # outside the default 16: REPLICATION_SCHEDULES=25 and more
    **{(25, 3, 2, ack, 1): "a drain with the other node killed (one live copy per shard), then a primary "
                           "killed right after an ack and restarted: acknowledged updates and forgets are "
                           "undone at the end (final reads older than acknowledged). (The map that got stuck "
                           "here, one copy of 2 refused by the leader's own check, is fixed: rebalance.step)"
       for ack in ("quorum", "all")},
}
#: a healthy schedule acknowledges most writes (92-100% over the first 48 schedules: writes
#: fail only to the shards a fault touches, for seconds); an unavailable cluster acknowledges none
MIN_ACKNOWLEDGED = 0.7
MIN_WRITES = 20


def describe(cluster: Cluster) -> str:
    """What an operator would look at when the cluster does not come back whole."""
    lines = []
    for node_id, node in cluster.nodes.items():
        smap = node.shard_map.view.value  # type: ignore[union-attr]
        rep = node.replicator
        view = node.membership.view.value.members if node.membership else {}  # type: ignore[union-attr]
        lines.append(f"{node_id}: map={smap.key if smap else None} down={smap.down if smap else None} "
                     f"members={sorted(smap.members()) if smap else None} "
                     f"ready={node.readiness.missing()} syncing={sorted(rep.syncing) if rep else None} "
                     f"view={ {m: (v.state.label, v.maintenance) for m, v in sorted(view.items())} } "
                     f"leader={node.lease.view.value.leader if node.lease else None}")  # type: ignore[union-attr]
    return "\n".join(lines)


async def whole(cluster: Cluster, history: History) -> None:
    n = len(cluster.ids)
    try:
        await eventually(lambda: settled(cluster, n) and replicas_equal_primaries(cluster), timeout=180)
    except trio.TooSlowError:
        raise AssertionError(f"not whole again after 180 s; events: {history.events}\n{describe(cluster)}") from None


class Gate:
    """Clients run while open."""

    def __init__(self) -> None:
        self._open = trio.Event()
        self._open.set()

    async def wait_open(self) -> None:
        await self._open.wait()

    def close(self) -> None:
        if self._open.is_set():
            self._open = trio.Event()

    def open(self) -> None:
        self._open.set()


async def client(cluster: Cluster, rng: random.Random, name: str, history: History, gate: Gate,
                 stop: trio.Event) -> None:
    me = Client(cluster, rng, name, history)
    while not stop.is_set():
        await gate.wait_open()
        await me.one()
        await trio.sleep(rng.uniform(0.01, 0.3))


async def chaos(cluster: Cluster, rng: random.Random, failures: int, history: History, gate: Gate) -> None:
    for _ in range(rng.randint(1, 3)):
        await trio.sleep(rng.uniform(0.5, 4.0))
        fault = rng.choice(["kill", "kill", "kill-after-ack", "partition", "lossy", "drain", "drain+kill"])
        victims = rng.sample(cluster.ids, rng.randint(1, failures))
        history.note(f"{fault} {victims}")
        if fault.startswith("drain"):
            # shards move (learners, flips) while writes go on; links into the drained node's
            # successors are sometimes slow, so flips happen with the new copy a little behind;
            # "drain+kill": a node dies while shards move (the one failure of this round)
            drained = rng.choice(cluster.ids)
            if rng.random() < 0.5:
                for other in cluster.ids:
                    if other != drained:
                        cluster.set_link_faults(drained, other, delay=(0.05, 0.2))
            r = await call(cluster, drained, "POST", "/admin/maintenance/enable", 15.0)
            history.note(f"enable on {drained}: {r and r.status_code}")
            await trio.sleep(rng.uniform(0.2, 8.0))
            dead = [v for v in victims if v != drained][:1] if fault == "drain+kill" else []
            history.note(f"drained {drained}, killing {dead}")
            for v in dead:
                cluster.kill(v)
            await trio.sleep(rng.uniform(0.2, 10.0))
            for v in dead:
                await cluster.restart(v)
            cluster.set_faults()
            cluster.heal()
            r = await call(cluster, drained, "POST", "/admin/maintenance/disable", 15.0)
            history.note(f"disable on {drained}: {r and r.status_code}")
        elif fault == "kill":
            for v in victims:
                cluster.kill(v)
            await trio.sleep(rng.uniform(0.2, 15.0))
            for v in victims:
                await cluster.restart(v)
        elif fault == "kill-after-ack":
            # the primary of the next acknowledged write dies before its replicas fetch more:
            # with quorum/all the write is on them already
            cluster.set_faults(delay=(0.05, 0.1))  # replicas' next fetch still in flight at the kill
            history.kill_after_ack = True
            await eventually(lambda: not history.kill_after_ack, timeout=30)
            cluster.set_faults()
            await trio.sleep(rng.uniform(0.2, 15.0))
            for v in cluster.ids:
                if not cluster.slot(v).running:
                    await cluster.restart(v)
        elif fault == "partition":
            cluster.partition(victims, [i for i in cluster.ids if i not in victims])
            cut_at = instant()
            await trio.sleep(rng.uniform(0.5, 12.0))
            cluster.heal()
        else:
            cluster.set_faults(drop=rng.uniform(0.05, 0.3), delay=(0.0, rng.uniform(0.01, 0.2)))
            await trio.sleep(rng.uniform(1.0, 8.0))
            cluster.set_faults()
        # one failure at a time: the next one only once the cluster is whole again
        gate.close()
        await whole(cluster, history)
        history.note("whole again")
        if fault == "partition":
            history.cut_off += [(v, cut_at, instant()) for v in victims]
        gate.open()
    await trio.sleep(rng.uniform(0.5, 3.0))  # a quiet stretch: writes on a whole cluster


def judge(history: History, final: dict[str, Any], seed: int) -> None:
    writes = history.writes()
    share = history.share_acknowledged()
    reads = [op for op in history.ops if op.kind == "read"]
    answered = sum(op.outcome == "ok" for op in reads) / len(reads) if reads else 0.0
    if os.environ.get("REPLICATION_SHARES"):
        print(f"\nseed {seed}: {len(writes)} writes, {share:.0%} acknowledged; {len(reads)} reads, "
              f"{answered:.0%} answered")
    context = f"seed {seed}; events: {history.events}"
    lost = history.check_final(final)
    assert not lost, f"{len(lost)} ids hold what they may not at the end: {lost[:5]}; {context}"
    stale = history.check_reads()
    assert not stale, f"{len(stale)} reads older than a write acknowledged before them: {stale[:5]}; {context}"
    assert len(writes) >= MIN_WRITES and share >= MIN_ACKNOWLEDGED, (
        f"{len(writes)} writes, {share:.0%} acknowledged (at least {MIN_WRITES} and {MIN_ACKNOWLEDGED:.0%} "
        f"expected of a cluster that survives these faults); {context}")


def cluster_config(rf: int, ack: str, grace: float, timeout: float = 2.0) -> dict[str, Any]:
    return {"replication_factor": rf, "write_ack": ack, "shards": 16, "request_timeout": timeout,
            "log_level": os.environ.get("REPLICATION_LOG_LEVEL", "warning"), "rereplication_grace": grace}


@pytest.mark.parametrize(("seed", "nodes", "rf", "ack", "failures"), [
    pytest.param(*case, id="{1}n-rf{2}-{3}-f{4}-seed{0}".format(*case),
                 marks=[pytest.mark.xfail(strict=False, reason=KNOWN[case])] if case in KNOWN else [])
    for case in CASES])
async def test_history_is_consistent(autojump_clock: MockClock, seed: int, nodes: int, rf: int, ack: str,
                                     failures: int) -> None:
    rng = random.Random(seed * 1000 + nodes * 10 + rf)
    config = cluster_config(rf, ack, rng.choice([3.0, 10.0, 30.0]))
    history = History()
    async with open_cluster(nodes, seed=seed, config=config) as cluster:
        await eventually(lambda: settled(cluster, nodes), timeout=60)
        stop, gate = trio.Event(), Gate()
        async with trio.open_nursery() as nursery:
            for c in range(3):
                nursery.start_soon(client, cluster, random.Random(rng.random()), f"c{c}", history, gate, stop)
            await chaos(cluster, rng, failures, history, gate)
            stop.set()
        await whole(cluster, history)
        final = await read_final(cluster, history, rng)
    judge(history, final, seed)


# -- scenarios once found by random schedules, written out as events -----------------------------


def leader_of(cluster: Cluster) -> str:
    leaders = {n.lease.view.value.leader for n in cluster.nodes.values()}  # type: ignore[union-attr]
    assert len(leaders) == 1 and None not in leaders, f"no single leader: {leaders}"
    return leaders.pop()  # type: ignore[return-value]


def agent_led_by(cluster: Cluster, primary: str) -> tuple[str, int]:
    smap = one_map(cluster)
    assert smap is not None
    agent = next(f"agent-{i}" for i in range(5000) if smap.owner(shard_of(f"agent-{i}", smap.shards)) == primary)
    return agent, shard_of(agent, smap.shards)


@pytest.mark.parametrize("ack", ["quorum", "all"])
async def test_a_cut_off_primary_never_counts_itself_once_its_shard_moved(autojump_clock: MockClock, ack: str) -> None:
    """Seed 111's schedule: a primary cut off by a partition is handed a write just as the map
    moved its shard away (the partition heals while the write waits for its replica). It must not
    acknowledge the write by counting itself as a copy: its copy is about to be replaced by the new
    primary's history."""
    history = History()
    async with open_cluster(3, seed=111, config=cluster_config(2, ack, 30.0, timeout=30.0)) as cluster:
        await eventually(lambda: settled(cluster, 3), timeout=60)
        leader = leader_of(cluster)
        cut_off = next(i for i in cluster.ids if i != leader)
        agent, shard = agent_led_by(cluster, cut_off)
        client = Client(cluster, random.Random(111), "s", history, timeout=60.0)
        await client.store(cut_off, agent)
        assert history.ops[-1].outcome == "ok"
        cluster.partition([cut_off], [i for i in cluster.ids if i != cut_off])
        history.note(f"partition {cut_off} away")
        # the majority declares it dead and promotes the replica; the cut-off node still believes
        # it is the primary
        await eventually(lambda: all(n.shard_map.view.value.owner(shard) != cut_off  # type: ignore[union-attr]
                                     for i, n in cluster.nodes.items() if i != cut_off), timeout=60)
        assert cluster.node(cut_off).shard_map.view.value.owner(shard) == cut_off  # type: ignore[union-attr]
        moved = cluster.node(leader).shard_map.view.value.key  # type: ignore[union-attr]
        history.note(f"shard moved on the majority side: map {moved}")
        # the new primary writes, so its history is newer than the old primary's
        await client.store(leader, agent)
        assert history.ops[-1].outcome == "ok", history.ops[-1]
        held = cluster.node(cut_off).memory.shards.shard(shard)  # type: ignore[union-attr]
        seq = held.seq
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.store, cut_off, agent)
            # the write is committed on the old primary and waiting for its replica...
            await eventually(lambda: held.seq > seq, timeout=10)
            assert history.ops[-1].kind == "store" and history.ops[-1].end == (0.0, 0)
            cluster.heal()  # ...when the new map reaches the old primary
            history.note("healed")
            await eventually(lambda: cluster.node(cut_off).shard_map.view.value.key >= moved, timeout=60)
            history.note("old primary learned")
        assert history.ops[-1].status is not None
        await whole(cluster, history)
        final = await read_final(cluster, history, random.Random(1))
    assert not history.check_final(final), history.check_final(final)
    assert not history.check_reads(), history.check_reads()


@pytest.mark.parametrize(("nodes", "rf", "ack"), [(3, 2, "quorum"), (3, 2, "all"), (5, 3, "quorum"), (5, 3, "all")])
async def test_a_primary_killed_right_after_it_acknowledged_loses_nothing(autojump_clock: MockClock, nodes: int,
                                                                          rf: int, ack: str) -> None:
    """The primary dies right after acknowledging a write, its links to the replicas slow so their
    next fetch is still in flight: with quorum/all the write reached enough replicas before the
    acknowledgement, and the promoted one has it. (A primary acknowledging alone loses it.)"""
    history = History()
    async with open_cluster(nodes, seed=7, config=cluster_config(rf, ack, 30.0, timeout=6.0)) as cluster:
        await eventually(lambda: settled(cluster, nodes), timeout=60)
        leader = leader_of(cluster)
        victim = next(i for i in cluster.ids if i != leader)
        agent, shard = agent_led_by(cluster, victim)
        client = Client(cluster, random.Random(7), "k", history)
        mid = await client.store(victim, agent)
        for other in cluster.ids:
            if other != victim:
                cluster.set_link_faults(victim, other, delay=(0.05, 0.1))
        history.kill_after_ack = True
        await client.update(victim, mid)
        assert history.ops[-1].outcome == "ok" and not history.kill_after_ack, history.ops[-1]
        cluster.heal()
        # the replicas promote one of theirs, which writes: its history is now the newer one
        await eventually(lambda: all(n.shard_map.view.value.owner(shard) not in (victim, None)  # type: ignore[union-attr]
                                     for n in cluster.nodes.values()), timeout=60)
        for _ in range(20):
            await client.store(leader, agent)
            if history.ops[-1].outcome == "ok":
                break
            await trio.sleep(0.5)
        await cluster.restart(victim)
        await whole(cluster, history)
        final = await read_final(cluster, history, random.Random(1))
    assert not history.check_final(final), f"{history.check_final(final)}; {history.events}"
    assert not history.check_reads(), history.check_reads()


@pytest.mark.xfail(strict=True, reason="known gap: a primary cut off from the majority keeps serving reads of "
                                       "its shards from its own copy until it learns the new map (no read lease)")
async def test_a_cut_off_primary_serves_reads_older_than_acknowledged_writes(autojump_clock: MockClock) -> None:
    """SPEC section 4: a read through any node never returns data older than a write acknowledged
    before the read began; the README: reads go to the primary (read-your-writes). A primary cut off
    by a partition still believes it is the primary and answers reads from its copy while the
    majority has promoted the replica and acknowledges updates."""
    history = History()
    async with open_cluster(3, seed=111, config=cluster_config(2, "quorum", 30.0)) as cluster:
        await eventually(lambda: settled(cluster, 3), timeout=60)
        leader = leader_of(cluster)
        cut_off = next(i for i in cluster.ids if i != leader)
        agent, shard = agent_led_by(cluster, cut_off)
        client = Client(cluster, random.Random(111), "r", history, timeout=60.0)
        mid = await client.store(cut_off, agent)
        cluster.partition([cut_off], [i for i in cluster.ids if i != cut_off])
        await eventually(lambda: all(n.shard_map.view.value.owner(shard) != cut_off  # type: ignore[union-attr]
                                     for i, n in cluster.nodes.items() if i != cut_off), timeout=60)
        for _ in range(10):
            await client.update(leader, mid)
            if history.ops[-1].outcome == "ok":
                break
            await trio.sleep(0.5)
        assert history.ops[-1].outcome == "ok", history.ops[-1]
        await client.read(cut_off, mid)
        stale = history.check_reads()
    assert not stale, stale
