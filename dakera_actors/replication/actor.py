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

import functools
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs
import trio
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..api.errors import ApiError
from ..endpoint import MessageStream, RemoteError
from ..membership.member import MemberState
from ..runtime import Actor
from ..sharding.shardmap import ShardMap
from ..store.owner import Install
from ..store.records import BadRecord, check_memory, check_replicated
from ..store.shard import image as shard_image
from ..store.shard import record_contents
from ..store.sizing import cut_by_bytes, packed_size
from ..transport import TransportError
from ..wal.record import WalRecord
from ..wire import Envelope
from .core import Position, ShardProgress, ShardTail, decide, is_prefix, needed
from .messages import (
    Fetch,
    FetchReply,
    PositionQuery,
    Positions,
    SnapshotChunk,
    SnapshotRequest,
    StatusReply,
    StatusRequest,
)

if TYPE_CHECKING:
    from ..node import Node

LONG_POLL = 0.5  # a fetch with nothing to return waits this long for new records
MAX_FETCH_RECORDS = 512
FRAME_SHARE = 0.75  # of the frame limit a fetch reply or snapshot chunk fills (the rest: framing, seal)
RETRY = 0.2  # after a failed fetch
HANDOVER_WAIT = 30.0
DROP_DELAY = 10.0  # a copy the map no longer names is deleted this long after (a takeover may still read
# it), and only while every copy the map names is Alive
LAG_ALERT_MS = 1000  # the seed's alert: a replica further behind is not healthy
SILENT_REPLICA = 5.0  # a replica that has not fetched for this long is not healthy (it polls twice a second)


@attrs.frozen
class _MapChanged:
    map: ShardMap


def smap_owner(smap: ShardMap | None, shard: int) -> str | None:
    return smap.owner(shard) if smap is not None else None


