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
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from . import __version__
from .config import Config
from .endpoint import UNAUTHENTICATED_FRAME_LIMIT, Endpoint
from .log import EventLogger, get_logger
from .metrics import NodeMetrics
from .runtime import Actor, ActorStopped
from .runtime.offload import Offload
from .transport import Transport, format_hostport, load_transport, parse_hostport
from .wal.log import DIR_MODE, FILE_MODE, fsync_directory, write_private
from .wire import Codec

if TYPE_CHECKING:
    from .lease.actor import LeaseActor
    from .membership.actor import MembershipActor
    from .replication.actor import Replicator
    from .sharding.actor import ShardMapActor
    from .sharding.operations import Operations
    from .sharding.router import Router
    from .store.service import MemoryService
    from .wal.memory import SimDisk

NODE_ID_FILE = "node_id"
ROUTABLE_WAIT = 10.0  # readiness waits this long at most for gossip to know the map's members
LOCK_FILE = "LOCK"
INSECURE_REMINDER = 3600.0  # seconds between the warnings of a cluster running without a gossip key
STALE_LOG_INTERVAL = 60.0  # seconds between warnings about stale frames (each is counted anyway)


class DataDirLocked(RuntimeError):
    """Another live process already uses this data directory."""


class Readiness:
    """Named gates that must all open before ``/health/ready`` says 200."""

    def __init__(self) -> None:
        self._required: list[str] = []
        self._open: set[str] = set()
        self.changed = trio.Event()

    def require(self, gate: str) -> None:
        if gate not in self._required:
            self._required.append(gate)

    def open(self, gate: str) -> None:
        self._open.add(gate)
        self.changed.set()
        self.changed = trio.Event()

    def close(self, gate: str) -> None:
        self._open.discard(gate)

    def is_open(self, gate: str) -> bool:
        return gate in self._open

    def missing(self) -> list[str]:
        waiting = [g for g in self._required if g not in self._open]
        return waiting + ["stopping"] * self.stopping + ["maintenance (rejecting requests)"] * self.rejecting

    stopping = False  # set when the node starts to stop: load balancers take it out at once
    #: in maintenance with reject_requests: client requests get 503, and so does readiness
    rejecting = False

    @property
    def ready(self) -> bool:
        return not self.missing()


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
                 wall_clock: Callable[[], float] = time.time, disk: SimDisk | None = None) -> None:
        self.config = config
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
        self.readiness = Readiness()
        #: this node's maintenance flag as stored (read before membership starts)
        self.maintenance_state: Any = None
        self.log: EventLogger = get_logger("dakera_actors.node")
        self.transport: Transport | None = None
        self.endpoint: Endpoint | None = None
        self.actors: list[Actor] = []
        self.memory: MemoryService | None = None
        self.membership: MembershipActor | None = None
        self.lease: LeaseActor | None = None
        self.shard_map: ShardMapActor | None = None
        self.router: Router | None = None
        self.replicator: Replicator | None = None
        self.operations: Operations | None = None
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
        #: HTTP requests being served (the app counts them); a stop waits for them to finish
        self.in_flight = 0
        self.idle = trio.Event()
        self.app: Any = None  # the Quart app, created once the node id is known
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
        id_file = self.data_dir / NODE_ID_FILE
        stored = id_file.read_text().strip() if id_file.exists() else ""
        if not self.node_id:
            # a single node keeps the id it was first given, so its logs and metrics stay stable
            self.node_id = stored or f"node-{self.rng.getrandbits(32):08x}"
        if stored != self.node_id:
            # fsynced, then renamed, then the directory fsynced: a crash must not leave an
            # empty id file (a fresh random id next start) nor lose the rename
            tmp = id_file.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)
            write_private(tmp, (self.node_id + "\n").encode())
            os.replace(tmp, id_file)
            fsync_directory(self.data_dir)
        self.log = self.log.bind(node=self.node_id)

    def _release_data_dir(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

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
        self.log.info("http_listening", bind=binds[0], advertise=self.api_address)
        task_status.started()

    async def _start_membership(self) -> None:
        from .membership.actor import MembershipActor
        from .membership.core import SwimCore
        from .sharding.maintenance import MaintenanceState, MaintenanceStore
        from .wal.actor import disk_call

        assert self.endpoint is not None and self.nursery is not None
        store = MaintenanceStore(self.data_dir, self.disk)
        state = await disk_call(store.blocking, store.load)
        if state.enabled and state.expired(self.wall_clock()):
            self.log.info("maintenance_expired", reason=state.reason or "-", while_down=True)
            state = MaintenanceState()
            await disk_call(store.blocking, store.save, state)
        elif state.enabled:
            self.log.info("maintenance_kept", reason=state.reason or "-", reject_requests=state.reject_requests)
        self.maintenance_state = state
        core = SwimCore(self.config.swim(), self_id=self.node_id, address=self.endpoint.address,
                        api=self.api_address, meta={"maintenance": state.enabled},
                        # wall-clock milliseconds: a restarted node outranks what peers recall of it
                        incarnation=int(self.wall_clock() * 1000), seeds=list(self.config.cluster_seeds),
                        rng=self.rng, now=trio.current_time(), packet_budget=self.endpoint.packet_budget)
        self.membership = MembershipActor(core, self.endpoint, self.metrics, self.log, self.nursery)
        await self.start_actor(self.membership)
        self.readiness.require("membership")

        async def open_when_joined() -> None:
            assert self.membership is not None
            await self.membership.joined.wait()
            self.readiness.open("membership")

        self.nursery.start_soon(open_when_joined)

    async def _start_lease(self) -> None:
        from .lease.actor import LeaseActor
        from .lease.core import LeaseCore
        from .lease.store import FileLeaseStore, SimLeaseStore
        from .wal.actor import disk_call

        assert self.endpoint is not None and self.nursery is not None and self.membership is not None
        store = SimLeaseStore(self.disk) if self.disk is not None else FileLeaseStore(self.data_dir)
        state = await disk_call(store.blocking, store.load)
        core = LeaseCore(self.config.lease(), self_id=self.node_id, state=state, now=trio.current_time(),
                         rng=self.rng, restarted=True)
        self.lease = LeaseActor(core, store, self.endpoint, self.metrics, self.log)
        await self.start_actor(self.lease)
        self.nursery.start_soon(self.lease.follow, self.membership.view)

    async def _start_shard_map(self) -> None:
        from .peers import Peers
        from .sharding.actor import SEND_TIMEOUT, ShardMapActor, ShardMapStore
        from .sharding.leader import MapLeader

        assert self.endpoint and self.lease and self.membership and self.nursery
        membership = self.membership
        core = MapLeader(self.node_id, shards=self.config.shards, rf=self.config.replication_factor,
                         grace=self.config.rereplication_grace, concurrency=self.config.rebalance_concurrency,
                         transfer_timeout=self.config.transfer_timeout)
        peers = Peers(self.endpoint, lambda: membership.view.value.members, self_id=self.node_id,
                      timeout=SEND_TIMEOUT)
        self.shard_map = ShardMapActor(core, endpoint=self.endpoint, peers=peers, lease=self.lease,
                                       store=ShardMapStore(self.data_dir, self.disk), metrics=self.metrics,
                                       log=self.log, nursery=self.nursery, announce=membership.update_meta)
        await self.start_actor(self.shard_map)
        self.nursery.start_soon(self.shard_map.follow, self.lease.view, self.membership.view)
        self.readiness.require("shard_map")

        async def open_when_mapped() -> None:
            assert self.shard_map is not None and self.membership is not None
            await self.shard_map.view.wait_for(lambda m: m is not None)
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

    def cluster_status(self) -> dict[str, Any]:
        """``GET /admin/cluster/status``. Leader and shard fields fill in as those layers land."""
        shards = self.config.shards
        members = self.membership.view.value.members if self.membership else {}
        alive = sum(1 for m in members.values() if m.alive) if members else 1
        known = sum(1 for m in members.values() if m.state.label != "Left") if members else 1
        cluster = self.config.cluster_mode
        lease = self.lease.view.value if self.lease else None
        smap = self.shard_map.view.value if self.shard_map else None
        return {
            "status": ("healthy" if self.readiness.ready and alive == known else
                       "degraded" if self.readiness.ready else "unavailable"),
            "node_id": self.node_id,
            "leader": lease.leader if lease else (None if cluster else self.node_id),
            "fencing_token": lease.token if lease else 0,
            "lease_remaining_ms": (None if lease is None or (left := lease.remaining(trio.current_time())) is None
                                   else int(left * 1000)),
            "nodes": known,
            "alive": alive,
            "replication_factor": min(self.config.replication_factor, max(alive, 1)),
            "shard_count": shards,
            "shard_map_version": smap.version if smap else 0,
            "shard_distribution": (smap.distribution() if smap else {} if cluster
                                   else {self.node_id: {"primary": shards, "replica": 0}}),
            "shard_balance": round(smap.balance(), 4) if smap else 0.0,
            "unassigned_shards": (sum(1 for c in smap.placement if not c) if smap else shards if cluster else 0),
            "shards_moving": len(smap.placement) - sum(1 for c in smap.placement if len(c) <= smap.counted) if smap else 0,
        }

    def cluster_shards(self) -> dict[str, Any]:
        """``GET /admin/cluster/shards``: each shard's copies and, where held here, its size."""
        smap = self.shard_map.view.value if self.shard_map else None
        local = self.memory.shards.shards if self.memory else {}
        now = trio.current_time()
        out = []
        for shard in range(self.config.shards):
            copies = (smap.placement[shard] if smap else [] if self.config.cluster_mode else [self.node_id])
            held = local.get(shard)
            out.append({
                "id": shard,
                "primary": copies[0] if copies else None,
                "replicas": list(copies[1:]),
                # counted where this node holds the shard; lag where this node is its primary
                "memories": held.memory_count if held is not None else 0,
                "size_bytes": sum(len(m.content) for a in held.agents.values() for m in a.memories.values())
                if held is not None else 0,
                "seq": held.seq if held is not None else 0,
                "lag_ms": int(self.replicator.shard_lag(shard, now)[0]) if self.replicator is not None else 0,
            })
        return {"shards": out, "shard_map_version": smap.version if smap else 0}

    def cluster_nodes(self) -> list[dict[str, Any]]:
        """``GET /admin/cluster/nodes``: every member this node knows of, itself included."""
        if self.membership is None:
            return [{
                "id": self.node_id, "state": "Alive", "role": "leader", "api_address": self.api_address,
                "gossip_address": None, "incarnation": 0, "maintenance": False,
                "primary_shards": list(range(self.config.shards)), "replica_shards": [],
            }]
        leader = self.lease.view.value.leader if self.lease else None
        smap = self.shard_map.view.value if self.shard_map else None
        return [{
            "id": m.id,
            "state": m.state.label,
            "role": "leader" if m.id == leader else "follower",
            "api_address": m.api,
            "gossip_address": m.address,
            "incarnation": m.incarnation,
            "maintenance": m.maintenance,
            "primary_shards": smap.primaries_of(m.id) if smap else [],
            "replica_shards": smap.replicas_of(m.id) if smap else [],
        } for m in sorted(self.membership.view.value.members.values(), key=lambda m: m.id)]


@asynccontextmanager
async def open_node(
    config: Config,
    *,
    serve_http: bool = True,
    transport_options: dict[str, Any] | None = None,
    rng: random.Random | None = None,
    wall_clock: Callable[[], float] = time.time,
    disk: SimDisk | None = None,
) -> AsyncIterator[Node]:
    """Start a node and yield it; stop it gracefully when the block exits.

    ``serve_http=False`` skips the socket listener (tests talk to ``node.app`` over ASGI);
    ``transport_options`` go to the transport's ``open`` (the memory transport's ``network=``);
    ``rng``, ``wall_clock`` and ``disk`` inject randomness, Unix time and a simulated disk.
    """
    from .api import create_app
    from .sharding.router import Router
    from .store.engine import start_storage

    node = Node(config, rng=rng, wall_clock=wall_clock, disk=disk)
    node._prepare_data_dir()
    node.app = create_app(node)
    node.metrics.build_info.labels(__version__, node.node_id).set(1)
    node.metrics.gossip_members.labels("alive").set(1)
    try:
        async with AsyncExitStack() as stack:
            if config.cluster_mode:
                transport_cls = load_transport(config.transport)
                node.transport = await stack.enter_async_context(transport_cls.open(
                    bind=config.gossip_bind_address, advertise=config.gossip_advertise,
                    max_frame_size=config.max_frame_bytes, inbound_frame_limit=UNAUTHENTICATED_FRAME_LIMIT,
                    **(transport_options or {})))
                node.log.info("transport_listening", transport=config.transport,
                              bind=config.gossip_bind_address, advertise=node.transport.address)
            # two nurseries so that stopping is ordered: the front (HTTP) drains first while
            # the core (endpoint, actors) still serves it, then the core is cancelled
            async with trio.open_nursery() as core:
                node.nursery = core
                node.started_at = trio.current_time()
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
                                                 request_timeout=config.request_timeout)
                        node.readiness.require("transport")
                        await core.start(node.endpoint.run)
                        node.readiness.open("transport")
                    node.router = Router(node)
                    if node.transport is not None:
                        await node._start_membership()
                        await node._start_lease()
                        await node._start_shard_map()
                        from .sharding.operations import Operations

                        node.operations = Operations(node)
                    await start_storage(node)
                    node.log.info("node_started", version=__version__, cluster_mode=config.cluster_mode,
                                  data_dir=str(node.data_dir), api=node.api_address or "-")
                    try:
                        yield node
                    finally:
                        node._stop_requested.set()
                        node.readiness.stopping = True
                        node.log.info("node_stopping", in_flight=node.in_flight)
                        # requests already inside finish while the node is still a full member
                        # (hypercorn drains its own; this also covers in-process ASGI callers)
                        with trio.move_on_after(config.shutdown_grace):
                            while node.in_flight > 0:
                                await node.idle.wait()
                        if node.membership is not None:
                            # a graceful stop says goodbye; a killed node (cancelled here) cannot
                            await trio.lowlevel.checkpoint_if_cancelled()
                            with trio.move_on_after(1.0):
                                try:
                                    await node.membership.leave()
                                except ActorStopped:
                                    pass  # membership is already down (the node is failing)
                        # backstop: hypercorn's graceful_timeout should end it well before this
                        front.cancel_scope.deadline = trio.current_time() + config.shutdown_grace + 0.5
                core.cancel_scope.cancel()
    finally:
        node._release_data_dir()
        node.log.info("node_stopped")
