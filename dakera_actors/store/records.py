"""Checks of the records a replica takes from its primary, before they are logged.

A record goes to the WAL first and is applied after: one that cannot be applied (an unknown op,
a body of the wrong shape, a vector of the wrong length) would be fsynced, fail to apply, and fail
again on every replay, so the node would crash-loop. So what comes from another node (replicated
records and snapshot parts) is checked here against what :mod:`.shard` applies, and refused whole
if anything is off. The limits are the API's (:mod:`.validation`): every honest record passed them.
"""

from __future__ import annotations

import math
from typing import Any, Final

import attrs

from . import model, sessions, validation

#: the ops a primary replicates (reset/load/mark are a replica's own install, never sent)
REPLICATED_OPS: Final = frozenset({"put", "patch", "delete", "delete_where", "purge", "session_start",
                                   "session_touch", "session_end", "session_load", "revec", "reembed"})
_MEMORY_KEYS: Final = frozenset({"id", "a", "c", "t", "i", "g", "m", "s", "ca", "ua", "x"})
_PATCH_FIELDS: Final = frozenset(f.name for f in attrs.fields(model.MemoryUpdate))
_FILTER_FIELDS: Final = frozenset(f.name for f in attrs.fields(model.MemoryFilter))
MAX_IDS: Final = 100_000  # ids of one delete record
MAX_SHORT_TEXT: Final = 4096  # a session id or memory type


class BadRecord(ValueError):
    """A record or snapshot part that must not be logged; the message says what is wrong."""


def _need(ok: bool, problem: str) -> None:
    if not ok:
        raise BadRecord(problem)


