"""Backup and restore jobs: a cut of every shard into one bundle, and a bundle written back.

**A backup** asks each shard's primary for a whole copy of the shard (the replication layer's
snapshot stream: one shard at one position, taken while writes go on) and records the positions
in the manifest; all copies must come from one shard map (a map change during the cut restarts it,
a few times at most), so every part is the primary's history as of one term. Parts can be limited
to some agents (``namespaces``). The bundle (:mod:`.bundle`, sealed with ``DAKERA_BACKUP_KEY`` when
asked) goes to the backup store, then the record says ``completed``.

**A restore** opens a bundle (checked whole before anything is written: a bad one is a 400 and
changes nothing), then writes each agent's memories back through the normal write path
(``restore_agent``, routed to the agent's primary, logged, replicated, acknowledged as
``DAKERA_WRITE_ACK`` says). Applying a restore twice gives the same state. Jobs run in the
background and are tracked (:class:`~.model.RestoreInfo`, ``progress_percent``). A restore is
written in batches by a deterministic plan (:mod:`.jobs`); its record keeps the request and how
many batches are applied (``done``, saved every few batches or seconds), so a later runner
recomputes the plan and goes on from there.

**Where jobs run.** With a shared backup store (``DAKERA_BACKUP_STORAGE=s3`` in cluster mode:
every node reads the same records) backups and restores run on the leader: a node that is not
the leader forwards the request over the peer transport (:mod:`.link`), the leader starts the job
and answers its record, which the node answers the client with (no leader: 503). A raw bundle
posted to ``/backups/restore`` is first kept as an uploaded backup (like ``upload``), then
restored by id, so a later runner can read it again. The runner stamps the record with its node
id and fencing token and checks before each batch that it still leads with that token; if not it
stops ("handed over") and leaves the record as it is. The leader, when it gains the lease and
every JOBS_TICK seconds, takes over inprogress restores of older tokens (or its own that no task
runs), claiming each once per token with the store's if-absent put (two nodes that both believe
they lead never both run one), and goes on from ``done``; a restore whose source is gone (its
bundle deleted) fails, saying so. An inprogress backup of an older runner is marked failed with
the reason (nothing of it was stored: a partial backup never reads as completed).

With the default node-local store (``filesystem``) a node's backups are its own: a job runs on
the node the request arrived at, and a node restarted mid-restore goes on with its own inprogress
restores at start (and marks its unfinished backups failed), never another node's: several
nodes may share one filesystem path, but only ``s3`` makes the store the cluster's.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import trio

from ..errors import Conflict, InvalidRequest, NotFound, Unavailable
from ..log import EventLogger
from ..runtime.offload import INLINE, Offload
from ..storage.objects import ObjectNotFound, ObjectStore, ObjectStoreError
from . import jobs
from .bundle import BACKUP_TYPES, COMPRESSIONS, Bundle, BundleError, Manifest, Part, build_bundle, open_bundle
from .model import BackupInfo, RestoreInfo
from .pitr import PointOutOfReach, check_reach, parts_at
from .schedule import (
    SCHEDULED_PREFIX,
    BackupSchedule,
    ScheduleError,
    due_slot,
    next_slot,
    scheduled_base,
    to_prune,
    updated,
)
from .store import BackupStore, check_id

CUT_ATTEMPTS = 3
SCHEDULE_TICK = 5.0  # seconds between a node's looks at the schedule (and at whether it leads)
RESTORE_RETRY_FOR = 60.0  # seconds one restore write is retried while its shard is unavailable
HISTORY_LOOK = 60.0  # seconds between a node's reads of the schedule's retention (the archive's window)
JOBS_TICK = 10.0  # seconds between a leader's looks for jobs to take over
LEASE_POLL = 1.0  # seconds between looks at whether this node leads (a new lease: look for jobs at once)

#: asks the leader (a member id) to start a job: ``forward(leader, kind, request)`` answers the
#: job's record as JSON; kind is ``create`` or ``restore``
Forward = Callable[[str, str, dict[str, Any]], Awaitable[Any]]


class Cluster(Protocol):
    """What a backup job needs of the cluster: the map's key and each shard's primary, a shard's
    copy from it, and a way to run a write on an agent's primary."""

    def map_key(self) -> int: ...
    def primaries(self) -> list[str]: ...  # shard -> member id (this node's id on a single node)
    async def copy_shard(self, shard: int, member: str) -> Part: ...
    async def run(self, op: str, body: bytes) -> tuple[int, Any]: ...
    async def agents(self) -> list[str]: ...  # every agent the cluster holds now
    def archive_behind(self) -> list[str]: ...  # members whose cold-tier archive is behind



T = TypeVar("T")

async def _while_refused(attempt: Callable[[], Awaitable[tuple[bool, T]]]) -> T:
    """``attempt()`` -> (refused, value), tried again with backoff (0.2 s doubling to 5 s) while
    refused, for up to RESTORE_RETRY_FOR seconds; the last value either way."""
    deadline = trio.current_time() + RESTORE_RETRY_FOR
    pause = 0.2
    while True:
        refused, value = await attempt()
        if not refused or trio.current_time() + pause > deadline:
            return value
        await trio.sleep(pause)
        pause = min(pause * 2, 5.0)

