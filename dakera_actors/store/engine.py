"""Starting a node's storage: recover from snapshots and the WAL, then start the actors.

Recovery order: the newest valid snapshot of each shard is loaded, then every record left in
the log is applied (records a snapshot already holds are skipped by LSN). The log itself has
already cut off any torn tail when it was opened, and refused damage that valid records follow;
here a gap between a shard's snapshot and the start of the log is refused the same way. Recovery runs in a worker thread
so the HTTP facade answers /health meanwhile; the memory routes wait on the "storage" gate.
A node with a simulated disk (``node.disk``, a :class:`~dakera_actors.wal.memory.SimDisk`)
keeps its log and snapshots there and recovers on the event loop: nothing there blocks.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import attrs

from ..log import get_logger
from ..replication.tail import ShardTail, feed
from ..runtime.offload import INLINE
from ..search import make_embedder, tokenize
from ..wal.actor import WalActor, disk_call
from ..wal.log import WalRecoveryError, WriteAheadLog
from ..wal.memory import SimDisk, SnapshotStorage, WalLog
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
    log: WalLog
    store: SnapshotStorage
    snapshots: dict[int, int]
    replayed: int
    seconds: float


def open_storage(node: Node) -> tuple[WalLog, SnapshotStorage]:
    """The node's log and snapshot store: on ``node.disk`` when it has a SimDisk, else the files
    under ``node.data_dir`` (blocking then: opening the log recovers it)."""
    disk: SimDisk | None = getattr(node, "disk", None)
    if disk is not None:
        return disk.open_log(), disk.snapshot_store()
    store = SnapshotStore(node.data_dir / "snapshots")
    return WriteAheadLog.open(node.data_dir / "wal", segment_bytes=node.config.wal_segment_bytes,
                              recovery=node.config.wal_recovery), store


def _log_start(log: WalLog) -> int:
    """The first LSN the log still holds (the next one when it holds none)."""
    segments = log.segments()
    return segments[0].first_lsn if segments else log.last_lsn + 1


def recover(shards: ShardSet, log: WalLog, store: SnapshotStorage,
            tails: dict[int, ShardTail] | None = None, *, mode: str = "strict") -> Recovered:
    """Rebuild ``shards`` from the newest snapshots and the log (blocking when they are), and
    ``tails`` (the replication tails, one per shard) from the log's newest records.

    Every shard with a snapshot file needs the log from just after the snapshot it loads (0
    when none of its files is valid): a log that starts later has lost that shard's records in
    between. ``mode`` "strict" refuses to start (:class:`WalRecoveryError`); "truncate" logs each
    gap at error level, goes on, and snapshots the shard at once so the accepted gap is not
    reported again. A shard with no snapshot file at all cannot be checked: nothing says it
    ever had records before the log starts (the checkpointer only trims the log once every
    shard holding data has a snapshot).
    """
    started = time.perf_counter()
    loaded: dict[int, int] = {}
    for shard_id in sorted(store.all_latest()):
        found = store.latest(shard_id)
        if found is not None:
            lsn, image = found
            shards.load(image)
            loaded[shard_id] = lsn
    newest = max(loaded.values(), default=0)
    if log.last_lsn < newest:
        # the log is behind the snapshots: it was lost or replaced. An empty log can go on
        # from the snapshots; a log with records below them would hide writes, so stop loudly.
        if any(seg.size for seg in log.segments()):
            log.close()
            raise StorageError(f"WAL in {log.directory} ends at lsn {log.last_lsn} but snapshots reach "
                               f"lsn {newest}: the log was replaced by an older copy; restore it or "
                               f"move {store.directory} aside to start from the log alone")
        _log.warning("wal_missing_continuing_from_snapshots", snapshot_lsn=newest)
        log.start_at(newest + 1)
    start = _log_start(log)
    gaps = {sid: loaded.get(sid, 0) for sid in sorted(store.shards()) if start > loaded.get(sid, 0) + 1}
    for sid, lsn in gaps.items():
        _log.error("wal_snapshot_gap", shard=sid, snapshot_lsn=lsn, log_starts_at=start,
                   missing_lsns=f"{lsn + 1}..{start - 1}", mode=mode)
    if gaps and mode == "strict":
        log.close()
        sid, lsn = next(iter(gaps.items()))
        raise WalRecoveryError(
            f"the WAL in {log.directory} starts at lsn {start} but shard {sid} can only be rebuilt from "
            f"lsn {lsn}" + (" (its only snapshots are damaged)" if lsn == 0 else "") + ": records "
            f"{lsn + 1}..{start - 1} are missing" + (f" (and {len(gaps) - 1} more shards)" if len(gaps) > 1 else ""))
    if tails is not None:
        for shard_id, tail in tails.items():
            tail.reset(shards.shard(shard_id).position)
    replayed = 0
    # the whole log: a shard without a snapshot may need its oldest records, and the log holds
    # nothing older than the oldest snapshot anyway (see Checkpointer)
    for record in log.replay():
        if tails is not None:
            feed(tails, record, 0.0)  # before applying: a record the snapshot holds is skipped by seq
        shards.apply(record.lsn, record.shard, record.op, record.body, record.seq, record.epoch)
        replayed += 1
    for sid in gaps:  # accepted (truncate mode): a snapshot past the gap keeps it from being reported again
        shard = shards.shard(sid)
        shard.applied_lsn = max(shard.applied_lsn, start - 1)
        loaded[sid] = shard.applied_lsn
        store.write(sid, shard.applied_lsn, shards.dump(sid))
    return Recovered(log, store, loaded, replayed, time.perf_counter() - started)


async def start_storage(node: Node) -> MemoryService:
    """Recover and start the WAL, checkpointer and shard owner in the node's nursery."""
    config = node.config
    # required before the first await: /health/ready must not say 200 while the embedder loads
    node.readiness.require("storage")
    blocking = getattr(node, "disk", None) is None  # a SimDisk never blocks: no worker thread
    embedder = await disk_call(blocking, make_embedder, config.embedder)
    shards = ShardSet(config.shards, embedder.dim, tokenize)
    tails = {s: ShardTail(config.replication_tail_records) for s in range(config.shards)}
    recovered = await disk_call(blocking, lambda: recover(shards, *open_storage(node), tails,
                                                          mode=config.wal_recovery))
    report = recovered.log.recovery
    node.log.info("storage_recovered", snapshots=len(recovered.snapshots), wal_records=recovered.replayed,
                  last_lsn=recovered.log.last_lsn, wal_truncated_bytes=report.bytes_truncated,
                  wal_records_dropped=report.records_dropped,
                  seconds=round(recovered.seconds, 3), memories=sum(s.memory_count for s in shards.shards.values()))
    node.metrics.wal_replayed_records.set(recovered.replayed)
    node.metrics.registry.register(ShardCollector(shards))

    wal = WalActor(recovered.log, node.metrics)
    checkpointer = Checkpointer(recovered.store, wal, node.metrics)
    checkpointer.known(recovered.snapshots)
    owner = ShardOwner(shards, wal, checkpointer, node.metrics, wall_clock=node.wall_clock,
                       checkpoint_records=config.checkpoint_records,
                       checkpoint_interval=config.checkpoint_interval)
    for actor in (wal, checkpointer, owner):
        await node.start_actor(actor)
    service = MemoryService(shards, owner, embedder, tokenize, wall_clock=node.wall_clock, rng=node.rng,
                            offload=getattr(node, "offload", INLINE), max_text_bytes=config.max_request_text_bytes)
    service.tails = owner.tails = tails
    node.memory = service
    shard_map = getattr(node, "shard_map", None)
    if getattr(node, "endpoint", None) is not None and shard_map is not None:
        from ..peers import Peers
        from ..replication.actor import ReplicationCollector, Replicator, frame_budget

        endpoint = node.endpoint
        assert endpoint is not None and node.nursery is not None
        membership = node.membership
        peers = Peers(endpoint, lambda: membership.view.value.members if membership is not None else {},
                      self_id=node.node_id, timeout=config.request_timeout)
        replicator = Replicator(node.node_id, config, service, peers, shard_map, node.metrics, node.log,
                                node.nursery, node.offload,
                                frame_budget(endpoint.transport.max_frame_size, endpoint.codec.overhead))
        owner.hooks = replicator
        service.replication = replicator
        service.request_timeout = config.request_timeout
        node.replicator = replicator
        shard_map.replication_status = replicator.local_status
        await node.start_actor(replicator)
        assert node.nursery is not None
        node.nursery.start_soon(replicator.follow, shard_map.view)
        node.metrics.register_replication(ReplicationCollector(replicator))
    node.readiness.open("storage")
    return service
