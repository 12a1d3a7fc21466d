"""The simulated disk: MemoryLog behaves like the file log, a crash loses only unsynced records,
and the real storage stack recovers every acknowledged memory from it without a worker thread."""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from dakera_actors.config import Config
from dakera_actors.log import get_logger
from dakera_actors.metrics import NodeMetrics
from dakera_actors.runtime import Actor
from dakera_actors.runtime.offload import INLINE
from dakera_actors.runtime.readiness import Readiness
from dakera_actors.store.engine import start_storage
from dakera_actors.store.service import MemoryService
from dakera_actors.wal import SnapshotStore, WalFailedError, WalRecord, WriteAheadLog, encode_record
from dakera_actors.wal.actor import WalActor
from dakera_actors.wal.memory import MemoryLog, MemorySnapshotStore, SimDisk, SimDiskCrashedError
from dakera_actors.wal.statefile import StateFile

PER_SEGMENT = 4
Log = WriteAheadLog | MemoryLog


def entry(i: int) -> tuple[int, str, Any, float]:
    # every field fixed-size while lsn < 128: each frame has the same length, so a file segment
    # of PER_SEGMENT frames holds exactly the records of one MemoryLog segment
    return (i % 4, "put", {"k": f"key-{i:03d}", "n": i % 100}, 1000.0 + i)


FRAME = len(encode_record(WalRecord(1, *entry(0))))


def test_frames_have_one_size_below_lsn_128() -> None:
    assert {len(encode_record(WalRecord(lsn, *entry(lsn)))) for lsn in range(1, 128)} == {FRAME}


def log_opener(kind: str, directory: Path) -> Callable[[], Log]:
    """Opens the same log again each call (a reopen is a process restart, not a crash)."""
    if kind == "file":
        return lambda: WriteAheadLog.open(directory, segment_bytes=PER_SEGMENT * FRAME)
    disk = SimDisk("t", segment_records=PER_SEGMENT)
    return disk.open_log


def shape(log: Log) -> list[tuple[int, int, int]]:
    return [(s.first_lsn, s.last_lsn, s.size) for s in log.segments()]


