"""What a linearizable register may read, one rule for both history checkers (Trio-free).

Used by tests/sim/history.py (the whole-node cluster simulation) and tests/replication/sim.py
(the protocol simulation). A write is anything with ``start``, ``end``, ``outcome`` ("ok",
"failed", or anything else: not known) and ``value``; instants compare however the caller's do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ABSENT = "absent"


def allowed(writes: Sequence[Any], *, acked_before: Any, invoked_before: Any) -> set[Any]:
    """Values a key whose writes were ``writes`` (in order) may hold for a read that began at
    ``acked_before`` and ended at ``invoked_before``: the value of the last write acknowledged
    before the read began (absent if none), and of any later write not known to have failed
    that was invoked before the read ended."""
    kept = [op for op in writes if op.outcome != "failed"]
    last = max((i for i, op in enumerate(kept) if op.outcome == "ok" and op.end < acked_before), default=None)
    values: set[Any] = {ABSENT} if last is None else {kept[last].value}
    later = kept if last is None else kept[last + 1:]
    return values | {op.value for op in later if op.start < invoked_before}


def share_acknowledged(writes: Sequence[Any]) -> float:
    """The share of ``writes`` acknowledged ("ok"); 0 when there are none."""
    return sum(op.outcome == "ok" for op in writes) / len(writes) if writes else 0.0
