"""Hypothesis strategies built from the wire schema's bounds (:mod:`dakera_actors.wirebounds`):
valid payloads of every registered message, and the same with one field replaced by a hostile value;
and :func:`seal`, the frame a peer holding a key sends with any payload at all."""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import strategies as st

from dakera_actors import wire
from dakera_actors import wirebounds as wb

#: message types a valid frame of which only reads (a valid frame of the others may legitimately
#: change state: an authenticated peer's valid lease or map is the lease and map rules' business)
READ_ONLY = {"ping", "pong", "error", "repl.fetch", "repl.records", "repl.snapshot-request", "repl.snapshot-chunk",
             "repl.status-request", "repl.status", "repl.positions", "shard.map-pull", "shard.map-ack",
             "route.reply"}


class Raw:
    """A frame payload sent as is, whatever its message class would accept."""

    def __init__(self, tag: str, payload: Any) -> None:
        self.tag, self.payload = tag, payload


def seal(tag: str, payload: Any, keys: tuple[bytes, ...], sender: str = "evil", *, now: float | None = None) -> bytes:
    """The frame a peer holding ``keys`` sends, through the node's own encoder (so the fuzzer
    follows the seal format wherever it goes) with the payload swapped in."""
    raw = Raw(tag, payload)
    tag_of, unstructure = wire.tag_of, wire.unstructure
    wire.tag_of = lambda msg: msg.tag if isinstance(msg, Raw) else tag_of(msg)  # type: ignore[assignment]
    wire.unstructure = lambda msg: msg.payload if isinstance(msg, Raw) else unstructure(msg)  # type: ignore[assignment]
    try:
        return wire.encode_frame(raw, sender, keys, now=now)
    finally:
        wire.tag_of, wire.unstructure = tag_of, unstructure  # type: ignore[assignment]


def load_all_messages() -> dict[str, type]:
    """Every message class a node registers (importing the modules that define them)."""
    import dakera_actors.lease.messages  # noqa: F401
    import dakera_actors.membership.messages  # noqa: F401
    import dakera_actors.operations.service  # noqa: F401
    import dakera_actors.operations.stats  # noqa: F401
    import dakera_actors.replication.actor  # noqa: F401
    import dakera_actors.routing.router  # noqa: F401
    import dakera_actors.sharding.actor  # noqa: F401

    return {t: c for t, c in wire.registered_messages().items() if not t.startswith("test.")}


def valid(spec: Any) -> st.SearchStrategy[Any]:
    """Small values inside ``spec`` (in their unstructured, on-the-wire form)."""
    if isinstance(spec, wb.Int):
        return st.integers(spec.lo, spec.hi)
    if isinstance(spec, wb.Float):
        return st.floats(spec.lo, spec.hi)
    if isinstance(spec, wb.Bool):
        return st.booleans()
    if isinstance(spec, wb.Text):
        return st.text(min_size=spec.min_len, max_size=min(spec.max_len, 12))
    if isinstance(spec, wb.Blob):
        return st.binary(max_size=16)
    if isinstance(spec, wb.OneOf):
        return st.sampled_from(sorted(spec.values))
    if isinstance(spec, wb.Seq):
        return st.lists(valid(spec.item), min_size=spec.min_len, max_size=min(spec.max_len, 3))
    if isinstance(spec, wb.Fixed):
        return st.tuples(*(valid(i) for i in spec.items)).map(list)
    if isinstance(spec, wb.Mapping):
        return st.dictionaries(valid(spec.key), valid(spec.value), max_size=3)
    if isinstance(spec, wb.Keys):
        return st.fixed_dictionaries({}, optional={k: valid(c) for k, c in spec.known.items()})
    if isinstance(spec, wb.Optional):
        return st.none() | valid(spec.spec)
    if isinstance(spec, wb.Opaque):
        return st.recursive(st.none() | st.integers(-5, 5) | st.text(max_size=5),
                            lambda inner: st.lists(inner, max_size=3), max_leaves=5)
    if isinstance(spec, wb.Nested):
        return payload_of(spec.cls)
    raise TypeError(f"no strategy for {spec!r}")


def payload_of(cls: type) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({name: valid(check) for name, check in wb.checks_of(cls)})


def _deep(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


#: values that break some bound of almost any field: out-of-range ints, wrong types, wrong nesting,
#: huge and deep containers, huge strings
HOSTILE: list[Any] = [2**31, 2**32, 2**63, 2**64 - 1, -1, -2**63, 0, True, 1.5, float("nan"), float("inf"),
                      None, "", "x" * 5000, "é" * 3000, b"\x00" * 300, [], [0], [[0]], [[0, 0]], [["a", "b", "c"]],
                      [[2**64 - 1, 2**64 - 1, 2**64 - 1]], {"a": 1}, {"map": ["a", "b"]}, {"map": [2**64 - 1, 1]},
                      _deep(200), [0] * 70_000, list(range(2000)), [[-1, -1, -1]], [{"state": 9}]]


def hostile() -> st.SearchStrategy[Any]:
    return st.sampled_from(HOSTILE) | st.integers(-2**63, 2**64 - 1) | st.text(max_size=8) | st.lists(st.integers(-2**63, 2**63), max_size=4)


@st.composite
def mutated(draw: st.DrawFn, cls: type) -> dict[str, Any]:
    """A payload of ``cls`` with one or more fields replaced by hostile values (or removed)."""
    payload = draw(payload_of(cls))
    names = [f.name for f in attrs.fields(cls)]
    if names:
        for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names), unique=True)):
            if draw(st.integers(0, 9)) == 0:
                payload.pop(name, None)
            else:
                payload[name] = draw(hostile())
    return payload


def minimal(spec: Any) -> Any:
    """One small valid value of ``spec`` (unstructured), deterministic."""
    if isinstance(spec, wb.Int):
        return max(spec.lo, min(spec.hi, 7))
    if isinstance(spec, wb.Float):
        return max(spec.lo, min(spec.hi, 1.5))
    if isinstance(spec, wb.Bool):
        return True
    if isinstance(spec, wb.Text):
        return "x" * max(1, spec.min_len) if spec.max_len else ""
    if isinstance(spec, wb.Blob):
        return b"\x00\x01"
    if isinstance(spec, wb.OneOf):
        return sorted(spec.values)[-1]
    if isinstance(spec, wb.Seq):
        return [minimal(spec.item)] * max(1, spec.min_len)
    if isinstance(spec, wb.Fixed):
        return [minimal(i) for i in spec.items]
    if isinstance(spec, wb.Mapping):
        return {minimal(spec.key): minimal(spec.value)}
    if isinstance(spec, wb.Keys):
        return {k: minimal(c) for k, c in spec.known.items()}
    if isinstance(spec, wb.Optional):
        return minimal(spec.spec)
    if isinstance(spec, wb.Opaque):
        return {"k": [1, "v", None]}
    if isinstance(spec, wb.Nested):
        return minimal_payload(spec.cls)
    raise TypeError(f"no value for {spec!r}")


def minimal_payload(cls: type) -> dict[str, Any]:
    return {name: minimal(check) for name, check in wb.checks_of(cls)}
