"""A shard's history as the replication protocol sees it: positions, the primary's tail, fetch decisions.

Every shard has one history, a sequence of records numbered ``seq = 1, 2, ...`` by whichever
node is its primary. Each record also carries the **epoch** it was written under: the key of
the shard map its primary had installed (``token << 32 | version``), so one (epoch, seq) pair
names one record cluster-wide: under one map a shard has one primary. A copy's **position** is
the (epoch, seq) of the last record it applied; positions compare as tuples, which is the
"who has the newer history" rule (Raft's up-to-date check).

The primary keeps the newest records of each shard in memory (:class:`ShardTail`): the very
:class:`~dakera_actors.wal.record.WalRecord` objects its log wrote, which are also what a fetch
reply carries and what the replica's log writes (one record type end to end). A replica asks for
what follows its position and :func:`decide` answers:

- ``current``: nothing to send;
- ``records``: the replica's last record is one of ours (same seq, same epoch), send what follows;
- ``snapshot``: our history is newer than the replica's and the tail does not reach back to
  it, or the replica's last record is not ours (it diverged): it gets a whole copy of the shard;
- ``wait``: the replica holds a history that is not older than ours (a returning old primary
  with writes nobody replicated): it keeps them until ours is newer, then gets a snapshot.

Nothing here does I/O or reads a clock: the caller passes ``now`` in.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from ..wal.record import WalRecord

Position = tuple[int, int]  # (epoch, seq)
Decision = Literal["current", "records", "snapshot", "wait"]


class ShardTail:
    """The newest replicated records of one shard, in memory, and the position just before them."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.entries: deque[WalRecord] = deque()
        self._at: deque[float] = deque()  # when each entry was committed here (lag is measured from it)
        self.base: Position = (0, 0)  # position before entries[0]: (0, 0) is the empty history

    @property
    def last(self) -> Position:
        return (self.entries[-1].epoch, self.entries[-1].seq) if self.entries else self.base

    def reset(self, position: Position) -> None:
        """Forget the entries: the history now ends at ``position`` (an install or a snapshot)."""
        self.entries.clear()
        self._at.clear()
        self.base = position

    def append(self, record: WalRecord, at: float) -> None:
        """Keep ``record`` (committed here at local time ``at``) as the newest of the history."""
        if record.seq <= self.last[1]:
            return  # already here (a replayed record)
        if record.seq != self.last[1] + 1:
            self.reset((-1, record.seq - 1))  # a gap: the record before it is unknown (-1 matches nothing)
        self.entries.append(record)
        self._at.append(at)
        while len(self.entries) > self.limit:
            dropped = self.entries.popleft()
            self._at.popleft()
            self.base = (dropped.epoch, dropped.seq)

    def epoch_at(self, seq: int) -> int | None:
        """The epoch of our record ``seq``, or None when the tail does not reach it."""
        if seq == self.base[1]:
            return self.base[0]
        first = self.base[1] + 1
        if first <= seq < first + len(self.entries):
            return self.entries[seq - first].epoch
        return None

    def after(self, seq: int, *, max_records: int) -> list[WalRecord]:
        """Up to ``max_records`` of our records that follow ``seq``, in order."""
        first = self.base[1] + 1
        start = max(0, seq + 1 - first)
        return [self.entries[i] for i in range(start, min(len(self.entries), start + max_records))]

    def committed_at(self, seq: int) -> float | None:
        first = self.base[1] + 1
        if first <= seq < first + len(self.entries):
            return self._at[seq - first]
        return None


def feed(tails: dict[int, ShardTail], record: WalRecord, now: float) -> None:
    """Keep ``tails`` in step with one committed (or replayed) WAL record."""
    tail = tails.get(record.shard)
    if tail is None:
        return
    if record.op == "reset":
        tail.reset((0, 0))
    elif record.op == "mark":
        tail.reset((int(record.body["epoch"]), int(record.body["seq"])))
    elif record.seq:
        tail.append(record, now)


def decide(tail: ShardTail, replica: Position) -> Decision:
    """What a replica at ``replica`` gets from a primary holding ``tail`` (see the module docstring)."""
    ours = tail.last
    if replica == ours:
        return "current"
    if replica[1] < ours[1] and tail.epoch_at(replica[1]) == replica[0]:
        return "records"
    if ours > replica:
        return "snapshot"
    return "wait"


def is_prefix(tail: ShardTail, replica: Position) -> bool:
    """True when ``replica`` is a position in our history: an acknowledgement we may count."""
    return replica[1] <= tail.last[1] and tail.epoch_at(replica[1]) == replica[0]


def replaces(copy: Position, own: Position) -> bool:
    """Does a whole copy of a shard at ``copy`` replace ours at ``own``? Only a newer history does:
    a copy never discards a history for an older one (it may hold acknowledged writes)."""
    return copy > own
