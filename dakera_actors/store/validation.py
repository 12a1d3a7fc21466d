"""The validation of every memory request, as the official SDK sends them.

Validation is pure: it turns a parsed JSON body into the typed request objects of
:mod:`.model` or raises :class:`Invalid` naming the field. Fields the SDK may send but this
server does not implement (reranking, knowledge-graph traversal, languages, ...) are accepted
and reported back in ``warnings``; fields the SDK never sends are refused, so a typo does not
silently do nothing. The limits here are also what a replicated record is checked against
(:mod:`.records`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC
from typing import Any

from ..search.index import DEFAULT_VECTOR_WEIGHT
from . import sessions
from .model import MEMORY_TYPES, MemoryFilter, MemoryUpdate, NewMemory, RecallQuery

ROUTINGS = ("auto", "vector", "bm25", "hybrid")
FUSIONS = ("minmax", "rrf")
# matched whole (fullmatch): with match() and "$", an id ending in a newline ("a\n") passed
AGENT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
MEMORY_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
MAX_AGENT_ID_BYTES = 241
MAX_MEMORY_ID_CHARS = 128
MAX_CONTENT_CHARS = 100_000
MAX_TAGS = 64
MAX_TAG_CHARS = 128
MAX_METADATA_BYTES = 64 * 1024
MAX_TOP_K = 1000
MAX_BATCH = 1000
MAX_LIST_LIMIT = 1000
MAX_TTL_SECONDS = 100 * 365 * 24 * 3600
MAX_TIMESTAMP = 10_000_000_000  # year 2286: beyond it is a unit mistake (ms for s)
#: a session id: ``<agent id>~<suffix of at most 64>`` (see :mod:`.sessions`); a memory may name any
#: string this long as its session
MAX_SESSION_ID_CHARS = 320
MAX_SESSION_PAGE = 1000
MAX_SESSION_MEMORY_PAGE = 500
MAX_PREVIEW_CHARS = 10_000


class Invalid(ValueError):
    """A request field is wrong; ``field`` names it (dotted path for nested fields)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


# -- field readers -----------------------------------------------------------------------------
class Body:
    """Typed access to a JSON object with errors that name the field; tracks what was read."""

    def __init__(self, data: Any, *, prefix: str = "", ignored: Iterable[str] = ()) -> None:
        if not isinstance(data, dict):
            raise Invalid(prefix or "body", "must be a JSON object")
        self._data = data
        self._prefix = prefix
        self._ignored = set(ignored)
        self._read: set[str] = set()
        self.warnings: list[str] = []

    def _name(self, key: str) -> str:
        return f"{self._prefix}.{key}" if self._prefix else key

    def has(self, key: str) -> bool:
        return self._data.get(key) is not None

    def raw(self, key: str) -> Any:
        self._read.add(key)
        return self._data.get(key)

    def string(self, key: str, *, required: bool = False, max_chars: int | None = None,
               allow_empty: bool = False) -> str | None:
        value = self.raw(key)
        if value is None:
            if required:
                raise Invalid(self._name(key), "is required")
            return None
        if not isinstance(value, str):
            raise Invalid(self._name(key), f"must be a string, got {_kind(value)}")
        if not allow_empty and not value.strip():
            raise Invalid(self._name(key), "must not be empty")
        if max_chars is not None and len(value) > max_chars:
            raise Invalid(self._name(key), f"is {len(value)} characters; the limit is {max_chars}")
        return value

    def number(self, key: str, *, lo: float, hi: float) -> float | None:
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise Invalid(self._name(key), f"must be a number, got {_kind(value)}")
        if not lo <= value <= hi:
            raise Invalid(self._name(key), f"must be between {lo} and {hi}, got {value}")
        return float(value)

    def integer(self, key: str, *, lo: int, hi: int) -> int | None:
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(self._name(key), f"must be an integer, got {_kind(value)}")
        if not lo <= value <= hi:
            raise Invalid(self._name(key), f"must be between {lo} and {hi}, got {value}")
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> str | None:
        value = self.string(key)
        if value is None:
            return None
        low = value.lower()
        if low not in choices:
            raise Invalid(self._name(key), f"must be one of {', '.join(choices)}, got {value!r}")
        return low

    def string_list(self, key: str, *, max_items: int, max_chars: int) -> tuple[str, ...] | None:
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise Invalid(self._name(key), f"must be a list of strings, got {_kind(value)}")
        if len(value) > max_items:
            raise Invalid(self._name(key), f"has {len(value)} items; the limit is {max_items}")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise Invalid(f"{self._name(key)}[{i}]", "must be a non-empty string")
            if len(item) > max_chars:
                raise Invalid(f"{self._name(key)}[{i}]", f"is longer than {max_chars} characters")
        return tuple(dict.fromkeys(value))  # de-duplicated, order kept

    def obj(self, key: str) -> dict[str, Any] | None:
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise Invalid(self._name(key), f"must be a JSON object, got {_kind(value)}")
        return value

    def finish(self) -> list[str]:
        """Refuse unknown fields; warn about known-but-ignored ones. Returns the warnings."""
        for key in self._data:
            if key in self._read:
                continue
            if key in self._ignored:
                self.warnings.append(f"field '{self._name(key)}' is not supported by this server and was ignored")
                continue
            raise Invalid(self._name(key), "is not a known field")
        return self.warnings


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


