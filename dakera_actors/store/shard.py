"""The shard state machine: every local shard's memories and indexes, changed only by WAL records.

Pure and deterministic: ``apply(record)`` is the one way state changes, and applying the same
records in the same order (from the log, a snapshot, or a primary's replication stream) gives
the same state. Reads never change anything. Nothing here does I/O or looks at a clock: the
time of a write travels inside its record, the time of a read is passed in.

Records (``op``: body):
- ``put``: ``{"m": memory record, "v": float32 vector bytes}``: insert, or replace keeping
  the original ``created_at`` (upsert by id);
- ``patch``: ``{"a": agent, "id": id, "set": {field: value}, "v": vector bytes | None,
  "ua": updated_at}``: change some fields of one memory; a missing memory is a no-op;
- ``delete``: ``{"a": agent, "ids": [...]}``;
- ``delete_where``: ``{"a": agent, "f": filter record, "now": ts}``: every live memory of the
  agent matching the filter at ``now``;
- ``purge``: ``{"now": ts}``: every memory of the shard expired at ``now``;
- ``session_start``: ``{"s": session record}``: a new session (one whose id exists is kept as it is);
- ``session_touch``: ``{"id": session id, "at": ts}``: activity in an open session (see
  :mod:`.sessions`); ``session_end``: ``{"id", "at", "summary"}``: a client ends it; an unknown
  session is a no-op for both; ``session_load``: ``{"a": agent, "sessions": [session record, ...],
  "replace": bool}``: a backup's sessions of one agent put back (``replace``: the agent's others
  deleted; else only those it lacks added). A ``put`` of a memory whose ``session_id`` is an open session of
  the same agent is activity in it at the memory's ``updated_at``;
- ``revec``: ``{"e": embedder identity, "d": dim, "vs": [[agent, id, content hash, vector bytes], ...]}``:
  vectors of the shard's memories by another embedder (re-embedding, see :mod:`.reembed`). They
  are staged beside the live ones (queries still use the old vectors); one whose memory is gone or
  whose content changed since (the hash: :func:`content_hash`) is dropped. Vectors of the shard's
  own embedder replace the live ones at once;
- ``reembed``: ``{"e": embedder identity, "d": dim}``: switch the shard to the staged vectors, when every
  memory has one (else a no-op: a write came in between and the re-embedder goes on);
- ``reset``, ``load``, ``mark``: a replica installing a copy of the primary's shard, logged as one
  batch: ``reset`` (``{}``) empties the shard and its position, each ``load``
  (``{"memories": [[memory record, vector bytes], ...], "sessions"?: [session record, ...]}``)
  adds memories (and sessions), and ``mark``
  (``{"seq", "epoch"}``) sets the position the copy was taken at. A crash that keeps only part
  of the batch leaves the shard at position 0, so the replica fetches it whole again.

Each shard records which embedder made its vectors (``embedder``, ``dim``): set by the first
``put``/``load`` into an empty shard (from the record's ``e``; a record without one, written before
embedders were recorded, counts as the node's embedder when its vector has that length, else as
``hashing:<length>``, the only embedder before), by a snapshot's ``emb``/``dim``, and by ``reembed``.
A ``put`` or ``patch`` whose vector does not fit the shard (another embedder or length, written in
the instant of a switch) is indexed without a vector (all zero): BM25 still finds it.

Each shard also has a replication position ``(epoch, seq)``: the seq and epoch of the last
replicated record applied (see :mod:`dakera_actors.replication`).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import numpy as np
import xxhash

from ..search import TOKENIZER_ID, AgentIndex, Hit, VectorIndex
from ..search import tokenize as default_tokenize
from .model import Memory, MemoryFilter, RecallQuery
from .sessions import Session, newest_first, split_session_id

Tokenizer = Callable[[str], list[str]]
MAX_TOKENS_AHEAD = 20_000  # contents whose tokens wait for their record to be applied


def shard_of(agent_id: str, shard_count: int) -> int:
    """The shard an agent's memories live in: ``xxh64(agent_id) % shards`` (SPEC, section 4)."""
    return xxhash.xxh64_intdigest(agent_id.encode()) % shard_count


