"""The wire schema's bounds: the range of every value a peer can send, checked when a frame is decoded.

A frame that structures into its message class is not yet safe to act on: an int may be 2**64
(msgpack carries it; the map epoch ``token << 32 | version`` or a WAL record would not), a list
may hold a million entries, a ``[shard, epoch, seq]`` triple may have one element. So every field
of every registered message has a bound, checked right after structuring (a failure rejects the
frame as ``invalid``, like a type error):

- a field declares its bound with ``attrs.field(metadata=bound(spec))``;
- a field that declares none gets the default of its type: ints ``0 <= x < 2**63``, floats finite,
  strings at most :data:`MAX_TEXT` characters, bytes at most :data:`MAX_BLOB`, lists and maps at
  most :data:`MAX_ITEMS` entries, ``Any`` at most :data:`MAX_DEPTH` levels deep.

The named bounds below (:data:`TOKEN`, :data:`VERSION`, :data:`EPOCH`, :data:`SEQ`, :data:`SHARD`,
...) are the protocol's: :func:`epoch_of` is the one place that turns a map key into an epoch, and
it refuses (:class:`EpochOverflow`) a token or version outside them instead of handing msgpack an
int it cannot encode.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable
from typing import Any, Final

import attrs

MAX_TEXT: Final = 4096  # characters of a string field without a bound of its own
MAX_BLOB: Final = 32 * 1024 * 1024  # bytes of a bytes field (the stream frame limit bounds it anyway)
MAX_ITEMS: Final = 65_536  # entries of a list or map field without a bound of its own
MAX_DEPTH: Final = 32  # nesting of an ``Any`` value (a memory record is 3 deep)
MAX_FLOAT: Final = 1e18  # |x| of a float field; NaN and infinities never pass
I63: Final = 2**63 - 1  # the largest int every msgpack encoder and the WAL carry as signed

TOKEN_MAX: Final = 2**31 - 1  # the largest lease token an epoch encodes
VERSION_MAX: Final = 2**32 - 1  # the largest shard map version an epoch encodes (its low half)
EPOCH_MAX: Final = (TOKEN_MAX << 32) | VERSION_MAX  # < 2**63: an epoch always fits a signed int64
#: what a peer may send is half of that: a token or version accepted at its wire bound can still
#: grow by a billion (elections, maps) before the epoch encoding would refuse it; an honest
#: cluster makes one token per election and one version per map, and never gets near either
WIRE_TOKEN_MAX: Final = 2**30 - 1
WIRE_VERSION_MAX: Final = 2**31 - 1
SHARDS_MAX: Final = 65_536  # DAKERA_SHARDS' own upper bound
MEMBERS_MAX: Final = 1024  # members in a map, a voter set or a push-pull exchange
ID_MAX: Final = 253  # a node id (the wire sender's bound) or address


class OutOfBounds(ValueError):
    """A decoded value outside its field's bound; the frame is rejected."""


class EpochOverflow(ValueError):
    """A map key whose epoch would not fit 63 bits: a domain error, never an encoder crash."""


Check = Callable[[Any], None]  # raises OutOfBounds; the message gains its path on the way up


def _fail(problem: str) -> None:
    raise OutOfBounds(problem)


def _within(where: str, check: Check, value: Any) -> None:
    """``check(value)``, naming ``where`` in the error: paths are built only on failure (the
    check runs on every SWIM packet)."""
    try:
        check(value)
    except OutOfBounds as exc:
        raise OutOfBounds(f"{where}{'' if str(exc).startswith(('[', '.')) else ': '}{exc}") from None


def _fields(obj: Any, checks: tuple[tuple[str, Check], ...], prefix: str) -> None:
    try:
        for name, check in checks:
            check(getattr(obj, name))
    except OutOfBounds:
        for name, check in checks:
            _within(prefix + name, check, getattr(obj, name))


# -- specs: each is a callable check(value) ---------------------------------------------------
@attrs.frozen
class Int:
    lo: int = 0
    hi: int = I63

    def __call__(self, v: Any) -> None:
        if type(v) is not int or not self.lo <= v <= self.hi:
            _fail(f"int in [{self.lo}, {self.hi}] expected")


