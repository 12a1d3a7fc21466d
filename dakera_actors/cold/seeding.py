"""Installing a shard from the archive: a new primary whose copies are all empty (a cluster
restarted from the bucket), a replica that needs a whole copy (seeded from the bucket so its
primary only sends the tail), a single node started on an empty disk.

The archived snapshot goes in as one install (``reset``/``load``/``mark``, logged like a copy from
a peer), then the archived records after it are logged and applied in order, so the shard ends at
the archive's position with its own WAL holding it all. Everything is checked first, like
anything a peer sends (:mod:`dakera_actors.store.records`): a bad memory refuses the whole copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import attrs

from ..log import EventLogger
from ..runtime.offload import Offload
from ..storage.objects import ObjectStore, ObjectStoreError
from ..store.owner import Install, ShardOwner, tokenize_ahead
from ..store.records import BadRecord, check_memory, check_replicated, check_session
from ..store.shard import ShardSet, record_contents
from ..store.tail import Position
from .restore import Restored, load_shard

Outcome = Literal["restored", "empty", "behind", "failed"]


@attrs.define
class SeedCounters:
    restores: int = 0
    bytes_read: int = 0


class Seeder:
    """Restores shards of this node from the archive (see the module docstring)."""

    def __init__(self, store: ObjectStore, shards: ShardSet, owner: ShardOwner, offload: Offload, log: EventLogger,
                 *, on_read: Callable[[int], None] | None = None) -> None:
        self.store = store
        self.shards = shards
        self.owner = owner
        self.offload = offload
        self.log = log
        self.counters = SeedCounters()
        self._on_read = on_read or (lambda size: None)

    async def restore(self, shard: int, *, newer_than: Position | None = None) -> Outcome:
        """Install the archive's copy of ``shard`` if it is newer than ours (and than ``newer_than``):
        "restored"; "empty" when the archive has none, "behind" when ours (or ``newer_than``) is
        as new, "failed" when the store cannot be read or the copy is refused (the caller retries
        or falls back to a peer)."""
        started = time.perf_counter()
        try:
            found = await load_shard(self.store, shard, self.offload, self.log)
        except ObjectStoreError as exc:
            self.log.warning("archive_restore_failed", shard=shard, code=exc.code or "-", error=str(exc)[:200])
            return "failed"
        if found is None:
            return "empty"
        self.counters.bytes_read += found.bytes_read
        self._on_read(found.bytes_read)
        floor = max(self.shards.shard(shard).position, newer_than or (0, 0))
        if found.position <= floor:
            return "behind"
        if not self._sound(found):
            return "failed"
        # tokenized on the offload threads, not on the event loop while the install applies
        contents = record_contents("load", {"memories": found.memories})
        contents += [c for rec in found.records for c in record_contents(rec.op, rec.body)]
        await tokenize_ahead(self.shards, self.offload, contents)
        await self.owner.install(Install(shard, found.memories, found.base[1], found.base[0], found.sessions))
        if found.records:
            await self.owner.replicate(found.records)
        self.counters.restores += 1
        self.log.info("shard_restored_from_archive", shard=shard, chain=found.chain, seq=found.position[1],
                      memories=len(found.memories), records=len(found.records), bytes=found.bytes_read,
                      seconds=round(time.perf_counter() - started, 3))
        return "restored"

    def _sound(self, found: Restored) -> bool:
        dim = self.shards.dim
        try:
            for record, vector in found.memories:
                check_memory(record, vector, dim)
            for session in found.sessions:
                check_session(session)
            for rec in found.records:
                check_replicated(rec.op, rec.body, dim)
        except BadRecord as exc:
            self.log.error("archive_copy_refused", shard=found.shard, chain=found.chain, problem=str(exc))
            return False
        return True
