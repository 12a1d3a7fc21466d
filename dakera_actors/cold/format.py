"""How the cold tier names and encodes its objects (pure: no I/O, no clock).

Every shard's history is archived as **chains**, one per primary term: the primary that took
shard ``s`` over in the shard map of epoch ``E`` (``token << 32 | version``, see
:mod:`dakera_actors.store.tail`; the map's ``since`` for the shard, which stays while the same
node stays its primary) writes only under ``shards/<s>/<E>/``::

    shards/00007/00000000004294967298/s-00000000000000000120-t1796169600123   snapshot at seq 120
    shards/00007/00000000004294967298/c-00000000000000000121-00000000000000000180-t1796169601250
                                                                        records 121..180

The ``-t<ms>`` suffix is a Unix time in milliseconds, on the primary's clock: for a snapshot, when
it was taken (no record inside is newer); for a chunk, the newest record's time. It lets a
point-in-time restore and a retention window choose objects from the listing alone. Names
without it (written before it existed) still parse, with no time.

A chain starts with a whole-shard snapshot (its base) and continues with chunks of records in seq
order. Objects are immutable: each name is written once (a retry writes the same bytes). A
primary never writes under another term's epoch, so a stale primary (cut off, still uploading
under its old epoch) can only add to an older chain, and a restore takes the newest chain that
has a base (:mod:`.chain`): the stale uploads never win.

Cluster-wide objects: ``cluster/identity`` (written once, if absent) and
``cluster/tokens/<token>`` (one per fencing token, with the committed voters when its leader
wrote it). An archiver writes the token of every epoch it uploads records of *before* it uploads
them, so every token inside any archived object is at or below an archived token record, and a
cluster restarted from the bucket elects above every token the archived one used.

Each object is a 22-byte header and a body::

    b"DKCT" | version u8 (1) | kind u8 | crc32c(body) u32 | len(body) u64 | body (+ 4 spare bytes)

all big-endian, body = zlib (level 1) of msgpack. Reading checks everything: a damaged or
misnamed object raises :class:`ArchiveFormatError` and is never applied.
"""

from __future__ import annotations

import re
import struct
import zlib
from typing import Any, Final

import attrs
import msgpack
from crc32c import crc32c

from ..wal.record import WalRecord

MAGIC: Final = b"DKCT"
VERSION: Final = 1
HEADER: Final = struct.Struct(">4sBBIQ4x")
KIND_SNAPSHOT: Final = 1
KIND_CHUNK: Final = 2
KIND_TOKEN: Final = 3
KIND_IDENTITY: Final = 4
_KINDS: Final = {KIND_SNAPSHOT, KIND_CHUNK, KIND_TOKEN, KIND_IDENTITY}
MAX_OBJECT_BYTES: Final = 1 << 34  # a length field beyond this is damage, not an allocation

SHARDS: Final = "shards/"
TOKENS: Final = "cluster/tokens/"
IDENTITY: Final = "cluster/identity"
_SNAPSHOT = re.compile(r"^shards/(\d{5})/(\d{20})/s-(\d{20})(?:-t(\d{13}))?$")
_CHUNK = re.compile(r"^shards/(\d{5})/(\d{20})/c-(\d{20})-(\d{20})(?:-t(\d{13}))?$")
_TOKEN = re.compile(r"^cluster/tokens/(\d{20})$")


class ArchiveFormatError(ValueError):
    """An archived object that cannot be trusted (why is in the message)."""


def shard_prefix(shard: int) -> str:
    return f"{SHARDS}{shard:05d}/"


def _stamp(at: float | None) -> str:
    return "" if at is None else f"-t{min(max(round(at * 1000), 0), 10**13 - 1):013d}"


def snapshot_key(shard: int, chain: int, seq: int, at: float | None = None) -> str:
    return f"{shard_prefix(shard)}{chain:020d}/s-{seq:020d}{_stamp(at)}"


def chunk_key(shard: int, chain: int, first: int, last: int, at: float | None = None) -> str:
    return f"{shard_prefix(shard)}{chain:020d}/c-{first:020d}-{last:020d}{_stamp(at)}"


