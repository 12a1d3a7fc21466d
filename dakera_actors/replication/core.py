"""The replication protocol's pure core: positions, the primary's tail, fetch decisions, acks, lag.

Every shard has one history, a sequence of records numbered ``seq = 1, 2, ...`` by whichever
node is its primary. Each record also carries the **epoch** it was written under: the key of
the shard map its primary had installed (``token << 32 | version``), so one (epoch, seq) pair
names one record cluster-wide: under one map a shard has one primary. A copy's **position** is
the (epoch, seq) of the last record it applied; positions compare as tuples, which is the
"who has the newer history" rule (Raft's up-to-date check).

The primary keeps the newest records of each shard in memory (:class:`ShardTail`). A replica
asks for what follows its position and :func:`decide` answers:

- ``current``: nothing to send;
- ``records``: the replica's last record is one of ours (same seq, same epoch), send what follows;
- ``snapshot``: our history is newer than the replica's and the tail does not reach back to
  it, or the replica's last record is not ours (it diverged): it gets a whole copy of the shard;
- ``wait``: the replica holds a history that is not older than ours (a returning old primary
  with writes nobody replicated): it keeps them until ours is newer, then gets a snapshot.

Nothing here does I/O or reads a clock: the actor passes ``now`` in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any, Literal

import attrs

Position = tuple[int, int]  # (epoch, seq)
Decision = Literal["current", "records", "snapshot", "wait"]
ACK_MODES = ("primary", "quorum", "all")




@attrs.frozen
class TailEntry:
    seq: int
    epoch: int
    op: str
    body: Any
    ts: float
    at: float  # local monotonic time it was committed here (lag is measured from it)


class ShardTail:
    """The newest replicated records of one shard, in memory, and the position just before them."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.entries: deque[TailEntry] = deque()
        self.base: Position = (0, 0)  # position before entries[0]: (0, 0) is the empty history

    @property
    def last(self) -> Position:
        return (self.entries[-1].epoch, self.entries[-1].seq) if self.entries else self.base

    def reset(self, position: Position) -> None:
        """Forget the entries: the history now ends at ``position`` (an install or a snapshot)."""
        self.entries.clear()
        self.base = position

    def append(self, entry: TailEntry) -> None:
        if entry.seq <= self.last[1]:
            return  # already here (a replayed record)
        if entry.seq != self.last[1] + 1:
            self.reset((-1, entry.seq - 1))  # a gap: the record before it is unknown (-1 matches nothing)
        self.entries.append(entry)
        while len(self.entries) > self.limit:
            dropped = self.entries.popleft()
            self.base = (dropped.epoch, dropped.seq)

    def epoch_at(self, seq: int) -> int | None:
        """The epoch of our record ``seq``, or None when the tail does not reach it."""
        if seq == self.base[1]:
            return self.base[0]
        first = self.base[1] + 1
        if first <= seq < first + len(self.entries):
            return self.entries[seq - first].epoch
        return None

    def after(self, seq: int, *, max_records: int) -> list[TailEntry]:
        first = self.base[1] + 1
        start = max(0, seq + 1 - first)
        return [self.entries[i] for i in range(start, min(len(self.entries), start + max_records))]

    def committed_at(self, seq: int) -> float | None:
        first = self.base[1] + 1
        if first <= seq < first + len(self.entries):
            return self.entries[seq - first].at
        return None


def feed(tails: dict[int, ShardTail], record: Any, now: float) -> None:
    """Keep ``tails`` in step with one committed (or replayed) WAL record."""
    tail = tails.get(record.shard)
    if tail is None:
        return
    if record.op == "reset":
        tail.reset((0, 0))
    elif record.op == "mark":
        tail.reset((int(record.body["epoch"]), int(record.body["seq"])))
    elif record.seq:
        tail.append(TailEntry(record.seq, record.epoch, record.op, record.body, record.ts, now))


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


def needed(mode: str, copies: int) -> int:
    """Copies (the primary's included) a write must be durable on before it is acknowledged."""
    if mode == "primary" or copies <= 1:
        return 1
    if mode == "quorum":
        return copies // 2 + 1
    if mode == "all":
        return copies
    raise ValueError(f"unknown write ack mode {mode!r}")


@attrs.define
class ReplicaProgress:
    """What a primary knows of one replica of one shard."""

    acked: int = 0  # highest seq the replica confirmed durable (in our history)
    seen_at: float = 0.0  # when it last fetched
    behind_since: float | None = None  # when it was first seen behind what we had, None while current


class ShardProgress:
    """A primary's view of its replicas of one shard: acknowledgements and lag."""

    def __init__(self) -> None:
        self.replicas: dict[str, ReplicaProgress] = {}

    def assign(self, replicas: Iterable[str], now: float) -> None:
        """The replicas the map names now; a new one starts behind from ``now``."""
        wanted = set(replicas)
        for gone in set(self.replicas) - wanted:
            del self.replicas[gone]
        for member in wanted - set(self.replicas):
            self.replicas[member] = ReplicaProgress(acked=0, seen_at=0.0, behind_since=now)

    def ack(self, member: str, seq: int, last: int, now: float) -> bool:
        """A fetch from ``member`` says it holds our history up to ``seq``; True if that is news."""
        progress = self.replicas.get(member)
        if progress is None:
            return False
        progress.seen_at = now
        news = seq > progress.acked
        progress.acked = max(progress.acked, seq)
        if progress.acked >= last:
            progress.behind_since = None
        elif progress.behind_since is None:
            progress.behind_since = now
        return news

    def count(self, seq: int) -> int:
        """Copies holding ``seq``, the primary's own included."""
        return 1 + sum(1 for p in self.replicas.values() if p.acked >= seq)

    def lag(self, member: str, tail: ShardTail, now: float) -> tuple[int, float]:
        """(records, seconds) the replica is behind: seconds since the oldest record it lacks."""
        progress = self.replicas[member]
        records = max(0, tail.last[1] - progress.acked)
        if records == 0:
            return 0, 0.0
        # the oldest record it lacks, if the tail still holds it; else since it was seen behind
        since = tail.committed_at(progress.acked + 1)
        if since is None:
            since = progress.behind_since if progress.behind_since is not None else now
        return records, max(0.0, now - since)