@attrs.frozen
class Float:
    lo: float = -MAX_FLOAT
    hi: float = MAX_FLOAT

    def __call__(self, v: Any) -> None:
        # NaN fails both comparisons, so it never passes
        if type(v) not in (int, float) or not self.lo <= v <= self.hi:
            _fail(f"number in [{self.lo}, {self.hi}] expected")


@attrs.frozen
class Bool:
    def __call__(self, v: Any) -> None:
        if type(v) is not bool:
            _fail("bool expected")


@attrs.frozen
class Text:
    max_len: int = MAX_TEXT
    min_len: int = 0

    def __call__(self, v: Any) -> None:
        if type(v) is not str or not self.min_len <= len(v) <= self.max_len:
            _fail(f"string of {self.min_len}..{self.max_len} characters expected")


@attrs.frozen
class Blob:
    max_len: int = MAX_BLOB

    def __call__(self, v: Any) -> None:
        if not isinstance(v, bytes | bytearray) or len(v) > self.max_len:
            _fail(f"bytes of at most {self.max_len} expected")


@attrs.frozen
class OneOf:
    values: frozenset[Any]

    def __call__(self, v: Any) -> None:
        if type(v) is bool or v not in self.values:
            _fail(f"one of {sorted(self.values)} expected")


@attrs.frozen
class Seq:
    """A list of up to ``max_len`` items, each checked by ``item``."""

    item: Check
    max_len: int = MAX_ITEMS
    min_len: int = 0

    def __call__(self, v: Any) -> None:
        if not isinstance(v, list) or not self.min_len <= len(v) <= self.max_len:
            _fail(f"list of {self.min_len}..{self.max_len} items expected")
        item = self.item
        try:
            for x in v:
                item(x)
        except OutOfBounds:
            for i, x in enumerate(v):
                _within(f"[{i}]", item, x)


@attrs.frozen
class Fixed:
    """A list of exactly ``len(items)`` elements, each with its own check (a wire tuple)."""

    items: tuple[Check, ...]

    def __call__(self, v: Any) -> None:
        if not isinstance(v, list | tuple) or len(v) != len(self.items):
            _fail(f"list of exactly {len(self.items)} elements expected")
        try:
            for x, check in zip(v, self.items, strict=True):
                check(x)
        except OutOfBounds:
            for i, (x, check) in enumerate(zip(v, self.items, strict=True)):
                _within(f"[{i}]", check, x)


@attrs.frozen
class Mapping:
    key: Check
    value: Check
    max_len: int = MAX_ITEMS

    def __call__(self, v: Any) -> None:
        if not isinstance(v, dict) or len(v) > self.max_len:
            _fail(f"map of at most {self.max_len} entries expected")
        key, value = self.key, self.value
        try:
            for k, x in v.items():
                key(k)
                value(x)
        except OutOfBounds:
            for k, x in v.items():
                _within(".<key>", key, k)
                _within(f".{str(k)[:32]}", value, x)


@attrs.frozen
class Keys:
    """A map whose known keys have their own checks; any other key is a short string whose value
    passes ``other`` (member metadata: a node may carry keys this one does not know yet)."""

    known: dict[str, Check]
    other: Check
    max_len: int = 64

    def __call__(self, v: Any) -> None:
        if not isinstance(v, dict) or len(v) > self.max_len:
            _fail(f"map of at most {self.max_len} entries expected")
        known, other = self.known, self.other
        for k, x in v.items():
            if type(k) is not str or len(k) > 64:
                _fail("keys must be strings of at most 64 characters")
            try:
                known.get(k, other)(x)
            except OutOfBounds:
                _within(f".{k}", known.get(k, other), x)


@attrs.frozen
class Optional:
    spec: Check

    def __call__(self, v: Any) -> None:
        if v is not None:
            self.spec(v)


