"""Starting a node's storage: recover from snapshots and the WAL, then start the actors.

Recovery order: the newest valid snapshot of each shard is loaded, then every record left in
the log is applied (records a snapshot already holds are skipped by LSN). The log itself has
already cut off any torn tail when it was opened, and refused damage that valid records follow;
here a gap between a shard's snapshot and the start of the log is refused the same way. Recovery runs in a worker thread
so the HTTP facade answers /health meanwhile; the memory routes wait on the "storage" gate.
A node with a simulated disk (a :class:`~dakera_actors.wal.memory.SimDisk`)
keeps its log and snapshots there and recovers on the event loop: nothing there blocks.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs

from ..config import Config, ConfigError
from ..log import EventLogger, get_logger
from ..metrics import NodeMetrics
from ..runtime import Actor
from ..runtime.offload import Offload
from ..search import DimensionMismatch, Embedder, EmbedderUnavailable, make_embedder, tokenize
from ..wal.actor import WalActor, disk_call
from ..wal.log import WalRecoveryError, WriteAheadLog
from ..wal.memory import SimDisk, SnapshotStorage, WalLog
from ..wal.snapshot import SnapshotStore
from ..wal.statefile import StorageError
from .owner import Checkpointer, ShardCollector, ShardOwner
from .service import MemoryService
from .shard import ShardSet, replay_floor
from .tail import ShardTail, feed

__all__ = ["Recovered", "open_storage", "recover", "start_storage"]

_log = get_logger("dakera_actors.store")


@attrs.define
class Recovered:
    log: WalLog
    store: SnapshotStorage
    snapshots: dict[int, int]
    replayed: int
    seconds: float
    #: the log was replayed after this LSN (0: all of it)
    replay_floor: int = 0


def open_storage(config: Config, data_dir: Path, disk: SimDisk | None) -> tuple[WalLog, SnapshotStorage]:
    """The node's log and snapshot store: on ``disk`` when it is a SimDisk, else the files under
    ``data_dir`` (blocking then: opening the log recovers it)."""
    if disk is not None:
        return disk.open_log(), disk.snapshot_store()
    store = SnapshotStore(data_dir / "snapshots")
    return WriteAheadLog.open(data_dir / "wal", segment_bytes=config.wal_segment_bytes,
                              recovery=config.wal_recovery), store


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
    checkpoints: dict[int, tuple[int, Any]] = {}  # what replay_floor reads (not the whole images)
    for shard_id in sorted(store.all_latest()):
        found = store.latest(shard_id)
        if found is not None:
            lsn, image = found
            shards.load(image)
            loaded[shard_id] = lsn
            checkpoints[shard_id] = (lsn, {"live": image.get("live")})
            del image, found  # one image in memory at a time
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
    # from the floor the newest checkpoint proves (records at or below it change nothing); the
    # whole log without one: a shard without a snapshot may need its oldest records
    floor = replay_floor(checkpoints) if not gaps else 0
    for record in log.replay(floor):
        if tails is not None:
            feed(tails, record, 0.0)  # before applying: a record the snapshot holds is skipped by seq
        shards.apply(record.lsn, record.shard, record.op, record.body, record.seq, record.epoch)
        replayed += 1
    for sid in gaps:  # accepted (truncate mode): a snapshot past the gap keeps it from being reported again
        shard = shards.shard(sid)
        shard.applied_lsn = max(shard.applied_lsn, start - 1)
        loaded[sid] = shard.applied_lsn
        store.write(sid, shard.applied_lsn, shards.snapshot(sid))
    return Recovered(log, store, loaded, replayed, time.perf_counter() - started, floor)


def load_embedder(spec: str) -> Embedder:
    """The embedder ``DAKERA_EMBEDDER`` names; a missing model file or package (or a spec that
    cannot be built) is a :class:`ConfigError` naming the variable. Blocking: a model is read from
    disk (once per process: the WordLlama model is shared by every node in it)."""
    try:
        return make_embedder(spec)
    except (EmbedderUnavailable, ImportError, ValueError, OSError) as exc:
        raise ConfigError("DAKERA_EMBEDDER", f"cannot load {spec!r}: {exc}") from None


async def start_storage(config: Config, *, data_dir: Path, disk: SimDisk | None, metrics: NodeMetrics,
                        log: EventLogger, wall_clock: Callable[[], float], rng: random.Random,
                        offload: Offload, start_actor: Callable[[Actor], Awaitable[None]],
                        embedder: Embedder | None = None) -> MemoryService:
    """Recover and start the WAL, checkpointer and shard owner (``start_actor`` runs each in the
    node's nursery); returns the memory service over them. ``disk``: a simulated disk, else the
    files under ``data_dir``. ``embedder``: the one the node built already (else DAKERA_EMBEDDER's)."""
    blocking = disk is None  # a SimDisk never blocks: no worker thread
    if embedder is None:
        embedder = await disk_call(blocking, load_embedder, config.embedder)
    shards = ShardSet(config.shards, embedder.dim, tokenize, embedder.identity)
    tails = {s: ShardTail(config.replication_tail_records) for s in range(config.shards)}
    try:
        recovered = await disk_call(blocking, lambda: recover(shards, *open_storage(config, data_dir, disk), tails,
                                                              mode=config.wal_recovery))
    except DimensionMismatch as exc:  # stored by another embedder: refuse plainly, change nothing
        raise ConfigError("DAKERA_EMBEDDER", (
            f"the data in {data_dir} holds {exc.got:g}-dimension vectors but {config.embedder!r} makes "
            f"{exc.expected}: start with the embedder that stored them (before 'wordllama' the default "
            "was 'hashing', 384 dimensions)")) from None
    report = recovered.log.recovery
    log.info("storage_recovered", snapshots=len(recovered.snapshots), wal_records=recovered.replayed,
             replayed_after_lsn=recovered.replay_floor,
             last_lsn=recovered.log.last_lsn, wal_truncated_bytes=report.bytes_truncated,
             wal_records_dropped=report.records_dropped,
             seconds=round(recovered.seconds, 3), memories=sum(s.memory_count for s in shards.shards.values()))
    metrics.wal_replayed_records.set(recovered.replayed)
    metrics.registry.register(ShardCollector(shards))

    wal = WalActor(recovered.log, metrics)
    checkpointer = Checkpointer(recovered.store, wal, metrics)
    checkpointer.known(recovered.snapshots)
    owner = ShardOwner(shards, wal, checkpointer, metrics, tails, wall_clock=wall_clock,
                       checkpoint_records=config.checkpoint_records,
                       checkpoint_interval=config.checkpoint_interval)
    for actor in (wal, checkpointer, owner):
        await start_actor(actor)
    service = MemoryService(shards, owner, embedder, tokenize, wall_clock=wall_clock, rng=rng,
                            offload=offload, max_text_bytes=config.max_request_text_bytes,
                            session_idle_timeout=config.session_idle_timeout_secs)
    return service
