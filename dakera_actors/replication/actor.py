"""The replicator: moves each shard's history from its primary to its replicas, and hands shards over.

Replicas pull (like Kafka followers): for every member that is primary of shards this node
replicates, one loop sends a :class:`Fetch` with this node's position in each of them; the
primary answers with the records that follow (from its in-memory tail), says which shards need
a whole copy, or holds the request open until something is written (a long poll, so a record
reaches replicas one round trip after its fsync). The replica logs and applies what it got
(one group commit), and its next fetch carries the new positions: that is its acknowledgement,
which the primary counts for ``quorum``/``all`` writes and turns into lag.

A node that becomes primary of a shard (a promotion after a death, a role swap, or a restart
with a map that names it) first **takes over**: it sends the map to the shard's other live copies
(:class:`PositionQuery`), each installs it, stops taking the shard's records from anyone else,
lets its in-flight writes finish, and answers its position; the new primary fetches from the
copy with the newest history until it has caught up, and only then accepts writes and reads. So
a write acknowledged by ``quorum``/``all`` (or by ``primary`` on a primary that was handed over
alive) is never lost to a role change. The protocol decisions live in :mod:`.core`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import attrs
import trio
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..cold.seeding import Seeder
from ..config import Config
from ..endpoint import MessageStream
from ..errors import Unavailable
from ..log import EventLogger
from ..membership.member import MemberState
from ..metrics import NodeMetrics
from ..peers import Peers, PeerUnavailable
from ..runtime import Actor, Published
from ..runtime.offload import Offload
from ..sharding.shardmap import ShardMap
from ..store.owner import Install, ShardOwner, tokenize_ahead
from ..store.records import BadRecord, check_memory, check_replicated, check_session
from ..store.shard import ShardSet, record_contents
from ..store.shard import image as shard_image
from ..store.sizing import cut_by_bytes, packed_size
from ..store.tail import Position
from ..wal.record import WalRecord
from ..wire import Envelope
from .core import (
    DropCopy,
    Effect,
    HandoverConfirmed,
    ReplicationConfig,
    ReplicationCore,
    Retake,
    StartFetching,
    StartTakeover,
    TakeoverPlan,
    takeover_refusal,
)
from .messages import (
    Fetch,
    FetchReply,
    PositionQuery,
    Positions,
    SnapshotChunk,
    SnapshotRequest,
    StatusReply,
    StatusRequest,
    record_wire,
)
from .rows import ShardStatus
from .status import ClusterReplication, merge, primaries
from .tail import replaces

LONG_POLL = 0.5  # a fetch with nothing to return waits this long for new records
FRAME_SHARE = 0.75  # of the frame limit a fetch reply or snapshot chunk fills (the rest: framing, seal)
RETRY = 0.2  # after a failed fetch
RESTORE_CONCURRENCY = 4  # shards restored from the archive at once by a new primary


@attrs.frozen
class _MapChanged:
    map: ShardMap


class Storage(Protocol):
    """What the replicator uses of the node's storage: the shards and their one writer (which keeps the tails)."""

    shards: ShardSet
    owner: ShardOwner


class MapSource(Protocol):
    """The shard-map actor as the replicator sees it: the installed map, and offering one."""

    view: Published[ShardMap | None]

    async def offer(self, smap: ShardMap, sender: str) -> str: ...