@attrs.define
class AgentData:
    memories: dict[str, Memory]
    vectors: dict[str, bytes]
    index: AgentIndex


def content_hash(content: str) -> int:
    """What a ``revec`` entry says its vector was made from (a changed memory's staged vector is stale)."""
    return xxhash.xxh64_intdigest(content.encode("utf-8", "surrogatepass"))


@attrs.define
class Stage:
    """Vectors of another embedder, waiting until every memory of the shard has one."""

    embedder: str
    dim: int
    #: (agent, memory id) -> (content hash, vector bytes)
    vectors: dict[tuple[str, str], tuple[int, bytes]] = attrs.Factory(dict)


@attrs.define
class Shard:
    id: int
    agents: dict[str, AgentData] = attrs.Factory(dict)
    applied_lsn: int = 0
    seq: int = 0  # the last applied replicated record's per-shard sequence number
    epoch: int = 0  # ... and the shard-map epoch its primary wrote it under
    #: (expires_at, agent, id) of memories with an expiry; entries may be stale (lazy deletion)
    expiries: list[tuple[int, str, str]] = attrs.Factory(list)
    #: the sessions of the shard's agents, by session id (they outlive their agent's memories)
    sessions: dict[str, Session] = attrs.Factory(dict)
    #: the embedder that made the live vectors, and their length (see the module doc)
    embedder: str | None = None
    dim: int = 0
    #: a re-embedding's vectors, staged (see ``revec``)
    stage: Stage | None = None
    #: (agent, id) of memories holding an all-zero stand-in in the live space (a write embedded
    #: by the old embedder that landed just after the switch, or one whose old embedder could not
    #: be built): the re-embedder gives them real vectors with ``revec`` in the shard's own space
    stand_ins: set[tuple[str, str]] = attrs.Factory(set)

    @property
    def position(self) -> tuple[int, int]:
        """``(epoch, seq)`` of the newest applied replicated record: what replicas compare."""
        return (self.epoch, self.seq)

    @property
    def memory_count(self) -> int:
        return sum(len(a.memories) for a in self.agents.values())

    def next_expiry(self) -> int | None:
        while self.expiries:
            at, agent, mid = self.expiries[0]
            data = self.agents.get(agent)
            m = data.memories.get(mid) if data else None
            if m is not None and m.expires_at == at:
                return at
            heapq.heappop(self.expiries)  # stale: forgotten, updated or already purged
        return None


