"""Wire format: round trips, and nothing a peer can send ever raises out of the decoder."""

from __future__ import annotations

from typing import Any

import attrs
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dakera_actors.lease.messages  # noqa: F401  (every protocol module registers its messages)
import dakera_actors.membership.messages  # noqa: F401
import dakera_actors.sharding.actor  # noqa: F401
from dakera_actors import wire
from dakera_actors.wire import (
    Codec,
    ErrorReply,
    FrameRejected,
    Ping,
    Pong,
    ReplayCache,
    decode_frame,
    encode_frame,
    message,
    registered_messages,
    seal_overhead,
)
from tests.hostile import load_all_messages, minimal_payload

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
MAX = 64 * 1024


@message("test.sample")
@attrs.frozen
class Sample:
    """A message with every field kind the protocol messages use."""

    n: int
    name: str
    blob: bytes
    tags: list[str]
    scores: dict[str, float]
    maybe: int | None = None


@pytest.mark.parametrize("tag", sorted(load_all_messages()))
def test_every_registered_message_round_trips(tag: str) -> None:
    cls = registered_messages()[tag]
    msg = wire.structure(minimal_payload(cls), cls)  # a valid instance, from the wire schema's bounds
    for keys in ((), (KEY_A,)):
        env = decode_frame(encode_frame(msg, "node-1", keys), keys=keys, max_size=MAX)
        assert env.sender == "node-1" and env.message == msg and env.tag == tag


@given(n=st.integers(0, 2**63 - 1), name=st.text(), blob=st.binary(), tags=st.lists(st.text()),
       scores=st.dictionaries(st.text(), st.floats(-1e18, 1e18)), maybe=st.none() | st.integers(0, 10))
def test_sample_round_trips_for_any_values(n: int, name: str, blob: bytes, tags: list[str],
                                           scores: dict[str, float], maybe: int | None) -> None:
    msg = Sample(n, name, blob, tags, scores, maybe)
    assert decode_frame(encode_frame(msg, "n1"), max_size=10**7).message == msg


def test_frame_layout_is_version_type_sender_payload() -> None:
    frame = encode_frame(Ping(seq=3), "node-9")
    assert msgpack.unpackb(frame) == [wire.VERSION, "ping", "node-9", {"seq": 3}]


def reason(data: bytes, keys: tuple[bytes, ...] = (), max_size: int = MAX) -> str:
    with pytest.raises(FrameRejected) as info:
        decode_frame(data, keys=keys, max_size=max_size)
    return info.value.reason


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def test_rejection_reasons() -> None:
    assert reason(b"") == "malformed"
    assert reason(b"\xc1") == "malformed"
    assert reason(pack({"a": 1})) == "malformed"
    assert reason(pack([1, "ping", "n"])) == "malformed"
    assert reason(pack([2, "ping", "n", {"seq": 1}])) == "version"
    assert reason(pack([True, "ping", "n", {"seq": 1}])) == "version"
    assert reason(pack([1, "no-such-type", "n", {}])) == "unknown_type"
    assert reason(pack([1, 5, "n", {}])) == "unknown_type"
    assert reason(pack([1, "ping", "", {"seq": 1}])) == "malformed"
    assert reason(pack([1, "ping", 7, {"seq": 1}])) == "malformed"
    assert reason(pack([1, "ping", "n", {"seq": "one"}])) == "invalid"
    assert reason(pack([1, "ping", "n", {}])) == "invalid"
    assert reason(pack([1, "ping", "n", [1, 2]])) == "invalid"
    assert reason(pack([1, "pong", "n", {"seq": 1, "node_id": "x", "version": "1", "api_address": 5}])) in (
        "invalid",)
    assert reason(encode_frame(Ping(seq=1), "n"), max_size=5) == "oversized"
    assert reason(b"\x94\x01\xa4pi") == "malformed"  # truncated


def test_unknown_extra_fields_are_ignored_for_forward_compatibility() -> None:
    env = decode_frame(pack([1, "ping", "n", {"seq": 1, "added_in_v2": True}]), max_size=MAX)
    assert env.message == Ping(seq=1)


@given(st.binary(max_size=2048))
def test_garbage_never_raises_anything_but_rejection(data: bytes) -> None:
    for keys in ((), (KEY_A,)):
        try:
            decode_frame(data, keys=keys, max_size=MAX)
        except FrameRejected:
            pass


