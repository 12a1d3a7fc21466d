"""What the chaos workload's clients did: every operation with its invocation and completion times.

An :class:`Op` is one client call, recorded in two steps (``History.invoke`` when the request is
about to be sent, ``History.complete`` when the answer, error or timeout arrived), so the checker
knows which operations overlapped. Outcomes follow Jepsen's three: ``ok`` (acknowledged, or a read
that answered), ``fail`` (definitely not done: refused before any work) and ``info`` (unknown: a
timeout, a connection cut mid-request, a 5xx, a 503 that does not say nothing was done). A history
is written as JSON lines so that a failed run can be checked again offline.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

KINDS = ("store", "forget", "read")
OUTCOMES = ("ok", "fail", "info")
#: the completion time of an operation whose answer never arrived (its thread was stopped)
NEVER = math.inf


@attrs.frozen
class Op:
    """One client operation. ``value``: a store's unique content, a forget's memory id, None for a
    read. ``result``: a store's memory id, a read's ``[(memory id, content), ...]``, a forget's
    deleted ids (when acknowledged), else None. ``truncated``: a read that answered a full page,
    so memories may be missing from it without anything being wrong."""

    index: int
    process: int
    kind: str
    agent: str
    value: str | None
    node: str
    invoked: float
    completed: float
    outcome: str
    result: Any = None
    error: str | None = None
    truncated: bool = False

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        if self.kind == "read" and self.result is not None:
            data["result"] = [list(pair) for pair in self.result]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Op:
        result = data.get("result")
        if data["kind"] == "read" and result is not None:
            result = [(str(mid), str(content)) for mid, content in result]
        elif data["kind"] == "forget" and result is not None:
            result = list(result)
        return cls(**{**data, "result": result})

    def describe(self) -> str:
        """One line: what a failure report prints for an offending operation."""
        value = "" if self.value is None else f" {self.value}"
        if self.kind == "read" and self.outcome == "ok" and self.result is not None:
            answer = f" -> {len(self.result)} memories" + (" (a full page)" if self.truncated else "")
        elif self.kind == "store" and self.result is not None:
            answer = f" -> id {self.result}"
        else:
            answer = ""
        err = f" ({self.error})" if self.error else ""
        done = "never" if self.completed == NEVER else f"{self.completed:.3f}"
        return (f"#{self.index} p{self.process} {self.kind} {self.agent}{value} via {self.node} "
                f"[{self.invoked:.3f} .. {done}] {self.outcome}{answer}{err}")


class History:
    """Operations of every client thread, thread safe. ``invoke`` hands out the op's index; an op
    not completed by the time ``ops()`` is asked stays indeterminate (``info``, completed never)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[int, Op] = {}
        self._done: dict[int, Op] = {}
        self._next = 0
        self._pairs: dict[tuple[str, str], tuple[str, str]] = {}

    def intern(self, pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """A read's (id, content) pairs, each one the same object in every read that lists it: a
        long run lists the same memories thousands of times, and holds each pair once."""
        table = self._pairs
        return [table.setdefault(pair, pair) for pair in pairs]

    def invoke(self, process: int, kind: str, agent: str, value: str | None, node: str) -> int:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        now = self._clock()
        with self._lock:
            index = self._next
            self._next += 1
            self._pending[index] = Op(index, process, kind, agent, value, node, now, NEVER, "info")
        return index

    def complete(self, index: int, outcome: str, result: Any = None, error: str | None = None,
                 *, truncated: bool = False) -> Op:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        now = self._clock()
        with self._lock:
            op = attrs.evolve(self._pending.pop(index), completed=now, outcome=outcome, result=result,
                              error=error, truncated=truncated)
            self._done[index] = op
        return op

    def record(self, op: Op) -> None:
        """Add a whole operation (an offline history, a test's hand-built one)."""
        with self._lock:
            self._done[op.index] = op
            self._next = max(self._next, op.index + 1)

    def ops(self) -> list[Op]:
        """Every operation, completed or not, in invocation order."""
        with self._lock:
            everything = {**self._pending, **self._done}
        return [everything[i] for i in sorted(everything)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._done)

    def dump(self, path: str | Path) -> None:
        dump_ops(self.ops(), path)

    @classmethod
    def load(cls, path: str | Path) -> History:
        history = cls()
        for op in load_ops(path):
            if op.kind == "read" and op.result is not None:
                op = attrs.evolve(op, result=history.intern(op.result))
            history.record(op)
        return history


def dump_ops(ops: Iterable[Op], path: str | Path) -> None:
    """One JSON object a line (an op never completed is written with ``"completed": Infinity``)."""
    with open(path, "w", encoding="utf-8") as out:
        for op in ops:
            out.write(json.dumps(op.to_json(), separators=(",", ":")) + "\n")


def load_ops(path: str | Path) -> list[Op]:
    with open(path, encoding="utf-8") as src:
        return [Op.from_json(json.loads(line)) for line in src if line.strip()]