@pytest.fixture(params=["file", "memory"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Log]:
    return log_opener(request.param, tmp_path / "wal")


# -- MemoryLog behaves like WriteAheadLog -------------------------------------------------------


def test_append_sync_replay_truncate_and_reopen(reopen: Callable[[], Log]) -> None:
    log = reopen()
    assert log.last_lsn == 0 and list(log.replay()) == [] and log.segments() == [] and log.append([]) == []
    written: list[WalRecord] = []
    for start in range(0, 30, 3):
        written += log.append([entry(i) for i in range(start, start + 3)])
    log.sync()
    assert [r.lsn for r in written] == list(range(1, 31)) and log.last_lsn == 30
    assert list(log.replay()) == written and list(log.replay(after_lsn=13)) == written[13:]
    assert shape(log) == [(f, min(f + 3, 30), (min(f + 3, 30) - f + 1) * FRAME) for f in range(1, 31, 4)]
    assert log.sealed_segments() == log.segments()[:-1]

    assert log.truncate_before(1) == 0 and log.truncate_before(8) == 1  # 5..8 is still needed
    assert log.truncate_before(9) == 1 and shape(log)[0] == (9, 12, 4 * FRAME)
    assert list(log.replay()) == written[8:]
    assert log.truncate_before(10**6) == 5 and shape(log) == [(29, 30, 2 * FRAME)]  # never the active one
    log.close()
    log.close()  # idempotent
    with pytest.raises(WalFailedError):
        log.append([entry(0)])

    log = reopen()
    assert log.recovery.clean and log.recovery.records_recovered == 2 and log.last_lsn == 30
    assert list(log.replay()) == written[28:]
    with pytest.raises(ValueError):
        log.start_at(100)
    assert [r.lsn for r in log.append([entry(31), entry(32), entry(33)])] == [31, 32, 33]
    assert shape(log) == [(29, 32, 4 * FRAME), (33, 33, FRAME)]
    log.close()


def test_start_at_continues_an_empty_log(reopen: Callable[[], Log]) -> None:
    log = reopen()
    log.start_at(1)  # not beyond the log: nothing to do
    assert log.segments() == []
    log.start_at(50)
    assert log.last_lsn == 49 and shape(log) == [(50, 49, 0)] and log.sealed_segments() == []
    log.close()
    log = reopen()
    assert log.last_lsn == 49 and shape(log) == [(50, 49, 0)]
    records = log.append([entry(i) for i in range(6)])
    log.sync()
    assert [r.lsn for r in records] == list(range(50, 56))
    assert shape(log) == [(50, 53, 4 * FRAME), (54, 55, 2 * FRAME)]
    assert log.truncate_before(54) == 1 and list(log.replay()) == records[4:]
    log.close()


@pytest.mark.parametrize("bad", [object(), {(1, 2): "tuple key"}, "lone \ud800 surrogate"])
def test_a_body_that_does_not_encode_changes_nothing(reopen: Callable[[], Log], bad: Any) -> None:
    log = reopen()
    written = log.append([entry(0)])
    with pytest.raises((TypeError, ValueError)):
        log.append([entry(1), (0, "put", bad, 1.0)])
    assert log.last_lsn == 1 and list(log.replay()) == written and shape(log) == [(1, 1, FRAME)]
    assert log.append([entry(1)])[0].lsn == 2
    log.close()


def test_a_body_changed_after_the_append_does_not_change_the_log(reopen: Callable[[], Log]) -> None:
    log = reopen()
    body: dict[str, Any] = {"tags": ["a"]}
    log.append([(0, "put", body, 1.0)])
    body["tags"].append("b")
    body["new"] = 1
    assert [r.body for r in log.replay()] == [{"tags": ["a"]}]
    log.close()


@settings(max_examples=40)
@given(ops=st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 130)),
    st.tuples(st.just("replay"), st.integers(0, 130)),
    st.tuples(st.just("reopen"), st.just(0)),
), max_size=25))
def test_same_answers_as_the_file_log_for_any_sequence(ops: list[tuple[str, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        opens = [log_opener("file", Path(tmp)), log_opener("memory", Path(tmp))]
        logs = [opener() for opener in opens]
        n = 0
        for op, arg in ops:
            answers: list[Any] = []
            for k, log in enumerate(logs):
                if op == "append":
                    arg = min(arg, 120 - n)  # keep lsn < 128: fixed-size frames
                    answers.append([r.lsn for r in log.append([entry(n + i) for i in range(arg)])])
                    log.sync()
                elif op == "truncate":
                    answers.append(log.truncate_before(arg))
                elif op == "replay":
                    answers.append(list(log.replay(after_lsn=arg)))
                else:
                    log.close()
                    logs[k] = log = opens[k]()
                answers.append((log.last_lsn, shape(log)))
            if op == "append":
                n += arg
            assert answers[: len(answers) // 2] == answers[len(answers) // 2 :], op
        for log in logs:
            log.close()


# -- crashes ------------------------------------------------------------------------------------


def test_a_crash_loses_unsynced_records_only() -> None:
    disk = SimDisk("n", segment_records=PER_SEGMENT)
    log = disk.open_log()
    synced = log.append([entry(i) for i in range(6)])
    log.sync()
    log.append([entry(6), entry(7)])  # not synced
    assert disk.synced_lsn == 6
    disk.crash()
    with pytest.raises(WalFailedError):  # the old process is gone: its log must not write on
        log.append([entry(8)])
    log.close()  # a no-op now: nothing it held is synced by it

    log = disk.open_log()
    assert log.last_lsn == 6 and list(log.replay()) == synced and log.recovery.clean
    assert [r.lsn for r in log.append([entry(6)])] == [7]  # the lost LSNs are given out again
    log.sync()
    disk.crash()
    log = disk.open_log()
    assert log.last_lsn == 7 and disk.crashes == 2


def test_truncation_is_durable_and_start_at_survives_a_crash() -> None:
    disk = SimDisk("n", segment_records=PER_SEGMENT)
    log = disk.open_log()
    log.append([entry(i) for i in range(10)])
    log.sync()
    assert log.truncate_before(9) == 2
    disk.crash()
    assert [r.lsn for r in disk.open_log().replay()] == [9, 10]

    fresh = SimDisk("m")
    log = fresh.open_log()
    log.start_at(40)
    log.append([entry(0)])  # lost: only the empty segment at 40 was durable
    fresh.crash()
    log = fresh.open_log()
    assert log.last_lsn == 39 and shape(log) == [(40, 39, 0)]


def test_opening_the_log_again_retires_the_older_handle() -> None:
    disk = SimDisk()
    old = disk.open_log()
    disk.open_log()
    with pytest.raises(WalFailedError):
        old.sync()


# -- snapshots ----------------------------------------------------------------------------------


@pytest.fixture(params=["file", "memory"])
def snapshots(request: pytest.FixtureRequest, tmp_path: Path) -> SnapshotStore | MemorySnapshotStore:
    return SnapshotStore(tmp_path / "snap") if request.param == "file" else SimDisk().snapshot_store()


def test_snapshots_round_trip_and_prune(snapshots: SnapshotStore | MemorySnapshotStore) -> None:
    assert snapshots.latest(3) is None and snapshots.latest_lsn(3) is None and snapshots.all_latest() == {}
    state: dict[str, Any] = {"shard": 3, "memories": [{"id": "a", "v": b"\x00\x01"}], "t": (1, 2)}
    for lsn in (10, 20, 30):
        snapshots.write(3, lsn, state)
    state["memories"].append("changed after the write")
    found: Any = snapshots.latest(3)
    assert found == (30, {"shard": 3, "memories": [{"id": "a", "v": b"\x00\x01"}], "t": [1, 2]})
    found[1]["memories"].clear()  # a copy: the stored one is untouched
    assert snapshots.latest(3) == (30, {"shard": 3, "memories": [{"id": "a", "v": b"\x00\x01"}], "t": [1, 2]})
    snapshots.write(5, 7, {"shard": 5})
    assert snapshots.all_latest() == {3: 30, 5: 7}
    with pytest.raises(ValueError):
        snapshots.prune(3, keep=0)
    assert snapshots.prune(3, keep=2) == 1 and snapshots.prune(3, keep=2) == 0
    assert snapshots.latest_lsn(3) == 30 and snapshots.prune(3, keep=1) == 1


@pytest.mark.parametrize("bad", [object(), {(1, 2): "tuple key"}])
def test_a_state_that_does_not_encode_is_refused(snapshots: SnapshotStore | MemorySnapshotStore,
                                                 bad: Any) -> None:
    snapshots.write(1, 5, {"ok": 1})
    with pytest.raises((TypeError, ValueError)):
        snapshots.write(1, 9, {"bad": bad})
    with pytest.raises(ValueError):
        snapshots.write(-1, 9, {})
    assert snapshots.all_latest() == {1: 5} and snapshots.latest(1) == (5, {"ok": 1})


def test_snapshots_survive_a_crash() -> None:
    disk = SimDisk()
    disk.snapshot_store().write(2, 11, {"x": [1, 2]})
    disk.crash()
    assert disk.snapshot_store().latest(2) == (11, {"x": [1, 2]})


# -- the real storage stack on a SimDisk --------------------------------------------------------


class FakeNode:
    """What a node hands start_storage, with the actors in a test's nursery."""

    def __init__(self, disk: SimDisk, nursery: trio.Nursery, config: Config) -> None:
        self.disk = disk
        self.config = config
        self.data_dir = Path("/nonexistent/must-not-be-used")
        self.readiness = Readiness()
        self.log = get_logger("tests.simdisk")
        self.metrics = NodeMetrics()
        self.wall_clock: Callable[[], float] = lambda: 1_700_000_000.0 + trio.current_time()
        self.rng = random.Random(7)
        self.memory: MemoryService | None = None
        self.actors: list[Actor] = []
        self._nursery = nursery

    async def start_actor(self, actor: Actor) -> None:
        self.actors.append(actor)
        await self._nursery.start(actor.run)

    async def start_storage(self) -> None:
        """What the node does: recover and start the store behind the "storage" gate."""
        self.readiness.require("storage")
        self.memory = await start_storage(self.config, data_dir=self.data_dir, disk=self.disk, metrics=self.metrics,
                                          log=self.log, wall_clock=self.wall_clock, rng=self.rng, offload=INLINE,
                                          start_actor=self.start_actor)
        self.readiness.open("storage")


@pytest.fixture
def no_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    async def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a worker thread was used with a SimDisk")

    monkeypatch.setattr(trio.to_thread, "run_sync", refuse)
    yield


async def test_every_acknowledged_memory_survives_a_crash(autojump_clock: trio.testing.MockClock,
                                                          no_threads: None) -> None:
    config = Config(shards=4, checkpoint_records=6, checkpoint_interval=30.0)
    disk = SimDisk("n1", segment_records=4)
    acked: dict[str, tuple[str, str]] = {}

    async def writer(node: FakeNode, w: int) -> None:
        assert node.memory is not None
        i = 0
        while True:
            agent, content = f"agent-{(w + i) % 3}", f"writer {w} memory {i}"
            out = await node.memory.store({"agent_id": agent, "content": content})
            acked[out["memory"]["id"]] = (agent, content)
            i += 1
            await trio.sleep(0.01 * (w + 1))

    for life in range(3):
        async with trio.open_nursery() as nursery:
            node = FakeNode(disk, nursery, config)
            await node.start_storage()
            assert node.readiness.ready and node.memory is not None
            for memory_id, (agent, content) in acked.items():
                assert node.memory.get(agent, memory_id)["content"] == content
            for w in range(4):
                nursery.start_soon(writer, node, w)
            await trio.sleep(0.5 + life)  # let checkpoints and purges run on the mock clock
            for _ in range(7 * life + 3):  # stop in the middle of group commits
                await trio.lowlevel.checkpoint()
            disk.crash()  # power goes first: the cancellation below must not be able to sync
            nursery.cancel_scope.cancel()
        assert len(acked) > 20 * (life + 1)

    async with trio.open_nursery() as nursery:
        node = FakeNode(disk, nursery, config)
        await node.start_storage()
        assert node.memory is not None
        for memory_id, (agent, content) in acked.items():
            assert node.memory.get(agent, memory_id)["content"] == content
        assert disk.snapshot_store().all_latest()  # the checkpointer ran
        wal = node.actors[0]
        assert isinstance(wal, WalActor) and wal.log.segments()[0].first_lsn > 1  # and the WAL was truncated behind it
        nursery.cancel_scope.cancel()


def test_a_dead_process_cannot_write_after_the_crash() -> None:
    """What a killed node's cancellation runs (on_stop closing its log, finally blocks saving
    state, a checkpointer finishing) must not reach the disk: every handle from before refuses."""
    disk = SimDisk("n")
    log, snaps, state = disk.open_log(), disk.snapshot_store(), StateFile("lease.state", None, disk)
    log.append([entry(0)])
    log.sync()
    log.append([entry(1)])  # in flight at the crash
    state.write(b"old")
    disk.crash()
    log.close()  # would have synced entry 1 before the crash was honest
    for call in (lambda: log.sync(), lambda: snaps.write(0, 9, {"x": 1}), lambda: snaps.prune(0),
                 lambda: state.write(b"new"), lambda: state.read()):
        with pytest.raises(SimDiskCrashedError):
            call()
    assert disk.synced_lsn == 1 and disk.snapshot_store().all_latest() == {}
    assert StateFile("lease.state", None, disk).read() == b"old"  # the next process's handles work
    assert disk.open_log().last_lsn == 1