@given(st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text() | st.binary(),
                    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
                    max_leaves=20),
       st.sampled_from(sorted(registered_messages())))
def test_structured_garbage_payloads_are_rejected_not_raised(payload: Any, tag: str) -> None:
    try:
        decode_frame(pack([1, tag, "node-1", payload]), max_size=MAX)
    except FrameRejected as exc:
        assert exc.reason in wire.REJECT_REASONS


@given(st.integers(min_value=0))
def test_every_truncation_of_a_frame_is_rejected(cut: int) -> None:
    frame = encode_frame(Pong(seq=1, node_id="node-1", version="0.1.0", api_address="http://a:1"), "n")
    cut = cut % len(frame)
    assert reason(frame[:cut]) in ("malformed", "invalid")
    sealed = encode_frame(Ping(seq=1), "n", (KEY_A,))
    assert reason(sealed[: cut % len(sealed)], keys=(KEY_A,)) in ("auth", "unsealed", "malformed")


def test_sealed_frame_needs_the_right_key() -> None:
    frame = encode_frame(Ping(seq=1), "node-1", (KEY_A,))
    assert len(frame) == len(encode_frame(Ping(seq=1), "node-1")) + seal_overhead("node-1")
    assert b"\xa4ping" not in frame  # sealed means encrypted, not just signed (the sender is in the header)
    assert reason(frame, keys=(KEY_B,)) == "auth"
    assert reason(frame) == "sealed"
    assert reason(encode_frame(Ping(seq=1), "node-1"), keys=(KEY_A,)) == "unsealed"
    # key rotation: any key of the ring opens; the first one seals
    assert decode_frame(frame, keys=(KEY_B, KEY_A), max_size=MAX).message == Ping(seq=1)


