"""No writer hears "done" before the WAL's datasync has returned.

The data syscall of the file log (``dakera_actors.wal.log._datasync``) is replaced by a gate that
blocks until the test opens it. While a write's datasync is held, neither the WAL actor's reply
nor the HTTP 200 of ``/v1/memory/store`` may arrive; once it returns, both do. Acknowledging
without the sync (``self.log.sync()`` removed from ``WalActor._write_and_sync``), or replying
before it, makes the first event the acknowledgement and fails these tests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from dakera_actors.metrics import NodeMetrics
from dakera_actors.wal import log as wal_log
from dakera_actors.wal.actor import WalActor
from dakera_actors.wal.log import WriteAheadLog

from ..http.test_memory_api import memory_node
from ..waiting import eventually


class DatasyncGate:
    """Stands in for fdatasync once armed: records each call and holds it until opened."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.armed = False
        self.opened = threading.Event()
        self.events: list[str] = []  # appended from worker threads and the test task alike
        self._lock = threading.Lock()

    def note(self, event: str) -> None:
        with self._lock:
            self.events.append(event)

    def __call__(self, fd: int) -> None:
        if not self.armed:
            self.real(fd)
            return
        self.note("datasync")
        if not self.opened.wait(timeout=60):  # never hang the suite if the test went wrong
            raise OSError("datasync gate never opened")
        self.real(fd)
        self.note("datasync returned")


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[DatasyncGate]:
    gate = DatasyncGate(wal_log._datasync)
    monkeypatch.setattr(wal_log, "_datasync", gate)
    yield gate
    gate.opened.set()


async def hold_then_release(gate: DatasyncGate, acks: int) -> None:
    """The body both tests share: writes are in flight; check the order of events."""
    try:
        await eventually(lambda: bool(gate.events), timeout=30)
        assert gate.events[0] == "datasync", f"acknowledged before any datasync: {gate.events}"
        await trio.testing.wait_all_tasks_blocked()  # everything that could run without the disk has
        assert "ack" not in gate.events, f"acknowledged while the datasync was held: {gate.events}"
    finally:
        gate.opened.set()  # also when failing: the log's close syncs (on the event loop) on the way out
    await eventually(lambda: gate.events.count("ack") == acks, timeout=30)
    first_ack = gate.events.index("ack")
    assert "datasync returned" in gate.events[:first_ack], gate.events


async def test_the_wal_actor_replies_only_after_the_datasync_returns(tmp_path: Path, gate: DatasyncGate) -> None:
    log = WriteAheadLog.open(tmp_path / "wal")
    actor = WalActor(log, NodeMetrics())
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        gate.armed = True

        async def writer(i: int) -> None:
            records = await actor.append([(i, "put", {"k": i}, 1.0)])
            assert len(records) == 1
            gate.note("ack")

        for i in range(3):  # several writers: group commit must hold every one of them
            nursery.start_soon(writer, i)
        await hold_then_release(gate, acks=3)
        nursery.cancel_scope.cancel()


async def test_http_store_answers_only_after_the_datasync_returns(tmp_path: Path, gate: DatasyncGate) -> None:
    async with memory_node(tmp_path) as (_node, client), trio.open_nursery() as nursery:
        gate.armed = True
        answers: list[int] = []

        async def store() -> None:
            r = await client.post("/v1/memory/store", json={"agent_id": "a1", "content": "durable fact"})
            answers.append(r.status_code)
            gate.note("ack")

        nursery.start_soon(store)
        await hold_then_release(gate, acks=1)
        assert answers == [200]
