"""Routing: any node answers any memory request, serving what it owns and forwarding the rest.

A request names its agent; the agent's shard's primary in the installed map is its owner. The
owner runs the request locally; any other node forwards it over the inter-node transport as one
msgpack request/response (not a second HTTP hop) and returns the owner's answer unchanged,
errors included. A request bounces at most once: the receiver serves it if its own map makes it
the owner or if the sender's map is newer than its own, forwards it once more otherwise, and
answers 503 rather than bounce again. A forward that gets no answer within the request timeout
is a 503 naming the owner, never a hang.

A forwarded write carries a request id given by the node that took it from HTTP; the owner
answers a repeated id with its first answer instead of applying the write again (see
:mod:`.idempotency`), so a resent or replayed forward cannot store twice or roll data back.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import attrs

from .. import safejson
from ..api.errors import ApiError
from ..endpoint import MessageStream, RemoteError
from ..errors import ServiceError
from ..store import model
from ..store.shard import shard_of
from ..transport import TransportError
from ..wire import Envelope, message
from ..wirebounds import STATUS, URL, VERSION, Blob, Int, Mapping, Text, bound
from .idempotency import IdempotencyCache

if TYPE_CHECKING:
    from ..node import Node

# operations keyed by the agent in the body, in the query string, or in the path
BODY_AGENT = {"store", "store_batch", "forget", "recall", "search", "batch_recall", "batch_forget"}
QUERY_AGENT = {"get", "update"}
PATH_AGENT = {"agent_memories", "agent_stats"}
# reads a replica may answer when the client asks for consistency=eventual
EVENTUAL_OPS = {"get", "recall", "search"}
# operations that change data: forwarded with a request id, applied once per id
WRITE_OPS = {"store", "store_batch", "update", "forget", "batch_forget"}
NO_BODY = {"get", "agent_memories", "agent_stats"}
# answers that can run to megabytes: serialized off the event loop
LARGE_ANSWER = {"store_batch", "recall", "search", "batch_recall", "agent_memories", "local_agents"}


@message("route.forward")
@attrs.frozen
class Forward:
    op: str = attrs.field(metadata=bound(Text(64)))
    body: bytes = attrs.field(metadata=bound(Blob()))
    args: dict[str, str] = attrs.field(metadata=bound(Mapping(Text(256), Text(65_536), max_len=64)))
    memory_id: str = attrs.field(default="", metadata=bound(Text()))
    agent: str = attrs.field(default="", metadata=bound(Text()))  # the agent named in the path, for the agents/... routes
    hops: int = attrs.field(default=0, metadata=bound(Int(0, 64)))
    map_version: int = attrs.field(default=0, metadata=bound(VERSION))
    #: set on writes by the node that took them from HTTP: the owner applies each id once
    request_id: str = attrs.field(default="", metadata=bound(Text(128)))


@message("route.reply")
@attrs.frozen
class ForwardReply:
    status: int = attrs.field(metadata=bound(STATUS))
    body: bytes = attrs.field(metadata=bound(Blob()))
    owner: str = attrs.field(default="", metadata=bound(URL))  # the owner's API address


def wants_eventual(op: str, body: Any, args: dict[str, str]) -> bool:
    """True when a read asks for ``consistency=eventual`` (query string for get, body for recall)."""
    if op not in EVENTUAL_OPS:
        return False
    value = args.get("consistency") if op == "get" else (body.get("consistency") if isinstance(body, dict) else None)
    try:
        return model.consistency(value) == "eventual"
    except model.Invalid as exc:
        raise ApiError(400, str(exc), field=exc.field) from None


def rough_size(payload: Any) -> int:
    """A guess at an answer's JSON size from how many memories it lists (a few top-k hits are
    cheaper to serialize on the loop than to hand to a busy worker thread)."""
    items = payload.get("memories", payload.get("stored")) if isinstance(payload, dict) else payload
    return 2048 * len(items) if isinstance(items, list) else 0


def parse_body(raw: bytes, *, required: bool) -> Any:
    """A request body as the memory API takes it; raises :class:`safejson.JsonInvalid` when bad."""
    if not raw:
        if required:
            raise safejson.JsonInvalid("request body must be a JSON object")
        return None
    return safejson.loads(raw)


def agent_of(op: str, body: Any, args: dict[str, str], path_agent: str) -> str | None:
    if op in BODY_AGENT:
        value = body.get("agent_id") if isinstance(body, dict) else None
    elif op in QUERY_AGENT:
        value = args.get("agent_id")
    else:
        value = path_agent or None
    return value if isinstance(value, str) and value else None


class Router:
    def __init__(self, node: Node) -> None:
        self.node = node
        # an id can come back while a sealed copy of its frame is fresh, or while its sender retries
        ttl = node.config.gossip_frame_window + 2 * node.config.request_timeout
        self.applied: IdempotencyCache[ForwardReply] = IdempotencyCache(ttl, keep=lambda r: r.status < 500)
        if node.endpoint is not None:  # a single node has no peers to forward to
            node.endpoint.on_stream(Forward, self._serve)

    # -- entry from HTTP ---------------------------------------------------------------
    async def run(self, op: str, raw: bytes, args: dict[str, str], *, memory_id: str = "",
                  path_agent: str = "") -> tuple[int, Any, str]:
        """(status, JSON body, owner API address) of one memory request."""
        # large bodies parse in a worker thread; a bad one raises JsonInvalid (the facade's 400)
        body = await self.node.offload.run(lambda: parse_body(raw, required=op not in NO_BODY), size=len(raw))
        request = Forward(op, raw, args, memory_id, path_agent, 0, self._map_version())
        agent = agent_of(op, body, args, path_agent)
        owner = self._owner(agent)
        if owner is None or owner == self.node.node_id or (wants_eventual(op, body, args) and self._holds(agent)):
            status, payload = await self._local(request, body)
            return status, payload, self.node.api_address
        if op in WRITE_OPS:
            request = attrs.evolve(request, request_id=f"{self.node.node_id}/{self.node.rng.getrandbits(64):016x}")
        return await self._forward(owner, request)

    async def list_agents(self, limit: int, offset: int = 0) -> list[dict[str, Any]]:
        """One page of the agents (in id order) of every member's shards, merged (the owner's entry
        wins). Each member sends only its first ``offset + limit`` agents: every agent of the page
        is among those of each member that holds it."""
        args = {"first": str(offset + limit)}
        status, mine = await self._local(Forward("local_agents", b"", args), None)
        if status != 200:
            raise ApiError(status, mine.get("error", "not ready"), code=mine.get("code"))
        merged: dict[str, tuple[bool, dict[str, Any]]] = {
            a["agent_id"]: (self._owner(a["agent_id"]) in (None, self.node.node_id), a) for a in mine}
        members = self.node.membership.view.value.members if self.node.membership else {}
        for member in members.values():
            if member.id == self.node.node_id or not member.alive:
                continue
            try:
                reply = await self.node.endpoint.request(  # type: ignore[union-attr]
                    member.address, Forward("local_agents", b"", args, hops=1, map_version=self._map_version()),
                    timeout=self.node.config.request_timeout)
            except (TransportError, RemoteError):
                raise ApiError(503, f"member {member.id} did not answer the agent listing", retry_after=1) from None
            answer: ForwardReply = reply.message
            if answer.status != 200:
                raise ApiError(503, f"member {member.id} could not list its agents", retry_after=1)
            self.node.metrics.forwarded_requests.inc()
            for entry in await self.node.offload.run(json.loads, answer.body, size=len(answer.body)):
                from_owner = self._owner(entry["agent_id"]) == member.id
                if entry["agent_id"] not in merged or (from_owner and not merged[entry["agent_id"]][0]):
                    merged[entry["agent_id"]] = (from_owner, entry)
        return [merged[a][1] for a in sorted(merged)[offset:offset + limit]]

    # -- helpers -----------------------------------------------------------------------
    def _map_version(self) -> int:
        smap = self.node.shard_map.view.value if self.node.shard_map else None
        return smap.version if smap else 0

    def _owner(self, agent: str | None) -> str | None:
        smap = self.node.shard_map.view.value if self.node.shard_map else None
        if agent is None:
            return None  # no agent: serve here (validation answers bad input)
        if smap is None:
            if self.node.shard_map is not None:  # a cluster node that has no map yet
                raise ApiError(503, "node is not ready: no shard map yet", retry_after=1)
            return None
        return smap.owner(shard_of(agent, smap.shards))

    def _holds(self, agent: str | None) -> bool:
        """True when this node holds a copy (primary or replica) of the agent's shard."""
        smap = self.node.shard_map.view.value if self.node.shard_map else None
        return agent is not None and smap is not None and self.node.node_id in smap.placement[shard_of(agent, smap.shards)]

    async def _local(self, request: Forward, body: Any) -> tuple[int, Any]:
        service = self.node.memory
        if service is None or not self.node.readiness.is_open("storage"):
            raise ApiError(503, "node is not ready: storage is still being recovered", retry_after=1)
        try:
            agent = agent_of(request.op, body, request.args, request.agent)
            eventual = wants_eventual(request.op, body, request.args)
            shard = shard_of(agent, service.shards.shard_count) if agent is not None else None
            return 200, await service.execute(request.op, body, request.args, request.memory_id, request.agent,
                                              shard=shard, eventual=eventual)
        except ServiceError as err:
            return err.status, err.body()

    async def _forward(self, owner: str, request: Forward) -> tuple[int, Any, str]:
        members = self.node.membership.view.value.members if self.node.membership else {}
        member = members.get(owner)
        if member is None or not member.reachable:
            raise ApiError(503, f"shard owner {owner} is unreachable; retry once the map moves the shard",
                           retry_after=1)
        self.node.metrics.forwarded_requests.inc()
        try:
            reply = await self.node.endpoint.request(  # type: ignore[union-attr]
                member.address, request, timeout=self.node.config.request_timeout)
        except (TransportError, RemoteError) as exc:
            raise ApiError(503, f"shard owner {owner} did not answer: {exc}", retry_after=1) from None
        answer: ForwardReply = reply.message
        payload = await self.node.offload.run(json.loads, answer.body, size=len(answer.body)) if answer.body else None
        return answer.status, payload, answer.owner or member.api

    async def _dumps(self, op: str, payload: Any) -> bytes:
        """The answer's JSON: in a worker thread for the operations whose answers can be large."""
        if op in LARGE_ANSWER:
            return await self.node.offload.run(safejson.dumps, payload, size=rough_size(payload))
        return safejson.dumps(payload)

    # -- entry from another node -------------------------------------------------------
    async def _serve(self, envelope: Envelope, stream: MessageStream) -> None:
        request: Forward = envelope.message
        if request.request_id and request.op in WRITE_OPS:
            reply = await self.applied.run(request.request_id, lambda: self._answer(envelope, request))
        else:
            reply = await self._answer(envelope, request)
        await stream.send(reply)

    async def _answer(self, envelope: Envelope, request: Forward) -> ForwardReply:
        try:
            try:
                # the same parser and limits as the facade: a body that reaches the owner only by
                # forwarding (an older peer, or a forged frame) gets the same 400, never a crash
                body = await self.node.offload.run(lambda: parse_body(request.body, required=False),
                                                   size=len(request.body))
            except safejson.JsonInvalid as exc:
                raise ApiError(400, str(exc)) from None
            if request.map_version > self._map_version() and self.node.shard_map is not None:
                # the sender knows a newer map: learn it before deciding who owns the shard, or
                # a new primary could answer from a copy it has not finished taking over
                member = self.node.membership.view.value.members.get(envelope.sender) if self.node.membership else None
                if member is not None:
                    await self.node.shard_map.catch_up(member.id, request.map_version,
                                                       timeout=self.node.config.request_timeout / 2)
            agent = agent_of(request.op, body, request.args, request.agent)
            owner = self._owner(agent)
            mine = (request.op == "local_agents" or owner in (None, self.node.node_id)
                    or (wants_eventual(request.op, body, request.args) and self._holds(agent)))
            if mine:
                status, payload = await self._local(request, body)
                reply = ForwardReply(status, await self._dumps(request.op, payload),
                                     self.node.api_address)
            elif request.hops == 0:
                assert owner is not None
                status, payload, owner_api = await self._forward(owner, attrs.evolve(request, hops=1))
                reply = ForwardReply(status, await self._dumps(request.op, payload), owner_api)
            else:
                raise ApiError(503, "shard maps disagree; retry shortly", retry_after=1)
        except ServiceError as err:
            reply = ForwardReply(err.status, json.dumps(err.body()).encode(), self.node.api_address)
        return reply
