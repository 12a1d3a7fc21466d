"""The backup bundle: one gzip file an operator can download, keep anywhere and upload again
(pure: no I/O but bytes in and out, no clock).

A bundle is a tar archive, gzip-compressed (``application/gzip``)::

    manifest.json            what the bundle holds (always first, never encrypted)
    shards/00007.msgpack     one part per shard: its memories at one position (plain bundles)
    payload.sealed           every part, in an inner tar, sealed with AES-256-GCM (encrypted bundles)

The manifest names the format version, the cluster (id and shard count), the cut (each shard's
position) and every part with its SHA-256, so a bundle that was truncated, altered, or built by
another version is refused by :func:`open_bundle` with a :class:`BundleError` naming the problem,
before anything is applied. The sealed payload's associated data is the manifest itself: a manifest
swapped between two encrypted bundles does not open either.

Reading never trusts sizes: the decompressed bundle, each member and the number of members are
bounded, so a small upload cannot expand into an unbounded one.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import zlib
from typing import Any, Final

import attrs
import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT: Final = 1
MANIFEST: Final = "manifest.json"
SEALED: Final = "payload.sealed"
NONCE: Final = 12
MAX_MEMBERS: Final = 70_000  # a part per shard (65,536 at most) and the manifest
BACKUP_TYPES: Final = ("full", "incremental", "snapshot")
#: what a request's ``compression`` may say (the SDKs send none, zstd or lz4): accepted and
#: ignored, a bundle is always gzip (one format any operator can open) and its record says "gzip"
COMPRESSIONS: Final = ("none", "zstd", "lz4", "gzip")


class BundleError(ValueError):
    """A bundle that cannot be used; the message says why (a 400 for the client)."""


def part_name(shard: int) -> str:
    return f"shards/{shard:05d}.msgpack"


@attrs.frozen
class Part:
    """One shard of the cut: its memories (``[memory record, vector bytes]``) and session records
    at ``(epoch, seq)`` (a bundle written before sessions has none)."""

    shard: int
    epoch: int
    seq: int
    memories: list[list[Any]]
    sessions: list[dict[str, Any]] = attrs.field(factory=list)


@attrs.frozen
class Manifest:
    backup_id: str
    name: str
    backup_type: str
    cluster_id: str
    shards: int
    created_at: float
    namespaces: list[str]  # agent ids the backup was limited to; empty: every agent
    encrypted: bool
    parts: list[dict[str, Any]]  # {"shard", "epoch", "seq", "memories", "bytes", "sha256"}
    base: str | None = None  # an incremental bundle: the backup it adds to
    format: int = FORMAT

    @property
    def memories(self) -> int:
        return sum(int(p["memories"]) for p in self.parts)

    def to_json(self) -> bytes:
        return json.dumps(attrs.asdict(self), sort_keys=True, separators=(",", ":")).encode()


@attrs.frozen
class Bundle:
    manifest: Manifest
    parts: list[Part]


def _pack_part(part: Part) -> bytes:
    return msgpack.packb({"shard": part.shard, "epoch": part.epoch, "seq": part.seq, "memories": part.memories,
                          "sessions": part.sessions}, use_bin_type=True)


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, 0
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def build_bundle(manifest: Manifest, parts: list[Part], key: bytes | None = None) -> bytes:
    """The gzip bundle of ``parts`` (the manifest's ``parts``, ``encrypted`` and ``format`` are
    filled in here). ``key``: 32 bytes to seal the parts with (AES-256-GCM)."""
    if key is not None and len(key) != 32:
        raise ValueError("a backup key is 32 bytes (AES-256)")
    packed = [(part_name(p.shard), _pack_part(p), p) for p in sorted(parts, key=lambda p: p.shard)]
    entries = [{"shard": p.shard, "epoch": p.epoch, "seq": p.seq, "memories": len(p.memories), "bytes": len(raw),
                "sha256": hashlib.sha256(raw).hexdigest()} for _name, raw, p in packed]
    final = attrs.evolve(manifest, parts=entries, encrypted=key is not None, format=FORMAT)
    head = final.to_json()
    members = [(name, raw) for name, raw, _p in packed]
    if key is not None:
        nonce = os.urandom(NONCE)
        sealed = nonce + AESGCM(key).encrypt(nonce, _tar(members), head)
        members = [(SEALED, sealed)]
    return gzip.compress(_tar([(MANIFEST, head), *members]), compresslevel=6, mtime=0)


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress at most ``limit`` bytes; a bundle that expands beyond it is refused."""
    if data[:2] != b"\x1f\x8b":
        raise BundleError("not a gzip file (a bundle starts with the gzip magic bytes)")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise BundleError(f"the gzip stream is damaged ({exc})") from None
    if len(out) > limit:
        raise BundleError(f"the bundle expands to more than {limit} bytes")
    if not inflater.eof:
        raise BundleError("the gzip stream is truncated")
    return out