# -- validators for each route -----------------------------------------------------------------
def agent_id(value: Any, field: str = "agent_id") -> str:
    if value is None:
        raise Invalid(field, "is required")
    if not isinstance(value, str):
        raise Invalid(field, f"must be a string, got {_kind(value)}")
    if not AGENT_ID_RE.fullmatch(value):
        raise Invalid(field, "must match [A-Za-z0-9][A-Za-z0-9_.-]*")
    if len(value.encode()) > MAX_AGENT_ID_BYTES:
        raise Invalid(field, f"must be at most {MAX_AGENT_ID_BYTES} bytes")
    if value.startswith("_dakera_"):
        raise Invalid(field, "must not start with the reserved prefix _dakera_")
    return value


def memory_id(value: Any, field: str = "id") -> str:
    if not isinstance(value, str) or not value:
        raise Invalid(field, "must be a non-empty string")
    if len(value) > MAX_MEMORY_ID_CHARS or not MEMORY_ID_RE.fullmatch(value):
        raise Invalid(field, f"must match [A-Za-z0-9][A-Za-z0-9_.:-]* and be at most {MAX_MEMORY_ID_CHARS} characters")
    return value


def _metadata(b: Body, key: str = "metadata") -> dict[str, Any] | None:
    meta = b.obj(key)
    if meta is None:
        return None
    import json

    if len(json.dumps(meta)) > MAX_METADATA_BYTES:
        raise Invalid(b._name(key), f"is larger than {MAX_METADATA_BYTES} bytes")
    _check_json_values(meta, b._name(key), depth=0)
    for k in meta:
        if k.startswith("_dakera_") and k not in ("_dakera_content_date", "_dakera_lang"):
            raise Invalid(f"{b._name(key)}.{k}", "uses the reserved prefix _dakera_")
    return meta


def _check_json_values(value: Any, path: str, *, depth: int) -> None:
    """Metadata must survive the WAL: 64-bit integers, finite numbers, bounded nesting."""
    if depth > 32:
        raise Invalid(path, "is nested more than 32 levels deep")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise Invalid(path, "holds an integer outside the 64-bit range")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise Invalid(path, "holds a number that is not finite")
        # JSON has one number type: 1e20 and 100000000000000000000 are the same value (JavaScript
        # sends the second), so a whole number is held to the integers' range however it is written
        if value.is_integer() and not -(2**63) <= value < 2**64:
            raise Invalid(path, "holds a whole number outside the 64-bit range")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json_values(item, f"{path}[{i}]", depth=depth + 1)
    elif isinstance(value, dict):
        for k, item in value.items():
            _check_json_values(item, f"{path}.{k}", depth=depth + 1)


# what the SDK may send on a store but this server does not implement
STORE_IGNORED = ("lang", "attachment_ref", "event_time", "valid_from")


def _new_memory(b: Body, agent: str) -> NewMemory:
    content = b.string("content", required=True, max_chars=MAX_CONTENT_CHARS)
    assert content is not None
    mid = b.raw("id")
    expires_at = b.integer("expires_at", lo=0, hi=MAX_TIMESTAMP)
    return NewMemory(
        agent_id=agent,
        content=content,
        memory_type=b.choice("memory_type", MEMORY_TYPES) or "episodic",
        importance=0.5 if (imp := b.number("importance", lo=0.0, hi=1.0)) is None else imp,
        tags=b.string_list("tags", max_items=MAX_TAGS, max_chars=MAX_TAG_CHARS) or (),
        metadata=_metadata(b) or {},
        session_id=b.string("session_id", max_chars=MAX_SESSION_ID_CHARS),
        id=None if mid is None else memory_id(mid, b._name("id")),
        ttl_seconds=b.integer("ttl_seconds", lo=1, hi=MAX_TTL_SECONDS),
        expires_at=expires_at,
    )


