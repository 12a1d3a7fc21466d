"""The memory API's behaviour, independent of HTTP: parsed JSON in, JSON-ready answers out.

Routes call it on the node that owns the agent's shard; a later issue forwards requests for
shards owned elsewhere to the owner's service, so nothing here may depend on the HTTP request.
Validation happens before anything is written: a refused request changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import numpy as np

from ..errors import Conflict, InvalidRequest, NotFound, TooLarge
from ..log import get_logger
from ..runtime.offload import INLINE, Offload
from ..search import Embedder, make_embedder
from . import validation
from .model import Memory, MemoryUpdate, NewMemory
from .records import BadRecord, check_memory, check_session
from .sessions import DEFAULT_IDLE_TIMEOUT_SECS, Session, new_session_id, newest_first
from .shard import ShardSet, Tokenizer
from .validation import Invalid

if TYPE_CHECKING:
    from .owner import ShardOwner


class ReplicationGate(Protocol):
    """What the service waits on in cluster mode (the replicator): a shard it is still taking
    over, and the acknowledgements ``DAKERA_WRITE_ACK`` asks for."""

    async def ready(self, shard: int, timeout: float) -> None: ...

    async def settled(self, timeout: float) -> None: ...

    async def acknowledged(self, shard: int, seq: int, timeout: float) -> None: ...


class WriteFence(Protocol):
    """The L1.5 cache's hold on acknowledgements (the cache's generation rule): told of every
    write applied to a shard this node leads, and waited for before the write is acknowledged."""

    def applied(self, shard: int) -> int | None: ...

    async def settle(self, shard: int, version: int | None) -> None: ...


@contextmanager
def valid() -> Iterator[None]:
    """Inside: a request that fails validation is refused with a 400 naming the field."""
    try:
        yield
    except Invalid as exc:
        raise InvalidRequest(str(exc), field=exc.field) from None


#: the session operations (:meth:`MemoryService.session_op`)
SESSION_OPS = frozenset({"session_start", "session_get", "session_touch", "session_end", "session_list",
                         "agent_sessions", "session_memories"})


def session_not_found(session_id: str) -> NotFound:
    return NotFound(f"session {session_id!r} not found", code="NOT_FOUND")


def not_found(agent_id: str, memory_id: str) -> NotFound:
    return NotFound(f"memory {memory_id!r} not found for agent {agent_id!r}", code="NOT_FOUND")


class MemoryService:
    def __init__(self, shards: ShardSet, owner: ShardOwner, embedder: Embedder, tokenize: Tokenizer,
                 *, wall_clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 offload: Offload = INLINE, max_text_bytes: int = 8 * 1024 * 1024,
                 session_idle_timeout: int = DEFAULT_IDLE_TIMEOUT_SECS) -> None:
        self.shards = shards
        #: where embedding runs: worker threads, so a big batch does not stall the protocols
        self.offload = offload
        #: total UTF-8 bytes of text one request may ask to embed
        self.max_text_bytes = max_text_bytes
        self.owner = owner
        self.embedder = embedder
        #: embedders of shards not re-embedded yet, by identity (None: cannot be built here)
        self.old_embedders: dict[str, Embedder | None] = {}
        self.tokenize = tokenize
        self.wall_clock = wall_clock
        self.rng = rng or random.Random()
        #: the replication layer (cluster mode): takeover gate and write acknowledgements
        self.replication: ReplicationGate | None = None
        self.fence: WriteFence | None = None  # the L1.5 cache's (None: no cache)
        self.request_timeout = 5.0
        #: DAKERA_SESSION_IDLE_TIMEOUT_SECS: a session's idle timeout when it asks for none
        self.session_idle_timeout = session_idle_timeout

    # -- helpers -----------------------------------------------------------------------
    def _new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    async def embedder_of(self, shard: int) -> tuple[str, int, Embedder | None]:
        """``(identity, dim, embedder)`` of the shard's live vectors: the node's own embedder, or
        (a shard not re-embedded yet) the one its vectors were made by, built from its identity
        once (in a worker thread); None when it cannot be built here (then the shard is searched
        by BM25 alone until it is re-embedded)."""
        identity, dim = self.shards.embedder_of(shard)
        if identity == self.embedder.identity and dim == self.embedder.dim:
            return identity, dim, self.embedder
        if identity not in self.old_embedders:
            built: Embedder | None = None
            try:
                built = await self.offload.run(make_embedder, identity)
            except Exception as exc:  # any failure of a model load: fall back to BM25, said below
                get_logger(__name__).warning("old_embedder_unavailable", embedder=identity, error=str(exc)[:300],
                                             effect="its shards' recall is BM25 only until re-embedded")
            if built is not None and (built.identity, built.dim) != (identity, dim):
                built = None
            self.old_embedders[identity] = built
        return identity, dim, self.old_embedders[identity]

    async def _embed_for(self, shard: int, texts: list[str]) -> tuple[np.ndarray, int, str]:
        """Vectors of ``texts`` for storing into ``shard``: by the embedder of its live vectors
        (the old one while it is re-embedded; all zero when that cannot be built: the
        re-embedding gives them vectors). Returns them, the milliseconds, and that embedder."""
        while True:
            identity, dim, embedder = await self.embedder_of(shard)
            if embedder is None:
                vectors, ms = np.zeros((len(texts), dim), dtype=np.float32), 0
            else:
                vectors, ms = await self._embed(texts, embedder=embedder)
            if self.shards.embedder_of(shard)[0] == identity:  # not switched meanwhile
                return vectors, ms, identity

    async def _embed(self, texts: list[str], *, stored: bool = True,
                     embedder: Embedder | None = None) -> tuple[np.ndarray, int]:
        """Vectors of ``texts`` in a worker thread (by ``embedder``, else the node's), with the
        tokens the index will want when they are ``stored`` (so applying the write does not
        tokenize on the event loop)."""
        embed = (embedder or self.embedder).embed
        size = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
        if size > self.max_text_bytes:
            raise TooLarge(f"request asks to embed {size} bytes of text; at most {self.max_text_bytes} "
                           "are allowed per request (DAKERA_MAX_REQUEST_TEXT_BYTES): split it")
        started = time.perf_counter()
        if not stored:
            vectors = await self.offload.run(embed, texts, size=size)
            return vectors, int((time.perf_counter() - started) * 1000)

        def work() -> tuple[np.ndarray, int, list[list[str]]]:
            vectors = embed(texts)
            ms = int((time.perf_counter() - started) * 1000)
            return vectors, ms, self.shards.tokens_ahead(texts)

        vectors, ms, tokens = await self.offload.run(work, size=size)
        self.shards.expect(texts, tokens)
        return vectors, ms

    def _build(self, new: NewMemory, vector: np.ndarray, now: float) -> dict[str, Any]:
        expires_at = new.expiry(now)
        if expires_at is not None and expires_at <= now:
            raise InvalidRequest("expires_at: is in the past", field="expires_at")
        memory = Memory(id=new.id or self._new_id(), agent_id=new.agent_id, content=new.content,
                        memory_type=new.memory_type, importance=new.importance, tags=new.tags,
                        metadata=new.metadata, session_id=new.session_id, created_at=now,
                        updated_at=now, expires_at=expires_at)
        return {"m": memory.to_record(), "v": vector.astype(np.float32).tobytes()}

    @staticmethod
    def _with_warnings(body: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
        if warnings:
            body["warnings"] = warnings
        return body

    async def commit_records(self, shard: int, entries: list[tuple[int, str, Any]], now: float) -> list[Any]:
        """Write ``entries`` as the shard's primary and wait for the acknowledgements DAKERA_WRITE_ACK asks
        for (the one way records are written: the routes, and the re-embedder's revec/reembed)."""
        committed = await self.owner.commit(entries, now)
        fence = self.fence
        version = fence.applied(shard) if fence is not None else None  # the cache's advance starts now
        if self.replication is not None:
            await self.replication.acknowledged(shard, committed.seq, self.request_timeout)
        if fence is not None:
            await fence.settle(shard, version)  # no cached answer older than this write after the ack
        return committed.results

    async def execute(self, op: str, body: Any, args: Mapping[str, str], memory_id: str = "",
                      agent: str = "", *, shard: int | None = None, eventual: bool = False) -> Any:
        """Run one named operation: what a route does here, and what a forwarded request does on
        its owner. Raises a :class:`~dakera_actors.errors.ServiceError` for anything the caller got wrong.

        ``shard``: the shard the request's agent lives in; on a primary that is still taking the
        shard over, the request waits for that (read-your-writes), unless ``eventual``."""
        if shard is not None and self.replication is not None and not eventual:
            await self.replication.ready(shard, self.request_timeout)
        if op == "store":
            return await self.store(body)
        if op == "store_batch":
            return await self.store_batch(body)
        if op == "get":
            return self.get(args.get("agent_id"), memory_id)
        if op == "update":
            return await self.update(args.get("agent_id"), memory_id, body)
        if op == "forget":
            return await self.forget(body)
        if op == "batch_forget":
            return await self.batch_forget(body)
        if op in ("recall", "search"):
            return await self.recall(body, default_top_k=5 if op == "recall" else 10)
        if op == "batch_recall":
            return self.batch_recall(body)
        if op == "agent_memories":
            return self.agent_memories(agent, args)
        if op == "agent_stats":
            return self.agent_stats(agent)
        if op == "local_sessions":
            if self.replication is not None:  # every shard this node leads, whole
                await self.replication.settled(self.request_timeout)
            return self.local_sessions(args)
        if op == "local_agents":
            if self.replication is not None:  # every shard this node leads, whole
                await self.replication.settled(self.request_timeout)
            return self.list_agents(args)
        if op == "restore_agent":
            return await self.restore_agent(body)
        if op in SESSION_OPS:
            return await self.session_op(op, body, args, memory_id, agent)
        if op in ("importance", "patch_importance"):
            return await self.set_importance(body, memory_id if op == "patch_importance" else None)
        raise InvalidRequest(f"unknown operation {op!r}")

    # -- writes ------------------------------------------------------------------------
    async def store(self, data: Any) -> dict[str, Any]:
        with valid():
            new, warnings = validation.parse_store(data)
        shard = self.shards.shard_of(new.agent_id)
        vectors, ms, embedder = await self._embed_for(shard, [new.content])
        now = self.wall_clock()
        body = {**self._build(new, vectors[0], now), "e": embedder}
        memory = (await self.commit_records(shard, [(shard, "put", body)], now))[0]
        answer = {"memory": memory.to_json(), "embedding_time_ms": ms}
        session = self._session_of(memory)
        if session is not None:  # stored into a started session: say whether it is still open
            answer["session_state"] = session.state(now)
        return self._with_warnings(answer, warnings)

    def _session_of(self, memory: Memory) -> Session | None:
        """The started session a memory went into (one of its own agent), if any."""
        session = self.shards.session(memory.session_id) if memory.session_id else None
        return session if session is not None and session.agent_id == memory.agent_id else None

    async def store_batch(self, data: Any) -> dict[str, Any]:
        with valid():
            items, warnings = validation.parse_store_batch(data)
        shard = self.shards.shard_of(items[0].agent_id)
        vectors, ms, embedder = await self._embed_for(shard, [i.content for i in items])
        now = self.wall_clock()
        bodies = [{**self._build(item, vectors[n], now), "e": embedder} for n, item in enumerate(items)]
        stored: list[Memory] = await self.commit_records(shard, [(shard, "put", b) for b in bodies], now)
        ended = sorted({s.id for m in stored if (s := self._session_of(m)) is not None and not s.active(now)})
        return self._with_warnings({
            "ended_sessions": ended,
            "stored": [{"id": m.id, "content": m.content, "agent_id": m.agent_id, "tags": list(m.tags),
                        "importance": m.importance, "created_at": int(m.created_at)} for m in stored],
            "stored_count": len(stored),
            "total_embedding_time_ms": ms,
        }, warnings)

    async def restore_agent(self, data: Any) -> dict[str, Any]:
        """Put back one agent's memories from a backup: ``{"agent_id", "overwrite", "memories":
        [[memory record, base64 vector], ...]}``. Every memory is checked first (one bad one refuses
        the request, nothing written). Without ``overwrite`` only memories the agent lacks are added;
        with it the agent ends up holding exactly the backup's memories: those of this request and
        the ids in ``retain`` (the agent's memories the restore sends in its other requests; without
        it the second request of an agent would delete the first one's); ``prune`` false (the
        agent's later requests) replaces this request's memories and deletes none. ``sessions``
        (the agent's first request): its session records, put back the same way (with
        ``overwrite``, the agent's sessions become exactly these; without, only those it lacks are
        added); without the key its sessions are left alone. Written through the log and
        replicated like any write; applying the same request twice gives the same state."""
        if not isinstance(data, dict) or not isinstance(data.get("memories"), list):
            raise InvalidRequest("body: must be an object with a memories list", field="memories")
        with valid():
            agent = validation.agent_id(data.get("agent_id"))
        overwrite = data.get("overwrite") is True
        retain = data.get("retain") or []
        if not isinstance(retain, list) or not all(isinstance(i, str) for i in retain):
            raise InvalidRequest("retain: must be a list of memory ids", field="retain")
        pairs: list[tuple[dict[str, Any], bytes]] = []
        for n, item in enumerate(data["memories"]):
            try:
                record, encoded = item
                vector = base64.b64decode(encoded, validate=True)
                check_memory(record, vector, self.shards.dim)
            except (BadRecord, TypeError, ValueError, binascii.Error) as exc:
                raise InvalidRequest(f"memories[{n}]: not a memory of this cluster ({exc})",
                                     field=f"memories[{n}]") from None
            if record["a"] != agent:
                raise InvalidRequest(f"memories[{n}]: belongs to agent {record['a']!r}", field=f"memories[{n}]")
            pairs.append((record, vector))
        sessions = data.get("sessions")
        if sessions is not None:
            if not isinstance(sessions, list):
                raise InvalidRequest("sessions: must be a list of session records", field="sessions")
            for n, record in enumerate(sessions):
                try:
                    check_session(record)
                except BadRecord as exc:
                    raise InvalidRequest(f"sessions[{n}]: not a session of this cluster ({exc})",
                                         field=f"sessions[{n}]") from None
                if record["a"] != agent:
                    raise InvalidRequest(f"sessions[{n}]: belongs to agent {record['a']!r}", field=f"sessions[{n}]")
        shard = self.shards.shard_of(agent)
        data_now = self.shards.shards.get(shard)
        holding = data_now.agents.get(agent) if data_now is not None else None
        held = set(holding.memories) if holding is not None else set()
        # an agent restored in several requests: each one's overwrite keeps the others' memories
        wanted = {record["id"] for record, _ in pairs} | set(retain)

        def unchanged(record: dict[str, Any], vector: bytes) -> bool:
            # held exactly as the backup has it: rewriting it would log and replicate nothing new
            # (a point-in-time restore mostly finds its memories unchanged)
            assert holding is not None
            mid = record["id"]
            return holding.vectors.get(mid) == vector and holding.memories[mid].to_record() == record

        puts = [(r, v) for r, v in pairs if r["id"] not in held or (overwrite and not unchanged(r, v))]
        same = sum(1 for r, v in pairs if overwrite and r["id"] in held and unchanged(r, v))
        doomed = sorted(held - wanted) if overwrite and data.get("prune") is not False else []
        now = self.wall_clock()
        contents = [r["c"] for r, _ in puts]
        if contents:
            self.shards.expect(contents, await self.offload.run(self.shards.tokens_ahead, contents,
                                                                size=sum(map(len, contents))))
        entries: list[tuple[int, str, Any]] = [(shard, "delete", {"a": agent, "ids": doomed})] if doomed else []
        entries += [(shard, "put", {"m": r, "v": v}) for r, v in puts]
        if sessions is not None:
            replace = overwrite and data.get("prune") is not False
            held_sessions = {s.id: s.to_record() for s in self.shards.sessions_of(agent)}
            wanted_sessions = {r["id"]: r for r in sessions}
            if (held_sessions != wanted_sessions) if replace else not set(wanted_sessions) <= set(held_sessions):
                entries.append((shard, "session_load", {"a": agent, "sessions": sessions, "replace": replace}))
        if entries:
            await self.commit_records(shard, entries, now)
        return {"agent_id": agent, "restored": len(puts), "skipped": len(pairs) - len(puts), "unchanged": same,
                "removed": len(doomed)}

    async def update(self, agent_id: Any, memory_id: str, data: Any) -> dict[str, Any]:
        with valid():
            agent = validation.agent_id(agent_id)
            mid = validation.memory_id(memory_id, "memory_id")
            update, warnings = validation.parse_update(data)
        now = self.wall_clock()
        if self.shards.get(agent, mid, now) is None:
            raise not_found(agent, mid)
        shard = self.shards.shard_of(agent)
        body: dict[str, Any] = {"a": agent, "id": mid, "set": update.to_record(), "v": None, "ua": now}
        if update.content is not None:
            vectors, _ms, body["e"] = await self._embed_for(shard, [update.content])
            body["v"] = vectors[0].astype(np.float32).tobytes()
        memory = (await self.commit_records(shard, [(shard, "patch", body)], now))[0]
        if memory is None:  # forgotten between the check and the write
            raise not_found(agent, mid)
        return self._with_warnings(memory.to_json(), warnings)

    async def set_importance(self, data: Any, path_memory_id: str | None = None) -> dict[str, Any]:
        """A memory's new importance: a ``patch`` record setting only it (logged, replicated and
        fenced like any update). Answers the memory, with ``memory_id`` and ``updated`` beside it."""
        with valid():
            agent, mid, importance = validation.parse_importance(data, path_memory_id)
        now = self.wall_clock()
        if self.shards.get(agent, mid, now) is None:
            raise not_found(agent, mid)
        body = {"a": agent, "id": mid, "set": MemoryUpdate(importance=importance).to_record(), "v": None, "ua": now}
        shard = self.shards.shard_of(agent)
        memory = (await self.commit_records(shard, [(shard, "patch", body)], now))[0]
        if memory is None:  # forgotten between the check and the write
            raise not_found(agent, mid)
        answer = memory.to_json()
        answer.update(memory_id=memory.id, updated=True)
        return answer

    async def forget(self, data: Any) -> dict[str, Any]:
        with valid():
            agent, ids = validation.parse_forget(data)
        now = self.wall_clock()
        shard = self.shards.shard_of(agent)
        deleted = (await self.commit_records(shard, [(shard, "delete", {"a": agent, "ids": list(ids)})], now))[0]
        return {"deleted_count": len(deleted), "memory_ids": deleted}

    async def batch_forget(self, data: Any) -> dict[str, Any]:
        with valid():
            agent, flt = validation.parse_batch_forget(data)
        now = self.wall_clock()
        shard = self.shards.shard_of(agent)
        count = (await self.commit_records(shard, [(shard, "delete_where", {"a": agent, "f": flt.to_record(), "now": now})],
                                    now))[0]
        return {"deleted_count": count}

    # -- sessions ----------------------------------------------------------------------
    async def session_op(self, op: str, body: Any, args: Mapping[str, str], session_id: str, agent: str) -> Any:
        if op == "session_start":
            return await self.session_start(body)
        if op == "session_list":
            with valid():
                found, active_only, limit, offset = validation.parse_session_listing(args, need_agent=True)
            assert found is not None
            return self.session_list(found, active_only, limit, offset)
        if op == "agent_sessions":
            with valid():
                found = validation.agent_id(agent)
                _, active_only, limit, offset = validation.parse_session_listing(args, need_agent=False)
            return self.session_list(found, active_only, limit, offset)
        with valid():
            sid = validation.session_id(session_id)
        if op == "session_get":
            return self._session_json(self._session(sid), self.wall_clock())
        if op == "session_touch":
            return await self.session_touch(sid)
        if op == "session_end":
            return await self.session_end(sid, body)
        return self.session_memories(sid, args)

    def _session(self, session_id: str) -> Session:
        session = self.shards.session(session_id)
        if session is None:
            raise session_not_found(session_id)
        return session

    def _session_counts(self, agent: str, now: float) -> Counter[str]:
        return Counter(m.session_id for m in self.shards.live(agent, now) if m.session_id)

    def _session_json(self, session: Session, now: float) -> dict[str, Any]:
        return session.to_json(now, self._session_counts(session.agent_id, now)[session.id])

    async def session_start(self, data: Any) -> dict[str, Any]:
        with valid():
            agent, sid, metadata, idle = validation.parse_session_start(data)
        now = self.wall_clock()
        sid = sid or new_session_id(agent, self.rng)
        if self.shards.session(sid) is not None:
            raise Conflict(f"session {sid!r} exists already", code="CONFLICT")
        session = Session(id=sid, agent_id=agent, started_at=now, last_activity_at=now,
                          timeout=self.session_idle_timeout if idle is None else idle, idle_timeout_secs=idle,
                          metadata=metadata)
        shard = self.shards.shard_of(agent)
        started: Session = (await self.commit_records(shard, [(shard, "session_start", {"s": session.to_record()})], now))[0]
        if started != session:  # the same id started meanwhile
            raise Conflict(f"session {sid!r} exists already", code="CONFLICT")
        return {"session": self._session_json(started, now)}

    async def session_touch(self, session_id: str) -> dict[str, Any]:
        now = self.wall_clock()
        session = self._session(session_id)
        if session.active(now):  # an ended one never re-opens: answered as it is, nothing written
            shard = self.shards.shard_of(session.agent_id)
            touched = (await self.commit_records(shard, [(shard, "session_touch", {"id": session_id, "at": now})], now))[0]
            session = touched if touched is not None else self._session(session_id)
        answer = self._session_json(session, now)
        return {"session": answer, "session_state": answer["session_state"],
                "idle_deadline_at": answer["idle_deadline_at"]}

    async def session_end(self, session_id: str, data: Any) -> dict[str, Any]:
        with valid():
            summary, warnings = validation.parse_session_end(data)
        now = self.wall_clock()
        session = self._session(session_id)
        if session.active(now):  # one ended already keeps its end, reason and summary
            shard = self.shards.shard_of(session.agent_id)
            body = {"id": session_id, "at": now, "summary": summary}
            ended = (await self.commit_records(shard, [(shard, "session_end", body)], now))[0]
            session = ended if ended is not None else self._session(session_id)
        return self._with_warnings(self._session_json(session, now), warnings)

    def session_list(self, agent: str, active_only: bool, limit: int, offset: int) -> list[dict[str, Any]]:
        now = self.wall_clock()
        found = [s for s in self.shards.sessions_of(agent) if not active_only or s.active(now)]
        counts = self._session_counts(agent, now)
        return [s.to_json(now, counts[s.id]) for s in found[offset:offset + limit]]

    def local_sessions(self, args: Mapping[str, str]) -> list[dict[str, Any]]:
        """The newest ``first`` sessions (``active_only``: open ones) of every shard this node
        holds, newest first: what each member sends for a listing of every agent's sessions."""
        with valid():
            active_only, first = validation.parse_session_prefix(args)
        now = self.wall_clock()
        found = [s for shard in self.shards.shards.values() for s in shard.sessions.values()
                 if not active_only or s.active(now)]
        found.sort(key=newest_first, reverse=True)
        counts: dict[str, Counter[str]] = {}
        out = []
        for s in found[:first]:
            if s.agent_id not in counts:
                counts[s.agent_id] = self._session_counts(s.agent_id, now)
            out.append(s.to_json(now, counts[s.agent_id][s.id]))
        return out

    def session_memories(self, session_id: str, args: Mapping[str, str]) -> dict[str, Any]:
        with valid():
            limit, offset, preview = validation.parse_session_memories(args)
        session = self._session(session_id)
        now = self.wall_clock()
        found = [m for m in self.shards.newest_first(session.agent_id, now) if m.session_id == session_id]
        page = []
        for m in found[offset:offset + limit]:
            item = m.to_json()
            if preview is not None:
                item.update(content=m.content[:preview], content_len=len(m.content),
                            content_truncated=len(m.content) > preview)
            page.append(item)
        return {"session_id": session_id, "memories": page, "total": len(found)}

    # -- reads -------------------------------------------------------------------------
    def get(self, agent_id: Any, memory_id: str) -> dict[str, Any]:
        with valid():
            agent = validation.agent_id(agent_id)
            mid = validation.memory_id(memory_id, "memory_id")
        memory = self.shards.get(agent, mid, self.wall_clock())
        if memory is None:
            raise not_found(agent, mid)
        return memory.to_json()

    async def recall(self, data: Any, *, default_top_k: int = 5) -> dict[str, Any]:
        with valid():
            query, warnings = validation.parse_recall(data, default_top_k=default_top_k)
        identity, dim, embedder = await self.embedder_of(self.shards.shard_of(query.agent_id))
        if embedder is None:  # vectors of an embedder this node cannot build: BM25 until re-embedded
            warnings = [*warnings, f"this agent's memories are being re-embedded and their old embedder "
                                   f"{identity!r} cannot be loaded here: recall uses BM25 only until it is done"]
            query = attrs.evolve(query, routing="bm25")
            vector, embed_ms = np.zeros(dim, dtype=np.float32), 0
        else:
            vectors, embed_ms = await self._embed([query.query], stored=False, embedder=embedder)
            vector = vectors[0]
        started = time.perf_counter()
        hits = self.shards.recall(query, self.tokenize(query.query), vector, self.wall_clock())
        search_ms = int((time.perf_counter() - started) * 1000)
        memories = []
        for memory, hit in hits:
            item = memory.to_json()
            item.update(score=hit.score, vector_score=hit.vector_score, text_score=hit.text_score)
            memories.append(item)
        return self._with_warnings({"memories": memories, "query_embedding_time_ms": embed_ms,
                                    "search_time_ms": search_ms}, warnings)

    def batch_recall(self, data: Any) -> dict[str, Any]:
        with valid():
            agent, flt, limit = validation.parse_batch_recall(data)
        everything = self.shards.newest_first(agent, self.wall_clock())
        matching = [m for m in everything if flt.matches(m)]
        return {"memories": [m.to_json() for m in matching[:limit]], "total": len(everything),
                "filtered": len(matching), "truncated": len(matching) > limit}

    def list_agents(self, args: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """This node's agents in id order: the first ``args["first"]`` of them (all without it)."""
        now = self.wall_clock()
        out: list[dict[str, Any]] = []
        with valid():
            first = validation.parse_agent_prefix(args or {})
        for agent in self.shards.agent_ids():
            if first is not None and len(out) >= first:
                break
            memories = list(self.shards.live(agent, now))
            if memories:
                out.append({"agent_id": agent, "memory_count": len(memories),
                            "session_count": len({m.session_id for m in memories if m.session_id}),
                            "last_memory_at": int(max(m.created_at for m in memories))})
        return out

    def agent_memories(self, agent_id: str, args: Mapping[str, str]) -> list[dict[str, Any]]:
        with valid():
            agent = validation.agent_id(agent_id)
            limit, offset, memory_type = validation.parse_listing(args)
        page = self.shards.newest_first(agent, self.wall_clock(), memory_type)[offset:offset + limit]
        return [m.to_json() for m in page]

    def agent_stats(self, agent_id: str) -> dict[str, Any]:
        with valid():
            agent = validation.agent_id(agent_id)
        memories = list(self.shards.live(agent, self.wall_clock()))
        started = self.shards.sessions_of(agent)
        sessions = {m.session_id for m in memories if m.session_id} | {s.id for s in started}
        created = [m.created_at for m in memories]
        return {
            "agent_id": agent,
            "total_memories": len(memories),
            "memories_by_type": dict(Counter(m.memory_type for m in memories)),
            "total_sessions": len(sessions),
            "active_sessions": sum(1 for s in started if s.active(self.wall_clock())),
            "avg_importance": (sum(m.importance for m in memories) / len(memories)) if memories else None,
            "oldest_memory_at": int(min(created)) if created else None,
            "newest_memory_at": int(max(created)) if created else None,
        }
