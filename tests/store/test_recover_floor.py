"""Recovery replays the log only after the floor the newest checkpoint proves, and rebuilds exactly the
state a replay of the whole log gives; without that proof it replays everything."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from dakera_actors.search import HashingEmbedder, tokenize
from dakera_actors.store.engine import recover
from dakera_actors.store.model import Memory
from dakera_actors.store.shard import ShardSet, replay_floor, shard_of, snapshot_image
from dakera_actors.store.tail import ShardTail
from dakera_actors.wal.log import WriteAheadLog
from dakera_actors.wal.snapshot import SnapshotStore

EMB = HashingEmbedder(dim=16)
SHARDS = 8


def entries(agents: list[str], n: int, seed: int, t0: int = 0) -> list[tuple[int, str, Any, float, int, int]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        agent = rng.choice(agents)
        content = f"note {rng.randrange(50)} about {rng.choice(['tea', 'trains', 'tax'])}"
        m = Memory(id=f"m{rng.randrange(n)}", agent_id=agent, content=content, created_at=float(t0 + i),
                   updated_at=float(t0 + i))
        out.append((shard_of(agent, SHARDS), "put", {"m": m.to_record(), "v": EMB.embed([content])[0].tobytes()},
                    float(t0 + i)))
    return out


def log_and_apply(wal: WriteAheadLog, shards: ShardSet, batch: list[Any]) -> None:
    """Logged as a primary logs them: each with its shard's next replication seq (epoch 1)."""
    seqs: dict[int, int] = {}
    numbered = []
    for shard, op, body, ts in batch:
        seqs[shard] = seqs.get(shard, shards.shard(shard).seq) + 1
        numbered.append((shard, op, body, ts, seqs[shard], 1))
    for r in wal.append(numbered):
        shards.apply(r.lsn, r.shard, r.op, r.body, r.seq, r.epoch)
    wal.sync()


def checkpoint(shards: ShardSet, store: SnapshotStore, only: list[int] | None = None) -> int:
    """What ShardOwner._checkpoint and the Checkpointer write: every live shard under the checkpoint LSN."""
    live = sorted(s.id for s in shards.shards.values() if s.applied_lsn)
    at = max(shards.shard(s).applied_lsn for s in live)
    for sid in live if only is None else only:
        frozen = attrs.evolve(shards.freeze(sid, terms=True), at=at, live=tuple(live))
        store.write(sid, frozen.file_lsn, snapshot_image(frozen))
    return at


def state(s: ShardSet) -> dict[str, Any]:
    return {a: sorted((m.id, m.content, m.created_at) for m in data.memories.values())
            for sh in s.shards.values() for a, data in sh.agents.items()}


def recovered(d: Path) -> tuple[ShardSet, Any, dict[int, ShardTail]]:
    shards = ShardSet(SHARDS, EMB.dim, tokenize)
    tails = {s: ShardTail(64) for s in range(SHARDS)}
    wal = WriteAheadLog.open(d / "wal", segment_bytes=4096)
    result = recover(shards, wal, SnapshotStore(d / "snapshots"), tails)
    wal.close()
    return shards, result, tails


def build(d: Path, *, only: list[int] | None = None) -> tuple[ShardSet, int]:
    """Agents a..d, a checkpoint, then more writes, including agent z's first ones."""
    wal = WriteAheadLog.open(d / "wal", segment_bytes=4096)
    store = SnapshotStore(d / "snapshots")
    shards = ShardSet(SHARDS, EMB.dim, tokenize)
    log_and_apply(wal, shards, entries(list("abcd"), 300, 1))
    at = checkpoint(shards, store, only)
    log_and_apply(wal, shards, entries(["a", "z"], 40, 2, t0=1000))
    wal.close()
    return shards, at


def test_a_checkpoint_lets_recovery_skip_what_it_holds(tmp_path: Path) -> None:
    live, at = build(tmp_path)
    shards, result, _ = recovered(tmp_path)
    assert result.replay_floor == at and result.replayed == 40  # only the records after the checkpoint
    assert state(shards) == state(live)
    assert {s.id: (s.applied_lsn, s.seq) for s in shards.shards.values() if s.applied_lsn} == \
           {s.id: (s.applied_lsn, s.seq) for s in live.shards.values() if s.applied_lsn}


def test_a_checkpoint_cut_short_replays_the_whole_log(tmp_path: Path) -> None:
    """A crash after some of a checkpoint's snapshots: a live shard without one needs its oldest records."""
    live_shards = sorted({shard_of(a, SHARDS) for a in "abcd"})
    live, _ = build(tmp_path, only=live_shards[:1])
    shards, result, _ = recovered(tmp_path)
    assert result.replay_floor == 0 and result.replayed == 340
    assert state(shards) == state(live)


def test_a_damaged_newest_snapshot_lowers_the_floor_to_the_older_one(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path / "wal", segment_bytes=4096)
    store = SnapshotStore(tmp_path / "snapshots")
    live = ShardSet(SHARDS, EMB.dim, tokenize)
    log_and_apply(wal, live, entries(list("abcd"), 200, 1))
    first = checkpoint(live, store)
    log_and_apply(wal, live, entries(list("abcd"), 100, 3, t0=500))
    second = checkpoint(live, store)
    log_and_apply(wal, live, entries(list("ab"), 10, 4, t0=900))
    wal.close()
    victim = shard_of("c", SHARDS)
    newest = store.files(victim)[-1]
    assert newest.lsn == second
    raw = bytearray(newest.path.read_bytes())
    raw[-5] ^= 0xFF
    newest.path.write_bytes(bytes(raw))
    shards, result, _ = recovered(tmp_path)
    assert result.replay_floor == first
    assert state(shards) == state(live)