class Replicator(Actor):
    """Carries out the :class:`~.core.ReplicationCore`'s decisions: fetching, serving, copying, waiting."""

    def __init__(self, me: str, config: Config, memory: Storage, peers: Peers, maps: MapSource,
                 metrics: NodeMetrics, log: EventLogger, nursery: trio.Nursery, offload: Offload,
                 frame_budget: int) -> None:
        super().__init__("replicator")
        self.me = me
        self.config = config
        self.shards = memory.shards
        self.owner = memory.owner
        tails = memory.owner.tails
        lost = ReplicationCore.lost_at_start(tails)  # copies lost with the disk vouch for nothing (.core)
        self._amnesia = config.rereplication_grace if lost else 0.0
        self.core = ReplicationCore(me, tails, ReplicationConfig(), lost=lost,
                                    lost_until=trio.current_time() + self._amnesia)
        self.peers = peers
        self.maps = maps
        self.log = log
        self._nursery = nursery
        self._offload = offload
        self._frame_budget = frame_budget
        self._changed = trio.Event()  # records committed, acks received, map changed
        self._fetchers: dict[str, trio.Lock] = {}  # primary peer -> its fetch loop's lock
        self._in_fetch: dict[str, set[int]] = {}  # primary peer -> shards of its latest fetch
        self._takeover_running = False
        self._metrics = metrics
        #: restores shards from the archive (set by the node when it has a cold tier)
        self.seeder: Seeder | None = None
        self._seeded: dict[int, Position] = {}  # shard -> the position an archive copy left it at
        endpoint = peers.endpoint
        endpoint.on_stream(Fetch, self._serve_fetch)
        endpoint.on_stream(SnapshotRequest, self._serve_snapshot)
        endpoint.on_stream(PositionQuery, self._serve_positions)
        endpoint.on_stream(StatusRequest, self._serve_status)

    # -- the core's state, as the node and the admin views read it ------------------------
    @property
    def map(self) -> ShardMap | None:
        return self.core.map

    @property
    def syncing(self) -> set[int]:
        return self.core.syncing

    @property
    def handing_over(self) -> dict[int, float]:
        return self.core.handing_over

    def local_status(self) -> list[ShardStatus]:
        """A status row per shard this node is primary of (see :class:`~.status.ShardStatus`)."""
        return self.core.local_status(trio.current_time())

    # -- the owner's hooks (plain calls on the event loop) -----------------------------
    def epoch(self) -> int:
        return self.core.epoch()

    def writable(self, shard: int) -> bool:
        return self.core.writable(shard)

    def committed(self, records: list[WalRecord]) -> None:
        self._notify()  # the owner has fed the tails: wake long-polling fetches and ack waiters

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_change(self, deadline: float) -> bool:
        with trio.move_on_at(deadline):
            await self._changed.wait()
            return True
        return False

    def _member_states(self) -> Mapping[str, MemberState]:
        return {m: member.state for m, member in self.peers.members().items()}

    # -- the write path ----------------------------------------------------------------
    def _behind_routing(self) -> bool:
        """The router already routes by a map the core has not followed yet (:meth:`~.core.ReplicationCore.behind`)."""
        return self.core.behind(self.maps.view.value)

    async def ready(self, shard: int, timeout: float) -> None:
        """Wait until this node may serve ``shard`` as its primary: the core has the map requests
        are routed by, and no takeover of the shard is running."""
        deadline = trio.current_time() + timeout
        while self._behind_routing() or self.core.taking_over(shard):
            if not await self._wait_change(deadline):
                raise Unavailable(f"shard {shard} is being taken over by this node; retry shortly")

    async def settled(self, timeout: float) -> None:
        """Wait until this node is taking over no shard (a listing of every agent it leads is
        then whole: a shard still being copied or restored from the archive would be missing)."""
        deadline = trio.current_time() + timeout
        while self.core.map is not None and (self._behind_routing() or self.core.syncing):
            if not await self._wait_change(deadline):
                shards = ", ".join(str(s) for s in sorted(self.core.syncing)[:8])
                raise Unavailable(f"shards {shards} are being taken over by this node; retry shortly")

    async def acknowledged(self, shard: int, seq: int, timeout: float) -> None:
        """Wait until ``seq`` of ``shard`` is on as many copies as DAKERA_WRITE_ACK asks for."""
        mode = self.config.write_ack
        deadline = trio.current_time() + timeout
        while True:
            state = self.core.ack_state(shard, seq, mode)
            if state.verdict == "satisfied":
                return
            if state.verdict == "moved":
                raise Unavailable(f"shard {shard} moved before the write reached {state.need} copies; it may or "
                                  "may not be kept")
            if not await self._wait_change(deadline):
                raise Unavailable(f"the write is durable on the primary but reached {state.have} of {state.need} "
                                  f"copies within {timeout}s (DAKERA_WRITE_ACK={mode})")

    # -- following the map -------------------------------------------------------------
    async def on_start(self) -> None:
        if self.core.lost:
            self.log.info("copies_start_empty", shards=len(self.core.lost), vouch_after_seconds=self._amnesia,
                          hint="copies the map names here count toward no takeover until caught up with their "
                               "primary (a replaced disk must not outvote the copies that hold the data)")
        current = self.maps.view.value
        if current is not None:
            self._on_map(current, from_cluster=False)  # a restarted node starts from its stored map, taking over first

    async def follow(self, maps: Published[ShardMap | None]) -> None:
        async for smap in maps.changes():
            if smap is not None:
                await self.tell(_MapChanged(smap))

    async def handle(self, msg: Any) -> Any:
        if isinstance(msg, _MapChanged):
            self._on_map(msg.map, from_cluster=True)
        return None

    def next_timer(self) -> float:
        return self.core.next_deadline()

    async def on_timer(self, now: float) -> None:
        for effect in self.core.tick(now, self._member_states()):
            if isinstance(effect, DropCopy):
                await self.owner.drop(effect.shard)
                self.log.info("shard_copy_dropped", shard=effect.shard, map_version=effect.map_version)

    def _on_map(self, smap: ShardMap, *, from_cluster: bool) -> None:
        held = {s for s, shard in self.shards.shards.items() if shard.seq or shard.agents}
        self._carry_out(self.core.on_map(smap, trio.current_time(), held=held, from_cluster=from_cluster))
        self._notify()

    def _carry_out(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, StartFetching):
                if effect.peer not in self._fetchers:
                    self._fetchers[effect.peer] = trio.Lock()
                    self._nursery.start_soon(self._fetch_loop, effect.peer)
            elif isinstance(effect, StartTakeover):
                self.log.info("shards_taking_over", shards=len(effect.shards),
                              map_version=self.core.map.version if self.core.map else 0)
                self._start_takeover()
            elif isinstance(effect, Retake):
                self.log.warning("shard_retaking_from_newer_copy", shard=effect.shard, copy=effect.copy,
                                 position=list(effect.position))
                self._start_takeover()
            elif isinstance(effect, HandoverConfirmed):
                self.log.info("shard_handover_confirmed", shard=effect.shard)

    def _start_takeover(self) -> None:
        if not self._takeover_running:
            self._takeover_running = True
            self._nursery.start_soon(self._takeover_loop)

    # -- replica side: fetching --------------------------------------------------------
    async def _fetch_loop(self, peer: str) -> None:
        lock = self._fetchers[peer]
        try:
            while True:
                async with lock:
                    shards = self.core.replicated_from(peer)
                    if not shards:
                        return
                    self._in_fetch[peer] = set(shards)
                    ok = await self._fetch_once(peer, shards, LONG_POLL)
                if not ok:
                    await trio.sleep(RETRY)
        finally:
            del self._fetchers[peer]
            self._in_fetch.pop(peer, None)

    async def _fetch_once(self, peer: str, shards: list[int], wait: float) -> bool:
        positions = [[s, *self.shards.shard(s).position] for s in shards]
        try:
            answer: FetchReply = await self.peers.request(
                peer, Fetch(positions, int(wait * 1000)), timeout=wait + self.config.request_timeout)
        except PeerUnavailable:
            return False
        clean = True
        if answer.records:
            records = self._checked_records(peer, answer.records, shards)
            clean = len(records) == sum(1 for r in answer.records if r.shard in shards)
            await self._tokens_ahead([c for r in records for c in record_contents(r.op, r.body)])
            applied = await self.owner.replicate(records)
            self._metrics.replication_records.labels("received").inc(applied)
        for shard in answer.snapshot:
            if shard in shards and not await self._copy_shard(peer, shard):
                clean = False
        if answer.heads and self.core.lost:
            back = self.core.recovered([h for h in answer.heads if h[0] in shards])
            if back and not self.core.lost:
                self.log.info("copies_recovered", source=peer, last_shards=back)
        return clean  # after a refusal, back off: the primary would send the same records at once

    def _refuse(self, peer: str, what: str, shard: int, exc: BadRecord) -> None:
        self._metrics.wire_rejected.labels("bad_record").inc()
        self.log.warning("replicated_data_refused", source=peer, what=what, shard=shard, problem=str(exc))

    def _checked_records(self, peer: str, records: list[WalRecord], shards: list[int]) -> list[WalRecord]:
        """The records of ``shards`` that may be logged: a shard's records stop at its first bad
        one (what follows it could not apply in order anyway). The refused record is never
        acknowledged (our position does not pass it), so the primary sees this replica stuck."""
        kept: list[WalRecord] = []
        stopped: set[int] = set()
        for record in records:
            if record.shard not in shards or record.shard in stopped:
                continue
            try:
                check_replicated(record.op, record.body, self.shards.dims(record.shard))
            except BadRecord as exc:
                stopped.add(record.shard)
                self._refuse(peer, f"record seq={record.seq}", record.shard, exc)
                continue
            kept.append(record)
        return kept

    async def _copy_shard(self, peer: str, shard: int) -> bool:
        """Fetch a whole copy of ``shard`` from ``peer`` and install it, if its history is newer;
        False when the copy was refused (bad parts).

        With a cold tier, the archive's copy is tried first: the primary then only sends the tail
        after it. If the primary asks for a whole copy again right after (the archive's copy is
        not a prefix of its history, or its tail no longer reaches back), the peer's copy is used."""
        if self.seeder is not None and self._seeded.get(shard) != self.shards.shard(shard).position:
            outcome = await self.seeder.restore(shard)
            if outcome == "restored":
                self._seeded[shard] = self.shards.shard(shard).position
                return True
        def finished(reply: Any) -> bool:
            return not isinstance(reply, SnapshotChunk) or reply.shard != shard or reply.last

        try:
            with trio.fail_after(max(30.0, self.config.request_timeout * 6)):
                replies = await self.peers.receive_until(peer, SnapshotRequest(shard), finished,
                                                         timeout=self.config.request_timeout)
        except (PeerUnavailable, trio.TooSlowError):
            return False  # back off before asking again (the primary may fail the same way at once)
        chunk = replies[-1]
        if not isinstance(chunk, SnapshotChunk) or chunk.shard != shard:
            return True  # not a copy of this shard: nothing to install
        memories = [m for reply in replies for m in reply.memories]
        sessions = [s for reply in replies for s in reply.sessions]
        position: Position = (chunk.epoch, chunk.seq)
        if not replaces(position, self.shards.shard(shard).position):
            return True
        try:
            for part in memories:
                check_memory(part[0], part[1], self.shards.dim)  # a copy is of the cluster's embedder
            for record in sessions:
                check_session(record)
        except BadRecord as exc:
            self._refuse(peer, "snapshot", shard, exc)  # installed whole or not at all
            return False
        await self._tokens_ahead(record_contents("load", {"memories": memories}))
        await self.owner.install(Install(shard, memories, chunk.seq, chunk.epoch, sessions))
        self._metrics.replication_snapshots.labels("received").inc()
        self.log.info("shard_copied", shard=shard, source=peer, memories=len(memories), seq=chunk.seq)
        return True

    async def _tokens_ahead(self, contents: list[str]) -> None:
        await tokenize_ahead(self.shards, self._offload, contents)

    # -- primary side: serving ---------------------------------------------------------
    async def _serve_fetch(self, envelope: Envelope, stream: MessageStream) -> None:
        msg: Fetch = envelope.message
        deadline = trio.current_time() + min(msg.wait_ms / 1000, 5.0)
        started_under = self.core.map.key if self.core.map is not None else None
        while True:
            now = trio.current_time()
            answer = self.core.on_fetch(envelope.sender, msg.positions, now, budget=self._frame_budget,
                                        size=_record_size)
            self._carry_out(answer.effects)
            if answer.acked:
                self._notify()
            if answer.records or answer.snapshot or now >= deadline:
                break
            if self.core.map is not None and self.core.map.key != started_under:
                break  # a new map: answer now, so the replica looks at it before its next fetch
            await self._wait_change(deadline)
        if answer.records:
            self._metrics.replication_records.labels("sent").inc(len(answer.records))
            self._metrics.replication_bytes.labels("sent").inc(sum(_record_size(r) for r in answer.records))
        await stream.send(FetchReply(answer.records, answer.snapshot, answer.heads))

    async def _serve_snapshot(self, envelope: Envelope, stream: MessageStream) -> None:
        shard = envelope.message.shard
        if shard not in self.core.tails or self.shards.embedder_of(shard)[0] != self.shards.embedder:
            # not ours, or being re-embedded: a copy's chunks would carry the old vectors (and not
            # its staged ones), so the replica asks again once the shard has switched
            await stream.send(SnapshotChunk(shard, 0, 0, [], True))
            return
        # frozen on the loop (consistent: nothing is applied while it is taken), imaged off it
        image = await self._offload.run(shard_image, self.shards.freeze(shard))
        # cut by encoded bytes, not by count: 256 large memories are over a frame
        parts: list[tuple[list[Any], list[Any], int]] = [
            (chunk, [], size) for chunk, size in cut_by_bytes(image["memories"], self._frame_budget)]
        if image["sessions"]:  # then the sessions, in chunks of their own
            parts += [([], chunk, size) for chunk, size in cut_by_bytes(image["sessions"], self._frame_budget)]
        for i, (chunk, sessions, size) in enumerate(parts):
            await stream.send(SnapshotChunk(shard, image["epoch"], image["seq"], chunk, i == len(parts) - 1,
                                            sessions))
            self._metrics.replication_bytes.labels("snapshot").inc(size)
        self._metrics.replication_snapshots.labels("sent").inc()

    async def _serve_positions(self, envelope: Envelope, stream: MessageStream) -> None:
        msg: PositionQuery = envelope.message
        shards = [s for s in msg.shards if s in self.core.tails]
        if msg.map is not None:
            reason = await self.maps.offer(msg.map, envelope.sender)
            refusal = takeover_refusal(self.maps.view.value, msg.map, reason)
            if refusal:
                await stream.send(Positions([], refusal))
                return
            while self.core.map is None or self.core.map.key < msg.map.key:
                await self._changed.wait()  # our own map follower catches up on the install
            # fence: no fetch from the shards' old primary is in flight, no write of ours is
            # (only the loops whose fetch in flight carries one of these shards: a long poll for
            # other shards would hold the takeover up for nothing)
            for peer, lock in list(self._fetchers.items()):
                if self._in_fetch.get(peer, set()) & set(shards):
                    async with lock:
                        pass
            await self.owner.barrier()
        await stream.send(Positions([[s, *self.shards.shard(s).position] for s in shards],
                                    lost=self.core.lost_of(shards, trio.current_time())))

    # -- taking over -------------------------------------------------------------------
    async def _takeover_loop(self) -> None:
        try:
            while (plan := self.core.plan_takeover(self._member_states())) is not None:
                done = await self._takeover(plan)
                self.core.finish_takeover(plan, done)
                self._notify()
                if self.core.syncing:
                    await trio.sleep(RETRY)
        finally:
            self._takeover_running = False

    async def _takeover(self, plan: TakeoverPlan) -> list[int]:
        """Ask where the shards are, catch up from the newest copy, confirm to the previous
        primary; returns the shards that are done."""
        answers = await self.peers.gather(plan.asks, lambda m: PositionQuery(plan.asks[m], plan.map),
                                          timeout=self.config.request_timeout)
        own = {s: self.shards.shard(s).position for s in plan.shards}
        verdict = self.core.takeover_sources(plan, answers, own, mode=self.config.write_ack, now=trio.current_time())
        done = await self._restore_empty([s for s in verdict.ready if own.get(s, (0, 0)) == (0, 0)])
        done += [s for s in verdict.ready if own.get(s, (0, 0)) != (0, 0)]
        for shard, source in sorted(verdict.sources.items()):
            if await self._catch_up(shard, source.member, source.position):
                self.log.info("shard_caught_up", shard=shard, source=source.member, seq=source.position[1])
                done.append(shard)
        for peer, confirmed in self.core.confirmations(plan, done).items():
            await self._fetch_once(peer, confirmed, 0)  # an unreachable one is not waited for
        return done

    async def _restore_empty(self, shards: list[int]) -> list[int]:
        """Shards no copy holds anything of (a cluster restarted from the bucket, or every copy
        lost): restore each from the archive before serving it, a few at a time. Returns those
        ready to serve; one whose archive cannot be read now is not (it is taken over again
        later), so an empty copy never goes live over an archived history."""
        if self.seeder is None or not shards:
            return shards
        seeder = self.seeder
        ready: list[int] = []
        limit = trio.Semaphore(RESTORE_CONCURRENCY)

        async def one(shard: int) -> None:
            async with limit:
                if await seeder.restore(shard) != "failed":
                    ready.append(shard)

        async with trio.open_nursery() as nursery:
            for shard in shards:
                nursery.start_soon(one, shard)
        return sorted(ready)

    async def _catch_up(self, shard: int, member: str, target: Position) -> bool:
        """Fetch ``shard`` from ``member`` until this copy reaches ``target`` (or time runs out)."""
        deadline = trio.current_time() + self.config.request_timeout * 4
        while self.shards.shard(shard).position < target and trio.current_time() < deadline:
            before = self.shards.shard(shard).position
            if not await self._fetch_once(member, [shard], 0):
                break
            if self.shards.shard(shard).position == before:
                # it answered with nothing newer (its own copy may be moving): ask again after a
                # pause, never in a tight loop (that spun a simulation's clock still)
                await trio.sleep(RETRY)
        return self.shards.shard(shard).position >= target

    # -- status ------------------------------------------------------------------------
    async def _serve_status(self, envelope: Envelope, stream: MessageStream) -> None:
        await stream.send(StatusReply(self.local_status()))

    async def cluster_status(self) -> ClusterReplication:
        """Every primary's view of its replicas, gathered and merged (:func:`~.status.merge`)."""
        smap = self.core.map
        if smap is None:
            raise Unavailable("no shard map yet")
        replies = await self.peers.gather(primaries(smap, besides=[self.me]), StatusRequest(),
                                          timeout=self.config.request_timeout)
        rows: dict[str, list[ShardStatus] | None] = {
            m: r.shards if isinstance(r, StatusReply) else None for m, r in replies.items()}
        rows[self.me] = self.local_status()
        return merge(smap, rows)


