"""The backup bundle format: what goes in comes out, and anything damaged is a BundleError."""

from __future__ import annotations

import gzip
import io
import json
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dakera_actors.backup.bundle import (
    MANIFEST,
    BundleError,
    Manifest,
    Part,
    build_bundle,
    open_bundle,
    read_manifest,
)

KEY = bytes(range(32))
LIMIT = 1 << 24


def manifest(**over: object) -> Manifest:
    base = {"backup_id": "b1", "name": "nightly", "backup_type": "full", "cluster_id": "c1", "shards": 8,
            "created_at": 1.5, "namespaces": [], "encrypted": False, "parts": []}
    return Manifest(**{**base, **over})  # type: ignore[arg-type]


PARTS = [Part(3, 7, 42, [[{"id": "m1", "c": "hello"}, b"\x00\x01"], [{"id": "m2", "c": "x"}, b""]]),
         Part(0, 7, 1, [])]


@pytest.mark.parametrize("key", [None, KEY])
def test_round_trip(key: bytes | None) -> None:
    data = build_bundle(manifest(), PARTS, key=key)
    assert data[:2] == b"\x1f\x8b"  # application/gzip, as the SDK downloads it
    got = open_bundle(data, key=key, limit=LIMIT)
    assert [(p.shard, p.epoch, p.seq, p.memories) for p in got.parts] == [
        (0, 7, 1, []), (3, 7, 42, PARTS[0].memories)]
    assert got.manifest.memories == 2 and got.manifest.encrypted is (key is not None)
    assert read_manifest(data, limit=LIMIT).parts == got.manifest.parts


def test_a_plain_bundle_is_a_tar_gz_an_operator_can_inspect() -> None:
    data = build_bundle(manifest(), PARTS)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        assert tar.getnames() == [MANIFEST, "shards/00000.msgpack", "shards/00003.msgpack"]


def test_wrong_or_missing_key_and_wrong_version_are_refused() -> None:
    sealed = build_bundle(manifest(), PARTS, key=KEY)
    with pytest.raises(BundleError, match="DAKERA_BACKUP_KEY"):
        open_bundle(sealed, key=bytes(32), limit=LIMIT)
    with pytest.raises(BundleError, match="no DAKERA_BACKUP_KEY"):
        open_bundle(sealed, limit=LIMIT)
    raw = gzip.decompress(build_bundle(manifest(), PARTS))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
    head = json.loads(members[0][1])
    head["format"] = 99
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for info, body in members:
            body = json.dumps(head).encode() if info.name == MANIFEST else body
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    with pytest.raises(BundleError, match="format 99"):
        open_bundle(gzip.compress(out.getvalue()), limit=LIMIT)


def test_a_bundle_that_expands_past_the_limit_is_refused() -> None:
    big = build_bundle(manifest(), [Part(1, 1, 1, [[{"c": "a" * 100_000}, b""]])])
    with pytest.raises(BundleError, match="expands"):
        open_bundle(big, limit=50_000)
    with pytest.raises(BundleError, match="gzip"):
        open_bundle(b"PK\x03\x04 a zip file", limit=LIMIT)


@settings(max_examples=150, deadline=None)
@given(key=st.sampled_from([None, KEY]), cut=st.integers(0, 10_000), flip=st.integers(0, 10_000),
       bit=st.integers(0, 7), mode=st.sampled_from(["truncate", "flip"]))
def test_any_truncation_or_bit_flip_is_a_bundle_error_or_the_same_bundle(key, cut, flip, bit, mode) -> None:
    data = build_bundle(manifest(), PARTS, key=key)
    if mode == "truncate":
        bad = data[: cut % len(data)]
    else:
        at = flip % len(data)
        bad = data[:at] + bytes([data[at] ^ (1 << bit)]) + data[at + 1:]
    try:
        got = open_bundle(bad, key=key, limit=LIMIT)
    except BundleError:
        return
    # a flip that changed nothing the bundle means (gzip header fields like the OS byte) is harmless
    assert [(p.shard, p.seq, p.memories) for p in got.parts] == [(0, 1, []), (3, 42, PARTS[0].memories)]


def test_a_manifest_swapped_onto_another_sealed_payload_does_not_open() -> None:
    def members(data: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
            return [(m, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]

    one = members(build_bundle(manifest(backup_id="one"), PARTS, key=KEY))
    two = members(build_bundle(manifest(backup_id="two"), PARTS[:1], key=KEY))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for info, body in [one[0], two[1]]:
            tar.addfile(info, io.BytesIO(body))
    with pytest.raises(BundleError, match="does not open"):
        open_bundle(gzip.compress(out.getvalue()), key=KEY, limit=LIMIT)