def test_images_without_the_live_list_give_no_floor() -> None:
    assert replay_floor({0: (50, {"v": 1}), 1: (60, {"v": 2})}) == 0
    assert replay_floor({0: (50, {"live": [0, 1]}), 1: (60, {"live": [0, 1]})}) == 50
    assert replay_floor({0: (50, {"live": [0, 1]}), 1: (60, {"live": [0, 1, 2]})}) == 0  # 2 has none
    assert replay_floor({0: (70, {"live": [0]}), 1: (60, {"live": [0, 1]})}) == 70  # the newest checkpoint


def test_recovery_with_the_floor_equals_recovery_replaying_everything(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards, positions and replication tails: skipping the records below the floor changes nothing."""
    build(tmp_path)
    shards, result, tails = recovered(tmp_path)
    from dakera_actors.store import engine

    monkeypatch.setattr(engine, "replay_floor", lambda _checkpoints: 0)
    whole, whole_result, whole_tails = recovered(tmp_path)
    assert result.replay_floor > 0 and whole_result.replay_floor == 0 and whole_result.replayed > result.replayed
    assert state(shards) == state(whole)
    assert {s.id: (s.applied_lsn, s.seq, s.epoch) for s in shards.shards.values()} == \
           {s.id: (s.applied_lsn, s.seq, s.epoch) for s in whole.shards.values()}
    assert any(t.entries for t in tails.values())
    assert {s: (t.base, list(t.entries)) for s, t in tails.items()} == \
           {s: (t.base, list(t.entries)) for s, t in whole_tails.items()}


# -- a node: checkpoints under one LSN, idle shards snapshotted again -----------------------------


async def test_an_idle_shard_is_snapshotted_again_so_it_does_not_pin_the_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import httpx

    from dakera_actors.config import Config
    from dakera_actors.node import open_node

    from ..waiting import eventually

    caplog.set_level(logging.INFO, logger="dakera_actors.store")
    shards = 4
    idle, busy = "idle-agent", next(f"busy-{i}" for i in range(100)
                                    if shard_of(f"busy-{i}", shards) != shard_of("idle-agent", shards))
    cfg = Config(data_dir=tmp_path, node_id="node-i", shards=shards, checkpoint_records=50,
                 wal_segment_bytes=64 * 1024)

    async def stored(client: httpx.AsyncClient, agent: str) -> int:
        return len((await client.get(f"/v1/agents/{agent}/memories", params={"limit": 1000})).json())

    async with open_node(cfg, serve_http=False) as n:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=n.app), base_url="http://n") as client:
            for i in range(5):
                assert (await client.post("/v1/memory/store", json={"agent_id": idle, "content": f"idle {i}"})).status_code == 200
            for i in range(400):
                r = await client.post("/v1/memory/store", json={"agent_id": busy, "content": f"busy {i} " + "x" * 2000})
                assert r.status_code == 200, r.text
            await eventually(lambda: [r.getMessage() for r in caplog.records].count("checkpoint_done") >= 8)
    files = SnapshotStore(tmp_path / "snapshots").files(shard_of(idle, shards))
    assert files and files[0].lsn > 100  # stored again under later checkpoints' LSNs, not only the first
    first_segment = int(min((tmp_path / "wal").glob("*.wal")).name[:20])
    assert first_segment > 100  # so the idle shard's records no longer keep the log from being trimmed
    caplog.clear()
    caplog.set_level(logging.INFO)
    async with open_node(cfg, serve_http=False) as n:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=n.app), base_url="http://n") as client:
            assert await stored(client, idle) == 5 and await stored(client, busy) == 400
    [line] = [r for r in caplog.records if r.getMessage() == "storage_recovered"]
    assert vars(line)["replayed_after_lsn"] > 0


async def test_a_checkpoint_at_a_clean_stop_leaves_nothing_to_replay(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import httpx

    from dakera_actors.config import Config
    from dakera_actors.node import open_node

    cfg = Config(data_dir=tmp_path, node_id="node-c", shards=4, checkpoint_records=10_000)
    caplog.set_level(logging.INFO)

    def recovered_line() -> dict[str, Any]:
        [line] = [vars(r) for r in caplog.records if r.getMessage() == "storage_recovered"]
        return line

    async def run(writes: int, *, kill: bool = False) -> int:
        caplog.clear()
        total = 0
        with trio.CancelScope() as scope:
            async with open_node(cfg, serve_http=False) as n:
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=n.app), base_url="http://n") as client:
                    for i in range(writes):
                        r = await client.post("/v1/memory/store", json={"agent_id": f"a{i % 5}", "content": f"fact {i}"})
                        assert r.status_code == 200, r.text
                    for k in range(5):
                        total += len((await client.get(f"/v1/agents/a{k}/memories", params={"limit": 1000})).json())
                if kill:
                    scope.cancel()  # the node unwinds cancelled, as a killed one: no clean-stop checkpoint
                    await trio.lowlevel.checkpoint()
        return total

    await run(30, kill=True)
    assert await run(0) == 30
    assert recovered_line()["wal_records"] == 30  # killed: the log is replayed
    assert await run(20) == 50
    assert recovered_line()["wal_records"] == 0  # the clean stop before checkpointed: nothing to replay
    assert await run(0) == 50
    assert recovered_line()["wal_records"] == 0