def _members(raw: bytes, what: str) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for info in tar:
                if len(out) >= MAX_MEMBERS:
                    raise BundleError(f"{what} has more than {MAX_MEMBERS} members")
                if not info.isfile():
                    raise BundleError(f"{what} holds {info.name!r}, which is not a regular file")
                handle = tar.extractfile(info)
                data = handle.read() if handle is not None else b""
                if len(data) != info.size:
                    raise BundleError(f"{what}: {info.name} is truncated")
                out.append((info.name, data))
    except tarfile.TarError as exc:
        raise BundleError(f"{what} is not a readable tar archive ({exc})") from None
    return out


def _manifest(raw: bytes) -> Manifest:
    try:
        d = json.loads(raw)
        if not isinstance(d, dict):
            raise TypeError("not an object")
        if d.get("format") != FORMAT:
            raise BundleError(f"bundle format {d.get('format')!r} is not one this node reads ({FORMAT})")
        manifest = Manifest(**d)
    except BundleError:
        raise
    except Exception as exc:
        raise BundleError(f"the manifest is malformed ({type(exc).__name__}: {exc})") from None
    if manifest.backup_type not in BACKUP_TYPES:
        raise BundleError(f"unknown backup_type {manifest.backup_type!r}")
    for entry in manifest.parts:
        if not isinstance(entry, dict) or not {"shard", "epoch", "seq", "memories", "bytes", "sha256"} <= set(entry):
            raise BundleError("the manifest lists a part without its shard, position, size or checksum")
        if not (isinstance(entry["shard"], int) and 0 <= entry["shard"] < manifest.shards):
            raise BundleError(f"the manifest lists shard {entry['shard']!r} of a {manifest.shards}-shard cluster")
    if len({e["shard"] for e in manifest.parts}) != len(manifest.parts):
        raise BundleError("the manifest lists a shard twice")
    return manifest


def read_manifest(data: bytes, *, limit: int) -> Manifest:
    """Only the manifest (for listing an uploaded bundle); the parts are not checked."""
    members = _members(_gunzip(data, limit), "the bundle")
    if not members or members[0][0] != MANIFEST:
        raise BundleError(f"the bundle does not start with {MANIFEST}")
    return _manifest(members[0][1])


def open_bundle(data: bytes, *, key: bytes | None = None, limit: int) -> Bundle:
    """Check and decode a whole bundle (see the module docstring); ``limit``: the most bytes it may
    decompress to. :class:`BundleError` for anything wrong, before anything is returned."""
    members = _members(_gunzip(data, limit), "the bundle")
    if not members or members[0][0] != MANIFEST:
        raise BundleError(f"the bundle does not start with {MANIFEST}")
    head = members[0][1]
    manifest = _manifest(head)
    rest = members[1:]
    if manifest.encrypted:
        if key is None:
            raise BundleError("the bundle is encrypted and this node has no DAKERA_BACKUP_KEY")
        if [name for name, _ in rest] != [SEALED]:
            raise BundleError(f"an encrypted bundle holds exactly {SEALED} after its manifest")
        sealed = rest[0][1]
        try:
            inner = AESGCM(key).decrypt(sealed[:NONCE], sealed[NONCE:], head)
        except (InvalidTag, ValueError):
            raise BundleError("the bundle does not open with this DAKERA_BACKUP_KEY (wrong key, or altered)") from None
        rest = _members(inner, "the sealed payload")
    found = dict(rest)
    if len(found) != len(rest):
        raise BundleError("the bundle holds a member twice")
    expected = {part_name(e["shard"]): e for e in manifest.parts}
    if set(found) != set(expected):
        missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        raise BundleError(f"the bundle's parts do not match its manifest (missing {missing[:3]}, unlisted {extra[:3]})")
    parts = []
    for name, entry in sorted(expected.items()):
        raw = found[name]
        if len(raw) != entry["bytes"] or hashlib.sha256(raw).hexdigest() != entry["sha256"]:
            raise BundleError(f"{name} does not match its checksum in the manifest")
        try:
            d = msgpack.unpackb(raw, raw=False, use_list=True, strict_map_key=False)
            part = Part(int(d["shard"]), int(d["epoch"]), int(d["seq"]), list(d["memories"]),
                        list(d.get("sessions") or []))
        except Exception as exc:
            raise BundleError(f"{name} does not decode ({type(exc).__name__})") from None
        if (part.shard, part.epoch, part.seq, len(part.memories)) != (entry["shard"], entry["epoch"], entry["seq"],
                                                                     entry["memories"]):
            raise BundleError(f"{name} says other than its manifest entry")
        if any(not isinstance(m, list) or len(m) != 2 for m in part.memories):
            raise BundleError(f"{name} holds a memory that is not [record, vector]")
        if any(not isinstance(s, dict) for s in part.sessions):
            raise BundleError(f"{name} holds a session that is not a record")
        parts.append(part)
    return Bundle(manifest, parts)