class Backups:
    def __init__(self, *, node_id: str, store: BackupStore, cluster: Cluster, cluster_id: str, shards: int,
                 key: bytes | None, bundle_limit: int, log: EventLogger, nursery: trio.Nursery,
                 wall_clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 on_backup: Callable[[str], None] | None = None,
                 on_restore: Callable[[str], None] | None = None, offload: Offload = INLINE,
                 shared: bool = False, leading: Callable[[], int | None] = lambda: 0,
                 leader: Callable[[], str | None] | None = None, forward: Forward | None = None,
                 archive: ObjectStore | None = None, archive_since: float = 0.0, archive_local: bool = False,
                 dim: int = 0, archive_flush: float = 1.0,
                 on_history: Callable[[float], None] | None = None) -> None:
        self.node_id = node_id
        #: the backup store is the cluster's (every node sees the same records): jobs run on the
        #: leader, fenced by its token. Otherwise the store is this node's and so are its jobs.
        self.shared = shared
        #: this node's fencing token while it leads, else None (a single node leads itself: 0)
        self.leading = leading
        #: who leads (a member id, None while nobody does); this node when not given
        self.leader = leader or (lambda: node_id)
        self.forward = forward
        self.store = store
        self.cluster = cluster
        self.cluster_id = cluster_id
        self.shards = shards
        self.key = key
        self.bundle_limit = bundle_limit
        self.log = log
        self.nursery = nursery
        self.wall_clock = wall_clock
        self.rng = rng or random.Random()
        #: bundles are built and opened here (msgpack, gzip, AES: CPU work kept off the event loop)
        self.offload = offload
        self._on_backup = on_backup or (lambda outcome: None)
        self._on_restore = on_restore or (lambda outcome: None)
        #: set when a job finishes (tests and the SDK's polling wait on the records instead)
        self.finished = trio.Event()
        self._schedule_changed = trio.Event()
        self._running: set[str] = set()  # ids of the jobs (backups and restores) a task runs here
        #: the cold tier's archive (point-in-time restores read it), the vectors' dimension, and
        #: how soon a committed record is archived (DAKERA_COLD_FLUSH_MS, in seconds)
        self.archive = archive
        self.archive_since = archive_since  # when the archive began (its identity's creation)
        #: the archive is this cluster node's own directory: it holds only the shards it led
        self.archive_local = archive_local
        self.dim = dim
        self.archive_flush = archive_flush
        #: told the schedule's retention_days (in seconds): how much history the archive keeps
        self._on_history = on_history or (lambda seconds: None)

    @property
    def running_jobs(self) -> int:
        """Backups and restores a task runs on this node now (``/ops/diagnostics``' active_jobs)."""
        return len(self._running)

    def _elsewhere(self) -> str | None:
        """The leader to forward a job to, or None to run it here (the store is not shared, or
        this node leads); no leader: Unavailable."""
        if not self.shared or self.leading() is not None:
            return None
        leader = self.leader()
        if leader is None or self.forward is None:
            raise Unavailable("no leader: backup and restore jobs run on the leader, and none is elected yet; "
                              "retry in a few seconds")
        if leader == self.node_id:  # the views disagree for a moment (a lease just lost or won)
            raise Unavailable("the lease is changing hands: retry in a few seconds")
        return leader

    def _token(self) -> int | None:
        """The fencing token a job started here runs under (None: a node-local store's job)."""
        if not self.shared:
            return None
        token = self.leading()
        if token is None:
            raise Unavailable("not the leader (any more): retry")
        return token

    def _still_runs(self, token: int | None) -> bool:
        """A job of ``token`` may go on here: the store is this node's, or it still leads with it."""
        return not self.shared or self.leading() == token

    async def serve(self, kind: str, request: Any) -> dict[str, Any]:
        """A job forwarded by another node: started here if this node leads; its record."""
        if not self.shared or self.leading() is None:
            raise Unavailable("not the leader (any more): retry")
        if kind == "create":
            return (await self._start_backup(request)).view()
        if kind == "restore" and isinstance(request, dict):
            return (await self._start_restore(request)).view()
        raise InvalidRequest(f"unknown backup command {kind!r}")

    def _new_id(self, kind: str) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.wall_clock()))
        return f"{kind}-{stamp}-{self.rng.getrandbits(32):08x}"

    def _done(self) -> None:
        self.finished.set()
        self.finished = trio.Event()

    # -- backups -------------------------------------------------------------------------
    async def create(self, request: Any) -> BackupInfo:
        """Start a backup (a background job, on the leader with a shared store); returns its
        record, ``inprogress``."""
        leader = self._elsewhere()
        if leader is not None:
            return BackupInfo.from_view(await self.forward_to(leader, "create", request))
        return await self._start_backup(request)

    async def forward_to(self, leader: str, kind: str, request: Any) -> Any:
        assert self.forward is not None
        return await self.forward(leader, kind, request)

    async def _start_backup(self, request: Any) -> BackupInfo:
        if request is None:
            request = {}
        if not isinstance(request, dict):
            raise InvalidRequest("body: must be a JSON object")
        # each field typed strictly (null is absent): a wrong type is a 400, never a silent default
        backup_type = _optional(request, "backup_type", str, "a backup type")
        backup_type = "full" if backup_type is None else backup_type
        if backup_type not in BACKUP_TYPES:
            raise InvalidRequest(f"backup_type: must be one of {', '.join(BACKUP_TYPES)}", field="backup_type")
        namespaces = _agent_ids(request, "namespaces")
        encrypt = _optional(request, "encrypt", bool, "true or false") is True
        if encrypt and self.key is None:
            raise InvalidRequest("encrypt: this cluster has no DAKERA_BACKUP_KEY to encrypt with", field="encrypt")
        name = _optional(request, "name", str, "a string of at most 256 characters") or ""
        if len(name) > 256:
            raise InvalidRequest("name: must be a string of at most 256 characters", field="name")
        # accepted as the SDKs send it, then ignored: every bundle is gzip, and its record says so
        compression = _optional(request, "compression", str, "a compression")
        if compression is not None and compression not in COMPRESSIONS:
            raise InvalidRequest(f"compression: must be one of {', '.join(COMPRESSIONS)}", field="compression")
        info = BackupInfo(self._new_id("backup"), name or "backup", backup_type, "inprogress", self.wall_clock(),
                          namespaces=sorted(set(namespaces)), encrypted=encrypt, runner=self.node_id,
                          token=self._token())
        if backup_type == "incremental":
            base = next((b for b in await self.store.list() if b.status == "completed"
                         and b.namespaces == info.namespaces), None)
            if base is None:
                # a well-formed request this node's state cannot serve yet: a conflict, not bad input
                raise Conflict("backup_type: an incremental backup adds to an earlier completed backup of the "
                               "same namespaces, and there is none: create a full one first", field="backup_type")
            info.base_backup_id = base.backup_id
        with self._claimed(info.backup_id):
            await self._save(info)
        self.nursery.start_soon(self._run_backup, info)
        return info

    @contextmanager
    def _claimed(self, job_id: str) -> Iterator[None]:
        """Mark a job as running here *before* its first record is saved (the leader's look for
        jobs to take over must never find the record of a job whose task has not started yet and
        fail it as a lost runner's); unmarked if the save fails (the task then never starts)."""
        self._running.add(job_id)
        try:
            yield
        except BaseException:
            self._running.discard(job_id)
            raise

    async def _save(self, info: BackupInfo) -> None:
        try:
            await self.store.save_info(info)
        except ObjectStoreError as exc:
            raise Unavailable(f"the backup store cannot be written ({exc})") from None

    async def _cut(self, agents: set[str] | None) -> list[Part]:
        for _attempt in range(CUT_ATTEMPTS):
            key = self.cluster.map_key()
            primaries = self.cluster.primaries()
            parts = []
            for shard, member in enumerate(primaries):
                part = await self.cluster.copy_shard(shard, member)
                if agents is not None:
                    part = Part(part.shard, part.epoch, part.seq, [m for m in part.memories if m[0]["a"] in agents],
                                [s for s in part.sessions if s.get("a") in agents])
                parts.append(part)
            if self.cluster.map_key() == key:
                return parts
            self.log.info("backup_cut_restarted", reason="the shard map changed during the cut")
        raise Unavailable("the shard map kept changing during the backup; try again")

    async def _run_backup(self, info: BackupInfo) -> None:
        self._running.add(info.backup_id)
        try:
            await self._backup_job(info)
        finally:
            self._running.discard(info.backup_id)

    async def _backup_job(self, info: BackupInfo) -> None:
        started = time.perf_counter()
        try:
            parts = await self._cut(set(info.namespaces) or None)
            if info.base_backup_id is not None:
                # only the shards whose history moved since the base chain's cut: one (epoch, seq)
                # names one history, so an equal position is an equal shard
                before = {p.shard: (p.epoch, p.seq) for p in await self._chain_parts(info.base_backup_id)}
                parts = [p for p in parts if before.get(p.shard) != (p.epoch, p.seq)]
            manifest = Manifest(info.backup_id, info.name, info.backup_type, self.cluster_id, self.shards,
                                info.created_at, info.namespaces, info.encrypted, [], base=info.base_backup_id)
            data = await self.offload.run(build_bundle, manifest, parts, self.key if info.encrypted else None)
            if not self._still_runs(info.token):
                self._handed_over("backup", info.backup_id, info.token)  # its new leader fails the record
                return
            info.storage_path = await self.store.save_bundle(info.backup_id, data)
            info.vector_count = sum(len(p.memories) for p in parts)
            info.size_bytes = len(data)
            info.status = "completed"
        except Exception as exc:  # any failure is the job's, reported on its record, never the node's
            info.status, info.error = "failed", f"{type(exc).__name__}: {exc}"
            self.log.error("backup_failed", backup_id=info.backup_id, error=info.error)
        info.completed_at = self.wall_clock()
        info.duration_seconds = round(time.perf_counter() - started, 3)
        if not self._still_runs(info.token):
            self._handed_over("backup", info.backup_id, info.token)
            return
        self._on_backup("ok" if info.status == "completed" else "failed")  # counted before anyone reads it done
        try:
            await self.store.save_info(info)
        except ObjectStoreError as exc:
            self.log.error("backup_record_lost", backup_id=info.backup_id, error=str(exc))
        if info.status == "completed":
            self.log.info("backup_completed", backup_id=info.backup_id, memories=info.vector_count,
                          bytes=info.size_bytes, seconds=info.duration_seconds)
        self._done()

    async def list_all(self) -> list[BackupInfo]:
        return await self.store.list()

    async def get(self, backup_id: str) -> BackupInfo:
        info = await self.store.info(self._id(backup_id))
        if info is None:
            raise NotFound(f"no backup {backup_id!r}")
        return info

    async def delete(self, backup_id: str) -> None:
        await self.get(backup_id)
        needed = [b.backup_id for b in await self.store.list() if b.base_backup_id == backup_id]
        if needed:
            raise Conflict(f"backup {backup_id!r} is the base of {needed[0]!r}"
                           + (f" and {len(needed) - 1} more" if len(needed) > 1 else "")
                           + ": delete those first (they cannot be restored without it)")
        await self.store.delete(backup_id)
        self.log.info("backup_deleted", backup_id=backup_id)

    async def download(self, backup_id: str) -> bytes:
        info = await self.get(backup_id)
        if info.status != "completed":
            raise NotFound(f"backup {backup_id!r} is {info.status}: it has no bundle to download")
        try:
            return await self.store.bundle(backup_id)
        except ObjectNotFound:
            raise NotFound(f"the bundle of backup {backup_id!r} is missing") from None

    async def upload(self, data: bytes) -> BackupInfo:
        """Keep an uploaded bundle as a backup of this cluster (checked whole first)."""
        return await self._keep(data, await self._open(data))

    async def _keep(self, data: bytes, bundle: Bundle) -> BackupInfo:
        m = bundle.manifest
        try:
            same = await self.store.info(check_id(m.backup_id))
            if same is not None and same.status == "completed" and await self.store.bundle(m.backup_id) == data:
                return same  # this very bundle is kept already: no second copy
        except (ValueError, ObjectNotFound):
            pass
        # kept under its own id when that is free, so an incremental bundle uploaded later finds
        # the base it names
        try:
            backup_id = check_id(m.backup_id)
        except ValueError:
            backup_id = self._new_id("upload")
        if await self.store.info(backup_id) is not None:
            backup_id = self._new_id("upload")
        info = BackupInfo(backup_id, m.name, m.backup_type, "completed", self.wall_clock(),
                          namespaces=m.namespaces, vector_count=m.memories, size_bytes=len(data),
                          completed_at=self.wall_clock(), duration_seconds=0.0, encrypted=m.encrypted,
                          base_backup_id=m.base)
        info.storage_path = await self.store.save_bundle(info.backup_id, data)
        await self._save(info)
        return info

    async def _open(self, data: bytes) -> Bundle:
        try:
            bundle = await self.offload.run(lambda: open_bundle(data, key=self.key, limit=self.bundle_limit),
                                            size=len(data))
        except BundleError as exc:
            raise InvalidRequest(f"bundle: {exc}", field="bundle") from None
        if bundle.manifest.shards != self.shards:
            raise InvalidRequest(f"bundle: made by a cluster of {bundle.manifest.shards} shards; this one has "
                                 f"{self.shards} (DAKERA_SHARDS)", field="bundle")
        return bundle

    @staticmethod
    def _id(value: str, what: str = "backup_id") -> str:
        try:
            return check_id(value, what)
        except ValueError as exc:
            raise InvalidRequest(str(exc), field=what) from None

    async def _chain_parts(self, backup_id: str, newer: list[Part] | None = None) -> list[Part]:
        """Every shard's newest part along an incremental chain ending at ``backup_id`` (with
        ``newer`` parts taking precedence): what restoring the chain's last backup restores."""
        found = {p.shard: p for p in newer or []}
        seen: set[str] = set()
        at: str | None = backup_id
        while at is not None:
            if at in seen:
                raise InvalidRequest(f"bundle: backup {at!r} is its own base", field="bundle")
            seen.add(at)
            try:
                data = await self.store.bundle(self._id(at))
            except ObjectNotFound:
                raise InvalidRequest(f"bundle: its base backup {at!r} is not in this cluster's backup store "
                                     "(upload it first)", field="bundle") from None
            bundle = await self._open(data)
            for part in bundle.parts:
                found.setdefault(part.shard, part)
            at = bundle.manifest.base
        return [found[s] for s in sorted(found)]

    # -- the schedule --------------------------------------------------------------------
    async def schedule(self) -> BackupSchedule:
        sched = await self.store.schedule()
        if sched.enabled and sched.cron:
            sched.next_backup_at = next_slot(sched.cron, self.wall_clock())
        return sched

    async def set_schedule(self, body: Any) -> BackupSchedule:
        try:
            current = await self.store.schedule()
            sched = updated(current, body, can_encrypt=self.key is not None)
        except ScheduleError as exc:
            raise InvalidRequest(str(exc), field=exc.field) from None
        if sched.enabled and (not current.enabled or sched.cron != current.cron):
            sched.enabled_at = self.wall_clock()  # slots from now on; none of the past
        sched.next_backup_at = next_slot(sched.cron, self.wall_clock()) if sched.enabled and sched.cron else None
        await self.store.save_schedule(sched)
        self._schedule_changed.set()
        self._schedule_changed = trio.Event()
        self.log.info("backup_schedule_set", enabled=sched.enabled, cron=sched.cron or "-",
                      retention_days=sched.retention_days, max_backups=sched.max_backups)
        return sched

    async def run_schedule(self, leading: Callable[[], int | None]) -> None:
        """Forever: while this node leads (``leading()`` is its fencing token, None otherwise), run
        each due slot of the schedule once across the cluster (see :mod:`.schedule`)."""
        while True:
            with trio.move_on_after(SCHEDULE_TICK):
                await self._schedule_changed.wait()
            token = leading()
            if token is None:
                continue
            try:
                await self._schedule_tick(token)
            except (ObjectStoreError, Unavailable) as exc:
                self.log.warning("backup_schedule_skipped", error=str(exc)[:300])

    async def _schedule_tick(self, token: int) -> None:
        sched = await self.store.schedule()
        if not sched.enabled or not sched.cron:
            return
        now = self.wall_clock()
        slot = due_slot(sched.cron, now, sched.enabled_at)
        if slot is None or not await self.store.claim(slot, token, self.node_id):
            return
        stamp = time.strftime("%Y%m%dT%H%M", time.gmtime(slot))
        backup_type, base = sched.backup_type, None
        if backup_type == "incremental":
            # on top of the newest completed backup of the same namespaces; a full one (so named)
            # when there is none, or when its chain is max_backups long already
            base = scheduled_base(await self.store.list(), sched.namespaces, sched.max_backups)
            if base is None:
                backup_type = "full"
        info = BackupInfo(f"{SCHEDULED_PREFIX}{stamp}-{self.rng.getrandbits(32):08x}", f"{SCHEDULED_PREFIX}{stamp}",
                          backup_type, "inprogress", now, namespaces=sched.namespaces, encrypted=sched.encrypt,
                          runner=self.node_id, token=token if self.shared else None,
                          base_backup_id=base.backup_id if base is not None else None)
        with self._claimed(info.backup_id):
            await self._save(info)
        self.log.info("backup_scheduled_slot", slot=slot, backup_id=info.backup_id, token=token)
        await self._run_backup(info)
        for backup_id in to_prune(await self.store.list(), self.wall_clock(), sched):
            await self.store.delete(backup_id)
            self.log.info("backup_pruned", backup_id=backup_id)
        sched.last_backup_at = slot
        sched.next_backup_at = next_slot(sched.cron, self.wall_clock())
        await self.store.save_schedule(sched)

    # -- restores ------------------------------------------------------------------------
    async def restore(self, request: Any = None, *, bundle: bytes | None = None) -> RestoreInfo:
        """Start restoring a stored backup (``{"backup_id", "target_namespaces"?, "overwrite"?}``) or
        an uploaded bundle; the bundle is checked whole before the job starts."""
        request = request or {}
        if not isinstance(request, dict):
            raise InvalidRequest("body: must be a JSON object")
        targets = _agent_ids(request, "target_namespaces")
        overwrite = _optional(request, "overwrite", bool, "true or false") is True
        _optional(request, "backup_id", str, "a backup id")
        point = request.get("point_in_time")
        if point is not None and bundle is None:
            at = await self._check_point(point)
            leader = self._elsewhere()
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(at))
            # the state at that second replaces the agents' unless the caller says "overwrite": false
            wanted = {"backup_id": f"point-in-time-{stamp}", "targets": sorted(set(targets)),
                      "overwrite": request.get("overwrite") is not False, "point_in_time": at}
            if leader is not None:
                return RestoreInfo.from_view(await self.forward_to(leader, "restore", wanted))
            return await self._start_restore(wanted)
        leader = self._elsewhere()  # before anything is stored: no leader is a 503 that changes nothing
        if bundle is None:
            backup_id = self._id(str(request.get("backup_id") or ""))
        else:
            # kept as an uploaded backup first (checked whole), then restored by id: a later
            # runner (a restart, the next leader) reads it again from the store
            opened = await self._open(bundle)
            if opened.manifest.base is not None:  # its chain must be here: nothing is kept otherwise
                await self._chain_parts(opened.manifest.base, newer=opened.parts)
            backup_id = (await self._keep(bundle, opened)).backup_id
        wanted = {"backup_id": backup_id, "targets": sorted(set(targets)), "overwrite": overwrite,
                  "point_in_time": None}
        if leader is not None:
            return RestoreInfo.from_view(await self.forward_to(leader, "restore", wanted))
        return await self._start_restore(wanted)

    async def _job_parts(self, job: RestoreInfo) -> list[Part] | None:
        """A restore job's parts, recomputed from its record's request (the job's start and every
        runner that takes it over): the source backup's bundle (and its incremental chain). None
        for a point in time: its parts are read from the archive by the job itself (it waits for
        the archive to hold the point first)."""
        request = job.request
        if request.get("point_in_time") is not None:
            return None
        backup_id = self._id(str(request.get("backup_id") or ""))
        await self.get(backup_id)
        try:
            data = await self.store.bundle(backup_id)
        except ObjectNotFound:
            raise NotFound(f"the bundle of backup {backup_id!r} is missing") from None
        opened = await self._open(data)
        parts = opened.parts
        if opened.manifest.base is not None:
            parts = await self._chain_parts(opened.manifest.base, newer=opened.parts)
        return parts

    async def _start_restore(self, request: dict[str, Any]) -> RestoreInfo:
        targets = request.get("targets") or []
        job = RestoreInfo(self._new_id("restore"), "inprogress", str(request.get("backup_id")), self.wall_clock(),
                          namespaces=list(targets), runner=self.node_id, token=self._token(), request=dict(request))
        parts = await self._job_parts(job)  # a missing or bad bundle is refused before the job exists
        with self._claimed(job.restore_id):
            await self.store.save_restore(job)
        self.nursery.start_soon(self._run_restore, job, parts)
        return job

    def _handed_over(self, kind: str, job_id: str, token: int | None) -> None:
        self.log.warning(f"{kind}_handed_over", job_id=job_id, token=token if token is not None else "-",
                         reason="this node no longer leads with the job's token: the leader takes it over")
        self._done()

    async def _run_restore(self, job: RestoreInfo, parts: list[Part] | None) -> None:
        self._running.add(job.restore_id)
        try:
            await self._restore_job(job, parts)
        finally:
            self._running.discard(job.restore_id)

    async def _restore_job(self, job: RestoreInfo, parts: list[Part] | None) -> None:
        started = time.perf_counter()
        overwrite = job.request.get("overwrite") is True
        try:
            agents = set(job.request.get("targets") or []) or None
            if parts is None:
                parts = await self._point_in_time_parts(job, agents, overwrite)
                if parts is None:
                    self._handed_over("restore", job.restore_id, job.token)
                    return
            plan = await self.offload.run(jobs.plan_batches, parts, agents)
            job.batches = len(plan)
            saved_at, unsaved = trio.current_time(), 0
            for index in range(job.done, len(plan)):
                if not self._still_runs(job.token):
                    self._handed_over("restore", job.restore_id, job.token)
                    return
                batch = plan[index]
                status, answer = await self._write(json.dumps(batch.request(overwrite)).encode())
                if status != 200:
                    raise RuntimeError(f"agent {batch.agent}: {status} {answer}")
                job.done = index + 1
                # in place as the source has them: written now, or found exactly so
                job.vectors_restored = (job.vectors_restored or 0) + int(answer.get("restored", 0)) \
                    + int(answer.get("unchanged", 0))
                job.progress_percent = jobs.progress_percent(plan, job.done)
                unsaved += 1
                if unsaved >= jobs.SAVE_EVERY_BATCHES or trio.current_time() - saved_at >= jobs.SAVE_EVERY_SECONDS:
                    if not self._still_runs(job.token):  # never over the record of the job's next runner
                        self._handed_over("restore", job.restore_id, job.token)
                        return
                    try:
                        await self.store.save_restore(job)
                        saved_at, unsaved = trio.current_time(), 0
                    except ObjectStoreError as exc:  # progress only: the job goes on
                        self.log.warning("restore_progress_unsaved", restore_id=job.restore_id, error=str(exc))
            job.status, job.progress_percent = "completed", 100.0
        except Exception as exc:  # the job fails and says why; the node goes on
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
            self.log.error("restore_failed", restore_id=job.restore_id, error=job.error)
        if not self._still_runs(job.token):
            self._handed_over("restore", job.restore_id, job.token)
            return
        await self._finish_restore(job, time.perf_counter() - started)

    async def _finish_restore(self, job: RestoreInfo, seconds: float) -> None:
        job.completed_at = self.wall_clock()
        job.duration_seconds = round(seconds, 3)
        self._on_restore("ok" if job.status == "completed" else "failed")  # counted before anyone reads it done
        try:
            await self.store.save_restore(job)
        except ObjectStoreError as exc:
            self.log.error("restore_record_lost", restore_id=job.restore_id, error=str(exc))
        if job.status == "completed":
            self.log.info("restore_completed", restore_id=job.restore_id, backup_id=job.backup_id,
                          memories=job.vectors_restored, seconds=job.duration_seconds)
        self._done()

    # -- point in time -----------------------------------------------------------------
    async def _check_point(self, value: Any) -> float:
        """``point_in_time`` as a Unix time this cluster's archive can restore, or a 400 naming
        why not (the future, no shared archive, before it began, out of the history window)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise InvalidRequest("point_in_time: must be a Unix time in seconds", field="point_in_time")
        at = float(value)
        now = self.wall_clock()
        if at > now:
            raise InvalidRequest(f"point_in_time: {at:.3f} is in the future (now {now:.3f})", field="point_in_time")
        if self.archive is None:
            raise InvalidRequest("point_in_time: this node has no archive to restore from (a node without a data "
                                 "directory keeps no cold tier)", field="point_in_time")
        if self.archive_local:
            raise InvalidRequest("point_in_time: this node's archive is its own directory (DAKERA_STORAGE="
                                 "filesystem under its data dir) and holds only the shards it led; a point-in-time "
                                 "restore needs the cluster's one archive: DAKERA_STORAGE=s3 or a shared "
                                 "DAKERA_STORAGE_PATH", field="point_in_time")
        if at < self.archive_since:
            raise InvalidRequest(f"point_in_time: {at:.3f} is before this cluster's archive began "
                                 f"({self.archive_since:.3f})", field="point_in_time")
        try:
            await check_reach(self.archive, self.shards, at)
        except PointOutOfReach as exc:
            reach = (f"the archive reaches back to {exc.earliest:.3f} (shard {exc.shard})" if exc.earliest is not None
                     else f"the archive holds nothing of shard {exc.shard} (not the cluster's whole archive, or its "
                          "primary has not archived it yet)")
            raise InvalidRequest(f"point_in_time: {at:.3f} is out of reach: {reach}; the window is the backup "
                                 "schedule's retention_days", field="point_in_time") from None
        except ObjectStoreError as exc:
            raise Unavailable(f"the archive cannot be read ({exc})") from None
        return at

    async def _point_in_time_parts(self, job: RestoreInfo, agents: set[str] | None,
                                   overwrite: bool) -> list[Part] | None:
        """Every shard at the job's point, from the archive (None: this node no longer runs the
        job). First, every record committed by the point must be archived: wait out the flush,
        and fail while a node's archive is behind. With ``overwrite``, agents that hold memories
        now but held none at the point are emptied (before the first batch only: a runner taking
        the job over later finds them empty already, or empties them again, the same state)."""
        at = float(job.request["point_in_time"])
        wait = at + 2 * self.archive_flush - self.wall_clock()
        if wait > 0:
            await trio.sleep(wait)
        behind = self.cluster.archive_behind()
        if behind:
            raise Unavailable(f"the archive of {', '.join(behind)} is behind: records up to the point may not "
                              "be archived yet; try again when the cold tier has caught up")
        if self.archive is None:
            raise Unavailable("this node has no archive to restore from")
        parts, replayed = await parts_at(self.archive, shard_count=self.shards, dim=self.dim, at=at,
                                         offload=self.offload, log=self.log)
        self.log.info("restore_point_in_time_planned", restore_id=job.restore_id, at=at, records=replayed,
                      memories=sum(len(p.memories) for p in parts))
        if overwrite and job.done == 0:
            then = {m[0]["a"] for p in parts for m in p.memories}
            for agent in sorted(set(await self._agents()) - then):
                if agents is not None and agent not in agents:
                    continue
                if not self._still_runs(job.token):
                    return None
                body = json.dumps({"agent_id": agent, "overwrite": True, "memories": []}).encode()
                status, answer = await self._write(body)
                if status != 200:
                    raise RuntimeError(f"agent {agent}: {status} {answer}")
        return parts

    # -- the archive's history window --------------------------------------------------
    async def follow_history(self) -> None:
        """Forever: tell the archive how much history to keep (the schedule's retention_days),
        read at start, every HISTORY_LOOK seconds and whenever this node changes the schedule."""
        while True:
            try:
                sched = await self.store.schedule()
                self._on_history(sched.retention_days * 86_400.0)
            except ObjectStoreError as exc:
                self.log.warning("backup_schedule_unreadable", error=str(exc)[:300])
            with trio.move_on_after(HISTORY_LOOK):
                await self._schedule_changed.wait()

    # -- jobs that outlive their runner --------------------------------------------------
    async def run_jobs(self) -> None:
        """Started with the node. A node-local store: go on with this node's unfinished restores
        once, at start. A shared one: forever, while this node leads, take over the jobs of
        runners that lost the lease (at once on a new lease, then every JOBS_TICK seconds)."""
        if not self.shared:
            try:
                await self.take_over(None)
            except (ObjectStoreError, Unavailable) as exc:
                self.log.warning("backup_jobs_not_resumed", error=str(exc)[:300])
            return
        last: int | None = None
        next_look = 0.0
        while True:
            token = self.leading()
            if token is not None and (token != last or trio.current_time() >= next_look):
                next_look = trio.current_time() + JOBS_TICK
                try:
                    await self.take_over(token)
                except (ObjectStoreError, Unavailable) as exc:
                    self.log.warning("backup_jobs_look_failed", error=str(exc)[:300])
            last = token
            await trio.sleep(LEASE_POLL)

    async def take_over(self, token: int | None) -> None:
        """One look at the store's unfinished jobs, as the leader of ``token`` (None: a node-local
        store's owner at start): resume restores from their ``done``, fail backups. With None only
        this node's own jobs (or those of no recorded runner): a filesystem path several nodes
        share holds other nodes' jobs, which may be running."""
        for job in await self.store.restores():
            if job.status != "inprogress" or job.restore_id in self._running:
                continue
            if token is None:
                if job.runner not in (None, self.node_id):
                    continue
            elif not jobs.take_over(job.token, job.runner, token, self.node_id, running_here=False):
                continue
            elif not await self.store.claim_restore(job.restore_id, token, self.node_id):
                continue  # another node claimed it for this token: never two runners of one lease
            if self.shared and self.leading() != token:
                return  # the lease moved on during the look
            before = job.runner
            job.runner, job.token = self.node_id, token
            self.log.info("restore_taken_over", restore_id=job.restore_id, runner=before or "-",
                          token=token if token is not None else "-", done=job.done)
            try:
                parts = await self._job_parts(job)
            except (NotFound, InvalidRequest) as exc:
                job.status, job.error = "failed", f"the restore's source is gone: {exc}"
                self.log.error("restore_failed", restore_id=job.restore_id, error=job.error)
                await self._finish_restore(job, 0.0)
                continue
            await self.store.save_restore(job)
            self._running.add(job.restore_id)
            self.nursery.start_soon(self._run_restore, job, parts)
        for info in await self.store.list():
            if info.status != "inprogress" or info.backup_id in self._running:
                continue
            if token is None:
                if info.runner not in (None, self.node_id):
                    continue  # another node's (a filesystem path the nodes share): it may be running now
                reason = f"the node {self.node_id} restarted mid-backup; nothing was stored"
            elif jobs.take_over(info.token, info.runner, token, self.node_id, running_here=False):
                reason = f"runner {info.runner or 'unknown'} lost the lease mid-backup; nothing was stored"
            else:
                continue
            if self.shared and self.leading() != token:
                return
            info.status, info.error = "failed", reason
            info.completed_at = self.wall_clock()
            self._on_backup("failed")
            await self.store.save_info(info)
            self.log.error("backup_failed", backup_id=info.backup_id, error=reason)
            if token is not None and info.backup_id.startswith(SCHEDULED_PREFIX):
                # its slot was claimed, so no tick runs it again: this leader makes the slot's backup
                again = BackupInfo(f"{info.name}-{self.rng.getrandbits(32):08x}", info.name, info.backup_type,
                                   "inprogress", self.wall_clock(), namespaces=info.namespaces,
                                   encrypted=info.encrypted, runner=self.node_id, token=token,
                                   base_backup_id=info.base_backup_id)
                with self._claimed(again.backup_id):
                    await self._save(again)
                self.log.info("backup_scheduled_retried", backup_id=again.backup_id, failed=info.backup_id,
                              token=token)
                self.nursery.start_soon(self._run_backup, again)

    async def _agents(self) -> list[str]:
        """Every agent of the cluster, retried like a write while the listing is refused (a shard
        still being taken over, a member not answering): a partial list is never used."""
        async def attempt() -> tuple[bool, list[str] | Unavailable]:
            try:
                return False, await self.cluster.agents()
            except Unavailable as exc:
                return True, exc

        found = await _while_refused(attempt)
        if isinstance(found, Unavailable):
            raise found
        return found

    async def _write(self, body: bytes) -> tuple[int, Any]:
        """One ``restore_agent`` write, retried while its shard is unavailable (a failover, a move:
        503 or an unreachable owner); a restore write is idempotent, so a retry after an unknown
        outcome is harmless."""
        async def attempt() -> tuple[bool, tuple[int, Any]]:
            try:
                status, answer = await self.cluster.run("restore_agent", body)
            except Unavailable as exc:
                status, answer = 503, {"error": str(exc)}
            return status == 503, (status, answer)

        return await _while_refused(attempt)

    async def restore_status(self, restore_id: str) -> RestoreInfo:
        job = await self.store.restore(self._id(restore_id, "restore_id"))
        if job is None:
            raise NotFound(f"no restore {restore_id!r}")
        return job




def _optional(request: dict[str, Any], name: str, kind: type, what: str) -> Any:
    """``request[name]`` if it is a ``kind`` (a bool is no number), None when absent or null; else a 400."""
    value = request.get(name)
    if value is not None and (not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)):
        raise InvalidRequest(f"{name}: must be {what}", field=name)
    return value


def _agent_ids(request: dict[str, Any], name: str) -> list[str]:
    """A list of agent ids (none: every agent), else a 400."""
    value = request.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(n, str) and n for n in value):
        raise InvalidRequest(f"{name}: must be a list of agent ids", field=name)
    return value
