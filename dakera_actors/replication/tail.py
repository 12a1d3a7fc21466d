"""A shard's history as the replication protocol sees it: positions, the primary's tail, fetch decisions.

Histories, epochs and positions are defined in :mod:`dakera_actors.store.tail`.

The primary's store keeps the newest records of each shard in memory
(:class:`~dakera_actors.store.tail.ShardTail`: one record type end to end). A replica asks for
what follows its position and :func:`decide` answers:

- ``current``: nothing to send;
- ``records``: the replica's last record is one of ours (same seq, same epoch), send what follows;
- ``snapshot``: our history is newer than the replica's and the tail does not reach back to
  it, or the replica's last record is not ours (it diverged): it gets a whole copy of the shard;
- ``wait``: the replica holds a history that is not older than ours (a returning old primary
  with writes nobody replicated): it keeps them until ours is newer, then gets a snapshot.

Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from typing import Literal

from ..store.tail import Position, ShardTail

Decision = Literal["current", "records", "snapshot", "wait"]


def decide(tail: ShardTail, replica: Position) -> Decision:
    """What a replica at ``replica`` gets from a primary holding ``tail`` (see the module docstring)."""
    ours = tail.last
    if replica == ours:
        return "current"
    if is_prefix(tail, replica):  # one of ours, and not our last: what follows it
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