def token_key(token: int) -> str:
    return f"{TOKENS}{token:020d}"


@attrs.frozen(order=True)
class ArchivedObject:
    """A shard object as named: a snapshot (``first == last == seq``) or a chunk of records."""

    shard: int
    chain: int
    first: int
    last: int
    snapshot: bool
    key: str = attrs.field(order=False)
    size: int = attrs.field(default=0, order=False, eq=False)
    #: Unix seconds its name gives (snapshot: taken; chunk: newest record), None for an older name
    at: float | None = attrs.field(default=None, order=False, eq=False)


def parse_key(key: str, size: int = 0) -> ArchivedObject | None:
    """What a shard object's name says, or None for a name that is not one (ignored by readers)."""
    if m := _SNAPSHOT.match(key):
        seq = int(m[3])
        return ArchivedObject(int(m[1]), int(m[2]), seq, seq, True, key, size, _time(m[4]))
    if (m := _CHUNK.match(key)) and 1 <= int(m[3]) <= int(m[4]):
        return ArchivedObject(int(m[1]), int(m[2]), int(m[3]), int(m[4]), False, key, size, _time(m[5]))
    return None


def _time(ms: str | None) -> float | None:
    return None if ms is None else int(ms) / 1000


def parse_token_key(key: str) -> int | None:
    m = _TOKEN.match(key)
    return int(m[1]) if m else None


def chain_token(chain: int) -> int:
    """The fencing token inside a chain's epoch (``token << 32 | version``)."""
    return chain >> 32


# -- encoding ----------------------------------------------------------------------------
def encode(kind: int, payload: Any) -> bytes:
    """``payload`` (msgpack-ready) framed as an archived object of ``kind``; checked to read back."""
    raw = msgpack.packb(payload, use_bin_type=True)
    body = zlib.compress(raw, 1)
    return HEADER.pack(MAGIC, VERSION, kind, crc32c(body), len(body)) + body


def decode(data: bytes, kind: int) -> Any:
    """The payload of an object that must be of ``kind``; :class:`ArchiveFormatError` if it is not sound."""
    if len(data) < HEADER.size:
        raise ArchiveFormatError(f"truncated header ({len(data)} bytes)")
    magic, version, found, crc, length = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ArchiveFormatError(f"bad magic {magic!r}")
    if version != VERSION:
        raise ArchiveFormatError(f"unsupported version {version}")
    if found != kind:
        raise ArchiveFormatError(f"an object of kind {found} where kind {kind} was expected")
    body = memoryview(data)[HEADER.size:]
    if length > MAX_OBJECT_BYTES or len(body) != length:
        raise ArchiveFormatError(f"body of {len(body)} bytes where the header says {length}")
    if crc32c(body) != crc:
        raise ArchiveFormatError("crc mismatch")
    try:
        return msgpack.unpackb(zlib.decompress(body), raw=False, use_list=True, strict_map_key=False)
    except Exception as exc:  # zlib or msgpack: unusable either way
        raise ArchiveFormatError(f"undecodable body ({type(exc).__name__})") from None


@attrs.frozen
class SnapshotBody:
    """A whole shard at one position: ``memories`` are ``[memory record, vector bytes]`` pairs."""

    shard: int
    chain: int
    seq: int
    epoch: int
    memories: list[list[Any]]
    #: the shard's session records (objects written before sessions have none)
    sessions: list[dict[str, Any]] = attrs.field(factory=list)


def encode_snapshot(snap: SnapshotBody) -> bytes:
    return encode(KIND_SNAPSHOT, {"shard": snap.shard, "chain": snap.chain, "seq": snap.seq,
                                  "epoch": snap.epoch, "memories": snap.memories, "sessions": snap.sessions})


