"""Memories and what a request asks of them: the store's domain types.

:class:`Memory` is one stored memory (its JSON and WAL forms); the request objects
(:class:`NewMemory`, :class:`MemoryUpdate`, :class:`RecallQuery`, :class:`MemoryFilter`) are what
:mod:`.validation` builds from a validated SDK request and what the shards apply.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from ..search.index import DEFAULT_VECTOR_WEIGHT

MEMORY_TYPES = ("episodic", "semantic", "procedural", "working")


@attrs.frozen
class Memory:
    """One stored memory. ``created_at``/``updated_at`` are Unix seconds (float inside, int on the API)."""

    id: str
    agent_id: str
    content: str
    memory_type: str = "episodic"
    importance: float = 0.5
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = attrs.field(factory=dict)
    session_id: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    expires_at: int | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "agent_id": self.agent_id,
            "content": self.content,
            "memory_type": self.memory_type,
            "importance": self.importance,
            "tags": list(self.tags),
            "metadata": self.metadata,
            "session_id": self.session_id,
            "created_at": int(self.created_at),
            "updated_at": int(self.updated_at),
            "expires_at": self.expires_at,
        }

    def to_record(self) -> dict[str, Any]:
        """The msgpack-ready form kept in the WAL and snapshots (exact floats, compact keys)."""
        return {"id": self.id, "a": self.agent_id, "c": self.content, "t": self.memory_type,
                "i": self.importance, "g": list(self.tags), "m": self.metadata, "s": self.session_id,
                "ca": self.created_at, "ua": self.updated_at, "x": self.expires_at}

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> Memory:
        return cls(id=r["id"], agent_id=r["a"], content=r["c"], memory_type=r["t"], importance=r["i"],
                   tags=tuple(r["g"]), metadata=r["m"], session_id=r["s"], created_at=r["ca"],
                   updated_at=r["ua"], expires_at=r["x"])


@attrs.frozen
class MemoryFilter:
    """Predicates of batch recall/forget and of recall pre-filtering. All must hold."""

    tags: tuple[str, ...] | None = None  # at least one of these
    min_importance: float | None = None
    max_importance: float | None = None
    created_after: float | None = None
    created_before: float | None = None
    memory_type: str | None = None
    session_id: str | None = None

    @property
    def empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in attrs.fields(MemoryFilter))

    def matches(self, m: Memory) -> bool:
        if self.tags is not None and not set(self.tags) & set(m.tags):
            return False
        if self.min_importance is not None and m.importance < self.min_importance:
            return False
        if self.max_importance is not None and m.importance > self.max_importance:
            return False
        if self.created_after is not None and m.created_at < self.created_after:
            return False
        if self.created_before is not None and m.created_at > self.created_before:
            return False
        if self.memory_type is not None and m.memory_type != self.memory_type:
            return False
        return self.session_id is None or m.session_id == self.session_id

    def to_record(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in attrs.asdict(self).items()
                if v is not None}

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> MemoryFilter:
        fields = dict(r)
        if fields.get("tags") is not None:
            fields["tags"] = tuple(fields["tags"])
        return cls(**fields)


@attrs.frozen
class NewMemory:
    """A validated store request (one memory); the id may still be unassigned."""

    agent_id: str
    content: str
    memory_type: str
    importance: float
    tags: tuple[str, ...]
    metadata: dict[str, Any]
    session_id: str | None
    id: str | None
    ttl_seconds: int | None
    expires_at: int | None

    def expiry(self, now: float) -> int | None:
        """``expires_at`` wins over ``ttl_seconds`` (the SDK's documented precedence)."""
        if self.expires_at is not None:
            return self.expires_at
        if self.ttl_seconds is not None:
            return int(math.ceil(now + self.ttl_seconds))
        return None


@attrs.frozen
class MemoryUpdate:
    """The fields an update sets (None = leave as it is)."""

    content: str | None = None
    memory_type: str | None = None
    importance: float | None = None
    tags: tuple[str, ...] | None = None
    metadata: dict[str, Any] | None = None

    def to_record(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in attrs.asdict(self).items()
                if v is not None}


@attrs.frozen
class RecallQuery:
    agent_id: str
    query: str
    top_k: int = 5
    routing: str = "hybrid"
    fusion: str = "minmax"
    vector_weight: float = DEFAULT_VECTOR_WEIGHT
    filter: MemoryFilter = MemoryFilter()