@given(st.integers(min_value=0), st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_in_a_sealed_frame_is_rejected(position: int, bit: int) -> None:
    frame = bytearray(encode_frame(Ping(seq=42), "node-1", (KEY_A,)))
    position %= len(frame)
    frame[position] ^= 1 << bit
    assert reason(bytes(frame), keys=(KEY_A,)) in ("auth", "unsealed", "version")


def test_codec_counts_rejections_instead_of_raising() -> None:
    seen: list[str] = []
    codec = Codec("node-1", (KEY_A,), on_reject=seen.append)
    assert codec.decode(b"garbage", max_size=MAX) is None
    assert codec.decode(encode_frame(Ping(seq=1), "x"), max_size=MAX) is None
    assert codec.decode(encode_frame(Ping(seq=1), "x", (KEY_B,)), max_size=MAX) is None
    assert seen == ["unsealed", "unsealed", "auth"]
    env = codec.decode(codec.encode(ErrorReply(code="c", detail="d")), max_size=MAX)
    assert env is not None and env.sender == "node-1" and env.message == ErrorReply("c", "d")


def test_registering_a_tag_twice_is_refused() -> None:
    with pytest.raises(ValueError):
        @message("ping")
        @attrs.frozen
        class OtherPing:
            seq: int
    with pytest.raises(TypeError):
        message("plain")(int)


# -- sealed frames bind their sender and time ---------------------------------------------------
def _reseal(frame: bytes, *, sender: str | None = None, stamp_ms: int | None = None,
            inner_sender: str | None = None, key: bytes = KEY_A) -> bytes:
    """A frame re-sealed by someone holding the key, with a header or inner sender changed."""
    import os as _os

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    env_ts = int.from_bytes(frame[1:9], "big")
    name_len = frame[9]
    old_sender = frame[10:10 + name_len].decode()
    plain = AESGCM(key).decrypt(frame[10 + name_len:22 + name_len], frame[22 + name_len:],
                                b"dakera-wire/2" + frame[:10 + name_len])
    if inner_sender is not None:
        obj = msgpack.unpackb(plain)
        obj[2] = inner_sender
        plain = msgpack.packb(obj, use_bin_type=True)
    name = (sender or old_sender).encode()
    header = bytes([0xD6]) + (env_ts if stamp_ms is None else stamp_ms).to_bytes(8, "big") + bytes([len(name)]) + name
    nonce = _os.urandom(12)
    return header + nonce + AESGCM(key).encrypt(nonce, plain, b"dakera-wire/2" + header)


def test_a_rewritten_header_sender_fails_authentication() -> None:
    frame = encode_frame(Ping(seq=1), "node-1", (KEY_A,))
    forged = frame[:10] + b"node-2" + frame[16:]  # same length: only the name differs
    assert reason(forged, keys=(KEY_A,)) == "auth"


def test_the_inner_sender_must_match_the_sealed_header() -> None:
    frame = encode_frame(Ping(seq=1), "node-1", (KEY_A,))
    assert reason(_reseal(frame, sender="node-2"), keys=(KEY_A,)) == "sender"
    assert reason(_reseal(frame, inner_sender="evil"), keys=(KEY_A,)) == "sender"
    assert decode_frame(_reseal(frame), keys=(KEY_A,), max_size=MAX).sender == "node-1"


def test_frames_outside_the_window_are_stale() -> None:
    now = 1_700_000_000.0
    for stamp, expected in ((now - 61, "stale"), (now + 61, "stale"), (now - 59, None), (now + 59, None)):
        frame = encode_frame(Ping(seq=1), "node-1", (KEY_A,), now=stamp)
        if expected is None:
            assert decode_frame(frame, keys=(KEY_A,), max_size=MAX, now=now).message == Ping(seq=1)
        else:
            assert reason_at(frame, now) == expected
    frame = encode_frame(Ping(seq=1), "node-1", (KEY_A,), now=now - 20)
    with pytest.raises(FrameRejected) as exc:
        decode_frame(frame, keys=(KEY_A,), max_size=MAX, now=now, window=10)
    assert exc.value.reason == "stale"


def reason_at(frame: bytes, now: float) -> str:
    with pytest.raises(FrameRejected) as exc:
        decode_frame(frame, keys=(KEY_A,), max_size=MAX, now=now)
    return exc.value.reason


def test_layout_1_sealed_frames_are_refused() -> None:
    assert reason(b"\xd5" + bytes(40), keys=(KEY_A,)) == "version"


def test_an_exact_replay_is_refused_and_counted() -> None:
    clock = [1_700_000_000.0]
    seen: list[str] = []
    sender = Codec("node-1", (KEY_A,), wall_clock=lambda: clock[0])
    receiver = Codec("node-2", (KEY_A,), on_reject=seen.append, wall_clock=lambda: clock[0])
    frame = sender.encode(Ping(seq=1))
    assert receiver.decode(frame, max_size=MAX) is not None
    clock[0] += 30
    assert receiver.decode(frame, max_size=MAX) is None
    assert receiver.decode(sender.encode(Ping(seq=1)), max_size=MAX) is not None  # a new frame is fine
    clock[0] += 31
    assert receiver.decode(frame, max_size=MAX) is None  # now out of the window
    assert seen == ["replay", "stale"]
    assert len(receiver.replay) <= 2


def test_a_restarted_receiver_refuses_frames_from_before_it_started() -> None:
    clock = [1_700_000_000.0]
    sender = Codec("node-1", (KEY_A,), wall_clock=lambda: clock[0])
    frame = sender.encode(Ping(seq=1))
    first = Codec("node-2", (KEY_A,), wall_clock=lambda: clock[0] - 0.001)
    assert first.decode(frame, max_size=MAX) is not None
    clock[0] += 5  # the receiver restarts inside the window: its cache is empty
    seen: list[str] = []
    restarted = Codec("node-2", (KEY_A,), on_reject=seen.append, wall_clock=lambda: clock[0])
    assert restarted.decode(frame, max_size=MAX) is None
    assert seen == ["stale"]
    assert restarted.decode(sender.encode(Ping(seq=2)), max_size=MAX) is not None


def test_a_full_replay_cache_raises_its_floor_instead_of_forgetting() -> None:
    cache = ReplayCache(floor_ms=0, capacity=3)
    now, window = 10_000, 60_000
    for i in range(3):
        cache.check(1000 + i, bytes([i]) * 12, now, window)
    cache.check(2000, b"n" * 12, now, window)  # evicts the entry stamped 1000
    assert len(cache) == 3 and cache.floor_ms == 1001
    with pytest.raises(FrameRejected) as exc:
        cache.check(1000, bytes([0]) * 12, now, window)  # the evicted one cannot come back
    assert exc.value.reason == "stale"
    with pytest.raises(FrameRejected) as exc:
        cache.check(2000, b"n" * 12, now, window)
    assert exc.value.reason == "replay"
