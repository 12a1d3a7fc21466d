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
background and are tracked (:class:`~.model.RestoreInfo`, ``progress_percent``).
"""

from __future__ import annotations

import base64
import json
import random
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Protocol

import trio

from ..errors import Conflict, InvalidRequest, NotFound, Unavailable
from ..log import EventLogger
from ..runtime.offload import INLINE, Offload
from ..storage.objects import ObjectNotFound, ObjectStore, ObjectStoreError
from .bundle import BACKUP_TYPES, Bundle, BundleError, Manifest, Part, build_bundle, open_bundle
from .model import BackupInfo, RestoreInfo
from .pitr import PointOutOfReach, check_reach, parts_at
from .schedule import SCHEDULED_PREFIX, BackupSchedule, ScheduleError, due_slot, next_slot, to_prune, updated
from .store import BackupStore, check_id

CUT_ATTEMPTS = 3
SCHEDULE_TICK = 5.0  # seconds between a node's looks at the schedule (and at whether it leads)
RESTORE_RETRY_FOR = 60.0  # seconds one restore write is retried while its shard is unavailable
RESTORE_REQUEST_BYTES = 4 * 1024 * 1024  # memories per restore_agent request, by encoded size
HISTORY_LOOK = 60.0  # seconds between a node's reads of the schedule's retention (the archive's window)


class Cluster(Protocol):
    """What a backup job needs of the cluster: the map's key and each shard's primary, a shard's
    copy from it, and a way to run a write on an agent's primary."""

    def map_key(self) -> int: ...
    def primaries(self) -> list[str]: ...  # shard -> member id (this node's id on a single node)
    async def copy_shard(self, shard: int, member: str) -> Part: ...
    async def run(self, op: str, body: bytes) -> tuple[int, Any]: ...
    async def agents(self) -> list[str]: ...  # every agent the cluster holds now
    def archive_behind(self) -> list[str]: ...  # members whose cold-tier archive is behind


def _agent_batches(part: Part, agents: set[str] | None) -> dict[str, list[list[list[Any]]]]:
    """The part's memories by agent, in requests of at most RESTORE_REQUEST_BYTES."""
    by_agent: dict[str, list[list[Any]]] = defaultdict(list)
    for record, vector in part.memories:
        if agents is None or record.get("a") in agents:
            by_agent[record["a"]].append([record, base64.b64encode(vector).decode()])
    out: dict[str, list[list[list[Any]]]] = {}
    for agent, items in by_agent.items():
        batches: list[list[list[Any]]] = []
        batch: list[list[Any]] = []
        size = 0
        for item in items:
            cost = len(item[1]) + len(json.dumps(item[0])) + 16
            if batch and size + cost > RESTORE_REQUEST_BYTES:
                batches.append(batch)
                batch, size = [], 0
            batch.append(item)
            size += cost
        batches.append(batch)
        out[agent] = batches
    return out


