"""A shard's history as the store keeps it for replication: positions and the primary's tail.

Every shard has one history, a sequence of records numbered ``seq = 1, 2, ...`` by whichever
node is its primary. Each record also carries the **epoch** it was written under: the key of
the shard map its primary had installed (``token << 32 | version``), so one (epoch, seq) pair
names one record cluster-wide: under one map a shard has one primary. A copy's **position** is
the (epoch, seq) of the last record it applied; positions compare as tuples, which is the
"who has the newer history" rule (Raft's up-to-date check).

The store keeps the newest records of each shard in memory (:class:`ShardTail`), in step with
every commit (:func:`feed`): the very :class:`~dakera_actors.wal.record.WalRecord` objects its log
wrote, which are also what a fetch reply carries and what a replica's log writes (one record type
end to end). What the replication protocol decides from a tail is in
:mod:`dakera_actors.replication.tail`. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from collections import deque

from ..wal.record import WalRecord

Position = tuple[int, int]  # (epoch, seq)


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

    def _index(self, seq: int) -> int:
        """Where record ``seq`` is (or would be) in ``entries``: out of range when the tail does not hold it."""
        return seq - self.base[1] - 1

    def epoch_at(self, seq: int) -> int | None:
        """The epoch of our record ``seq``, or None when the tail does not reach it."""
        if seq == self.base[1]:
            return self.base[0]
        i = self._index(seq)
        return self.entries[i].epoch if 0 <= i < len(self.entries) else None

    def after(self, seq: int, *, max_records: int) -> list[WalRecord]:
        """Up to ``max_records`` of our records that follow ``seq``, in order."""
        start = max(0, self._index(seq + 1))
        return [self.entries[i] for i in range(start, min(len(self.entries), start + max_records))]

    def committed_at(self, seq: int) -> float | None:
        i = self._index(seq)
        return self._at[i] if 0 <= i < len(self.entries) else None


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
