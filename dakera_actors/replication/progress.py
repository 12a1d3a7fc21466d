"""A primary's bookkeeping of its replicas: acknowledgements, how many copies a write needs, lag."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from .tail import ShardTail


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

    def count(self, seq: int, among: Iterable[str]) -> int:
        """Copies holding ``seq``: the primary's own, and each replica in ``among`` that acknowledged it
        (only the copies the map counts: learners and copies marked down are not in ``among``)."""
        return 1 + sum(1 for m in among if (p := self.replicas.get(m)) is not None and p.acked >= seq)

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
