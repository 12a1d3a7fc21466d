"""A node: one nursery holding the transport, the endpoint, the actors and the HTTP facade.

``async with open_node(config) as node:`` is the whole lifecycle. Leaving the block stops the
node gracefully: the HTTP server stops accepting, in-flight requests finish (up to
``shutdown_grace`` seconds), then every task is cancelled. A crashing actor cancels the block
and the crash propagates out of it: a node never limps on with a dead actor.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .api.deps import FacadeDeps
from .config import Config
from .endpoint import UNAUTHENTICATED_FRAME_LIMIT, Endpoint, StreamLimits
from .log import EventLogger, get_logger
from .membership.embedder import META_KEY as EMBEDDER_META
from .metrics import NodeMetrics
from .runtime import Actor, ActorStopped
from .runtime.offload import Offload
from .runtime.readiness import Readiness
from .transport import Transport, format_hostport, load_transport, parse_hostport
from .version import __version__
from .wal.log import DIR_MODE, FILE_MODE
from .wal.statefile import StateFile
from .wire import Codec

if TYPE_CHECKING:
    from .backup.service import Backups
    from .cache.client import RedisClient
    from .cache.facade import NodeCache
    from .cache.primary import Backend
    from .cold.archiver import Archiver
    from .cold.restore import ArchiveInfo
    from .cold.seeding import Seeder
    from .cold.stats import ColdTier
    from .lease.actor import LeaseActor
    from .lease.core import LeaseConfig
    from .membership.actor import MembershipActor
    from .membership.core import SwimConfig
    from .operations.maintenance import MaintenanceStore
    from .operations.service import Operations
    from .peers import Peers
    from .replication.actor import Replicator
    from .routing.router import Router
    from .search import Embedder
    from .sharding.actor import ShardMapActor
    from .storage.objects import ObjectStore
    from .store.reembed import Reembedder
    from .store.service import MemoryService
    from .wal.memory import SimDisk

NODE_ID_FILE = "node_id"
ROUTABLE_WAIT = 10.0  # readiness waits this long at most for gossip to know the map's members
LOCK_FILE = "LOCK"
INSECURE_REMINDER = 3600.0  # seconds between the warnings of a cluster running without a gossip key
STALE_LOG_INTERVAL = 60.0
BUNDLE_EXPANSION = 4  # a backup bundle may decompress to this many times DAKERA_MAX_BUNDLE_BYTES
CLEAN_STOP_CHECKPOINT = 30.0  # seconds a graceful stop spends at most snapshotting the changed shards  # seconds between warnings about stale frames (each is counted anyway)
COLD_WATCH_INTERVAL = 1.0  # seconds between looks at whether this node's archive is behind


async def watch_archive(tier: ColdTier, announce: Callable[..., Awaitable[None]] | None, log: EventLogger,
                        *, interval: float = COLD_WATCH_INTERVAL) -> None:
    """Look at ``tier.stats().behind`` every ``interval`` seconds, forever; when it flips, log it and
    ``announce(archive_behind=...)`` (the member metadata update), so every node's cluster status
    says degraded while any live member's archive is behind. A single node (``announce`` None)
    only logs: its status reads its own archiver directly."""
    published = False
    while True:
        figures = tier.stats()
        if figures.behind != published:
            if figures.behind:
                log.warning("cold_tier_behind", lag_seconds=round(figures.lag_seconds, 1),
                            backlog_bytes=figures.backlog_bytes, circuit_open=figures.circuit_open)
            else:
                log.info("cold_tier_caught_up", lag_seconds=round(figures.lag_seconds, 1))
            if announce is not None:
                await announce(archive_behind=figures.behind)
            published = figures.behind
        await trio.sleep(interval)


class DataDirLocked(RuntimeError):
    """Another live process already uses this data directory."""


class EmbedderRefused(RuntimeError):
    """The cluster embeds with another embedder than this node's (exit 2): see
    :mod:`dakera_actors.membership.embedder`."""


def swim_settings(config: Config) -> SwimConfig:
    """The SWIM core's timing, in seconds, from the node's configuration."""
    from .membership.core import SwimConfig

    return SwimConfig(
        probe_interval=config.gossip_probe_interval_ms / 1000,
        probe_timeout=config.gossip_probe_timeout_ms / 1000,
        indirect_checks=config.gossip_indirect_checks,
        suspicion_mult=config.gossip_suspicion_mult,
        suspicion_max_mult=config.gossip_suspicion_max_mult,
        retransmit_mult=config.gossip_retransmit_mult,
        gossip_interval=config.gossip_interval_ms / 1000,
        gossip_nodes=config.gossip_nodes,
        push_pull_interval=config.gossip_push_pull_interval_ms / 1000,
        awareness_max=config.gossip_awareness_max,
    )


def lease_settings(config: Config) -> LeaseConfig:
    """The lease core's timing and voter rules, in seconds, from the node's configuration."""
    from .lease.core import LeaseConfig

    ttl, margin = config.lease_ttl_ms / 1000, config.lease_drift_ms / 1000
    expect = config.bootstrap_expect or min(3, 1 + len(config.cluster_seeds))
    return LeaseConfig(ttl=ttl, drift_margin=margin, request_timeout=ttl * 0.3, bootstrap_expect=expect,
                       max_voters=config.max_voters)


def guess_local_ip() -> str:
    """Best-effort address of this host for advertising when bound to a wildcard address."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent by connect()
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def _advertised(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = guess_local_ip()
    return format_hostport(host, port)


class Node:
    """A running node. Build it with :func:`open_node`."""

    def __init__(self, config: Config, *, rng: random.Random | None = None,
                 wall_clock: Callable[[], float] = time.time, disk: SimDisk | None = None,
                 objects: ObjectStore | None = None, cache_backend: Backend | None = None) -> None:
        self.config = config
        #: the L1.5 cache's Redis (or a simulation's model of it); None: no cache
        self.cache_backend = cache_backend
        self.cache: NodeCache | None = None
        #: a simulated disk for the WAL and snapshots (tests); None means files in data_dir
        self.disk = disk
        self.rng = rng or random.Random()
        #: Unix time for data (created_at, expiry); protocol timing uses trio.current_time()
        self.wall_clock = wall_clock
        self.data_dir = Path(config.data_dir)
        self.node_id = config.node_id or ""
        self.metrics = NodeMetrics()
        #: worker threads for CPU-heavy work; inline on a simulated disk (deterministic simulations)
        self.offload = Offload(config.cpu_threads, inline=disk is not None)
        #: the object store the cold tier writes through: DAKERA_STORAGE's, probed at start, or one a
        #: test injected (used as is); None on a simulated disk without one (no real files)
        self.objects: ObjectStore | None = objects
        self._objects_injected = objects is not None
        #: what the archive said at start, the archiver and the seeder (with a cold tier)
        self.archive: ArchiveInfo | None = None
        #: where backup bundles go (DAKERA_BACKUP_STORAGE), and the backup service over it
        self.backup_objects: ObjectStore | None = None
        self.backup_shared = False  # the backup store is the cluster's, not this node's own
        self.backups: Backups | None = None
        self.archiver: Archiver | None = None
        self.seeder: Seeder | None = None
        #: the L1.5 cache's Redis client (DAKERA_REDIS_URL; None without one). Opened at start
        #: whether or not Redis answers: ``redis.healthy`` says whether it does
        self.redis: RedisClient | None = None
        self.readiness = Readiness()
        #: this node's maintenance flag as stored (read before membership starts)
        self.maintenance_state: Any = None
        self.log: EventLogger = get_logger("dakera_actors.node")
        self.transport: Transport | None = None
        self.endpoint: Endpoint | None = None
        self.actors: list[Actor] = []
        self.memory: MemoryService | None = None
        #: the node's embedder, built before the node joins (its identity is in the member metadata)
        self.embedder: Embedder | None = None
        self.reembedder: Reembedder | None = None
        #: the one-line error this node refused to join the cluster with (then it stops itself)
        self.refused: str | None = None
        self.membership: MembershipActor | None = None
        self.lease: LeaseActor | None = None
        self.shard_map: ShardMapActor | None = None
        self.router: Router | None = None
        self.replicator: Replicator | None = None
        self.operations: Operations | None = None
        #: member-addressed requests to the other members (cluster mode, once membership runs)
        self.peers: Peers | None = None
        self._maintenance_store: MaintenanceStore | None = None
        self.nursery: trio.Nursery | None = None
        self.api_address = config.api_advertise or ""
        self.http_port: int | None = None
        #: open HTTP connections against DAKERA_MAX_CONNECTIONS (set when the listener starts)
        self.http_connections: Any = None
        self.started_at = 0.0
        self._stop_requested = trio.Event()
        self._http_done = trio.Event()
        self._lock_fd: int | None = None
        self._stale_logged = float("-inf")
        #: what the HTTP facade reads (filled in as services start), and the app over it (created
        #: once the node id is known)
        self.facade = FacadeDeps(config, self.node_id, self.metrics, self.log, self.offload, self.readiness,
                                 api_address=self.api_address, wall_clock=wall_clock)
        self.app: Any = None
        self.metrics.watch_actors(lambda: list(self.actors))

    # -- identity and data dir ---------------------------------------------------------
    def _prepare_data_dir(self) -> None:
        # 0700: memories, snapshots and the fencing state are this node's alone (an existing
        # directory keeps the mode its operator gave it)
        self.data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise DataDirLocked(f"data dir {self.data_dir} is in use by another node process") from None
            raise
        self._lock_fd = fd
        id_file = StateFile(NODE_ID_FILE, self.data_dir)
        stored = (id_file.read() or b"").decode().strip()
        if not self.node_id:
            # a single node keeps the id it was first given, so its logs and metrics stay stable
            self.node_id = stored or f"node-{self.rng.getrandbits(32):08x}"
        if stored != self.node_id:
            # atomically (fsynced, renamed, directory fsynced): a crash must not leave an empty
            # id file (a fresh random id next start) nor lose the rename
            id_file.write((self.node_id + "\n").encode())
        self.log = self.log.bind(node=self.node_id)
        self.facade.node_id, self.facade.log = self.node_id, self.log

    def _release_data_dir(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    async def _open_object_store(self, stack: AsyncExitStack) -> None:
        """Open and probe DAKERA_STORAGE's object store before anything else starts: a wrong path,
        endpoint, bucket or key is a one-line start error naming the variable (exit 2), not a
        failure found later."""
        from .storage.opening import describe, location_setting, open_object_store, probe

        config = self.config
        self.objects = await stack.enter_async_context(open_object_store(config, self.data_dir))
        seconds = await probe(self.objects, self.node_id, setting=location_setting(config))
        if config.storage == "s3":
            self.log.info("object_store_ready", storage="s3", endpoint=config.s3_endpoint, bucket=config.s3_bucket,
                          prefix=config.s3_prefix or "-", probe_ms=round(seconds * 1000, 1))
        else:
            self.log.info("object_store_ready", storage=config.storage, path=describe(config, self.data_dir),
                          probe_ms=round(seconds * 1000, 1))

    async def _open_redis(self, stack: AsyncExitStack) -> None:
        """The L1.5 cache's client, closed when the node stops. Redis down or unreachable at start
        is not an error: the client logs ``redis_unavailable`` and keeps retrying in the background
        (``redis.healthy``, ``dakera_redis_connected``); a URL it cannot use is (exit 2)."""
        from .cache.client import open_redis

        assert self.config.redis_url is not None
        gauge = self.metrics.redis_connected
        self.redis = await stack.enter_async_context(open_redis(
            self.config.redis_url, self.config.redis_timeout_ms, log=self.log,
            on_connected=lambda up: gauge.set(1 if up else 0)))

    # -- actors ------------------------------------------------------------------------
    async def start_actor(self, actor: Actor) -> None:
        """Start ``actor`` in the node's nursery; it runs until the node stops (or crashes it)."""
        assert self.nursery is not None, "node is not running"
        self.actors.append(actor)
        await self.nursery.start(actor.run)

    # -- lifecycle ---------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the node to stop gracefully (what SIGTERM does)."""
        self._stop_requested.set()

    @property
    def stop_requested(self) -> trio.Event:
        return self._stop_requested

    async def _serve_http(self, front: trio.Nursery, *,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from hypercorn.config import Config as HyperConfig

        from .api.server import ConnectionGauge, serve

        hyper = HyperConfig()
        hyper.bind = [format_hostport(self.config.host, self.config.port)]
        hyper.accesslog = None
        hyper.errorlog = get_logger("hypercorn.error")._logger
        hyper.graceful_timeout = self.config.shutdown_grace
        hyper.keep_alive_timeout = 75
        hyper.h11_max_incomplete_size = 64 * 1024
        shed = self.metrics.http_shed.labels("connections")
        self.http_connections = ConnectionGauge(self.config.max_connections, on_refuse=shed.inc)
        binds = await front.start(
            lambda task_status: serve(self.app, hyper, self.http_connections,
                                      shutdown_trigger=self._stop_requested.wait,
                                      task_status=task_status))
        _, port = parse_hostport(binds[0].split("://", 1)[-1])
        self.http_port = port
        if not self.api_address:
            self.api_address = "http://" + _advertised(self.config.host, port)
        self.facade.api_address = self.api_address
        self.log.info("http_listening", bind=binds[0], advertise=self.api_address)
        task_status.started()

    async def _start_membership(self) -> None:
        from .membership.actor import MembershipActor
        from .membership.core import SwimCore
        from .operations.maintenance import MaintenanceStore
        from .peers import Peers
        from .wal.actor import disk_call

        assert self.endpoint is not None and self.nursery is not None
        store = self._maintenance_store = MaintenanceStore(self.data_dir, self.disk)
        state, ended = await disk_call(store.blocking, store.load_current, self.wall_clock())
        if ended is not None:
            self.log.info("maintenance_expired", reason=ended.reason or "-", while_down=True)
        elif state.enabled:
            self.log.info("maintenance_kept", reason=state.reason or "-", reject_requests=state.reject_requests)
        self.maintenance_state = state
        meta: dict[str, Any] = {"maintenance": state.enabled}
        if self.embedder is not None:
            meta[EMBEDDER_META] = self.embedder.identity
        core = SwimCore(swim_settings(self.config), self_id=self.node_id, address=self.endpoint.address,
                        api=self.api_address, meta=meta,
                        # wall-clock milliseconds: a restarted node outranks what peers recall of it
                        incarnation=int(self.wall_clock() * 1000), seeds=list(self.config.cluster_seeds),
                        rng=self.rng, now=trio.current_time(), packet_budget=self.endpoint.packet_budget)
        self.membership = membership = MembershipActor(core, self.endpoint, self.metrics, self.log, self.nursery)
        await self.start_actor(self.membership)
        self.peers = Peers(self.endpoint, lambda: membership.view.value.members, self_id=self.node_id,
                           timeout=self.config.request_timeout)
        self.facade.membership = membership.view

        async def open_when_joined() -> None:
            assert self.membership is not None
            await self.membership.joined.wait()
            self.readiness.open("membership")

        self.nursery.start_soon(open_when_joined)
        self.nursery.start_soon(self._watch_embedder)

    async def _load_embedder(self) -> None:
        """Build DAKERA_EMBEDDER's embedder (a model load: in a worker thread on a real disk)."""
        from .store.engine import load_embedder
        from .wal.actor import disk_call

        # a missing model is a ConfigError naming DAKERA_EMBEDDER (exit 2 from the command line)
        self.embedder = await disk_call(self.disk is None, load_embedder, self.config.embedder)

    async def _watch_embedder(self) -> None:
        """Refuse to join a cluster that embeds with another embedder: log it, say so (``refused``)
        and stop (``python -m dakera_actors`` then exits 2 with the message)."""
        from .membership.embedder import refusal

        assert self.membership is not None and self.embedder is not None
        own = self.embedder.identity

        def verdict(view: Any) -> str | None:
            leader = self.lease.view.value.leader if self.lease is not None else None
            return refusal(self.node_id, own, view.members.values(), leader)

        view = await self.membership.view.wait_for(lambda v: verdict(v) is not None)
        self.refused = verdict(view)
        self.log.error("embedder_refused", embedder=own, reason=self.refused)
        self.request_stop()

    async def _start_lease(self) -> None:
        from .lease.actor import LeaseActor
        from .lease.core import LeaseCore
        from .lease.store import FileLeaseStore
        from .wal.actor import disk_call

        assert self.endpoint is not None and self.nursery is not None and self.membership is not None
        assert self.peers is not None
        store = FileLeaseStore(self.data_dir, self.disk)
        state = await disk_call(store.blocking, store.load)
        floor = self.archive.token_floor if self.archive is not None else 0
        if floor > max(state.highest_token, state.leader_token, state.proposed_token):
            # a cluster restarted from the bucket: never propose, grant or accept a token the
            # archived cluster used (its chains are named by them, and must stay older)
            state = attrs.evolve(state, highest_token=max(state.highest_token, floor),
                                 leader_token=max(state.leader_token, floor),
                                 proposed_token=max(state.proposed_token, floor))
            await disk_call(store.blocking, store.save, state)
            self.log.info("lease_floor_from_archive", token_floor=floor)
        core = LeaseCore(lease_settings(self.config), self_id=self.node_id, state=state, now=trio.current_time(),
                         rng=self.rng, restarted=True)
        self.lease = LeaseActor(core, store, self.endpoint, self.peers, self.metrics, self.log)
        await self.start_actor(self.lease)
        self.facade.lease = self.lease.view
        self.nursery.start_soon(self.lease.follow, self.membership.view)

    async def _start_shard_map(self) -> None:
        from .sharding.actor import ShardMapActor, ShardMapStore
        from .sharding.leader import MapLeader

        assert self.endpoint and self.lease and self.membership and self.nursery and self.peers
        membership = self.membership
        core = MapLeader(self.node_id, shards=self.config.shards, rf=self.config.replication_factor,
                         grace=self.config.rereplication_grace, concurrency=self.config.rebalance_concurrency,
                         transfer_timeout=self.config.transfer_timeout)
        self.shard_map = ShardMapActor(core, endpoint=self.endpoint, peers=self.peers, fence=self.lease.fence,
                                       store=ShardMapStore(self.data_dir, self.disk), metrics=self.metrics,
                                       log=self.log, nursery=self.nursery, announce=membership.update_meta)
        await self.start_actor(self.shard_map)
        self.nursery.start_soon(self.shard_map.follow, self.lease.view, self.membership.view)
        self.facade.shard_map = self.shard_map.view

        async def open_when_mapped() -> None:
            assert self.shard_map is not None and self.membership is not None
            await self.shard_map.view.wait_for(lambda m: m is not None)
            # a map the leader has confirmed (not just the one stored before a restart)
            await self.shard_map.current.wait_for(bool)
            # and until gossip knows every member the map names (a restarted node learns them
            # from its seeds a moment later): before that it could not forward to their shards
            shard_map = self.shard_map

            def routable(view: Any) -> bool:
                smap = shard_map.view.value
                return smap is not None and all(m in view.members and view.members[m].reachable
                                                for m in smap.members() - set(smap.down))

            with trio.move_on_after(ROUTABLE_WAIT):
                await self.membership.view.wait_for(routable)
            self.readiness.open("shard_map")

        self.nursery.start_soon(open_when_mapped)

    def attach_cold(self, tier: ColdTier) -> None:
        """Wire the running archiver in: the admin views and the metrics read it, and the node
        publishes whether its archive is behind (see :meth:`_watch_cold`)."""
        assert self.nursery is not None, "node is not running"
        self.facade.cold = tier
        self.metrics.register_cold(tier)
        self.nursery.start_soon(self._watch_cold, tier)

    async def _watch_cold(self, tier: ColdTier) -> None:
        """Keep ``archive_behind`` in this node's member metadata true while its archive is more
        than a minute behind (``ColdTierStats.behind``), polled every second: the cluster status
        of every node then says degraded."""
        announce = self.membership.update_meta if self.membership is not None else None
        try:
            await watch_archive(tier, announce, self.log)
        except ActorStopped:
            pass  # membership is down: the node is stopping, or failing for a reason reported there

    def _on_wire_reject(self, reason: str) -> None:
        self.metrics.wire_rejected.labels(reason).inc()
        if reason == "stale" and self.wall_clock() - self._stale_logged >= STALE_LOG_INTERVAL:
            # a peer whose clock is off by more than the window is cut off: say why, now and then
            self._stale_logged = self.wall_clock()
            self.log.warning("wire_frames_stale", window_s=self.config.gossip_frame_window,
                             detail="sealed frames stamped outside the window of this node's clock were "
                                    "dropped: replays, or clocks out of sync between nodes (check NTP)")

    async def _warn_insecure(self) -> None:
        """Cluster mode without a gossip key (DAKERA_GOSSIP_INSECURE=true): say so at start and every
        hour, so a forgotten test setting shows up in any log an operator looks at."""
        while True:
            self.log.warning("gossip_insecure", gossip_bind=self.config.gossip_bind_address,
                             detail="DAKERA_GOSSIP_INSECURE=true and no DAKERA_GOSSIP_KEY: gossip frames are "
                                    "not authenticated, so anyone who reaches the gossip port bypasses the "
                                    "API key (stores, reads, whole shards, leadership)")
            await trio.sleep(INSECURE_REMINDER)

    # -- services, each built from what it uses -----------------------------------------
    def _start_router(self) -> None:
        from .routing.router import Router

        self.router = Router(self.config, node_id=self.node_id, api_address=self.api_address, offload=self.offload,
                             metrics=self.metrics, rng=self.rng,
                             storage_ready=lambda: self.readiness.is_open("storage"),
                             peers=self.peers, endpoint=self.endpoint, shard_map=self.shard_map)
        self.facade.router = self.router

    def _start_operations(self) -> None:
        from .operations.service import Operations

        assert self.membership and self.lease and self.shard_map and self.peers and self.endpoint
        assert self.nursery is not None and self._maintenance_store is not None

        def handing_over() -> int:  # primaries this node still hands over (a drain is not over)
            return len(self.replicator.handing_over) if self.replicator is not None else 0

        self.operations = Operations(node_id=self.node_id, store=self._maintenance_store,
                                     state=self.maintenance_state, flags=self.readiness,
                                     membership=self.membership, lease=self.lease.view, shard_map=self.shard_map,
                                     handing_over=handing_over, peers=self.peers, endpoint=self.endpoint,
                                     wall_clock=self.wall_clock, log=self.log, nursery=self.nursery)
        self.facade.operations = self.operations

    async def _start_storage(self) -> None:
        """Recover the store, start replication over it (cluster mode), then open the gate."""
        from .store.engine import start_storage

        self.memory = await start_storage(self.config, data_dir=self.data_dir, disk=self.disk, metrics=self.metrics,
                                          log=self.log, wall_clock=self.wall_clock, rng=self.rng,
                                          offload=self.offload, start_actor=self.start_actor,
                                          embedder=self.embedder)
        if self.objects is not None:
            from .cold.seeding import Seeder

            self.seeder = Seeder(self.objects, self.memory.shards, self.memory.owner, self.offload, self.log,
                                 on_read=self.metrics.cold_bytes.labels("down").inc)
        if self.endpoint is not None and self.shard_map is not None:
            await self._start_replication(self.memory)
        else:
            await self._restore_single_node()
        await self._start_archiver()
        assert self.router is not None
        self.router.attach(self.memory)
        self._start_reembedding(self.memory)
        self._start_backups()
        self._start_cache()
        self._start_counts()
        self.facade.memory = self.memory
        self.readiness.open("storage")

    def _start_reembedding(self, service: MemoryService) -> None:
        """Give every memory of the shards this node leads a vector of its embedder, in the
        background, where they were made by another (see :mod:`dakera_actors.store.reembed`)."""
        from .store.reembed import Reembedder

        assert self.nursery is not None
        # a cluster node starts once ready: not while it may yet refuse to join (another embedder)
        self.reembedder = Reembedder(service, self.metrics, self.log,
                                     allowed=lambda: self.refused is None and self.readiness.ready)
        self.facade.reembed = self.reembedder
        self.nursery.start_soon(self.reembedder.run)

    async def _start_replication(self, service: MemoryService) -> None:
        from .replication.actor import ReplicationCollector, Replicator, frame_budget

        assert self.shard_map is not None and self.nursery is not None
        assert self.peers is not None and self.endpoint is not None
        endpoint = self.endpoint
        replicator = Replicator(self.node_id, self.config, service, self.peers, self.shard_map, self.metrics,
                                self.log, self.nursery, self.offload,
                                frame_budget(endpoint.transport.max_frame_size, endpoint.codec.overhead))
        service.owner.hooks = replicator
        service.replication = replicator
        replicator.seeder = self.seeder  # before it starts: a restart may take shards over at once
        service.request_timeout = self.config.request_timeout
        self.replicator = replicator
        self.shard_map.replication_status = replicator.local_status
        await self.start_actor(replicator)
        self.nursery.start_soon(replicator.follow, self.shard_map.view)
        self.metrics.register_replication(ReplicationCollector(replicator))
        self.facade.replication = replicator


    def _start_counts(self) -> None:
        """Memories and agents across the cluster (``/v1/ops/stats``, ``/admin/cluster/status``)."""
        from .operations.stats import ClusterCounts

        self.facade.counts = ClusterCounts(node_id=self.node_id, shards=self.config.shards, local=self._count_local,
                                           shard_map=self.shard_map.view if self.shard_map is not None else None,
                                           peers=self.peers, endpoint=self.endpoint,
                                           timeout=self.config.request_timeout)

    def _count_local(self, shards: Iterable[int]) -> dict[int, tuple[int, int]]:
        """(memories, agents) of each of ``shards`` this node holds a copy of by its own map (every
        shard on a single node) and is not still taking over (its count would be short)."""
        memory = self.memory
        smap = self.shard_map.view.value if self.shard_map is not None else None
        if memory is None or (self.shard_map is not None and smap is None):
            return {}
        syncing = self.replicator.core.syncing if self.replicator is not None else set()
        held = memory.shards.shards
        out: dict[int, tuple[int, int]] = {}
        for shard in shards:
            if (smap is not None and self.node_id not in smap.placement[shard]) or shard in syncing:
                continue
            data = held.get(shard)
            out[shard] = (data.memory_count, len(data.agents)) if data is not None else (0, 0)
        return out

    def _cluster_id(self) -> str:
        """What ``/admin/cluster/status`` calls this cluster: a single node's own archive id (its
        node id without one); in a cluster the name every member shares (see ``_cache_namespace``)."""
        if not self.config.cluster_mode:
            return self.archive.identity.cluster_id if self.archive is not None else self.node_id
        return self._cache_namespace()

    def _start_backups(self) -> None:
        from .backup.cluster import NodeCluster
        from .backup.link import forwarder, serve_backup_jobs
        from .backup.service import Backups
        from .backup.store import BackupStore
        from .storage.opening import describe_backups

        if self.backup_objects is None or self.memory is None or self.router is None or self.nursery is None:
            return
        shard_map = self.shard_map
        cluster = NodeCluster(node_id=self.node_id, shards=self.memory.shards, router=self.router, peers=self.peers,
                              shard_map=(lambda: shard_map.view.value) if shard_map is not None else None,
                              request_timeout=self.config.request_timeout, archive_behind=self._archive_behind)
        store = BackupStore(self.backup_objects, location=describe_backups(self.config, self.data_dir))
        lease = self.lease

        def leading() -> int | None:  # jobs and the schedule run on the leader (a single node leads itself)
            if lease is None:
                return 0
            view = lease.view.value
            return view.token if view.is_self else None

        def leader() -> str | None:
            return lease.view.value.leader if lease is not None else self.node_id

        # a shared backup store (every node sees the same records): jobs run on the leader
        shared = self.config.cluster_mode and lease is not None and self.peers is not None and self.backup_shared
        self.backups = Backups(node_id=self.node_id, store=store, cluster=cluster,
                               cluster_id=self.archive.identity.cluster_id if self.archive else self.node_id,
                               shards=self.config.shards, key=self.config.backup_key,
                               bundle_limit=BUNDLE_EXPANSION * self.config.max_bundle_bytes, log=self.log,
                               nursery=self.nursery, wall_clock=self.wall_clock, rng=self.rng,
                               on_backup=self._count_backup, offload=self.offload,
                               on_restore=lambda outcome: self.metrics.restores.labels(outcome).inc(),
                               archive=self.objects, dim=self.memory.shards.dim,
                               archive_since=self.archive.identity.created_at if self.archive else 0.0,
                               archive_local=(self.config.cluster_mode and self.config.storage == "filesystem"
                                              and self.config.storage_path is None and not self._objects_injected),
                               archive_flush=self.config.cold_flush_ms / 1000, on_history=self._archive_history,
                               shared=shared, leading=leading, leader=leader,
                               forward=forwarder(self.peers) if shared and self.peers is not None else None)
        if self.endpoint is not None:
            serve_backup_jobs(self.endpoint, self.backups)
        self.facade.backups = self.backups
        if self.config.cluster_mode and not self.backup_shared:
            # each node would list its own backups and follow its own schedule and history window
            self.log.warning("backup_store_node_local", location=store.location,
                             hint="in a cluster set DAKERA_BACKUP_STORAGE=s3 so every node sees the same backups, schedule "
                                  "and retention_days, and jobs run on the leader (a shared DAKERA_BACKUP_PATH "
                                  "is not the cluster's store: jobs stay each node's own)")
        self.nursery.start_soon(self.backups.run_schedule, leading)
        self.nursery.start_soon(self.backups.run_jobs)
        self.nursery.start_soon(self.backups.follow_history)

    def _start_cache(self) -> None:
        """The L1.5 cache over ``cache_backend`` (Redis, or a test's model): the store's write fence
        and the router's lookups and fills."""
        from .cache.facade import NodeCache
        from .cache.generation import GenerationConfig
        from .cache.primary import Generations

        if self.cache_backend is None or self.memory is None or self.router is None or self.nursery is None:
            return
        if not self.config.cluster_mode:
            # every read of a single node is local: the cache would only cost a call per write
            self.log.info("cache_unused", reason="a single node answers every read itself")
            return
        c = self.config
        timeout = c.redis_timeout_ms / 1000
        config = GenerationConfig(lease=1.0, timeout=timeout, authority=(c.lease_ttl_ms + c.lease_drift_ms) / 1000)
        cluster = self._cache_namespace()
        generations = Generations(self.cache_backend, cluster=cluster, config=config,
                                  authorized=self._cache_authorized, nursery=self.nursery, rng=self.rng,
                                  on_wait=self.metrics.cache_generation_waits.inc,
                                  foreign_from=self._cache_foreign_from)
        self.cache = NodeCache(self.cache_backend, generations, cluster=cluster,
                               ttl=c.cache_ttl_seconds, timeout=timeout, wall_clock=self.wall_clock,
                               roles=self._archive_roles,
                               on_result=lambda result: self.metrics.cache_requests.labels(result).inc(),
                               nursery=self.nursery)
        self.memory.fence = self.cache
        self.router.cache = self.cache
        self.facade.cache = self.cache
        self.nursery.start_soon(self._follow_cache_roles, generations)

    def _cache_namespace(self) -> str:
        """What every node of this cluster, and no other cluster, calls itself in Redis: the
        archive's cluster id when the archive is shared (S3, or a shared DAKERA_STORAGE_PATH),
        else a digest of the gossip key (each node's own archive has its own id)."""
        import xxhash

        c = self.config
        shared = c.storage == "s3" or c.storage_path is not None or self._objects_injected
        if shared and self.archive is not None:
            return self.archive.identity.cluster_id
        if c.gossip_keys:
            return "k" + xxhash.xxh64_hexdigest(c.gossip_keys[0])
        return "insecure"

    def _cache_authorized(self) -> bool:
        """Whether this node still has the cluster's authority over its shards (for the cache's
        trust): it heard the leader's lease, and that lease has not run out (a single node: yes)."""
        lease = self.lease
        if lease is None:
            return True
        view = lease.view.value
        return view.leader is not None and trio.current_time() < view.until

    def _cache_foreign_from(self) -> int:
        """The cache's foreign-term bound (:func:`.cache.generation.foreign_from`) while this node
        holds the leader's lease (:meth:`_cache_authorized`); 0 (not known) otherwise."""
        from .cache.generation import foreign_from

        lease = self.lease
        if lease is None or not self._cache_authorized():
            return 0
        return foreign_from(lease.view.value.token)

    async def _follow_cache_roles(self, generations: Any) -> None:
        """Keep a generation for every shard this node is primary of (writes also start one at once)."""
        while True:
            roles = self._archive_roles()
            for shard in list(generations.shards):
                if shard not in roles:
                    generations.drop(shard)
            for shard, term in roles.items():
                generations.lead(shard, term)
            await trio.sleep(0.05)

    def _archive_history(self, seconds: float) -> None:
        """The backup schedule's retention_days reached this node: the archive keeps that much."""
        if self.archiver is not None:
            self.archiver.core.set_history(seconds)

    def _archive_behind(self) -> list[str]:
        """Members whose archive is behind: what the cluster status says (one rule for both)."""
        from .api.admin_views import archive_behind

        return archive_behind(self.facade)

    def _count_backup(self, outcome: str) -> None:
        self.metrics.backups.labels(outcome).inc()
        if outcome == "ok":
            self.metrics.backup_last_success.set(self.wall_clock())

    async def _restore_single_node(self) -> None:
        """A single node started on an empty disk over an archive: every shard comes back from it."""
        assert self.memory is not None
        if self.seeder is None or self.archive is None or not self.archive.chains:
            return
        if any(s.seq or s.agents for s in self.memory.shards.shards.values()):
            return  # the local disk holds the data: WAL replay already brought it back
        started = trio.current_time()
        outcomes = [await self.seeder.restore(shard) for shard in range(self.config.shards)]
        failed = outcomes.count("failed")
        if failed:
            from .storage.objects import ObjectStoreUnusable

            raise ObjectStoreUnusable("DAKERA_STORAGE", f"{failed} shards could not be restored from the archive")
        self.log.info("restored_from_archive", shards=outcomes.count("restored"),
                      memories=sum(s.memory_count for s in self.memory.shards.shards.values()),
                      seconds=round(trio.current_time() - started, 3))

    def _archive_roles(self) -> dict[int, int]:
        """Shard -> chain for every shard this node is primary of: the map epoch its term as the
        shard's primary began in (the map's ``since``: unrelated map changes keep the chain); a
        single node's chain is a term above every archived one, begun at start."""
        if self.replicator is not None:
            core = self.replicator.core
            return {s: core.live_since.get(s) or core.epoch() for s in core.live}
        chain = ((self.archive.token_floor if self.archive else 0) + 1) << 32
        return {s: chain for s in range(self.config.shards)}

    def _leadership(self) -> tuple[int, str, list[str]] | None:
        lease = self.lease
        if lease is None or not lease.view.value.is_self:
            return None
        voters = lease.core.config.voters if lease.core.config is not None else (self.node_id,)
        return lease.view.value.token, self.node_id, list(voters)

    async def _start_archiver(self) -> None:
        from .cold.archiver import Archiver, TierView
        from .cold.core import ArchiveConfig, ArchiveCore
        from .store.owner import record_size

        if self.objects is None or self.memory is None or self.nursery is None:
            return
        config = self.config
        flush_ms, backlog = config.cold_flush_ms, config.cold_backlog_bytes
        # history None: retention deletes nothing until the backup schedule's retention_days is read
        core = ArchiveCore(ArchiveConfig(flush=flush_ms / 1000, backlog_limit=backlog, history=None),
                           size=record_size)
        from .storage.opening import describe

        # an injected store (a test's) is described as memory; else where DAKERA_STORAGE points
        location = "memory" if self._objects_injected else describe(config, self.data_dir)
        self.archiver = Archiver(self.objects, core, self.memory.shards, self.memory.owner.tails, self._archive_roles,
                                 self.log, self.offload, self.nursery, backend=config.storage if self.disk is None
                                 else "memory", location=location, flush_ms=flush_ms,
                                 leadership=self._leadership if self.lease is not None else None,
                                 wall_clock=self.wall_clock, on_upload=self._count_upload)
        await self.start_actor(self.archiver)
        self.attach_cold(TierView(self.archiver, self.seeder))

    def _count_upload(self, outcome: str, size: int) -> None:
        self.metrics.cold_uploads.labels(outcome).inc()
        if size:
            self.metrics.cold_bytes.labels("up").inc(size)


@asynccontextmanager
async def open_node(
    config: Config,
    *,
    serve_http: bool = True,
    transport_options: dict[str, Any] | None = None,
    rng: random.Random | None = None,
    wall_clock: Callable[[], float] = time.time,
    disk: SimDisk | None = None,
    objects: ObjectStore | None = None,
    backup_objects: ObjectStore | None = None,
    cache: Any = None,
) -> AsyncIterator[Node]:
    """Start a node and yield it; stop it gracefully when the block exits.

    ``serve_http=False`` skips the socket listener (tests talk to ``node.app`` over ASGI);
    ``transport_options`` go to the transport's ``open`` (the memory transport's ``network=``);
    ``rng``, ``wall_clock`` and ``disk`` inject randomness, Unix time and a simulated disk;
    ``objects`` an object store (say a ``MemoryObjectStore`` shared by a test's nodes), used as is.
    Without one the node opens DAKERA_STORAGE's, except on a simulated disk with
    ``DAKERA_STORAGE=filesystem`` (a simulation writes no real files). ``backup_objects``: where
    backup bundles go, likewise (else DAKERA_BACKUP_STORAGE's; none in a simulation).
    """
    from .api.app import create_app

    node = Node(config, rng=rng, wall_clock=wall_clock, disk=disk, objects=objects, cache_backend=cache)
    node._prepare_data_dir()
    node.app = create_app(node.facade)
    node.metrics.build_info.labels(__version__, node.node_id).set(1)
    node.metrics.gossip_members.labels("alive").set(1)
    try:
        async with AsyncExitStack() as stack:
            if node.objects is None and (config.storage == "s3" or disk is None):
                await node._open_object_store(stack)
            if node.objects is not None:
                from .cold.restore import open_archive

                node.archive = await open_archive(node.objects, shards=config.shards, node_id=node.node_id,
                                                  wall_clock=node.wall_clock)
                node.log.info("archive_opened", cluster_id=node.archive.identity.cluster_id,
                              new=node.archive.created, chains=node.archive.chains,
                              token_floor=node.archive.token_floor)
            node.backup_objects = backup_objects
            # given (a bucket the test's nodes share) or S3: every node reads the same backups
            node.backup_shared = backup_objects is not None or config.backup_storage == "s3"
            if node.backup_objects is None and (config.backup_storage == "s3" or disk is None):
                from .storage.opening import open_backup_store

                node.backup_objects = await stack.enter_async_context(open_backup_store(config, node.data_dir))
            if config.redis_url and node.cache_backend is None:
                await node._open_redis(stack)
                node.cache_backend = node.redis  # the L1.5 cache runs on it (cluster mode)
            if config.cluster_mode:
                transport_cls = load_transport(config.transport)
                node.transport = await stack.enter_async_context(transport_cls.open(
                    bind=config.gossip_bind_address, advertise=config.gossip_advertise,
                    max_frame_size=config.max_frame_bytes, inbound_frame_limit=UNAUTHENTICATED_FRAME_LIMIT,
                    handshake_timeout=config.gossip_handshake_timeout,
                    max_pending_connections=config.gossip_max_pending_streams, **(transport_options or {})))
                node.log.info("transport_listening", transport=config.transport,
                              bind=config.gossip_bind_address, advertise=node.transport.address)
            # two nurseries so that stopping is ordered: the front (HTTP) drains first while
            # the core (endpoint, actors) still serves it, then the core is cancelled
            async with trio.open_nursery() as core:
                node.nursery = core
                node.started_at = node.facade.started_at = trio.current_time()
                node.facade.cluster_id = node._cluster_id()
                async with trio.open_nursery() as front:
                    # every gate is required before HTTP answers: /health/ready is never 200 early
                    for gate in ("storage", *(("transport", "membership", "shard_map") if config.cluster_mode else ())):
                        node.readiness.require(gate)
                    if serve_http:
                        node.readiness.require("http")
                        await front.start(node._serve_http, front)
                        node.readiness.open("http")
                    if node.transport is not None:
                        codec = Codec(node.node_id, config.gossip_keys, on_reject=node._on_wire_reject,
                                      wall_clock=node.wall_clock, window=config.gossip_frame_window)
                        if not config.gossip_keys:
                            core.start_soon(node._warn_insecure)
                        node.endpoint = Endpoint(node.transport, codec, node.metrics, node.log,
                                                 api_address=node.api_address,
                                                 request_timeout=config.request_timeout,
                                                 limits=StreamLimits(
                                                     first_frame_timeout=config.gossip_handshake_timeout,
                                                     idle_timeout=config.gossip_stream_idle_timeout,
                                                     max_streams=config.gossip_max_streams,
                                                     max_pending=config.gossip_max_pending_streams))
                        node.metrics.watch_refusals(node.transport.refusals, node.endpoint.refused.copy)
                        await core.start(node.endpoint.run)
                        node.readiness.open("transport")
                    await node._load_embedder()
                    if node.transport is not None:
                        await node._start_membership()
                        await node._start_lease()
                        await node._start_shard_map()
                    node._start_router()
                    if node.transport is not None:
                        node._start_operations()
                    await node._start_storage()
                    node.log.info("node_started", version=__version__, cluster_mode=config.cluster_mode,
                                  data_dir=str(node.data_dir), api=node.api_address or "-")
                    try:
                        yield node
                    finally:
                        node._stop_requested.set()
                        node.readiness.stopping = True
                        node.log.info("node_stopping", in_flight=node.facade.in_flight.count)
                        # requests already inside finish while the node is still a full member
                        # (hypercorn drains its own; this also covers in-process ASGI callers)
                        with trio.move_on_after(config.shutdown_grace):
                            while node.facade.in_flight.count > 0:
                                await node.facade.in_flight.idle.wait()
                        if node.membership is not None:
                            # a graceful stop says goodbye; a killed node (cancelled here) cannot
                            await trio.lowlevel.checkpoint_if_cancelled()
                            with trio.move_on_after(1.0):
                                try:
                                    await node.membership.leave()
                                except ActorStopped:
                                    pass  # membership is already down (the node is failing)
                        if node.memory is not None:
                            # a clean stop leaves snapshots of every changed shard, so the next start
                            # replays (almost) no log; cut short, the next start just replays more
                            await trio.lowlevel.checkpoint_if_cancelled()
                            with trio.move_on_after(CLEAN_STOP_CHECKPOINT):
                                try:
                                    await node.memory.owner.checkpoint_now()
                                    node.log.info("clean_stop_checkpoint_done")
                                except ActorStopped:
                                    pass  # the storage actors are down already (the node is failing)
                        # backstop: hypercorn's graceful_timeout should end it well before this
                        front.cancel_scope.deadline = trio.current_time() + config.shutdown_grace + 0.5
                core.cancel_scope.cancel()
    finally:
        node._release_data_dir()
        node.log.info("node_stopped")
