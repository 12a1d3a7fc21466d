"""Routing: any node answers any memory request, serving what it owns and forwarding the rest.

A request names its agent; the agent's shard's primary in the installed map is its owner. The
owner runs the request locally; any other node forwards it over the inter-node transport as one
msgpack request/response (not a second HTTP hop) and returns the owner's answer unchanged,
errors included. A request bounces at most once: when the sender's map is newer than its own, the
receiver first fetches that map; it then serves the request if its map (now at least as new)
makes it the owner, forwards it once more otherwise, and answers 503 rather than bounce again.
A forward that gets no answer within the request timeout is a 503 naming the owner, never a hang.

A forwarded write carries a request id given by the node that took it from HTTP; the owner
answers a repeated id with its first answer instead of applying the write again (see
:mod:`.idempotency`), so a resent or replayed forward cannot store twice or roll data back.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from .. import safejson
from ..cache.facade import CACHED_OPS
from ..config import Config
from ..endpoint import Endpoint, MessageStream
from ..errors import InvalidRequest, ServiceError, Unavailable
from ..metrics import NodeMetrics
from ..peers import Peers, PeerUnavailable
from ..runtime.offload import Offload
from ..runtime.published import Published
from ..store import validation
from ..store.sessions import newest_first
from ..store.shard import shard_of
from ..wire import Envelope
from .idempotency import IdempotencyCache
from .messages import Forward, Reply

if TYPE_CHECKING:
    from ..cache.facade import NodeCache
    from ..sharding.shardmap import ShardMap
    from ..store.service import MemoryService

# operations keyed by the agent in the body, in the query string, or in the path
BODY_AGENT = {"store", "store_batch", "forget", "recall", "search", "batch_recall", "batch_forget", "restore_agent",
              "importance", "patch_importance", "session_start"}
QUERY_AGENT = {"get", "update", "session_list"}
# the session routes that name only a session carry its agent (the id's part before "~") as their path agent
PATH_AGENT = {"agent_memories", "agent_stats", "agent_sessions", "session_get", "session_touch", "session_end",
              "session_memories"}
# reads a replica may answer when the client asks for consistency=eventual
EVENTUAL_OPS = {"get", "recall", "search"}
# operations that change data: forwarded with a request id, applied once per id
WRITE_OPS = {"store", "store_batch", "update", "forget", "batch_forget", "restore_agent", "importance",
             "patch_importance", "session_start", "session_touch", "session_end"}
NO_BODY = {"get", "agent_memories", "agent_stats", "session_get", "session_list", "agent_sessions", "session_memories",
           "session_touch", "session_end"}


class MapSource(Protocol):
    """What routing reads of the shard map: the installed map, and a way to learn a newer one."""

    @property
    def view(self) -> Published[ShardMap | None]: ...

    @property
    def current(self) -> Published[bool]: ...

    async def catch_up(self, member_id: str, version: int, *, timeout: float) -> None: ...


def wants_eventual(op: str, body: Any, args: dict[str, str]) -> bool:
    """True when a read asks for ``consistency=eventual`` (query string for get, body for recall)."""
    if op not in EVENTUAL_OPS:
        return False
    value = args.get("consistency") if op == "get" else (body.get("consistency") if isinstance(body, dict) else None)
    try:
        return validation.consistency(value) == "eventual"
    except validation.Invalid as exc:
        raise InvalidRequest(str(exc), field=exc.field) from None


def rough_size(payload: Any) -> int:
    """A guess at an answer's JSON size from how many memories it lists (a few top-k hits are
    cheaper to serialize on the loop than to hand to a busy worker thread)."""
    items = payload.get("memories", payload.get("stored")) if isinstance(payload, dict) else payload
    return 2048 * len(items) if isinstance(items, list) else 0


def agent_of(op: str, body: Any, args: dict[str, str], path_agent: str) -> str | None:
    if op in BODY_AGENT:
        value = body.get("agent_id") if isinstance(body, dict) else None
    elif op in QUERY_AGENT:
        value = args.get("agent_id")
    else:
        value = path_agent or None
    return value if isinstance(value, str) and value else None


def route_decision(op: str, owner: str | None, self_id: str, *, eventual: bool, holds: bool,
                   hops: int) -> str:
    """Where a request goes: ``"serve"`` here when this node owns the agent's shard (or no one
    does, or it is an eventual read and this node holds a copy), else ``"forward"`` to the owner
    if it has not been forwarded yet, else ``"refuse"`` (a 503: the maps disagree)."""
    if op in ("local_agents", "local_sessions") or owner is None or owner == self_id or (eventual and holds):
        return "serve"
    return "forward" if hops == 0 else "refuse"


class Router:
    """Runs a memory request here or on its owner; serves what other nodes forward to this one.

    ``peers`` and ``endpoint`` are None on a single node (nothing to forward to); ``shard_map``
    is None there too (this node owns everything). The store is attached with :meth:`attach`
    once it is recovered: until then every request here is a 503.
    """

    def __init__(self, config: Config, *, node_id: str, api_address: str, offload: Offload,
                 metrics: NodeMetrics, rng: random.Random, storage_ready: Callable[[], bool],
                 peers: Peers | None = None,
                 endpoint: Endpoint | None = None, shard_map: MapSource | None = None) -> None:
        self.config = config
        self.node_id = node_id
        self.api_address = api_address
        self.offload = offload
        self.metrics = metrics
        self.rng = rng
        self.peers = peers
        self.shard_map = shard_map
        self.service: MemoryService | None = None
        #: the L1.5 cache (None: no DAKERA_REDIS_URL): asked before a read is forwarded, filled
        #: by the shard's primary after it serves one
        self.cache: NodeCache | None = None
        #: False while the store is being recovered (the node's "storage" gate)
        self.storage_ready = storage_ready
        # an id can come back while a sealed copy of its frame is fresh, or while its sender retries
        ttl = config.gossip_frame_window + 2 * config.request_timeout
        self.applied: IdempotencyCache[Reply] = IdempotencyCache(ttl, keep=lambda r: r.status < 500)
        if endpoint is not None:  # a single node has no peers to forward to
            endpoint.on_stream(Forward, self._serve)

    def attach(self, service: MemoryService) -> None:
        """The recovered store: from now on requests this node owns are served here."""
        self.service = service

    # -- entry from HTTP ---------------------------------------------------------------
    async def run(self, op: str, raw: bytes, args: dict[str, str], *, memory_id: str = "",
                  path_agent: str = "") -> tuple[int, Any, str]:
        """(status, JSON body, owner API address) of one memory request."""
        # large bodies parse in a worker thread; a bad one raises JsonInvalid (the facade's 400)
        body = await self.offload.run(lambda: safejson.loads_body(raw, required=op not in NO_BODY),
                                      size=len(raw))
        request = Forward(op, raw, args, memory_id, path_agent, 0, self._map_version())
        agent = agent_of(op, body, args, path_agent)
        owner = self._owner(agent)
        if self._decide(request, body, agent, owner) == "serve":
            status, payload = await self._local(request, body)
            return status, payload, self.api_address
        assert owner is not None
        if op in WRITE_OPS:
            request = attrs.evolve(request, request_id=f"{self.node_id}/{self.rng.getrandbits(64):016x}")
        elif self.cache is not None and agent is not None and op in CACHED_OPS:
            name = self.cache.name(op, agent, body, args, memory_id)
            cached = await self.cache.lookup(shard_of(agent, self.config.shards), name)
            if cached is not None:  # as fresh as the primary's answer (the generation rule)
                member = self.peers.member(owner) if self.peers is not None else None
                return 200, cached, member.api if member is not None else ""
        return await self._forward(owner, request)

    async def list_agents(self, limit: int, offset: int = 0) -> list[dict[str, Any]]:
        """One page of the agents (in id order) of every member's shards, merged (the owner's entry
        wins). Each member sends only its first ``offset + limit`` agents: every agent of the page
        is among those of each member that holds it."""
        if self.shard_map is not None and self._map() is None:
            raise Unavailable("node is not ready: no shard map yet")
        self._require_current()
        args = {"first": str(offset + limit)}
        status, mine = await self._local(Forward("local_agents", b"", args), None)
        if status == 503:  # a shard of this node still being taken over: no partial list
            raise Unavailable(str(mine.get("error", "this node cannot list its agents yet")))
        if status != 200:
            raise ServiceError.from_reply(status, mine)
        merged: dict[str, tuple[bool, dict[str, Any]]] = {
            a["agent_id"]: (self._owner(a["agent_id"]) in (None, self.node_id), a) for a in mine}
        others = ([m.id for m in self.peers.members().values() if m.id != self.node_id and m.alive]
                  if self.peers is not None else [])
        if not others:
            return [merged[a][1] for a in sorted(merged)[offset:offset + limit]]
        assert self.peers is not None
        answers = await self.peers.gather(
            others, Forward("local_agents", b"", args, hops=1, map_version=self._map_version()))
        for member_id in others:  # in membership order: the first non-owner entry of an agent stays
            answer = answers[member_id]
            if isinstance(answer, PeerUnavailable):
                raise Unavailable(f"member {member_id} did not answer the agent listing")
            if answer.status != 200:
                raise Unavailable(f"member {member_id} could not list its agents")
            self.metrics.forwarded_requests.inc()
            for entry in await self.offload.run(json.loads, answer.body, size=len(answer.body)):
                from_owner = self._owner(entry["agent_id"]) == member_id
                if entry["agent_id"] not in merged or (from_owner and not merged[entry["agent_id"]][0]):
                    merged[entry["agent_id"]] = (from_owner, entry)
        return [merged[a][1] for a in sorted(merged)[offset:offset + limit]]

    async def list_sessions(self, active_only: bool, limit: int, offset: int = 0) -> list[dict[str, Any]]:
        """One page of every agent's sessions, newest first, merged from every member's shards (the
        owner's copy of a session wins). Each member sends only its newest ``offset + limit``:
        every session of the page is among those of each member that holds it."""
        if self.shard_map is not None and self._map() is None:
            raise Unavailable("node is not ready: no shard map yet")
        self._require_current()
        args = {"first": str(offset + limit), "active_only": "true" if active_only else "false"}
        status, mine = await self._local(Forward("local_sessions", b"", args), None)
        if status == 503:
            raise Unavailable(str(mine.get("error", "this node cannot list its sessions yet")))
        if status != 200:
            raise ServiceError.from_reply(status, mine)
        merged: dict[str, tuple[bool, dict[str, Any]]] = {
            s["id"]: (self._owner(s["agent_id"]) in (None, self.node_id), s) for s in mine}
        others = ([m.id for m in self.peers.members().values() if m.id != self.node_id and m.alive]
                  if self.peers is not None else [])
        if others:
            assert self.peers is not None
            answers = await self.peers.gather(
                others, Forward("local_sessions", b"", args, hops=1, map_version=self._map_version()))
            for member_id in others:
                answer = answers[member_id]
                if isinstance(answer, PeerUnavailable) or answer.status != 200:
                    raise Unavailable(f"member {member_id} could not list its sessions")
                self.metrics.forwarded_requests.inc()
                for entry in await self.offload.run(json.loads, answer.body, size=len(answer.body)):
                    from_owner = self._owner(entry["agent_id"]) == member_id
                    if entry["id"] not in merged or (from_owner and not merged[entry["id"]][0]):
                        merged[entry["id"]] = (from_owner, entry)
        found = sorted((entry for _, entry in merged.values()), key=newest_first, reverse=True)
        return found[offset:offset + limit]

    # -- helpers -----------------------------------------------------------------------
    def _map(self) -> ShardMap | None:
        return self.shard_map.view.value if self.shard_map is not None else None

    def _map_version(self) -> int:
        smap = self._map()
        return smap.version if smap else 0

    def _owner(self, agent: str | None) -> str | None:
        smap = self._map()
        if agent is None:
            return None  # no agent: serve here (validation answers bad input)
        if smap is None:
            if self.shard_map is not None:  # a cluster node that has no map yet
                raise Unavailable("node is not ready: no shard map yet")
            return None
        self._require_current()
        return smap.owner(shard_of(agent, smap.shards))

    def _require_current(self) -> None:
        """A node restarted on the map it stored does not route by it until the leader has shown it
        is still the cluster's (the cluster may have moved this node's shards while it was down)."""
        if self.shard_map is not None and not self.shard_map.current.value:
            raise Unavailable("node is not ready: its shard map is the one stored before it started; "
                              "waiting for the leader to confirm or replace it")

    def _holds(self, agent: str | None) -> bool:
        """True when this node holds a copy (primary or replica) of the agent's shard."""
        smap = self._map()
        return agent is not None and smap is not None and self.node_id in smap.placement[shard_of(agent, smap.shards)]

    def _decide(self, request: Forward, body: Any, agent: str | None, owner: str | None) -> str:
        # asked only of a request this node does not own (a bad consistency value is judged
        # where it is served, as before)
        eventual = (owner not in (None, self.node_id) and request.op != "local_agents"
                    and wants_eventual(request.op, body, request.args))
        return route_decision(request.op, owner, self.node_id, eventual=eventual,
                              holds=eventual and self._holds(agent), hops=request.hops)

    async def dumps_answer(self, payload: Any) -> bytes:
        """An answer's JSON bytes: in a worker thread when it lists many memories (a small one is
        serialized on the loop; :class:`Offload` runs small inputs inline)."""
        return await self.offload.run(safejson.dumps, payload, size=rough_size(payload))

    async def _local(self, request: Forward, body: Any) -> tuple[int, Any]:
        service = self.service
        if service is None or not self.storage_ready():
            raise Unavailable("node is not ready: storage is still being recovered")
        try:
            agent = agent_of(request.op, body, request.args, request.agent)
            eventual = wants_eventual(request.op, body, request.args)
            shard = shard_of(agent, service.shards.shard_count) if agent is not None else None
            cache = self.cache

            async def compute() -> Any:
                return await service.execute(request.op, body, request.args, request.memory_id, request.agent,
                                             shard=shard, eventual=eventual)

            if cache is None or shard is None or agent is None or request.op not in CACHED_OPS:
                return 200, await compute()
            cached_agent = agent
            return 200, await cache.computed(
                shard, lambda: cache.name(request.op, cached_agent, body, request.args, request.memory_id), compute)
        except ServiceError as err:
            return err.status, err.body()

    async def _forward(self, owner: str, request: Forward) -> tuple[int, Any, str]:
        if self.peers is None:
            raise Unavailable(f"shard owner {owner} is unreachable; retry once the map moves the shard")
        try:
            answer: Reply = await self.peers.request(owner, request)
        except PeerUnavailable as exc:
            if not exc.asked:  # the owner is not a member, or is known to be down
                raise Unavailable(f"shard owner {owner} is unreachable; retry once the map moves the shard") from None
            self.metrics.forwarded_requests.inc()
            raise Unavailable(f"shard owner {owner} did not answer: {exc.reason}") from None
        self.metrics.forwarded_requests.inc()
        # the owner's body is decoded (not passed through): its error bodies are not compact JSON,
        # and the client gets the same compact bytes whichever node served it
        payload = await self.offload.run(json.loads, answer.body, size=len(answer.body)) if answer.body else None
        member = self.peers.member(owner)
        return answer.status, payload, answer.owner or (member.api if member is not None else "")

    # -- entry from another node -------------------------------------------------------
    async def _serve(self, envelope: Envelope, stream: MessageStream) -> None:
        request: Forward = envelope.message
        if request.request_id and request.op in WRITE_OPS:
            reply = await self.applied.run(request.request_id, lambda: self._answer(envelope, request))
        else:
            reply = await self._answer(envelope, request)
        await stream.send(reply)

    async def _answer(self, envelope: Envelope, request: Forward) -> Reply:
        try:
            try:
                # the same parser and limits as the facade: a body that reaches the owner only by
                # forwarding (an older peer, or a forged frame) gets the same 400, never a crash
                body = await self.offload.run(lambda: safejson.loads_body(request.body, required=False),
                                              size=len(request.body))
            except safejson.JsonInvalid as exc:
                raise InvalidRequest(str(exc)) from None
            if request.map_version > self._map_version() and self.shard_map is not None:
                # the sender knows a newer map: learn it before deciding who owns the shard, or
                # a new primary could answer from a copy it has not finished taking over
                sender = self.peers.member(envelope.sender) if self.peers is not None else None
                if sender is not None:
                    await self.shard_map.catch_up(sender.id, request.map_version,
                                                  timeout=self.config.request_timeout / 2)
            agent = agent_of(request.op, body, request.args, request.agent)
            owner = self._owner(agent)
            decision = self._decide(request, body, agent, owner)
            if decision == "serve":
                status, payload = await self._local(request, body)
                reply = Reply(status, await self.dumps_answer(payload), self.api_address)
            elif decision == "forward":
                assert owner is not None
                status, payload, owner_api = await self._forward(owner, attrs.evolve(request, hops=1))
                reply = Reply(status, await self.dumps_answer(payload), owner_api)
            else:
                raise Unavailable("shard maps disagree; retry shortly")
        except ServiceError as err:
            reply = Reply.of_error(err, self.api_address)
        return reply