class Backups:
    def __init__(self, *, node_id: str, store: BackupStore, cluster: Cluster, cluster_id: str, shards: int,
                 key: bytes | None, bundle_limit: int, log: EventLogger, nursery: trio.Nursery,
                 wall_clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 on_backup: Callable[[str], None] | None = None,
                 on_restore: Callable[[str], None] | None = None, offload: Offload = INLINE,
                 archive: ObjectStore | None = None, archive_since: float = 0.0, archive_local: bool = False,
                 dim: int = 0,
                 archive_flush: float = 1.0,
                 on_history: Callable[[float], None] | None = None) -> None:
        self.node_id = node_id
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

    def _new_id(self, kind: str) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.wall_clock()))
        return f"{kind}-{stamp}-{self.rng.getrandbits(32):08x}"

    def _done(self) -> None:
        self.finished.set()
        self.finished = trio.Event()

    # -- backups -------------------------------------------------------------------------
    async def create(self, request: Any) -> BackupInfo:
        """Start a backup (a background job); returns its record, ``inprogress``."""
        if request is None:
            request = {}
        if not isinstance(request, dict):
            raise InvalidRequest("body: must be a JSON object")
        backup_type = request.get("backup_type") or "full"
        if backup_type not in BACKUP_TYPES:
            raise InvalidRequest(f"backup_type: must be one of {', '.join(BACKUP_TYPES)}", field="backup_type")
        namespaces = request.get("namespaces") or []
        if not isinstance(namespaces, list) or not all(isinstance(n, str) and n for n in namespaces):
            raise InvalidRequest("namespaces: must be a list of agent ids", field="namespaces")
        encrypt = request.get("encrypt") is True
        if encrypt and self.key is None:
            raise InvalidRequest("encrypt: this cluster has no DAKERA_BACKUP_KEY to encrypt with", field="encrypt")
        name = request.get("name") or ""
        if not isinstance(name, str) or len(name) > 256:
            raise InvalidRequest("name: must be a string of at most 256 characters", field="name")
        info = BackupInfo(self._new_id("backup"), name or "backup", backup_type, "inprogress", self.wall_clock(),
                          namespaces=sorted(set(namespaces)), encrypted=encrypt)
        if backup_type == "incremental":
            base = next((b for b in await self.store.list() if b.status == "completed"
                         and b.namespaces == info.namespaces), None)
            if base is None:
                raise InvalidRequest("backup_type: an incremental backup adds to an earlier completed backup of the "
                                     "same namespaces, and there is none: create a full one first", field="backup_type")
            info.base_backup_id = base.backup_id
        await self._save(info)
        self.nursery.start_soon(self._run_backup, info)
        return info

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
                    part = Part(part.shard, part.epoch, part.seq, [m for m in part.memories if m[0]["a"] in agents])
                parts.append(part)
            if self.cluster.map_key() == key:
                return parts
            self.log.info("backup_cut_restarted", reason="the shard map changed during the cut")
        raise Unavailable("the shard map kept changing during the backup; try again")

    async def _run_backup(self, info: BackupInfo) -> None:
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
            info.storage_path = await self.store.save_bundle(info.backup_id, data)
            info.vector_count = sum(len(p.memories) for p in parts)
            info.size_bytes = len(data)
            info.status = "completed"
        except Exception as exc:  # any failure is the job's, reported on its record, never the node's
            info.status, info.error = "failed", f"{type(exc).__name__}: {exc}"
            self.log.error("backup_failed", backup_id=info.backup_id, error=info.error)
        info.completed_at = self.wall_clock()
        info.duration_seconds = round(time.perf_counter() - started, 3)
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
        bundle = await self._open(data)
        m = bundle.manifest
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
        info = BackupInfo(f"{SCHEDULED_PREFIX}{stamp}-{self.rng.getrandbits(32):08x}", f"{SCHEDULED_PREFIX}{stamp}",
                          sched.backup_type, "inprogress", now, namespaces=sched.namespaces, encrypted=sched.encrypt)
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
        targets = request.get("target_namespaces") or []
        if not isinstance(targets, list) or not all(isinstance(n, str) and n for n in targets):
            raise InvalidRequest("target_namespaces: must be a list of agent ids", field="target_namespaces")
        overwrite = request.get("overwrite") is True
        if request.get("point_in_time") is not None and bundle is None:
            # the state at that second replaces the agents' unless the caller says "overwrite": false
            return await self._restore_point_in_time(request["point_in_time"], targets,
                                                     request.get("overwrite") is not False)
        if bundle is None:
            backup_id = self._id(str(request.get("backup_id") or ""))
            await self.get(backup_id)
            try:
                bundle = await self.store.bundle(backup_id)
            except ObjectNotFound:
                raise NotFound(f"the bundle of backup {backup_id!r} is missing") from None
        else:
            backup_id = "uploaded"
        opened = await self._open(bundle)
        parts = opened.parts
        if opened.manifest.base is not None:
            parts = await self._chain_parts(opened.manifest.base, newer=opened.parts)
        job = RestoreInfo(self._new_id("restore"), "inprogress", backup_id if backup_id != "uploaded"
                          else opened.manifest.backup_id, self.wall_clock(), namespaces=sorted(set(targets)))
        await self.store.save_restore(job)
        self.nursery.start_soon(self._run_restore, job, parts, set(targets) or None, overwrite)
        return job

    async def _run_restore(self, job: RestoreInfo, parts: list[Part], agents: set[str] | None,
                           overwrite: bool) -> None:
        started = time.perf_counter()
        try:
            def plan() -> list[tuple[str, list[list[Any]]]]:
                return [(agent, batch) for part in parts
                        for agent, per in sorted(_agent_batches(part, agents).items()) for batch in per]

            batches = await self.offload.run(plan)
            total = sum(len(b) for _a, b in batches) or 1
            done = 0
            for agent, batch in batches:
                body = json.dumps({"agent_id": agent, "overwrite": overwrite, "memories": batch}).encode()
                status, answer = await self._write(body)
                if status != 200:
                    raise RuntimeError(f"agent {agent}: {status} {answer}")
                done += len(batch)
                job.vectors_restored = (job.vectors_restored or 0) + int(answer.get("restored", 0))
                job.progress_percent = round(100.0 * done / total, 1)
            job.status, job.progress_percent = "completed", 100.0
        except Exception as exc:  # the job fails and says why; the node goes on
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
            self.log.error("restore_failed", restore_id=job.restore_id, error=job.error)
        job.completed_at = self.wall_clock()
        job.duration_seconds = round(time.perf_counter() - started, 3)
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
    async def _restore_point_in_time(self, value: Any, targets: list[str], overwrite: bool) -> RestoreInfo:
        """Start restoring every agent (or ``targets``) as it was at Unix time ``value``, from
        the cold tier's archive (:mod:`.pitr`); checked before the job starts: a point in the
        future or older than the archive reaches is a 400 naming the reach."""
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
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(at))
        job = RestoreInfo(self._new_id("restore"), "inprogress", f"point-in-time-{stamp}", now,
                          namespaces=sorted(set(targets)))
        await self.store.save_restore(job)
        self.nursery.start_soon(self._run_point_in_time, job, at, set(targets) or None, overwrite)
        return job

    async def _run_point_in_time(self, job: RestoreInfo, at: float, agents: set[str] | None,
                                 overwrite: bool) -> None:
        try:
            # every record committed by ``at`` must be in the archive: wait out the flush, and
            # refuse while a node's archive is behind (its shards' records may not be there)
            wait = at + 2 * self.archive_flush - self.wall_clock()
            if wait > 0:
                await trio.sleep(wait)
            behind = self.cluster.archive_behind()
            if behind:
                raise Unavailable(f"the archive of {', '.join(behind)} is behind: records up to the point may not "
                                  "be archived yet; try again when the cold tier has caught up")
            assert self.archive is not None
            parts, replayed = await parts_at(self.archive, shard_count=self.shards, dim=self.dim, at=at,
                                             offload=self.offload, log=self.log)
            self.log.info("restore_point_in_time_planned", restore_id=job.restore_id, at=at, records=replayed,
                          memories=sum(len(p.memories) for p in parts))
            if overwrite:
                # agents that hold memories now but held none at the point: emptied
                then = {m[0]["a"] for p in parts for m in p.memories}
                for agent in sorted(set(await self.cluster.agents()) - then):
                    if agents is None or agent in agents:
                        body = json.dumps({"agent_id": agent, "overwrite": True, "memories": []}).encode()
                        status, answer = await self._write(body)
                        if status != 200:
                            raise RuntimeError(f"agent {agent}: {status} {answer}")
        except Exception as exc:  # the job fails and says why; the node goes on
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
            job.completed_at = self.wall_clock()
            self.log.error("restore_failed", restore_id=job.restore_id, error=job.error)
            self._on_restore("failed")
            try:
                await self.store.save_restore(job)
            except ObjectStoreError as err:
                self.log.error("restore_record_lost", restore_id=job.restore_id, error=str(err))
            self._done()
            return
        await self._run_restore(job, parts, agents, overwrite)

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

    async def _write(self, body: bytes) -> tuple[int, Any]:
        """One ``restore_agent`` write, retried while its shard is unavailable (a failover, a move:
        503 or an unreachable owner) for up to RESTORE_RETRY_FOR seconds; a restore write is
        idempotent, so a retry after an unknown outcome is harmless."""
        deadline = trio.current_time() + RESTORE_RETRY_FOR
        pause = 0.2
        while True:
            try:
                status, answer = await self.cluster.run("restore_agent", body)
            except Unavailable as exc:
                status, answer = 503, {"error": str(exc)}
            if status != 503 or trio.current_time() + pause > deadline:
                return status, answer
            await trio.sleep(pause)
            pause = min(pause * 2, 5.0)

    async def restore_status(self, restore_id: str) -> RestoreInfo:
        job = await self.store.restore(self._id(restore_id, "restore_id"))
        if job is None:
            raise NotFound(f"no restore {restore_id!r}")
        return job