def _record_size(record: WalRecord) -> int:
    """Bytes one record takes in a fetch reply."""
    return packed_size(record_wire(record))


def frame_budget(max_frame_size: int, overhead: int) -> int:
    """Bytes of records or memories a fetch reply or snapshot chunk may carry."""
    return int((max_frame_size - overhead) * FRAME_SHARE)


class ReplicationCollector(Collector):
    """Lag, read from the replicator at scrape time."""

    def __init__(self, replicator: Replicator) -> None:
        self._r = replicator

    def collect(self) -> Iterator[Metric]:
        now = trio.current_time()
        worst = GaugeMetricFamily("dakera_replication_lag_ms",
                                  "Worst lag of a replica behind this node's primaries, in ms")
        per_shard = GaugeMetricFamily("dakera_replication_shard_lag_ms",
                                      "Worst replica lag of each shard this node is primary of, in ms",
                                      labels=["shard"])
        top = 0.0
        for shard in sorted(self._r.core.live | self._r.core.syncing):
            ms = self._r.core.shard_lag(shard, now).lag_ms
            top = max(top, ms)
            per_shard.add_metric([str(shard)], ms)
        worst.add_metric([], top)
        under = GaugeMetricFamily("dakera_under_replicated_shards",
                                  "Shards this node is primary of with fewer healthy replicas than wanted")
        under.add_metric([], self._r.core.under_replicated(now))
        yield worst
        yield per_shard
        yield under
