"""Record framing: what encode writes, scan reads back; bad bytes stop a scan, never raise."""

from __future__ import annotations

import msgpack
import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from dakera_actors.wal import record as record_mod
from dakera_actors.wal.record import HEADER, HEADER_SIZE, MAGIC, WalRecord, encode_record, scan

BODIES = [
    None,
    {"id": "m-1", "text": "héllo wörld ✓ 記憶", "tags": ["a", "b"], "importance": 0.5},
    {"vector": bytes(range(256)) * 16, "n": -3},
    [1, 2.5, "x", b"\x00\xff", None, True, {"nested": {"deep": [1]}}],
    "just a string",
    2**63,
    {1: "int keys read back", b"k": "bytes keys too"},
]


def rec(lsn: int, body: object = None, shard: int = 3, op: str = "put") -> WalRecord:
    return WalRecord(lsn=lsn, shard=shard, op=op, body=body, ts=1_700_000_000.25 + lsn)


def frame(payload: bytes) -> bytes:
    return HEADER.pack(MAGIC, len(payload), crc32c(payload)) + payload


@pytest.mark.parametrize("body", BODIES)
def test_round_trip_of_every_kind_of_body(body: object) -> None:
    r = rec(7, body)
    result = scan(encode_record(r))
    assert result.clean and result.records == [r]


def test_header_layout_is_magic_length_crc_then_msgpack() -> None:
    data = encode_record(rec(1, {"a": 1}))
    magic, length, crc = HEADER.unpack_from(data)
    payload = data[HEADER_SIZE:]
    assert (magic, length, crc) == (0xDA, len(payload), crc32c(payload))
    assert msgpack.unpackb(payload) == {"v": 1, "lsn": 1, "shard": 3, "op": "put", "body": {"a": 1},
                                        "ts": 1_700_000_001.25}


def test_a_stream_scans_in_order_and_ends_clean() -> None:
    records = [rec(i, {"i": i}) for i in range(5, 15)]
    data = b"".join(map(encode_record, records))
    result = scan(data)
    assert (result.records, result.end, result.reason) == (records, len(data), "eof")
    assert scan(data, prev_lsn=4).clean and scan(data, prev_lsn=3).reason == "gap"


def test_scan_from_an_offset() -> None:
    first, second = encode_record(rec(1)), encode_record(rec(2))
    result = scan(b"junk" + first + second, start=4)
    assert result.records == [rec(1), rec(2)] and result.end == 4 + len(first) + len(second)


def test_unknown_keys_and_newer_versions_are_read() -> None:
    payload = msgpack.packb({"v": 2, "lsn": 1, "shard": 0, "op": "put", "body": 1, "ts": 5,
                             "future": [1, 2]}, use_bin_type=True)
    assert scan(frame(payload)).records == [WalRecord(lsn=1, shard=0, op="put", body=1, ts=5.0)]


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "eof"),
    (b"\xda\x00\x00", "torn"),
    (b"\x00" * 100, "torn"),  # a preallocated block
    (b"\x17" + b"\x00" * 20, "corrupt"),
    (HEADER.pack(MAGIC, 0xFFFFFFFF, 0), "corrupt"),  # absurd length: rejected, never allocated
    (HEADER.pack(MAGIC, 50, 0) + b"x" * 10, "torn"),
    (HEADER.pack(MAGIC, 3, 0) + b"abc", "corrupt"),  # crc mismatch
    (frame(b"\xc1"), "corrupt"),  # never-used msgpack byte
    (frame(msgpack.packb([1, 2])), "corrupt"),
    (frame(msgpack.packb({"v": 1, "lsn": 0, "shard": 0, "op": "put", "body": 1, "ts": 1})), "corrupt"),
    (frame(msgpack.packb({"v": 1, "lsn": 1, "shard": 0, "op": "", "body": 1, "ts": 1})), "corrupt"),
    (frame(msgpack.packb({"v": 1, "lsn": 1, "shard": 0, "op": "put", "ts": 1})), "corrupt"),
    (frame(msgpack.packb({"v": 1, "lsn": 1, "shard": True, "op": "put", "body": 1, "ts": 1})), "corrupt"),
])
def test_bad_data_stops_the_scan_with_a_reason(data: bytes, reason: str) -> None:
    good = encode_record(rec(1))
    result = scan(good + data)
    assert result.records == [rec(1)] and result.end == len(good) and result.reason == reason


def test_lsns_must_follow_each_other() -> None:
    gap = scan(encode_record(rec(1)) + encode_record(rec(3)))
    order = scan(encode_record(rec(2)) + encode_record(rec(2)))
    assert (gap.reason, [r.lsn for r in gap.records]) == ("gap", [1])
    assert (order.reason, [r.lsn for r in order.records]) == ("order", [2])


@pytest.mark.parametrize("body", [{(1, 2): "tuple keys do not read back"}, object(), {1, 2}])
def test_encode_refuses_what_could_not_be_read_back(body: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        encode_record(rec(1, body))


@pytest.mark.parametrize("bad", [rec(0), rec(1, shard=-1), rec(1, op="")])
def test_encode_refuses_bad_fields(bad: WalRecord) -> None:
    with pytest.raises(ValueError):
        encode_record(bad)


def test_encode_refuses_oversized_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record_mod, "MAX_RECORD_BYTES", 100)
    with pytest.raises(ValueError, match="exceeds"):
        encode_record(rec(1, b"x" * 200))


STREAM = b"".join(encode_record(rec(i, {"i": i, "pad": "p" * i})) for i in range(1, 9))
BOUNDARIES = [0]
for _r in scan(STREAM).records:
    BOUNDARIES.append(BOUNDARIES[-1] + len(encode_record(_r)))


def test_every_prefix_scans_to_its_whole_records() -> None:
    for cut in range(len(STREAM) + 1):
        result = scan(STREAM[:cut])
        whole = max(b for b in BOUNDARIES if b <= cut)
        assert result.end == whole and len(result.records) == BOUNDARIES.index(whole), cut
        assert result.reason == ("eof" if cut == whole else "torn"), cut


@settings(max_examples=200)
@given(st.integers(0, len(STREAM) * 8 - 1))
def test_any_bit_flip_is_caught_at_its_record(bit: int) -> None:
    data = bytearray(STREAM)
    data[bit // 8] ^= 1 << (bit % 8)
    result = scan(bytes(data))
    damaged = max(i for i, b in enumerate(BOUNDARIES) if b <= bit // 8)
    assert len(result.records) == damaged and result.end == BOUNDARIES[damaged]
    assert result.reason in ("torn", "corrupt")


def test_a_replication_position_round_trips_and_old_records_read_as_zero() -> None:
    rec = WalRecord(lsn=5, shard=2, op="put", body={"x": 1}, ts=1.5, seq=41, epoch=(3 << 32) | 7)
    assert scan(encode_record(rec)).records == [rec]
    plain = WalRecord(lsn=6, shard=2, op="put", body=None, ts=1.5)
    assert scan(encode_record(plain)).records[0].seq == 0
    assert b"\xa1q" not in encode_record(plain)  # no position keys when there is no position


@pytest.mark.parametrize("extra", [{"q": -1, "e": 0}, {"q": "1", "e": 0}, {"q": 1, "e": 1.5}, {"q": True, "e": 0}])
def test_a_bad_position_is_corruption(extra: dict) -> None:
    payload = msgpack.packb({"v": 1, "lsn": 1, "shard": 0, "op": "put", "body": None, "ts": 1.0, **extra})
    assert scan(frame(payload)).reason == "corrupt"