def parse_store(data: Any) -> tuple[NewMemory, list[str]]:
    b = Body(data, ignored=STORE_IGNORED)
    new = _new_memory(b, agent_id(b.raw("agent_id")))
    return new, b.finish()


def parse_store_batch(data: Any) -> tuple[list[NewMemory], list[str]]:
    b = Body(data, ignored=("lang",))
    agent = agent_id(b.raw("agent_id"))
    items = b.raw("memories")
    if not isinstance(items, list):
        raise Invalid("memories", "must be a list of memories")
    if not 1 <= len(items) <= MAX_BATCH:
        raise Invalid("memories", f"must hold 1 to {MAX_BATCH} memories, got {len(items)}")
    out: list[NewMemory] = []
    warnings: set[str] = set()
    for i, item in enumerate(items):
        ib = Body(item, prefix=f"memories[{i}]", ignored=STORE_IGNORED)
        out.append(_new_memory(ib, agent))
        warnings.update(w.replace(f"memories[{i}]", "memories[]") for w in ib.finish())
    return out, b.finish() + sorted(warnings)


def parse_update(data: Any) -> tuple[MemoryUpdate, list[str]]:
    b = Body(data, ignored=("lang",))
    update = MemoryUpdate(
        content=b.string("content", max_chars=MAX_CONTENT_CHARS),
        memory_type=b.choice("memory_type", MEMORY_TYPES),
        importance=b.number("importance", lo=0.0, hi=1.0),
        tags=b.string_list("tags", max_items=MAX_TAGS, max_chars=MAX_TAG_CHARS),
        metadata=_metadata(b),
    )
    warnings = b.finish()
    if update == MemoryUpdate():
        raise Invalid("body", "names no field to update (content, memory_type, importance, tags, metadata)")
    return update, warnings


def parse_importance(data: Any, path_memory_id: str | None = None) -> tuple[str, str, float]:
    """``POST /v1/memory/importance`` ``{agent_id, memory_id, importance}`` (the SDK's
    ``update_importance``, one per id) or ``PATCH /v1/memories/{id}/importance`` ``{agent_id,
    importance}`` (``path_memory_id`` then names the memory): ``(agent, memory id, importance)``."""
    b = Body(data)
    agent = agent_id(b.raw("agent_id"))
    mid = memory_id(b.raw("memory_id") if path_memory_id is None else path_memory_id, "memory_id")
    if not b.has("importance"):
        raise Invalid("importance", "is required")
    importance = b.number("importance", lo=0.0, hi=1.0)
    assert importance is not None
    b.finish()
    return agent, mid, importance


def parse_forget(data: Any) -> tuple[str, tuple[str, ...]]:
    b = Body(data)
    agent = agent_id(b.raw("agent_id"))
    ids = b.raw("memory_ids")
    if not isinstance(ids, list) or not ids:
        raise Invalid("memory_ids", "must be a non-empty list of memory ids")
    if len(ids) > MAX_BATCH:
        raise Invalid("memory_ids", f"holds {len(ids)} ids; the limit is {MAX_BATCH}")
    checked = tuple(dict.fromkeys(memory_id(v, f"memory_ids[{i}]") for i, v in enumerate(ids)))
    b.finish()
    return agent, checked