class Replicator(Actor):
    def __init__(self, node: Node) -> None:
        super().__init__("replicator")
        self.node = node
        self.me = node.node_id
        self.config = node.config
        assert node.memory is not None
        self.shards = node.memory.shards
        self.owner = node.memory.owner
        self.tails: dict[int, ShardTail] = node.memory.tails
        self.progress: dict[int, ShardProgress] = {}
        self.map: ShardMap | None = None
        self.live: set[int] = set()  # shards this node is primary of and has taken over
        self.syncing: set[int] = set()  # shards this node is primary of, still taking over
        self.live_since: dict[int, int] = {}  # shard -> the map's primary epoch it went live under
        self._previous: dict[int, str] = {}  # shard -> its primary in the map before, for the takeover
        self._drop_at: dict[int, float] = {}  # shard -> when to delete this node's copy
        #: shards this node was primary of until a map moved the role while it lived, until the
        #: new primary confirms it holds everything (or HANDOVER_WAIT passes): drains wait for it
        self.handing_over: dict[int, float] = {}
        self._networked = False  # a map has come from the cluster since start (not just the disk)
        self._changed = trio.Event()  # records committed, acks received, map changed
        self._fetchers: dict[str, trio.Lock] = {}  # primary peer -> its fetch loop's lock
        self._in_fetch: dict[str, set[int]] = {}  # primary peer -> shards of its latest fetch
        self._takeover_running = False
        self._metrics = node.metrics
        node.endpoint.on_stream(Fetch, self._serve_fetch)  # type: ignore[union-attr]
        node.endpoint.on_stream(SnapshotRequest, self._serve_snapshot)  # type: ignore[union-attr]
        node.endpoint.on_stream(PositionQuery, self._serve_positions)  # type: ignore[union-attr]
        node.endpoint.on_stream(StatusRequest, self._serve_status)  # type: ignore[union-attr]

    # -- the owner's hooks (plain calls on the event loop) -----------------------------
    def epoch(self) -> int:
        return self.map.epoch if self.map is not None else 0

    def writable(self, shard: int) -> bool:
        return self.map is None or shard in self.live

    def purgeable(self, shard: int) -> bool:
        return self.writable(shard)

    def tail(self, shard: int) -> ShardTail:
        return self.tails[shard]

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

    # -- the write path ----------------------------------------------------------------
    async def ready(self, shard: int, timeout: float) -> None:
        """Wait until this node may serve ``shard`` as its primary (a takeover has finished)."""
        deadline = trio.current_time() + timeout
        while self.map is not None and shard in self.syncing:
            if not await self._wait_change(deadline):
                raise ApiError(503, f"shard {shard} is being taken over by this node; retry shortly", retry_after=1)

    async def acknowledged(self, shard: int, seq: int, timeout: float) -> None:
        """Wait until ``seq`` of ``shard`` is on as many copies as DAKERA_WRITE_ACK asks for."""
        mode = self.config.write_ack
        if mode == "primary":
            return
        deadline = trio.current_time() + timeout
        while True:
            smap = self.map
            if smap is None:
                return
            live = smap.live_copies(shard)
            need = needed(mode, len(live))
            if shard not in self.live or self.me not in live:
                # the map moved the shard (or marked us down) after the commit: our copy no longer
                # counts, and whether the new primary took this record over is not ours to say
                raise ApiError(503, f"shard {shard} moved before the write reached {need} copies; it may or may "
                                    "not be kept", retry_after=1)
            progress = self.progress.get(shard)
            have = 1 + (sum(1 for m, p in progress.replicas.items() if m in live and p.acked >= seq)
                        if progress is not None else 0)
            if have >= need:
                return
            if not await self._wait_change(deadline):
                raise ApiError(503, f"the write is durable on the primary but reached {have} of {need} copies "
                                    f"within {timeout}s (DAKERA_WRITE_ACK={mode})", retry_after=1)

    # -- following the map -------------------------------------------------------------
    async def on_start(self) -> None:
        assert self.node.shard_map is not None
        current = self.node.shard_map.view.value
        if current is not None:
            self._on_map(current)  # a restarted node starts from its stored map, taking over first

    async def follow(self, maps: Any) -> None:
        async for smap in maps.changes():
            if smap is not None:
                await self.tell(_MapChanged(smap))

    async def handle(self, msg: Any) -> Any:
        if isinstance(msg, _MapChanged):
            if self.map is not None and msg.map.key > self.map.key:
                self._networked = True
            self._on_map(msg.map)
        return None

    def next_timer(self) -> float:
        return min(min(self._drop_at.values(), default=math.inf), min(self.handing_over.values(), default=math.inf))

    async def on_timer(self, now: float) -> None:
        for shard, until in list(self.handing_over.items()):
            if until <= now:
                del self.handing_over[shard]  # nobody came for it: not holding a drain forever
        for shard, at in sorted(self._drop_at.items()):
            if at > now:
                continue
            del self._drop_at[shard]
            smap = self.map
            if smap is None or self.me in smap.placement[shard]:
                continue
            unwell = [m for m in smap.placement[shard] if (known := self._member(m)) is None
                      or known.state != MemberState.ALIVE]
            if unwell:
                # a copy of the shard is suspect or dead: if it was the primary, its successor may
                # still need what this old copy holds (writes it acknowledged with us); keep it
                # until the shard's copies are all well again
                self._drop_at[shard] = now + DROP_DELAY
                continue
            await self.owner.drop(shard)
            self.node.log.info("shard_copy_dropped", shard=shard, map_version=smap.version)

    def _on_map(self, smap: ShardMap) -> None:
        if self.map is not None and smap.key <= self.map.key:
            return
        now = trio.current_time()
        before = self.map
        self.map = smap
        taking: list[int] = []
        for shard, copies in enumerate(smap.placement):
            if copies and copies[0] == self.me:
                self.progress.setdefault(shard, ShardProgress()).assign(copies[1:], now)
                if shard in self.live and self.live_since.get(shard) != smap.primary_since(shard):
                    self.live.discard(shard)  # the role changed hands in maps we may not have seen
                if shard not in self.live and shard not in self.syncing:
                    self.syncing.add(shard)
                    taking.append(shard)
                    old = before.placement[shard][:1] if before is not None else []
                    if old and old[0] != self.me:
                        self._previous[shard] = old[0]  # it may hold writes no copy has yet
            else:
                if shard in self.live:
                    self.handing_over[shard] = now + HANDOVER_WAIT
                self.live.discard(shard)
                self.syncing.discard(shard)
                self.progress.pop(shard, None)
        if self.syncing and not self._takeover_running:
            self._takeover_running = True
            self.node.nursery.start_soon(self._takeover_loop)  # type: ignore[union-attr]
        for shard, copies in enumerate(smap.placement):
            held = self.shards.shards.get(shard)
            if self.me in copies:
                self._drop_at.pop(shard, None)
            elif (self._networked and held is not None and (held.seq or held.agents)
                  and shard not in self._drop_at):
                self._drop_at[shard] = now + DROP_DELAY
        for peer in {c[0] for c in smap.placement if c and c[0] != self.me and self.me in c[1:]}:
            if peer not in self._fetchers:
                self._fetchers[peer] = trio.Lock()
                self.node.nursery.start_soon(self._fetch_loop, peer)  # type: ignore[union-attr]
        self._notify()
        if taking:
            self.node.log.info("shards_taking_over", shards=len(taking), map_version=smap.version)

    def _replicated_from(self, peer: str) -> list[int]:
        smap = self.map
        if smap is None:
            return []
        return [s for s, c in enumerate(smap.placement) if c and c[0] == peer and self.me in c[1:]]

    def _member(self, member_id: str) -> Any:
        members = self.node.membership.view.value.members if self.node.membership else {}
        return members.get(member_id)

    # -- replica side: fetching --------------------------------------------------------
    async def _fetch_loop(self, peer: str) -> None:
        lock = self._fetchers[peer]
        try:
            while True:
                async with lock:
                    shards = self._replicated_from(peer)
                    if not shards:
                        return
                    self._in_fetch[peer] = set(shards)
                    member = self._member(peer)
                    ok = member is not None and member.reachable and await self._fetch_once(
                        peer, member.address, shards, LONG_POLL)
                if not ok:
                    await trio.sleep(RETRY)
        finally:
            del self._fetchers[peer]
            self._in_fetch.pop(peer, None)

    async def _fetch_once(self, peer: str, address: str, shards: list[int], wait: float) -> bool:
        positions = [[s, *self.shards.shard(s).position] for s in shards]
        try:
            reply = await self.node.endpoint.request(  # type: ignore[union-attr]
                address, Fetch(positions, int(wait * 1000)), timeout=wait + self.config.request_timeout)
        except (TransportError, RemoteError):
            return False
        answer: FetchReply = reply.message
        clean = True
        if answer.records:
            entries = self._checked_records(peer, answer.records, shards)
            clean = len(entries) == sum(1 for r in answer.records if r[0] in shards)
            await self._tokens_ahead([c for e in entries for c in record_contents(e[1], e[2])])
            applied = await self.owner.replicate(entries)
            self._metrics.replication_records.labels("received").inc(applied)
        for shard in answer.snapshot:
            if shard in shards and not await self._copy_shard(peer, address, shard):
                clean = False
        return clean  # after a refusal, back off: the primary would send the same records at once

    def _refuse(self, peer: str, what: str, shard: int, exc: BadRecord) -> None:
        self._metrics.wire_rejected.labels("bad_record").inc()
        self.node.log.warning("replicated_data_refused", source=peer, what=what, shard=shard, problem=str(exc))

    def _checked_records(self, peer: str, records: list[list[Any]], shards: list[int]
                         ) -> list[tuple[int, str, Any, float, int, int]]:
        """The records of ``shards`` that may be logged: a shard's records stop at its first bad
        one (what follows it could not apply in order anyway). The refused record is never
        acknowledged (our position does not pass it), so the primary sees this replica stuck."""
        entries: list[tuple[int, str, Any, float, int, int]] = []
        stopped: set[int] = set()
        dim = self.shards.dim
        for s, seq, epoch, op, body, ts in records:
            if s not in shards or s in stopped:
                continue
            try:
                check_replicated(op, body, dim)
            except BadRecord as exc:
                stopped.add(s)
                self._refuse(peer, f"record seq={seq}", s, exc)
                continue
            entries.append((s, op, body, float(ts), seq, epoch))
        return entries

    async def _copy_shard(self, peer: str, address: str, shard: int) -> bool:
        """Fetch a whole copy of ``shard`` from ``peer`` and install it, if its history is newer;
        False when the copy was refused (bad parts)."""
        memories: list[Any] = []
        try:
            with trio.fail_after(max(30.0, self.config.request_timeout * 6)):
                stream: MessageStream = await self.node.endpoint.open_stream(  # type: ignore[union-attr]
                    address, SnapshotRequest(shard), timeout=self.config.request_timeout)
                async with stream:
                    while True:
                        chunk = (await stream.receive()).message
                        if not isinstance(chunk, SnapshotChunk) or chunk.shard != shard:
                            return True
                        memories.extend(chunk.memories)
                        if chunk.last:
                            break
        except (TransportError, trio.TooSlowError):
            return False  # back off before asking again (the primary may fail the same way at once)
        position: Position = (chunk.epoch, chunk.seq)
        if position <= self.shards.shard(shard).position:
            return True  # not newer than what we hold: never discard a history for an older one
        try:
            for part in memories:
                check_memory(part[0], part[1], self.shards.dim)
        except BadRecord as exc:
            self._refuse(peer, "snapshot", shard, exc)  # installed whole or not at all
            return False
        await self._tokens_ahead(record_contents("load", {"memories": memories}))
        await self.owner.install(Install(shard, memories, chunk.seq, chunk.epoch))
        self._metrics.replication_snapshots.labels("received").inc()
        self.node.log.info("shard_copied", shard=shard, source=peer, memories=len(memories), seq=chunk.seq)
        return True

    async def _tokens_ahead(self, contents: list[str]) -> None:
        """Tokenize what the next apply will index in a worker thread, not on the event loop."""
        if contents:
            size = sum(len(c) for c in contents)
            self.shards.expect(contents, await self.node.offload.run(self.shards.tokens_ahead, contents, size=size))

    # -- primary side: serving ---------------------------------------------------------
    async def _serve_fetch(self, envelope: Envelope, stream: MessageStream) -> None:
        msg: Fetch = envelope.message
        sender = envelope.sender
        deadline = trio.current_time() + min(msg.wait_ms / 1000, 5.0)
        started_under = self.map.key if self.map is not None else None
        budget = self._frame_budget()
        while True:
            now = trio.current_time()
            records: list[list[Any]] = []
            size = 0  # encoded bytes of records: a reply must fit one frame whatever the memories
            snapshot: list[int] = []
            for shard, epoch, seq in msg.positions:
                if not 0 <= shard < self.config.shards:
                    continue
                tail = self.tail(shard)
                position = (epoch, seq)
                progress = self.progress.get(shard)
                if progress is not None and is_prefix(tail, position) and progress.ack(sender, seq, tail.last[1], now):
                    self._notify()
                verdict = decide(tail, position)
                if verdict == "current" and shard in self.handing_over and smap_owner(self.map, shard) == sender:
                    del self.handing_over[shard]  # the new primary has every record we wrote
                if verdict == "wait" and shard in self.live:
                    self._retake(shard, sender)
                if verdict == "records" and len(records) < MAX_FETCH_RECORDS and size < budget:
                    for e in tail.after(seq, max_records=MAX_FETCH_RECORDS - len(records)):
                        record = [shard, e.seq, e.epoch, e.op, e.body, e.ts]
                        n = packed_size(record)
                        if records and size + n > budget:
                            size = budget  # full: the rest goes in the next fetch
                            break
                        records.append(record)
                        size += n
                elif verdict == "snapshot":
                    snapshot.append(shard)
            if records or snapshot or now >= deadline:
                break
            if self.map is not None and self.map.key != started_under:
                break  # a new map: answer now, so the replica looks at it before its next fetch
            await self._wait_change(deadline)
        if records:
            self._metrics.replication_records.labels("sent").inc(len(records))
            self._metrics.replication_bytes.labels("sent").inc(sum(packed_size(r) for r in records))
        await stream.send(FetchReply(records, snapshot))

    async def _serve_snapshot(self, envelope: Envelope, stream: MessageStream) -> None:
        shard = envelope.message.shard
        if not 0 <= shard < self.config.shards:
            await stream.send(SnapshotChunk(shard, 0, 0, [], True))
            return
        # frozen on the loop (consistent: nothing is applied while it is taken), imaged off it
        image = await self.node.offload.run(shard_image, self.shards.freeze(shard))
        # cut by encoded bytes, not by count: 256 large memories are over a frame
        chunks = list(cut_by_bytes(image["memories"], self._frame_budget()))
        for i, (chunk, size) in enumerate(chunks):
            await stream.send(SnapshotChunk(shard, image["epoch"], image["seq"], chunk, i == len(chunks) - 1))
            self._metrics.replication_bytes.labels("snapshot").inc(size)
        self._metrics.replication_snapshots.labels("sent").inc()

    def _frame_budget(self) -> int:
        endpoint = self.node.endpoint
        assert endpoint is not None
        return int((endpoint.transport.max_frame_size - endpoint.codec.overhead) * FRAME_SHARE)

    async def _serve_positions(self, envelope: Envelope, stream: MessageStream) -> None:
        msg: PositionQuery = envelope.message
        shards = [s for s in msg.shards if 0 <= s < self.config.shards]
        if msg.map is not None:
            assert self.node.shard_map is not None
            reason = await self.node.shard_map.offer(msg.map, envelope.sender)
            current = self.node.shard_map.view.value
            if current is None or current.key != msg.map.key:
                await stream.send(Positions([], reason or "a newer map is installed here"))
                return
            while self.map is None or self.map.key < msg.map.key:
                await self._changed.wait()  # our own map follower catches up on the install
            # fence: no fetch from the shards' old primary is in flight, no write of ours is
            # (only the loops whose fetch in flight carries one of these shards: a long poll for
            # other shards would hold the takeover up for nothing)
            for peer, lock in list(self._fetchers.items()):
                if self._in_fetch.get(peer, set()) & set(shards):
                    async with lock:
                        pass
            await self.owner.barrier()
        await stream.send(Positions([[s, *self.shards.shard(s).position] for s in shards]))

    # -- taking over -------------------------------------------------------------------
    def _retake(self, shard: int, newer: str) -> None:
        """A replica holds a newer history than ours (we took over while it was unreachable and
        have written nothing since): take the shard over again, from it, before writing more."""
        self.live.discard(shard)
        self.syncing.add(shard)
        self.node.log.warning("shard_retaking_from_newer_copy", shard=shard, copy=newer,
                              position=list(self.shards.shard(shard).position))
        if not self._takeover_running:
            self._takeover_running = True
            self.node.nursery.start_soon(self._takeover_loop)  # type: ignore[union-attr]

    async def _takeover_loop(self) -> None:
        try:
            while self.syncing and self.map is not None:
                smap = self.map
                done = await self._takeover(smap, sorted(self.syncing))
                now_map = self.map
                for shard in done:
                    # maps change often while shards move: a takeover still counts if the role has
                    # not changed hands meanwhile (nobody else can have written the shard since)
                    if (shard in self.syncing and now_map.owner(shard) == self.me
                            and now_map.primary_since(shard) == smap.primary_since(shard)):
                        self.syncing.discard(shard)
                        self._previous.pop(shard, None)
                        self.live.add(shard)
                        self.live_since[shard] = smap.primary_since(shard)
                self._notify()
                if self.syncing:
                    await trio.sleep(RETRY)
        finally:
            self._takeover_running = False

    async def _takeover(self, smap: ShardMap, shards: list[int]) -> list[int]:
        """Catch up ``shards`` from their other live copies; returns the shards that are done."""
        peers: dict[str, list[int]] = {}
        for shard in shards:
            # every copy, the ones marked down too (a member the leader saw die may be back), and
            # the previous primary even if the map dropped its copy (it was handed over alive)
            members = set(smap.placement[shard][1:])
            if shard in self._previous:
                members.add(self._previous[shard])
            for member in sorted(members - {self.me}):
                peers.setdefault(member, []).append(shard)
        # and every other reachable member: a copy a recent map dropped (a rebalance replaced it
        # with a new one a little behind) keeps its data for DROP_DELAY, and may be the only other
        # holder of writes the dead primary acknowledged with it
        others: dict[str, list[int]] = {}
        members_now = self.node.membership.view.value.members if self.node.membership else {}
        for member_id, known in sorted(members_now.items()):
            if member_id != self.me and known.reachable:
                wanted = [s for s in shards if s not in peers.get(member_id, [])]
                if wanted:
                    others[member_id] = wanted
        best: dict[int, tuple[Position, str]] = {}
        blocked: set[int] = set()

        async def ask(peer: str, wanted: list[int], *, copy: bool = True) -> None:
            member = self._member(peer)
            if member is None:
                if copy:
                    blocked.update(wanted)  # not heard of yet (we just started): wait until we have
                return
            if not member.reachable:
                return  # known down: whatever it holds, the leader already chose over it
            try:
                reply = await self.node.endpoint.request(  # type: ignore[union-attr]
                    member.address, PositionQuery(wanted, smap), timeout=self.config.request_timeout)
            except (TransportError, RemoteError):
                return
            answer: Positions = reply.message
            if answer.refused:
                blocked.update(wanted)  # it has a newer map: ours is about to be replaced
                return
            for shard, epoch, seq in answer.positions:
                if shard in wanted and (epoch, seq) > best.get(shard, ((-1, -1), ""))[0]:
                    best[shard] = ((epoch, seq), peer)

        async with trio.open_nursery() as nursery:
            for peer, wanted in peers.items():
                nursery.start_soon(ask, peer, wanted)
            for peer, wanted in others.items():
                nursery.start_soon(functools.partial(ask, peer, wanted, copy=False))
        # the previous primary, alive, waits to hear that we hold everything it wrote (a drain
        # counts it as remaining until then): one fetch at our final position tells it
        confirm: dict[str, list[int]] = {}
        done = []
        for shard in shards:
            if shard in blocked:
                continue
            target = best.get(shard)
            if target is not None and target[0] > self.shards.shard(shard).position:
                member = self._member(target[1])
                if member is None:
                    continue
                deadline = trio.current_time() + self.config.request_timeout * 4
                while self.shards.shard(shard).position < target[0] and trio.current_time() < deadline:
                    before = self.shards.shard(shard).position
                    if not await self._fetch_once(target[1], member.address, [shard], 0):
                        break
                    if self.shards.shard(shard).position == before:
                        # it answered with nothing newer (its own copy may be moving): ask again
                        # after a pause, never in a tight loop (that spun a simulation's clock still)
                        await trio.sleep(RETRY)
                if self.shards.shard(shard).position < target[0]:
                    continue
                self.node.log.info("shard_caught_up", shard=shard, source=target[1], seq=target[0][1])
            previous = self._previous.get(shard)
            if previous is not None:
                confirm.setdefault(previous, []).append(shard)
            done.append(shard)
        for peer, confirmed in confirm.items():
            member = self._member(peer)
            if member is not None and member.reachable:
                await self._fetch_once(peer, member.address, confirmed, 0)
        return done

    # -- status ------------------------------------------------------------------------
    def shard_lag(self, shard: int, now: float) -> tuple[float, int, int, int]:
        """(lag ms, lag records, healthy replicas, replicas) of a shard this node is primary of."""
        smap = self.map
        progress = self.progress.get(shard)
        if smap is None or progress is None:
            return 0.0, 0, 0, 0
        live = smap.live_copies(shard)
        worst_ms, worst_records, healthy = 0.0, 0, 0
        for member in progress.replicas:
            records, seconds = progress.lag(member, self.tail(shard), now)
            if member in live:
                worst_ms, worst_records = max(worst_ms, seconds * 1000), max(worst_records, records)
                seen = progress.replicas[member].seen_at
                if seconds * 1000 <= LAG_ALERT_MS and seen > 0 and now - seen <= SILENT_REPLICA:
                    healthy += 1
        return worst_ms, worst_records, healthy, len(smap.placement[shard]) - 1

    def local_status(self) -> list[list[Any]]:
        """Per shard this node is primary of: [shard, lag ms, lag records, healthy replicas,
        replicas, [[replica, records behind, fetched recently, acknowledged seq, lag ms], ...]]."""
        now = trio.current_time()
        out = []
        for shard in sorted(self.live | self.syncing):
            ms, records, healthy, replicas = self.shard_lag(shard, now)
            progress = self.progress.get(shard)
            tail = self.tail(shard)
            each = [] if progress is None or shard not in self.live else [
                [m, max(0, tail.last[1] - p.acked), p.seen_at > 0 and now - p.seen_at <= SILENT_REPLICA,
                 p.acked, int(progress.lag(m, tail, now)[1] * 1000)]
                for m, p in sorted(progress.replicas.items())]
            out.append([shard, int(ms), records, healthy, replicas, each])
        return out

    def _under_replicated_count(self, now: float) -> int:
        smap = self.map
        if smap is None:
            return 0
        want = min(smap.rf, len(smap.members())) - 1
        return sum(1 for s in self.live | self.syncing if self.shard_lag(s, now)[2] < want)

    async def _serve_status(self, envelope: Envelope, stream: MessageStream) -> None:
        await stream.send(StatusReply(self.local_status()))

    async def cluster_status(self) -> dict[str, Any]:
        """``GET /admin/cluster/replication``: every primary's view of its replicas, merged."""
        smap = self.map
        if smap is None:
            raise ApiError(503, "no shard map yet", retry_after=1)
        rows: dict[int, list[Any]] = {row[0]: row for row in self.local_status()}
        missing: list[str] = []
        primaries = {c[0] for c in smap.placement if c} - {self.me}

        async def ask(member_id: str) -> None:
            member = self._member(member_id)
            if member is None or not member.reachable:
                missing.append(member_id)
                return
            try:
                reply = await self.node.endpoint.request(  # type: ignore[union-attr]
                    member.address, StatusRequest(), timeout=self.config.request_timeout)
            except (TransportError, RemoteError):
                missing.append(member_id)
                return
            for row in reply.message.shards:
                if smap.owner(row[0]) == member_id:
                    rows[row[0]] = row

        async with trio.open_nursery() as nursery:
            for member_id in sorted(primaries):
                nursery.start_soon(ask, member_id)
        want = min(smap.rf, len(smap.members())) - 1
        shards, under, healthy, worst = [], 0, 0, 0
        for shard, copies in enumerate(smap.placement):
            row = rows.get(shard)
            ok = row is not None and row[3] >= want
            under += 0 if ok else 1
            healthy += row[3] if row is not None else 0
            worst = max(worst, row[1] if row is not None else 0)
            shards.append({"id": shard, "primary": copies[0] if copies else None, "replicas": list(copies[1:]),
                           "lag_ms": row[1] if row else None, "lag_records": row[2] if row else None,
                           "healthy_replicas": row[3] if row else 0, "under_replicated": not ok})
        return {"replication_factor": smap.rf, "write_ack": self.config.write_ack,
                "healthy_replicas": healthy, "under_replicated_shards": under, "lag_ms": worst,
                "down": list(smap.down), "unreachable_primaries": sorted(missing), "shards": shards}


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
        for shard in sorted(self._r.live | self._r.syncing):
            ms = self._r.shard_lag(shard, now)[0]
            top = max(top, ms)
            per_shard.add_metric([str(shard)], ms)
        worst.add_metric([], top)
        under = GaugeMetricFamily("dakera_under_replicated_shards",
                                  "Shards this node is primary of with fewer healthy replicas than wanted")
        under.add_metric([], self._r._under_replicated_count(now))
        yield worst
        yield per_shard
        yield under
