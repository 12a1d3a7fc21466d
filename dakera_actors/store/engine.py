"""Starting a node's storage: recover from snapshots and the WAL, then start the actors.

Recovery order: the newest valid snapshot of each shard is loaded, then every record left in
the log is applied (records a snapshot already holds are skipped by LSN). The log itself has
already cut off any torn or corrupt tail when it was opened. Recovery runs in a worker thread
so the HTTP facade answers /health meanwhile; the memory routes wait on the "storage" gate.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import trio

from ..log import get_logger
from ..search import make_embedder, tokenize
from ..wal.actor import WalActor
from ..wal.log import WriteAheadLog
from ..wal.snapshot import SnapshotStore
from .owner import Checkpointer, ShardCollector, ShardOwner
from .service import MemoryService
from .shard import ShardSet

if TYPE_CHECKING:
    from ..node import Node

_log = get_logger("dakera_actors.store")


class StorageError(RuntimeError):
    """The data dir is in a state the node must not guess its way out of."""


@attrs.define
class Recovered:
    log: WriteAheadLog
    snapshots: dict[int, int]
    replayed: int
    seconds: float


def recover(shards: ShardSet, data_dir: Path, *, segment_bytes: int) -> Recovered:
    """Rebuild ``shards`` from ``data_dir`` (blocking: run it in a thread)."""
    started = time.perf_counter()
    store = SnapshotStore(data_dir / "snapshots")
    loaded: dict[int, int] = {}
    for shard_id in sorted(store.all_latest()):
        found = store.latest(shard_id)
        if found is not None:
            lsn, image = found
            shards.load(image)
            loaded[shard_id] = lsn
    log = WriteAheadLog.open(data_dir / "wal", segment_bytes=segment_bytes)
    newest = max(loaded.values(), default=0)
    if log.last_lsn < newest:
        # the log is behind the snapshots: it was lost or replaced. An empty log can go on
        # from the snapshots; a log with records below them would hide writes, so stop loudly.
        if any(seg.size for seg in log.segments()):
            log.close()
            raise StorageError(f"WAL in {data_dir / 'wal'} ends at lsn {log.last_lsn} but snapshots reach "
                               f"lsn {newest}: the log was replaced by an older copy; restore it or "
                               f"move {data_dir / 'snapshots'} aside to start from the log alone")
        _log.warning("wal_missing_continuing_from_snapshots", snapshot_lsn=newest)
        log.start_at(newest + 1)
    replayed = 0
    # the whole log: a shard without a snapshot may need its oldest records, and the log holds
    # nothing older than the oldest snapshot anyway (see Checkpointer)
    for record in log.replay():
        shards.apply(record.lsn, record.shard, record.op, record.body)
        replayed += 1
    return Recovered(log, loaded, replayed, time.perf_counter() - started)


async def start_storage(node: Node) -> MemoryService:
    """Recover and start the WAL, checkpointer and shard owner in the node's nursery."""
    config = node.config
    embedder = await trio.to_thread.run_sync(make_embedder, config.embedder)
    shards = ShardSet(config.shards, embedder.dim, tokenize)
    node.readiness.require("storage")
    recovered = await trio.to_thread.run_sync(
        lambda: recover(shards, node.data_dir, segment_bytes=config.wal_segment_bytes))
    report = recovered.log.recovery
    node.log.info("storage_recovered", snapshots=len(recovered.snapshots), wal_records=recovered.replayed,
                  last_lsn=recovered.log.last_lsn, wal_truncated_bytes=report.bytes_truncated,
                  seconds=round(recovered.seconds, 3), memories=sum(s.memory_count for s in shards.shards.values()))
    node.metrics.wal_replayed_records.set(recovered.replayed)
    node.metrics.registry.register(ShardCollector(shards))

    wal = WalActor(recovered.log, node.metrics)
    checkpointer = Checkpointer(SnapshotStore(node.data_dir / "snapshots"), wal, node.metrics)
    checkpointer.known(recovered.snapshots)
    owner = ShardOwner(shards, wal, checkpointer, node.metrics, wall_clock=node.wall_clock,
                       checkpoint_records=config.checkpoint_records,
                       checkpoint_interval=config.checkpoint_interval)
    for actor in (wal, checkpointer, owner):
        await node.start_actor(actor)
    service = MemoryService(shards, owner, embedder, tokenize, wall_clock=node.wall_clock, rng=node.rng)
    node.memory = service
    node.readiness.open("storage")
    return service