def _time_bound(b: Body, key: str) -> float | None:
    """``since``/``until``: Unix seconds or an ISO-8601 / RFC 3339 timestamp."""
    value = b.raw(key)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not 0 <= value <= MAX_TIMESTAMP:
            raise Invalid(key, "must be Unix seconds between 1970 and 2286")
        return float(value)
    if isinstance(value, str):
        from datetime import datetime

        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise Invalid(key, f"must be an ISO-8601 timestamp or Unix seconds, got {value!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    raise Invalid(key, f"must be an ISO-8601 timestamp or Unix seconds, got {_kind(value)}")


# what the SDK may send on recall/search but this server does not implement
RECALL_IGNORED = ("include_associated", "associated_memories_cap", "associated_memories_depth",
                   "associated_memories_min_weight", "rerank", "iterations", "neighborhood",
                   "neighborhood_mode", "include_summaries", "lang", "rerank_candidates")


CONSISTENCIES = ("strong", "eventual")


def consistency(value: Any, field: str = "consistency") -> str:
    """``strong`` (the primary answers: read-your-writes) or ``eventual`` (any copy may)."""
    if value is None:
        return "strong"
    if value not in CONSISTENCIES:
        raise Invalid(field, f"must be one of {', '.join(CONSISTENCIES)}")
    return str(value)


def parse_recall(data: Any, *, default_top_k: int = 5) -> tuple[RecallQuery, list[str]]:
    b = Body(data, ignored=RECALL_IGNORED)
    agent = agent_id(b.raw("agent_id"))
    query = b.string("query", required=True, max_chars=MAX_CONTENT_CHARS)
    assert query is not None
    top_k = b.integer("top_k", lo=1, hi=MAX_TOP_K) or default_top_k
    routing = b.choice("routing", ROUTINGS) or "hybrid"
    fusion = b.choice("fusion", FUSIONS) or "minmax"
    weight = b.number("vector_weight", lo=0.0, hi=1.0)
    b.choice("consistency", CONSISTENCIES)  # the router acts on it; checked here like any field
    flt = MemoryFilter(
        tags=b.string_list("tags", max_items=MAX_TAGS, max_chars=MAX_TAG_CHARS),
        min_importance=b.number("min_importance", lo=0.0, hi=1.0),
        memory_type=b.choice("memory_type", MEMORY_TYPES),
        session_id=b.string("session_id", max_chars=MAX_SESSION_ID_CHARS),
        created_after=_time_bound(b, "since"),
        created_before=_time_bound(b, "until"),
    )
    warnings = b.finish()
    return RecallQuery(agent_id=agent, query=query, top_k=top_k,
                       routing="hybrid" if routing == "auto" else routing, fusion=fusion,
                       vector_weight=DEFAULT_VECTOR_WEIGHT if weight is None else weight, filter=flt), warnings


def parse_filter(data: Any, field: str = "filter") -> MemoryFilter:
    if data is None:
        return MemoryFilter()
    b = Body(data, prefix=field)
    flt = MemoryFilter(
        tags=b.string_list("tags", max_items=MAX_TAGS, max_chars=MAX_TAG_CHARS),
        min_importance=b.number("min_importance", lo=0.0, hi=1.0),
        max_importance=b.number("max_importance", lo=0.0, hi=1.0),
        created_after=(None if (ca := b.integer("created_after", lo=0, hi=MAX_TIMESTAMP)) is None else float(ca)),
        created_before=(None if (cb := b.integer("created_before", lo=0, hi=MAX_TIMESTAMP)) is None else float(cb)),
        memory_type=b.choice("memory_type", MEMORY_TYPES),
        session_id=b.string("session_id", max_chars=MAX_SESSION_ID_CHARS),
    )
    b.finish()
    return flt


def parse_batch_recall(data: Any) -> tuple[str, MemoryFilter, int]:
    b = Body(data, ignored=("min_importance",))
    agent = agent_id(b.raw("agent_id"))
    flt = parse_filter(b.raw("filter"))
    limit = b.integer("limit", lo=1, hi=MAX_LIST_LIMIT) or 100
    b.finish()
    return agent, flt, limit


def parse_batch_forget(data: Any) -> tuple[str, MemoryFilter]:
    b = Body(data)
    agent = agent_id(b.raw("agent_id"))
    flt = parse_filter(b.raw("filter"))
    b.finish()
    if flt.empty:
        raise Invalid("filter", "must set at least one predicate: forgetting everything needs an explicit filter")
    return agent, flt


#: agents per page of GET /v1/agents when the client names no limit (the SDK names none)
AGENT_PAGE = 1000
MAX_AGENT_PAGE = 10_000
MAX_OFFSET = 10_000_000


def _int_arg(args: Mapping[str, str], name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = args.get(name)
    if raw is None:
        return default
    # "?limit=" is not a number (schemathesis: the document says integer, and it was read as absent)
    try:
        value = int(raw)
    except ValueError:
        raise Invalid(name, f"must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise Invalid(name, f"must be between {lo} and {hi}, got {value}")
    return value


def parse_agent_page(args: Mapping[str, str]) -> tuple[int, int]:
    """``(limit, offset)`` query parameters of the agent listing (agents in id order)."""
    limit = _int_arg(args, "limit", AGENT_PAGE, 1, MAX_AGENT_PAGE)
    offset = _int_arg(args, "offset", 0, 0, MAX_OFFSET)
    assert limit is not None and offset is not None
    return limit, offset


def parse_agent_prefix(args: Mapping[str, str]) -> int | None:
    """``first``: how many of a node's agents (in id order) a listing needs; None means all."""
    return _int_arg(args, "first", None, 1, MAX_AGENT_PAGE + MAX_OFFSET)


def parse_listing(args: Mapping[str, str]) -> tuple[int, int, str | None]:
    """``limit``/``offset``/``memory_type`` query parameters of an agent's memory listing."""
    memory_type = args.get("memory_type")
    if memory_type is not None and memory_type not in MEMORY_TYPES:
        raise Invalid("memory_type", f"must be one of {', '.join(MEMORY_TYPES)}")
    limit = _int_arg(args, "limit", 50, 1, MAX_LIST_LIMIT)
    offset = _int_arg(args, "offset", 0, 0, MAX_OFFSET)
    assert limit is not None and offset is not None
    return limit, offset, memory_type


# -- sessions ----------------------------------------------------------------------------------
def session_id(value: Any, field: str = "session_id") -> str:
    """A well-formed session id ``<agent id>~<suffix>``; its agent part is checked like any agent id."""
    if not isinstance(value, str) or not value:
        raise Invalid(field, "must be a non-empty string")
    parts = sessions.split_session_id(value) if len(value) <= MAX_SESSION_ID_CHARS else None
    if parts is None:
        raise Invalid(field, f"is not a session id of this server: <agent_id>{sessions.SEPARATOR}<suffix>, the suffix "
                             "[A-Za-z0-9_.-] and at most 64 characters")
    agent_id(parts[0], field)
    return value


def parse_session_start(data: Any) -> tuple[str, str | None, dict[str, Any], int | None]:
    """``POST /v1/sessions/start`` ``{agent_id, metadata?, idle_timeout_secs?, session_id?}``:
    ``(agent, session id or None, metadata, idle timeout or None)``. A client that chooses its
    session's id sends only its suffix (``[A-Za-z0-9_.-]``, 1..64): the id is ``<agent_id>~<suffix>``."""
    b = Body(data)
    agent = agent_id(b.raw("agent_id"))
    sid = b.raw("session_id")
    if sid is not None:
        if not isinstance(sid, str) or not sessions.SUFFIX_RE.fullmatch(sid):
            raise Invalid("session_id", "must be 1 to 64 characters of [A-Za-z0-9_.-] (the server puts "
                                        f"'<agent_id>{sessions.SEPARATOR}' before it)")
        sid = f"{agent}{sessions.SEPARATOR}{sid}"
    metadata = _metadata(b) or {}
    idle = b.integer("idle_timeout_secs", lo=0, hi=sessions.MAX_IDLE_TIMEOUT_SECS)
    b.finish()
    return agent, sid, metadata, idle


def parse_session_end(data: Any) -> tuple[str | None, list[str]]:
    """``POST /v1/sessions/{id}/end`` ``{summary?, auto_summarize?}`` (no body is no summary):
    ``(summary, warnings)``; ``auto_summarize`` is accepted and ignored (named in the warnings)."""
    if data is None:
        return None, []
    b = Body(data, ignored=("auto_summarize",))
    summary = b.string("summary", max_chars=MAX_CONTENT_CHARS, allow_empty=True)
    return summary, b.finish()


def _bool_arg(args: Mapping[str, str], name: str) -> bool:
    raw = args.get(name)
    if raw is None or raw == "false":
        return False
    if raw == "true":
        return True
    raise Invalid(name, f"must be true or false, got {raw!r}")


def parse_session_listing(args: Mapping[str, str], *, need_agent: bool) -> tuple[str | None, bool, int, int]:
    """``agent_id`` (required when ``need_agent``), ``active_only``, ``limit`` (50), ``offset`` of a
    session listing."""
    agent = agent_id(args.get("agent_id")) if need_agent else None
    active_only = _bool_arg(args, "active_only")
    limit = _int_arg(args, "limit", 50, 1, MAX_SESSION_PAGE)
    offset = _int_arg(args, "offset", 0, 0, MAX_OFFSET)
    assert limit is not None and offset is not None
    return agent, active_only, limit, offset


def parse_session_prefix(args: Mapping[str, str]) -> tuple[bool, int]:
    """``active_only`` and ``first`` (how many of a node's newest sessions a listing of every agent's
    sessions needs) of a member's part of that listing."""
    first = _int_arg(args, "first", None, 1, MAX_SESSION_PAGE + MAX_OFFSET)
    if first is None:
        raise Invalid("first", "is required")
    return _bool_arg(args, "active_only"), first


def parse_session_memories(args: Mapping[str, str]) -> tuple[int, int, int | None]:
    """``limit`` (50, at most 500), ``offset``, ``content_preview_chars`` (1..10000) of a session's memories."""
    limit = _int_arg(args, "limit", 50, 1, MAX_SESSION_MEMORY_PAGE)
    offset = _int_arg(args, "offset", 0, 0, MAX_OFFSET)
    preview = _int_arg(args, "content_preview_chars", None, 1, MAX_PREVIEW_CHARS)
    assert limit is not None and offset is not None
    return limit, offset, preview