def _number(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _text(v: Any, max_chars: int, *, empty: bool = False) -> bool:
    return type(v) is str and (empty or v != "") and len(v) <= max_chars


def _agent(v: Any) -> bool:
    return _text(v, validation.MAX_AGENT_ID_BYTES) and len(v.encode("utf-8", "surrogatepass")) <= validation.MAX_AGENT_ID_BYTES


def _tags(v: Any) -> bool:
    return type(v) is list and len(v) <= validation.MAX_TAGS and all(_text(t, validation.MAX_TAG_CHARS, empty=True) for t in v)


def _metadata(v: Any) -> bool:
    return type(v) is dict and all(type(k) is str for k in v)


Dims = int | frozenset[int]


def _vector(v: Any, dim: Dims) -> bool:
    """Vector bytes of ``dim`` floats (one of ``dim``: a shard being re-embedded has two lengths)."""
    return type(v) is bytes and (len(v) == 4 * dim if isinstance(dim, int) else len(v) in {4 * d for d in dim})


def _bytes(dim: Dims) -> str:
    return str(4 * dim) if isinstance(dim, int) else " or ".join(str(4 * d) for d in sorted(dim))


def _embedder(v: Any) -> bool:
    return _text(v, MAX_SHORT_TEXT)


def check_memory(record: Any, vector: Any, dim: Dims) -> None:
    """One ``[memory record, vector bytes]`` of a ``put``, a ``load`` or a snapshot."""
    _need(type(record) is dict and set(record) == _MEMORY_KEYS, "memory record keys")
    _need(_text(record["id"], validation.MAX_MEMORY_ID_CHARS), "memory id")
    _need(_agent(record["a"]), "memory agent")
    _need(_text(record["c"], validation.MAX_CONTENT_CHARS, empty=True), "memory content")
    _need(_text(record["t"], 64), "memory type")
    _need(_number(record["i"]), "memory importance")
    _need(_tags(record["g"]), "memory tags")
    _need(_metadata(record["m"]), "memory metadata")
    _need(record["s"] is None or _text(record["s"], MAX_SHORT_TEXT, empty=True), "memory session")
    _need(_number(record["ca"]) and _number(record["ua"]), "memory timestamps")
    _need(record["x"] is None or (type(record["x"]) is int and 0 <= record["x"] <= validation.MAX_TIMESTAMP),
          "memory expiry")
    _need(_vector(vector, dim), f"vector of {_bytes(dim)} bytes")


def _session_id(v: Any) -> bool:
    if not _text(v, MAX_SHORT_TEXT):
        return False
    parts = sessions.split_session_id(v)
    return parts is not None and _agent(parts[0])


def check_session(record: Any) -> None:
    """One session record of a ``session_start``, a ``load`` or a snapshot."""
    _need(type(record) is dict and set(record) == sessions.RECORD_KEYS, "session record keys")
    _need(_session_id(record["id"]) and record["id"].partition(sessions.SEPARATOR)[0] == record["a"], "session id")
    _need(_number(record["sa"]) and _number(record["la"]), "session times")
    _need(type(record["t"]) is int and 0 <= record["t"] <= sessions.MAX_IDLE_TIMEOUT_SECS, "session timeout")
    _need(record["it"] is None or (type(record["it"]) is int and 0 <= record["it"] <= sessions.MAX_IDLE_TIMEOUT_SECS),
          "session idle timeout")
    _need(_metadata(record["m"]), "session metadata")
    _need(record["ea"] is None or _number(record["ea"]), "session end")
    _need(record["er"] in (None, "client", "idle"), "session end reason")
    _need(record["su"] is None or _text(record["su"], validation.MAX_CONTENT_CHARS, empty=True), "session summary")


def _check_patch_set(changes: Any) -> None:
    _need(type(changes) is dict and set(changes) <= _PATCH_FIELDS, "patch fields")
    checks = {"content": lambda v: _text(v, validation.MAX_CONTENT_CHARS, empty=True), "memory_type": lambda v: _text(v, 64),
              "importance": _number, "tags": _tags, "metadata": _metadata}
    for name, value in changes.items():
        _need(checks[name](value), f"patch {name}")


def _check_filter(flt: Any) -> None:
    _need(type(flt) is dict and set(flt) <= _FILTER_FIELDS, "filter fields")
    for name, value in flt.items():
        if name == "tags":
            _need(_tags(value), "filter tags")
        elif name in ("memory_type", "session_id"):
            _need(_text(value, MAX_SHORT_TEXT, empty=True), f"filter {name}")
        else:
            _need(_number(value), f"filter {name}")


def check_replicated(op: Any, body: Any, dim: Dims) -> None:
    """Raise :class:`BadRecord` unless ``(op, body)`` is a record :meth:`ShardSet.apply` applies."""
    _need(op in REPLICATED_OPS, f"op {str(op)[:32]!r} is not replicated")
    _need(type(body) is dict, "body is not a map")
    if op == "put":
        _need(set(body) in ({"m", "v"}, {"m", "v", "e"}), "put keys")
        _need("e" not in body or _embedder(body["e"]), "put embedder")
        check_memory(body["m"], body["v"], dim)
    elif op == "patch":
        _need(set(body) - {"e"} == {"a", "id", "set", "v", "ua"}, "patch keys")
        _need("e" not in body or _embedder(body["e"]), "patch embedder")
        _need(_agent(body["a"]) and _text(body["id"], validation.MAX_MEMORY_ID_CHARS), "patch target")
        _check_patch_set(body["set"])
        _need(body["v"] is None or _vector(body["v"], dim), f"vector of {_bytes(dim)} bytes")
        _need(_number(body["ua"]), "patch time")
    elif op == "delete":
        _need(set(body) == {"a", "ids"} and _agent(body["a"]), "delete keys")
        ids = body["ids"]
        _need(type(ids) is list and len(ids) <= MAX_IDS and all(type(i) is str for i in ids), "delete ids")
    elif op == "delete_where":
        _need(set(body) == {"a", "f", "now"} and _agent(body["a"]) and _number(body["now"]), "delete_where keys")
        _check_filter(body["f"])
    elif op == "session_start":
        _need(set(body) == {"s"}, "session_start keys")
        check_session(body["s"])
    elif op == "session_touch":
        _need(set(body) == {"id", "at"} and _session_id(body["id"]) and _number(body["at"]), "session_touch keys")
    elif op == "session_end":
        _need(set(body) == {"id", "at", "summary"} and _session_id(body["id"]) and _number(body["at"]),
              "session_end keys")
        _need(body["summary"] is None or _text(body["summary"], validation.MAX_CONTENT_CHARS, empty=True),
              "session summary")
    elif op == "session_load":
        _need(set(body) == {"a", "sessions", "replace"} and _agent(body["a"]) and type(body["replace"]) is bool,
              "session_load keys")
        _need(type(body["sessions"]) is list and len(body["sessions"]) <= MAX_IDS, "session_load sessions")
        for record in body["sessions"]:
            check_session(record)
            _need(record["a"] == body["a"], "session_load agent")
    elif op == "revec":
        _need(set(body) == {"e", "d", "vs"} and _embedder(body["e"]), "revec keys")
        d, vs = body["d"], body["vs"]
        _need(type(d) is int and 1 <= d <= 1 << 16, "revec dim")
        _need(type(vs) is list and len(vs) <= MAX_IDS, "revec vectors")
        for entry in vs:
            _need(type(entry) is list and len(entry) == 4 and _agent(entry[0])
                  and _text(entry[1], validation.MAX_MEMORY_ID_CHARS) and type(entry[2]) is int
                  and _vector(entry[3], d), "revec entry")
    elif op == "reembed":
        _need(set(body) == {"e", "d"} and _embedder(body["e"]) and type(body["d"]) is int, "reembed keys")
    else:  # purge
        _need(set(body) == {"now"} and _number(body["now"]), "purge keys")
