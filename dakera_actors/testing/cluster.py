"""The in-process cluster harness behind :func:`dakera_actors.testing.open_cluster`."""

from __future__ import annotations

import hashlib
import random
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from ..config import Config
from ..log import get_logger
from ..node import Node, open_node
from ..wal.memory import SimDisk

_log = get_logger("dakera_actors.testing")


@attrs.define(eq=False)
class ClusterNode:
    """One slot of the cluster: the id and addresses stay the same across restarts."""

    id: str
    gossip_address: str
    data_dir: Path
    config: Config
    node: Node | None = None
    disk: SimDisk | None = None
    killed: bool = False
    scope: trio.CancelScope | None = None
    stopped: trio.Event | None = None
    down: trio.Event | None = None
    generation: int = 0

    @property
    def running(self) -> bool:
        return self.node is not None


class _NodeASGITransport(httpx.AsyncBaseTransport):
    """httpx over ASGI to whichever incarnation of the node runs now; refused while it is down."""

    def __init__(self, slot: ClusterNode) -> None:
        self._slot = slot

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        node = self._slot.node
        if node is None or node.app is None:
            raise httpx.ConnectError(f"node {self._slot.id} is not running", request=request)
        transport = httpx.ASGITransport(app=node.app)
        return await transport.handle_async_request(request)