class ShardSet:
    """All shards this node holds a copy of."""

    def __init__(self, shard_count: int, dim: int, tokenize: Tokenizer, embedder: str | None = None) -> None:
        self.shard_count = shard_count
        #: the node's embedder (its identity) and vector length: what a new shard's vectors are
        self.dim = dim
        self.embedder = embedder if embedder is not None else f"hashing:{dim}"
        self.tokenize = tokenize
        self.shards: dict[int, Shard] = {}
        #: what snapshot term counts were made with; None (a tokenizer of a test's own): images
        #: carry no counts and loads always tokenize
        self.tokenizer_id: str | None = TOKENIZER_ID if tokenize is default_tokenize else None
        #: content -> tokens worked out ahead, in a worker thread, for records about to be applied
        #: (tokenizing a 2 MB batch takes the best part of a second: not on the event loop)
        self._tokens_ahead: dict[str, list[str]] = {}

    def tokens_ahead(self, contents: list[str]) -> list[list[str]]:
        """Tokenize ``contents`` (CPU work: call it in a worker thread), for :meth:`expect`."""
        return [self.tokenize(c) for c in contents]

    def expect(self, contents: list[str], tokens: list[list[str]]) -> None:
        """Remember the tokens of contents about to be applied (on the event loop, cheap). Only a
        cache: applying gives the same state whether a content's tokens are here or not."""
        if len(self._tokens_ahead) > MAX_TOKENS_AHEAD:
            self._tokens_ahead.clear()  # writes that never got applied (refused, timed out)
        self._tokens_ahead.update(zip(contents, tokens, strict=True))

    # -- placement ---------------------------------------------------------------------
    def shard_of(self, agent_id: str) -> int:
        return shard_of(agent_id, self.shard_count)

    def shard(self, shard_id: int) -> Shard:
        shard = self.shards.get(shard_id)
        if shard is None:
            shard = self.shards[shard_id] = Shard(shard_id, embedder=self.embedder, dim=self.dim)
        return shard

    def embedder_of(self, shard_id: int) -> tuple[str, int]:
        """``(embedder identity, dim)`` of the shard's live vectors: what a query of it is embedded with."""
        shard = self.shard(shard_id)
        return (shard.embedder or self.embedder, shard.dim or self.dim)

    def dims(self, shard_id: int) -> frozenset[int]:
        """The vector lengths a record of the shard may carry (its own, the node's, a stage's)."""
        shard = self.shard(shard_id)
        return frozenset(d for d in (self.dim, shard.dim, shard.stage.dim if shard.stage else 0) if d)

    def _adopt(self, shard: Shard, vector: bytes, embedder: Any) -> None:
        """An empty shard takes the embedder of the first vectors put into it (module doc)."""
        if shard.agents:
            return
        dim = len(vector) // 4
        shard.stage = None
        if isinstance(embedder, str) and embedder:
            shard.embedder, shard.dim = embedder, dim
        elif dim == self.dim:
            shard.embedder, shard.dim = self.embedder, dim
        else:
            shard.embedder, shard.dim = f"hashing:{dim}", dim

    def _fits(self, shard: Shard, vector: bytes, embedder: Any) -> bytes:
        """``vector`` if it belongs to the shard's space, else an all-zero vector of it."""
        if len(vector) == 4 * shard.dim and (embedder is None or embedder == shard.embedder):
            return vector
        return bytes(4 * shard.dim)

    def _agent(self, agent_id: str, *, create: bool) -> AgentData | None:
        shard = self.shard(self.shard_of(agent_id))
        data = shard.agents.get(agent_id)
        if data is None and create:
            data = shard.agents[agent_id] = AgentData({}, {}, AgentIndex(shard.dim or self.dim))
        return data

    # -- writes ------------------------------------------------------------------------
    def apply(self, lsn: int, shard_id: int, op: str, body: Any, seq: int = 0, epoch: int = 0) -> Any:
        """Apply one record; returns what the write's caller is answered with.

        Records at or below the shard's applied LSN are skipped (replaying a log over a
        snapshot that already holds them), and so are replicated records at or below the
        shard's seq (a replica fetching a record twice), so replay is idempotent.
        """
        shard = self.shard(shard_id)
        if lsn and lsn <= shard.applied_lsn or seq and seq <= shard.seq:
            return None
        handler = _OPS.get(op)
        if handler is None:
            raise ValueError(f"unknown WAL op {op!r} at lsn {lsn}")
        result = handler(self, shard, body)
        if lsn:
            shard.applied_lsn = lsn
        if seq:
            shard.seq, shard.epoch = seq, epoch
        return result

    def _put(self, shard: Shard, body: dict[str, Any]) -> Memory:
        memory = Memory.from_record(body["m"])
        self._adopt(shard, body["v"], body.get("e"))
        data = self._agent(memory.agent_id, create=True)
        assert data is not None
        old = data.memories.get(memory.id)
        if old is not None:
            memory = attrs.evolve(memory, created_at=old.created_at)
            data.index.remove(memory.id)
        self._index(shard, data, memory, self._fits(shard, body["v"], body.get("e")))
        self._activity(shard, memory)
        return memory

    @staticmethod
    def _activity(shard: Shard, memory: Memory) -> None:
        """A memory stored into an open session of its agent is activity in it."""
        session = shard.sessions.get(memory.session_id) if memory.session_id else None
        if session is not None and session.agent_id == memory.agent_id:
            shard.sessions[session.id] = session.touched(memory.updated_at)

    def _index(self, shard: Shard, data: AgentData, memory: Memory, vector: bytes) -> None:
        if shard.stage is not None:  # a staged vector of other content is stale: it goes
            got = shard.stage.vectors.get((memory.agent_id, memory.id))
            if got is not None and got[0] != content_hash(memory.content):
                del shard.stage.vectors[(memory.agent_id, memory.id)]
        data.memories[memory.id] = memory
        data.vectors[memory.id] = vector
        if vector.strip(b"\x00"):
            shard.stand_ins.discard((memory.agent_id, memory.id))
        else:
            shard.stand_ins.add((memory.agent_id, memory.id))
        tokens = self._tokens_ahead.pop(memory.content, None)
        data.index.add(memory.id, tokens if tokens is not None else self.tokenize(memory.content),
                       np.frombuffer(vector, dtype=np.float32))
        if memory.expires_at is not None:
            heapq.heappush(shard.expiries, (memory.expires_at, memory.agent_id, memory.id))

    def _patch(self, shard: Shard, body: dict[str, Any]) -> Memory | None:
        data = self._agent(body["a"], create=False)
        old = data.memories.get(body["id"]) if data else None
        if data is None or old is None:
            return None
        changes = dict(body["set"])
        if "tags" in changes:
            changes["tags"] = tuple(changes["tags"])
        memory = attrs.evolve(old, updated_at=body["ua"], **changes)
        vector = self._fits(shard, body["v"], body.get("e")) if body.get("v") is not None else data.vectors[old.id]
        data.index.remove(old.id)
        self._index(shard, data, memory, vector)
        return memory

    def _remove(self, shard: Shard, data: AgentData, agent: str, mid: str) -> None:
        if shard.stage is not None:
            shard.stage.vectors.pop((agent, mid), None)
        del data.memories[mid]
        del data.vectors[mid]
        shard.stand_ins.discard((agent, mid))
        data.index.remove(mid)
        if not data.memories:
            del shard.agents[agent]

    def _delete(self, shard: Shard, body: dict[str, Any]) -> list[str]:
        data = self._agent(body["a"], create=False)
        deleted = []
        for mid in body["ids"]:
            if data is not None and mid in data.memories:
                self._remove(shard, data, body["a"], mid)
                deleted.append(mid)
        return deleted

    def _delete_where(self, shard: Shard, body: dict[str, Any]) -> int:
        data = self._agent(body["a"], create=False)
        if data is None:
            return 0
        flt, now = MemoryFilter.from_record(body["f"]), body["now"]
        doomed = [m.id for m in data.memories.values() if not m.expired(now) and flt.matches(m)]
        for mid in doomed:
            self._remove(shard, data, body["a"], mid)
        return len(doomed)

    def _purge(self, shard: Shard, body: dict[str, Any]) -> int:
        now, purged = body["now"], 0
        while (at := shard.next_expiry()) is not None and at <= now:
            _, agent, mid = heapq.heappop(shard.expiries)
            data = shard.agents[agent]
            self._remove(shard, data, agent, mid)
            purged += 1
        return purged

    def _session_start(self, shard: Shard, body: dict[str, Any]) -> Session:
        session = Session.from_record(body["s"])
        return shard.sessions.setdefault(session.id, session)

    def _session_touch(self, shard: Shard, body: dict[str, Any]) -> Session | None:
        session = shard.sessions.get(body["id"])
        if session is not None:
            session = shard.sessions[session.id] = session.touched(body["at"])
        return session

    def _session_end(self, shard: Shard, body: dict[str, Any]) -> Session | None:
        session = shard.sessions.get(body["id"])
        if session is not None:
            session = shard.sessions[session.id] = session.closed(body["at"], body["summary"])
        return session

    def _session_load(self, shard: Shard, body: dict[str, Any]) -> int:
        given = {r["id"]: Session.from_record(r) for r in body["sessions"]}
        if body["replace"]:
            for sid in [sid for sid, s in shard.sessions.items() if s.agent_id == body["a"] and sid not in given]:
                del shard.sessions[sid]
            shard.sessions.update(given)
        else:
            for sid, session in given.items():
                shard.sessions.setdefault(sid, session)
        return len(given)

    def _reset(self, shard: Shard, body: dict[str, Any]) -> None:
        shard.agents.clear()
        shard.expiries.clear()
        shard.sessions.clear()
        shard.stand_ins.clear()
        shard.seq = shard.epoch = 0
        shard.embedder, shard.dim, shard.stage = self.embedder, self.dim, None

    def _load(self, shard: Shard, body: dict[str, Any]) -> int:
        for record, vector in body["memories"]:
            memory = Memory.from_record(record)
            self._adopt(shard, vector, body.get("e"))
            data = self._agent(memory.agent_id, create=True)
            assert data is not None
            if memory.id in data.memories:
                data.index.remove(memory.id)
            self._index(shard, data, memory, self._fits(shard, vector, body.get("e")))
        for record in body.get("sessions") or ():
            session = Session.from_record(record)
            shard.sessions[session.id] = session
        return len(body["memories"])

    def _revec(self, shard: Shard, body: dict[str, Any]) -> int:
        """Stage (or, in the shard's own space, install) vectors of its memories; returns how many."""
        embedder, dim = body["e"], int(body["d"])
        own = embedder == shard.embedder and dim == shard.dim
        if not own and (shard.stage is None or (shard.stage.embedder, shard.stage.dim) != (embedder, dim)):
            shard.stage = Stage(embedder, dim)
        taken = 0
        for agent, mid, digest, vector in body["vs"]:
            data = shard.agents.get(agent)
            memory = data.memories.get(mid) if data is not None else None
            if memory is None or content_hash(memory.content) != digest or len(vector) != 4 * dim:
                continue
            taken += 1
            if own:
                assert data is not None
                tokens = data.index.text.term_counts(mid)
                data.index.remove(mid)
                data.vectors[mid] = vector
                shard.stand_ins.discard((agent, mid))
                data.index.vectors.add(mid, np.frombuffer(vector, dtype=np.float32))
                data.index.text.add_counts(mid, tokens)
            else:
                assert shard.stage is not None
                shard.stage.vectors[(agent, mid)] = (digest, vector)
        return taken

    def _reembed(self, shard: Shard, body: dict[str, Any]) -> bool:
        """Switch to the staged vectors if every memory has a current one; whether it switched."""
        stage = shard.stage
        if shard.embedder == body["e"] and shard.dim == int(body["d"]):
            shard.stage = None
            return True
        if not shard.agents:
            shard.embedder, shard.dim, shard.stage = body["e"], int(body["d"]), None
            return True
        if stage is None or stage.embedder != body["e"] or pending(shard, stage.embedder, stage.dim, 1):
            return False
        for agent, data in shard.agents.items():
            # only the vectors change: each agent's BM25 index stays as it is
            ids = list(data.memories)
            vectors = [stage.vectors[(agent, mid)][1] for mid in ids]
            index = VectorIndex(stage.dim)
            index.add_many(ids, vectors)
            data.index.vectors, data.index.dim = index, stage.dim
            data.vectors = dict(zip(ids, vectors, strict=True))
        shard.embedder, shard.dim, shard.stage = stage.embedder, stage.dim, None
        shard.stand_ins = {(a, m) for a, data in shard.agents.items() for m, v in data.vectors.items()
                           if not v.strip(b"\x00")}
        return True

    def _mark(self, shard: Shard, body: dict[str, Any]) -> None:
        shard.seq, shard.epoch = int(body["seq"]), int(body["epoch"])

    # -- reads -------------------------------------------------------------------------
    def get(self, agent_id: str, memory_id: str, now: float) -> Memory | None:
        data = self._agent(agent_id, create=False)
        m = data.memories.get(memory_id) if data else None
        return None if m is None or m.expired(now) else m

    def live(self, agent_id: str, now: float) -> Iterator[Memory]:
        data = self._agent(agent_id, create=False)
        if data is not None:
            yield from (m for m in data.memories.values() if not m.expired(now))

    def newest_first(self, agent_id: str, now: float, memory_type: str | None = None) -> list[Memory]:
        found = [m for m in self.live(agent_id, now) if memory_type is None or m.memory_type == memory_type]
        found.sort(key=lambda m: (m.created_at, m.id), reverse=True)
        return found

    def recall(self, q: RecallQuery, query_tokens: list[str], query_vec: np.ndarray,
               now: float) -> list[tuple[Memory, Hit]]:
        data = self._agent(q.agent_id, create=False)
        if data is None:
            return []
        flt = q.filter
        shard = self.shard(self.shard_of(q.agent_id))
        candidates = None
        next_expiry = shard.next_expiry()
        # pre-filter only when something can be filtered out: the common recall scans nothing
        if not flt.empty or (next_expiry is not None and next_expiry <= now):
            candidates = {m.id for m in data.memories.values() if not m.expired(now) and flt.matches(m)}
        hits = data.index.search(query_tokens, query_vec, top_k=q.top_k, routing=q.routing,
                                 fusion=q.fusion, vector_weight=q.vector_weight, candidates=candidates)
        return [(data.memories[h.key], h) for h in hits]

    def session(self, session_id: str) -> Session | None:
        """The session of that id as its records left it (:meth:`Session.at` tells its state now)."""
        parts = split_session_id(session_id)
        shard = self.shards.get(self.shard_of(parts[0])) if parts is not None else None
        return shard.sessions.get(session_id) if shard is not None else None

    def sessions_of(self, agent_id: str) -> list[Session]:
        """The agent's sessions, newest first (by start, then id)."""
        shard = self.shards.get(self.shard_of(agent_id))
        found = [s for s in shard.sessions.values() if s.agent_id == agent_id] if shard is not None else []
        found.sort(key=newest_first, reverse=True)
        return found

    def agent_ids(self) -> list[str]:
        return sorted(a for s in self.shards.values() for a in s.agents)

    # -- snapshots ---------------------------------------------------------------------
    def dump(self, shard_id: int) -> dict[str, Any]:
        """A msgpack-ready (version 1) image of one shard, taken at its applied LSN."""
        return image(self.freeze(shard_id))

    def snapshot(self, shard_id: int) -> dict[str, Any]:
        """What a local snapshot of one shard stores now: :func:`snapshot_image`, with term counts."""
        return snapshot_image(self.freeze(shard_id, terms=True))

    def freeze(self, shard_id: int, *, terms: bool = False) -> FrozenShard:
        """The shard as it is now, cheaply (references, no copies): what :func:`image` turns into a
        snapshot image later, in a worker thread, while the event loop goes on applying writes.
        ``terms``: also each memory's term counts (for :func:`snapshot_image`), when this set's
        tokenizer is the one :data:`~dakera_actors.search.TOKENIZER_ID` names."""
        shard = self.shard(shard_id)
        memories = [(m, data.vectors[m.id]) for data in shard.agents.values() for m in data.memories.values()]
        counts = None
        if terms and self.tokenizer_id is not None:
            # the index's own dicts: replaced, never changed in place, when a memory is re-indexed
            counts = [data.index.text.term_counts(m.id) for data in shard.agents.values() for m in data.memories.values()]
        stage = None
        if shard.stage is not None:  # staged vectors are bytes and the dict is copied: a consistent image
            stage = (shard.stage.embedder, shard.stage.dim, tuple(shard.stage.vectors.items()))
        return FrozenShard(shard_id, shard.applied_lsn, shard.seq, shard.epoch, memories, counts, self.tokenizer_id,
                           sessions=tuple(shard.sessions.values()), embedder=shard.embedder, dim=shard.dim,
                           stage=stage)

    def load(self, image: dict[str, Any]) -> None:
        """Replace one shard with a snapshot image from :meth:`dump` (or :func:`image`).

        A version 2 image whose term counts were made by this set's tokenizer is indexed from
        them (no tokenizing) and each agent's vectors in one go: the same state as applying its
        memories one by one, which is what any other image gets."""
        shard = self.shards[image["shard"]] = Shard(image["shard"], embedder=self.embedder, dim=self.dim)
        if isinstance(image.get("emb"), str) and isinstance(image.get("dim"), int):
            shard.embedder, shard.dim = image["emb"], image["dim"]
        elif image["memories"]:
            self._adopt(shard, image["memories"][0][1], None)  # an image from before embedders were recorded
        counts = image.get("tf") if self.tokenizer_id is not None and image.get("tok") == self.tokenizer_id else None
        if counts is None or len(counts) != len(image["memories"]):
            for record, vector in image["memories"]:
                memory = Memory.from_record(record)
                data = self._agent(memory.agent_id, create=True)
                assert data is not None
                self._index(shard, data, memory, vector)
        else:
            self._load_indexed(shard, image["memories"], counts)
        for record in image.get("sessions") or ():
            session = Session.from_record(record)
            shard.sessions[session.id] = session
        staged = image.get("stage")
        if isinstance(staged, dict):
            shard.stage = Stage(staged["e"], int(staged["d"]),
                                {(agent, mid): (digest, vector) for agent, mid, digest, vector in staged["vs"]})
        shard.applied_lsn = image["lsn"]
        shard.seq, shard.epoch = int(image.get("seq", 0)), int(image.get("epoch", 0))

    def _load_indexed(self, shard: Shard, memories: list[list[Any]], counts: list[dict[str, int]]) -> None:
        by_agent: dict[str, tuple[list[Memory], list[bytes], list[dict[str, int]]]] = {}
        for (record, vector), tf in zip(memories, counts, strict=True):
            memory = Memory.from_record(record)
            group = by_agent.get(memory.agent_id)
            if group is None:
                group = by_agent[memory.agent_id] = ([], [], [])
            group[0].append(memory)
            group[1].append(vector)
            group[2].append(tf)
        for agent, (found, vectors, tfs) in by_agent.items():
            if self.shard_of(agent) != shard.id:  # as _agent would place it: another shard's memory
                for memory, vector in zip(found, vectors, strict=True):
                    data = self._agent(agent, create=True)
                    assert data is not None
                    self._index(shard, data, memory, vector)
                continue
            index = AgentIndex(shard.dim or self.dim)
            index.load([m.id for m in found], tfs, vectors)
            shard.agents[agent] = AgentData({m.id: m for m in found}, {m.id: v for m, v in zip(found, vectors, strict=True)},
                                            index)
            for memory in found:
                if memory.expires_at is not None:
                    heapq.heappush(shard.expiries, (memory.expires_at, memory.agent_id, memory.id))


