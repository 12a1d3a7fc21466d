"""The checks a replica runs on what its primary sends, before logging it."""

from __future__ import annotations

from typing import Any

import pytest

from dakera_actors.store.model import Memory, MemoryFilter, MemoryUpdate
from dakera_actors.store.records import BadRecord, check_memory, check_replicated

DIM = 8
VEC = b"\x00" * (4 * DIM)
MEM = Memory(id="m-1", agent_id="agent", content="héllo", tags=("a",), metadata={"k": [1]},
             created_at=1.0, updated_at=2.0, expires_at=10).to_record()

GOOD: list[tuple[str, Any]] = [
    ("put", {"m": MEM, "v": VEC}),
    ("patch", {"a": "agent", "id": "m-1", "set": MemoryUpdate(content="x", tags=("t",)).to_record(), "v": None,
               "ua": 3.0}),
    ("patch", {"a": "agent", "id": "m-1", "set": {}, "v": VEC, "ua": 3}),
    ("delete", {"a": "agent", "ids": ["m-1", "m-2"]}),
    ("delete_where", {"a": "agent", "f": MemoryFilter(tags=("a",), min_importance=0.2).to_record(), "now": 5.0}),
    ("purge", {"now": 5.0}),
]

BAD: list[tuple[Any, Any]] = [
    ("bogus", {}), ("reset", {}), ("load", {"memories": []}), ("mark", {"seq": 1, "epoch": 1}), (5, {}),
    ("put", {"m": MEM}), ("put", {"m": MEM, "v": b"\x00"}), ("put", {"m": {**MEM, "i": "high"}, "v": VEC}),
    ("put", {"m": {**MEM, "x": 2**64 - 1}, "v": VEC}), ("put", {"m": {**MEM, "i": float("nan")}, "v": VEC}),
    ("put", {"m": {k: v for k, v in MEM.items() if k != "c"}, "v": VEC}), ("put", []),
    ("patch", {"a": "agent", "id": "m-1", "set": {"created_at": 1}, "v": None, "ua": 3.0}),
    ("patch", {"a": "agent", "id": "m-1", "set": {"tags": "ab"}, "v": None, "ua": 3.0}),
    ("delete", {"a": "agent", "ids": [1]}), ("delete", {"a": "", "ids": []}),
    ("delete_where", {"a": "agent", "f": {"color": "red"}, "now": 1.0}),
    ("purge", {"now": "soon"}), ("purge", {}),
]


@pytest.mark.parametrize(("op", "body"), GOOD)
def test_what_a_primary_writes_passes(op: str, body: Any) -> None:
    check_replicated(op, body, DIM)


@pytest.mark.parametrize(("op", "body"), BAD)
def test_what_no_node_could_apply_is_refused(op: Any, body: Any) -> None:
    with pytest.raises(BadRecord):
        check_replicated(op, body, DIM)


def test_snapshot_parts_are_checked() -> None:
    check_memory(MEM, VEC, DIM)
    with pytest.raises(BadRecord):
        check_memory(MEM, VEC + b"\x00", DIM)
    with pytest.raises(BadRecord):
        check_memory([MEM], VEC, DIM)