@attrs.frozen
class Opaque:
    """Any msgpack value (a record body, a memory): only its depth and container sizes are bounded;
    its meaning is checked by whoever interprets it (see :mod:`dakera_actors.store.records`)."""

    max_depth: int = MAX_DEPTH
    max_items: int = MAX_ITEMS

    def __call__(self, v: Any) -> None:
        # iterative: a hostile depth must not cost a RecursionError
        stack: list[tuple[Any, int]] = [(v, 0)]
        while stack:
            x, depth = stack.pop()
            if isinstance(x, list | tuple | dict):
                if depth >= self.max_depth:
                    _fail(f"nested deeper than {self.max_depth}")
                if len(x) > self.max_items:
                    _fail(f"container of more than {self.max_items} entries")
                stack.extend((y, depth + 1) for y in (x.values() if isinstance(x, dict) else x))
            elif isinstance(x, float) and not math.isfinite(x):
                _fail("non-finite float")


@attrs.frozen
class Nested:
    """An attrs value (a nested message or record): every field checked by its own spec."""

    cls: type

    def __call__(self, v: Any) -> None:
        if not isinstance(v, self.cls):
            _fail(f"{self.cls.__name__} expected")
        _fields(v, checks_of(self.cls), ".")


# -- the protocol's named bounds -------------------------------------------------------------------
TOKEN: Final = Int(0, WIRE_TOKEN_MAX)
VERSION: Final = Int(0, WIRE_VERSION_MAX)
EPOCH: Final = Int(0, EPOCH_MAX)
SEQ: Final = Int(0, I63)
SHARD: Final = Int(0, SHARDS_MAX - 1)
NODE_ID: Final = Text(ID_MAX)
ADDRESS: Final = Text(ID_MAX)
MEMBERS: Final = Seq(NODE_ID, MEMBERS_MAX)
SHARD_LIST: Final = Seq(SHARD, SHARDS_MAX)
POSITION: Final = Fixed((SHARD, EPOCH, SEQ))  # [shard, epoch, seq]
SECONDS: Final = Float(0.0, 86_400.0)  # a ttl or a remaining time
REASON: Final = Text(MAX_TEXT)
URL: Final = Text(512)
STATUS: Final = Int(100, 599)  # an HTTP status carried in a reply
RF: Final = Int(0, 16)  # copies per shard (DAKERA_REPLICATION_FACTOR is at most 9)


def bound(spec: Check) -> dict[str, Check]:
    """Field metadata declaring ``spec`` as the field's bound: ``attrs.field(metadata=bound(TOKEN))``."""
    return {"wire": spec}


# -- defaults by type ------------------------------------------------------------------------------
def _default(tp: Any) -> Check:
    if tp is bool:
        return Bool()
    if tp is int:
        return Int()
    if tp is float:
        return Float()
    if tp is str:
        return Text()
    if tp is bytes:
        return Blob()
    if tp is Any or tp is object:
        return Opaque()
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return Optional(_default(rest[0]))
    if origin is list:
        return Seq(_default(args[0]) if args else Opaque())
    if origin is dict:
        return Mapping(_default(args[0]), _default(args[1])) if args else Opaque()
    if attrs.has(tp):
        return Nested(tp)
    raise TypeError(f"no wire bound for type {tp!r}: declare one with bound()")


_checks: dict[type, tuple[tuple[str, Check], ...]] = {}


def checks_of(cls: type) -> tuple[tuple[str, Check], ...]:
    """(field, check) for every field of an attrs class, built once per class."""
    found = _checks.get(cls)
    if found is None:
        attrs.resolve_types(cls)
        found = _checks[cls] = tuple(
            (f.name, f.metadata["wire"] if "wire" in f.metadata else _default(f.type)) for f in attrs.fields(cls))
    return found


def check_message(msg: Any) -> None:
    """Raise :class:`OutOfBounds` unless every field of ``msg`` is within its bound."""
    _fields(msg, checks_of(type(msg)), "")


def epoch_of(token: int, version: int) -> int:
    """The epoch of records written under the shard map ``(token, version)``: ordered like the key,
    and always below 2**63. Raises :class:`EpochOverflow` for a token or version outside the bounds."""
    if not (0 <= token <= TOKEN_MAX and 0 <= version <= VERSION_MAX):
        raise EpochOverflow(f"map key ({token}, {version}) outside token <= {TOKEN_MAX}, version <= {VERSION_MAX}")
    return (token << 32) | version