def record_contents(op: str, body: Any) -> list[str]:
    """The memory contents a record will index when applied (for tokenizing them ahead). Bad
    bodies give nothing here: applying them is what reports them."""
    try:
        if op == "put":
            content = body["m"]["c"]
            return [content] if isinstance(content, str) else []
        if op == "patch":
            content = body["set"].get("content")
            return [content] if isinstance(content, str) else []
        if op == "load":
            return [r["c"] for r, _ in body["memories"] if isinstance(r["c"], str)]
    except (KeyError, TypeError, ValueError, AttributeError):
        pass
    return []


@attrs.frozen
class FrozenShard:
    """One shard at one applied LSN. Memories are immutable (a write replaces the object) and vectors
    are bytes, so the image stays consistent however the live shard changes meanwhile."""

    id: int
    lsn: int
    seq: int
    epoch: int
    memories: list[tuple[Memory, bytes]]
    #: each memory's term counts, in ``memories`` order, when frozen with ``terms``
    counts: list[dict[str, int]] | None = None
    #: the tokenizer the counts come from
    tokenizer_id: str | None = None
    #: a checkpoint's freeze: the node's last applied LSN then (the snapshot's file LSN: the shard
    #: holds every record up to it) and the shards that had any record by then (see :func:`replay_floor`)
    at: int = 0
    live: tuple[int, ...] | None = None
    #: the shard's sessions (immutable, like its memories)
    sessions: tuple[Session, ...] = ()
    #: the embedder of its vectors and their length; a re-embedding's staged vectors
    #: ``(embedder, dim, (((agent, id), (content hash, vector)), ...))``
    embedder: str | None = None
    dim: int = 0
    stage: tuple[str, int, tuple[tuple[tuple[str, str], tuple[int, bytes]], ...]] | None = None

    @property
    def file_lsn(self) -> int:
        """The LSN a snapshot of this image is stored under: the checkpoint's, else the shard's."""
        return max(self.at, self.lsn)