class Cluster:
    """A running in-process cluster. Built by :func:`open_cluster`."""

    def __init__(self, nursery: trio.Nursery, slots: list[ClusterNode], *, serve_http: bool,
                 transport_options: dict[str, Any], network: Any, seed: int,
                 wall_clock: Callable[[], float], objects: Any = None, backup_objects: Any = None,
                 cache: Any = None) -> None:
        self._nursery = nursery
        self._slots = {slot.id: slot for slot in slots}
        self._serve_http = serve_http
        self._transport_options = transport_options
        #: the MemoryNetwork when the transport is ``memory``, else None
        self.network = network
        self.seed = seed
        self.rng = random.Random(seed)
        self.wall_clock = wall_clock
        #: the object store every node's cold tier shares (None: no cold tier)
        self.objects = objects
        #: the object store every node keeps its backups in (None: none in a simulation)
        self.backup_objects = backup_objects
        self.cache = cache

    # -- views -------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        return list(self._slots)

    @property
    def nodes(self) -> dict[str, Node]:
        """The nodes running now, by id."""
        return {i: s.node for i, s in self._slots.items() if s.node is not None}

    def slot(self, node_id: str) -> ClusterNode:
        try:
            return self._slots[node_id]
        except KeyError:
            raise KeyError(f"no node {node_id!r} in this cluster (have {self.ids})") from None

    def node(self, node_id: str) -> Node:
        node = self.slot(node_id).node
        if node is None:
            raise RuntimeError(f"node {node_id} is not running")
        return node

    def address(self, node_id: str) -> str:
        slot = self.slot(node_id)
        return slot.node.endpoint.address if slot.node and slot.node.endpoint else slot.gossip_address

    # -- lifecycle ---------------------------------------------------------------------
    async def _run(self, slot: ClusterNode, *, task_status: trio.TaskStatus[Node]) -> None:
        slot.generation += 1
        slot.stopped = trio.Event()
        slot.down = down = trio.Event()
        slot.killed = False
        with trio.CancelScope() as scope:
            slot.scope = scope
            node_rng = random.Random(f"{self.seed}:{slot.id}:{slot.generation}")
            try:
                async with open_node(slot.config, serve_http=self._serve_http,
                                     transport_options=self._transport_options, rng=node_rng,
                                     wall_clock=self.wall_clock, disk=slot.disk, objects=self.objects,
                                     backup_objects=self.backup_objects, cache=self.cache) as node:
                    slot.node = node
                    task_status.started(node)
                    async with trio.open_nursery() as waiting:
                        # stopped by the test, or by the node itself (refusing to join, say)
                        async def until(event: trio.Event) -> None:
                            await event.wait()
                            waiting.cancel_scope.cancel()

                        waiting.start_soon(until, slot.stopped)
                        waiting.start_soon(until, node.stop_requested)
            except BaseException as exc:
                if not slot.killed:
                    raise
                _fail_unless_dead(exc)
            finally:
                slot.node = None
                slot.scope = None
                down.set()

    async def start(self, node_id: str) -> Node:
        """Start a node that is not running (it keeps its data dir from before)."""
        slot = self.slot(node_id)
        if slot.running:
            raise RuntimeError(f"node {node_id} is already running")
        if self.network is not None:
            self.network.revive(slot.gossip_address)
        node: Node = await self._nursery.start(self._run, slot)
        if slot.gossip_address != self.address(node_id):
            slot.gossip_address = self.address(node_id)
        return node

    def kill(self, node_id: str) -> None:
        """Crash the node at once, as kill -9 would: no goodbye, nothing flushed that was not."""
        slot = self.slot(node_id)
        if slot.scope is None:
            raise RuntimeError(f"node {node_id} is not running")
        if self.network is not None:
            self.network.kill(slot.gossip_address)
        slot.killed = True
        if slot.disk is not None:
            # power is lost before any code of the node runs again: what it had not synced is
            # gone, and its cancellation (on_stop closing the log, finally blocks) writes nothing
            slot.disk.crash()
        slot.scope.cancel()
        slot.node = None

    async def stop(self, node_id: str) -> None:
        """Stop the node gracefully and wait until it is down."""
        slot = self.slot(node_id)
        if slot.stopped is None or slot.down is None or slot.node is None:
            raise RuntimeError(f"node {node_id} is not running")
        slot.stopped.set()
        await slot.down.wait()

    def wipe(self, node_id: str) -> None:
        """Replace a stopped node's disk with an empty one (its WAL, snapshots, map and lease state
        are gone; its id and address stay), as a replaced machine would come back."""
        slot = self.slot(node_id)
        if slot.running:
            raise RuntimeError(f"node {node_id} is running: kill or stop it first")
        if slot.disk is not None:
            slot.disk = SimDisk(node_id)
        shutil.rmtree(slot.data_dir, ignore_errors=True)

    async def restart(self, node_id: str) -> Node:
        """Kill the node if it runs, then start it again on the same data dir and address."""
        slot = self.slot(node_id)
        if slot.running:
            self.kill(node_id)
        if slot.down is not None:
            await slot.down.wait()  # the dead node has unwound and released its data dir
        return await self.start(node_id)

    # -- faults (memory transport) -----------------------------------------------------
    def _net(self) -> Any:
        if self.network is None:
            raise RuntimeError("network faults need the memory transport")
        return self.network

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the cluster: nodes in different groups cannot reach each other."""
        self._net().partition(*[[self.slot(i).gossip_address for i in g] for g in groups])

    def cut(self, src: str, dst: str, *, both: bool = False) -> None:
        """Cut the link from node ``src`` to node ``dst`` (one way unless ``both``)."""
        self._net().cut(self.slot(src).gossip_address, self.slot(dst).gossip_address, both=both)

    def heal(self) -> None:
        """Remove partitions, cut links and per-link faults."""
        self._net().heal()

    def set_faults(self, *, drop: float = 0.0, duplicate: float = 0.0,
                   delay: tuple[float, float] = (0.0, 0.0)) -> None:
        """Network-wide packet loss, duplication and latency (latency applies to streams too)."""
        self._net().set_faults(drop=drop, duplicate=duplicate, delay=delay)

    def set_link_faults(self, src: str, dst: str, **faults: Any) -> None:
        self._net().set_link_faults(self.slot(src).gossip_address, self.slot(dst).gossip_address, **faults)

    # -- clients -----------------------------------------------------------------------
    def client(self, node_id: str, **kwargs: Any) -> httpx.AsyncClient:
        """An httpx client talking to ``node_id`` in-process (ASGI): no sockets, MockClock-safe.

        It follows the node across restarts and raises httpx.ConnectError while it is down.
        The root API key, when configured, is sent by default.
        """
        slot = self.slot(node_id)
        headers = dict(kwargs.pop("headers", {}))
        if slot.config.root_api_key and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {slot.config.root_api_key}"
        return httpx.AsyncClient(transport=_NodeASGITransport(slot), base_url=f"http://{node_id}",
                                 headers=headers, **kwargs)


def _fail_unless_dead(exc: BaseException) -> None:
    """What a killed node's unwinding raised: nothing, as far as anyone can tell.

    A kill -9 runs none of the node's code; here its cancellation does run, on a disk that
    refuses the dead incarnation, so a task caught between two steps of a write fails on its
    next disk call (SimDiskCrashedError) and takes its actor and those waiting on it down with
    it. None of that is observable in a real crash, so it is dropped; only an interrupt goes on.
    """
    if isinstance(exc, BaseExceptionGroup):
        interrupt, _ = exc.split((KeyboardInterrupt, SystemExit))
        if interrupt is not None:
            raise interrupt
    elif isinstance(exc, (KeyboardInterrupt, SystemExit)):
        raise exc
    _log.debug("killed_node_unwound_with_error", error=type(exc).__name__)


def free_port() -> int:
    """A loopback port free for TCP and UDP alike right now (the gossip port needs both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError("no loopback port free for both TCP and UDP")


def cluster_key(seed: int) -> bytes:
    """The gossip key :func:`open_cluster` seals a cluster with by default (fixed per seed, so a
    test can forge frames with it or start a late node that speaks to the others)."""
    return hashlib.sha256(f"dakera-test-cluster-key:{seed}".encode()).digest()


@asynccontextmanager
async def open_cluster(
    n: int,
    *,
    transport: str = "memory",
    seed: int = 0,
    data_root: str | Path | None = None,
    serve_http: bool = False,
    config: dict[str, Any] | None = None,
    node_config: dict[str, dict[str, Any]] | None = None,
    disk: str | None = None,
    start: int | None = None,
    objects: Any = None,
    backup_objects: Any = None,
    cache: Any = None,
) -> AsyncIterator[Cluster]:
    """Start ``n`` nodes (``node-1`` .. ``node-n``) in this Trio run and yield the cluster.

    ``transport``: ``memory`` (simulated network, MockClock-safe, fault injection), or ``udp`` /
    ``websocket`` (real sockets on 127.0.0.1). ``seed`` drives every random choice of the
    network and the nodes. ``data_root`` holds one data dir per node (a temporary dir, removed
    afterwards, when None). ``config`` is passed to every node's :class:`Config`;
    ``node_config`` overrides it per node id. ``serve_http`` also starts real HTTP listeners on
    127.0.0.1 (port picked by the OS); clients from :meth:`Cluster.client` never need them.
    ``disk``: ``"sim"`` keeps each node's WAL and snapshots on a simulated disk that survives
    kills minus unsynced writes (no threads, MockClock-safe), ``"files"`` uses real files in
    the data dirs; the default is ``"sim"`` with the memory transport, ``"files"`` otherwise.
    Unix time for data is ``wall_clock``: real time at start plus elapsed Trio time.
    Like production, the cluster is sealed with a gossip key (derived from ``seed``, see
    :func:`cluster_key`) unless ``config``/``node_config`` set ``gossip_keys`` or
    ``gossip_insecure=True``.
    ``objects``: an object store (a ``MemoryObjectStore`` in simulations) every node archives its
    shards into, as a cluster sharing one bucket does; ``backup_objects`` one they keep backups in;
    ``cache`` the L1.5 cache's Redis they share (a ``cache.model.ModelRedis`` in simulations).
    ``start``: start only the first ``start`` nodes (the others join later with
    :meth:`Cluster.start`, like nodes added to a running cluster).
    """
    if n < 1:
        raise ValueError("a cluster needs at least one node")
    from transports.memory import MemoryNetwork

    network = MemoryNetwork(seed=seed) if transport == "memory" else None
    disk = disk or ("sim" if network is not None else "files")
    if disk not in ("sim", "files"):
        raise ValueError(f"disk must be 'sim' or 'files', got {disk!r}")
    epoch = time.time() - trio.current_time()
    wall_clock = lambda: epoch + trio.current_time()  # noqa: E731
    transport_options: dict[str, Any] = {"network": network} if network is not None else {}
    with tempfile.TemporaryDirectory(prefix="dakera-cluster-") as tmp:
        root = Path(data_root) if data_root is not None else Path(tmp)
        ids = [f"node-{i}" for i in range(1, n + 1)]
        # real transports get their ports up front, so every node can be seeded like in production
        addresses = {i: f"{i}:7946" if network is not None else f"127.0.0.1:{free_port()}" for i in ids}
        slots = []
        for node_id in ids:
            base: dict[str, Any] = {
                "cluster_mode": True,
                "node_id": node_id,
                "transport": transport,
                "gossip_bind": addresses[node_id],
                "host": "127.0.0.1",
                "port": 0,
                "data_dir": root / node_id,
                # like a real deployment: a few well-known seeds, not the whole cluster
                "cluster_seeds": tuple(addresses[i] for i in ids[:3] if i != node_id),
                "log_level": "warning",
                # in-process clients reach a node by its id (see Cluster.client)
                "api_advertise": None if serve_http else f"http://{node_id}",
            }
            chosen = {**(config or {}), **(node_config or {}).get(node_id, {})}
            if "gossip_keys" not in chosen and not chosen.get("gossip_insecure"):
                base["gossip_keys"] = (cluster_key(seed),)
            base.update(chosen)
            slots.append(ClusterNode(id=node_id, gossip_address=addresses[node_id],
                                     data_dir=Path(base["data_dir"]), config=Config(**base),
                                     disk=SimDisk(node_id) if disk == "sim" else None))
        async with trio.open_nursery() as nursery:
            cluster = Cluster(nursery, slots, serve_http=serve_http, transport_options=transport_options,
                              network=network, seed=seed, wall_clock=wall_clock, objects=objects,
                              backup_objects=backup_objects, cache=cache)
            for node_id in ids[:start]:
                await cluster.start(node_id)
            try:
                yield cluster
            except BaseException:
                nursery.cancel_scope.cancel()
                raise
            # a clean exit stops every node gracefully, as a test would expect of a real cluster
            for slot in slots:
                if slot.stopped is not None:
                    slot.stopped.set()