def decode_snapshot(data: bytes, expect: ArchivedObject) -> SnapshotBody:
    """A snapshot object, checked against its name (a body that says otherwise is refused)."""
    d = decode(data, KIND_SNAPSHOT)
    try:
        snap = SnapshotBody(int(d["shard"]), int(d["chain"]), int(d["seq"]), int(d["epoch"]), list(d["memories"]),
                            list(d.get("sessions") or []))
    except (KeyError, TypeError, ValueError) as exc:
        raise ArchiveFormatError(f"snapshot body lacks a field ({type(exc).__name__}: {exc})") from None
    if (snap.shard, snap.chain, snap.seq) != (expect.shard, expect.chain, expect.last):
        raise ArchiveFormatError(f"snapshot body says shard {snap.shard} chain {snap.chain} seq {snap.seq}, "
                                 f"unlike its name {expect.key}")
    if (snap.seq < 0 or snap.epoch < 0 or any(not isinstance(m, list) or len(m) != 2 for m in snap.memories)
            or any(not isinstance(s, dict) for s in snap.sessions)):
        raise ArchiveFormatError(f"snapshot {expect.key} holds an impossible position or memory")
    return snap


def encode_chunk(shard: int, chain: int, records: list[WalRecord]) -> bytes:
    return encode(KIND_CHUNK, {"shard": shard, "chain": chain,
                               "records": [[r.seq, r.epoch, r.op, r.body, r.ts] for r in records]})


def decode_chunk(data: bytes, expect: ArchivedObject) -> list[WalRecord]:
    """A chunk's records (seq ``first..last`` in order, epochs never decreasing), checked
    against its name; the records carry no LSN (the log that writes them gives one)."""
    d = decode(data, KIND_CHUNK)
    try:
        shard, chain, raw = int(d["shard"]), int(d["chain"]), d["records"]
        records = [WalRecord(0, shard, str(op), body, float(ts), int(seq), int(epoch))
                   for seq, epoch, op, body, ts in raw]
    except (KeyError, TypeError, ValueError) as exc:
        raise ArchiveFormatError(f"chunk body is malformed ({type(exc).__name__}: {exc})") from None
    if (shard, chain) != (expect.shard, expect.chain):
        raise ArchiveFormatError(f"chunk body says shard {shard} chain {chain}, unlike its name {expect.key}")
    seqs = [r.seq for r in records]
    if seqs != list(range(expect.first, expect.last + 1)):
        raise ArchiveFormatError(f"chunk {expect.key} holds seqs {seqs[:1]}..{seqs[-1:]}, unlike its name")
    epochs = [r.epoch for r in records]
    if epochs != sorted(epochs):
        raise ArchiveFormatError(f"chunk {expect.key} holds epochs out of order")
    return records


@attrs.frozen
class TokenRecord:
    """A fencing token a leader held, and the voters committed then."""

    token: int
    leader: str
    voters: list[str]
    at: float  # Unix time it was archived


def encode_token(rec: TokenRecord) -> bytes:
    return encode(KIND_TOKEN, {"token": rec.token, "leader": rec.leader, "voters": rec.voters, "at": rec.at})


def decode_token(data: bytes, token: int) -> TokenRecord:
    d = decode(data, KIND_TOKEN)
    try:
        rec = TokenRecord(int(d["token"]), str(d["leader"]), [str(v) for v in d["voters"]], float(d["at"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ArchiveFormatError(f"token record is malformed ({type(exc).__name__})") from None
    if rec.token != token:
        raise ArchiveFormatError(f"token record says {rec.token}, unlike its name ({token})")
    return rec


@attrs.frozen
class Identity:
    """The archived cluster: written once by the first node that archives into a prefix."""

    cluster_id: str
    shards: int
    created_at: float
    created_by: str


def encode_identity(ident: Identity) -> bytes:
    return encode(KIND_IDENTITY, attrs.asdict(ident))


def decode_identity(data: bytes) -> Identity:
    d = decode(data, KIND_IDENTITY)
    try:
        return Identity(str(d["cluster_id"]), int(d["shards"]), float(d["created_at"]), str(d["created_by"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ArchiveFormatError(f"identity is malformed ({type(exc).__name__})") from None