def image(frozen: FrozenShard) -> dict[str, Any]:
    """The msgpack-ready version 1 image of a frozen shard: its memories and vectors (CPU work: safe
    in a worker thread). What replication sends; every reader of images reads it."""
    out = {"v": 1, "shard": frozen.id, "lsn": frozen.lsn, "seq": frozen.seq, "epoch": frozen.epoch,
           "memories": [[m.to_record(), vector] for m, vector in frozen.memories],
           "sessions": [s.to_record() for s in frozen.sessions]}  # readers before sessions ignore it
    if frozen.embedder is not None:  # so are these: what made the vectors, and a re-embedding's
        out.update(emb=frozen.embedder, dim=frozen.dim)
    if frozen.stage is not None:
        embedder, dim, staged = frozen.stage
        out["stage"] = {"e": embedder, "d": dim, "vs": [[a, mid, digest, v] for (a, mid), (digest, v) in staged]}
    return out


def snapshot_image(frozen: FrozenShard) -> dict[str, Any]:
    """The image a local snapshot stores: version 2 adds each memory's term counts (``tf``, in
    ``memories`` order) and the tokenizer they come from (``tok``), so loading it does not tokenize
    every memory again; without counts, the version 1 image."""
    out = image(frozen)
    if frozen.counts is not None and frozen.tokenizer_id is not None:
        out.update(v=2, tok=frozen.tokenizer_id, tf=frozen.counts)
    if frozen.live is not None:
        out["live"] = list(frozen.live)  # readers of version 1 ignore unknown keys
    return out


def replay_floor(loaded: dict[int, tuple[int, Any]]) -> int:
    """The LSN the log can be replayed after, given the snapshot each shard loaded (shard -> (file
    LSN, image)): 0 unless an image says which shards were live at its checkpoint.

    A checkpoint at LSN ``U`` stores each snapshot under ``U`` and lists the shards with any record
    up to ``U`` (``live``). So a record at or below ``min(U, file LSN of every live shard)`` either
    belongs to a live shard whose snapshot holds it, or does not exist: replaying it changes
    nothing, neither the shards nor the replication tails (which skip what a snapshot holds). A
    live shard with no valid snapshot pins the floor at 0. The newest such checkpoint is used."""
    best = max(((lsn, img["live"]) for lsn, img in loaded.values()
                if isinstance(img.get("live"), list)), default=None, key=lambda found: found[0])
    if best is None:
        return 0
    upto, live = best
    return min([upto, *(loaded[s][0] if s in loaded else 0 for s in live)])


_OPS: dict[str, Callable[[ShardSet, Shard, Any], Any]] = {
    "put": ShardSet._put,
    "patch": ShardSet._patch,
    "delete": ShardSet._delete,
    "delete_where": ShardSet._delete_where,
    "purge": ShardSet._purge,
    "session_start": ShardSet._session_start,
    "session_touch": ShardSet._session_touch,
    "session_end": ShardSet._session_end,
    "session_load": ShardSet._session_load,
    "reset": ShardSet._reset,
    "load": ShardSet._load,
    "mark": ShardSet._mark,
    "revec": ShardSet._revec,
    "reembed": ShardSet._reembed,
}


def pending(shard: Shard, embedder: str, dim: int, limit: int | None = None) -> list[tuple[str, str, str]]:
    """``(agent, id, content)`` of the shard's memories that still need a vector of ``embedder``
    (dim ``dim``) before the shard can switch to it (the first ``limit``): none when its vectors
    are of that embedder. A staged vector is current: writes drop those they make stale."""
    if shard.embedder == embedder and shard.dim == dim:
        return []
    stage = shard.stage
    staged = stage.vectors if stage is not None and (stage.embedder, stage.dim) == (embedder, dim) else {}
    out = []
    for agent, data in shard.agents.items():
        for mid, memory in data.memories.items():
            if (agent, mid) not in staged:
                out.append((agent, mid, memory.content))
                if limit is not None and len(out) >= limit:
                    return out
    return out
