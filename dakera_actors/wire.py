"""The inter-node wire format: the one module that owns frame layout and its version byte.

A plain frame is the msgpack array ``[version, type, sender, payload]``: ``type`` is the
registered tag of an attrs message class, ``sender`` the sending node's id, ``payload`` the
message unstructured by cattrs into msgpack-ready primitives.

With a gossip keyring, every frame is sealed with AES-256-GCM::

    0xD6 | time (8 bytes, ms since the epoch, big-endian) | len (1 byte) | sender (len bytes)
         | nonce (12 bytes) | ciphertext+tag (the plain frame)
    AAD = b"dakera-wire/2" + everything before the nonce

The header binds who sent the frame and when: it is authenticated with the frame, and on
opening the sender inside must equal the header's (else ``sender``). A frame stamped more than
the window (60 s by default, well above clock skew) before or after the receiver's wall clock
is dropped as ``stale``; one whose nonce was already seen inside the window is dropped as
``replay``. The replay cache holds the nonces of authenticated frames only (a peer without
the key cannot fill it) and is bounded: when full, its oldest entry is evicted and the
acceptance floor rises to that entry's time, so an evicted nonce can never be accepted again
(the effective window shrinks under extreme load instead of reopening).

A receiver that restarts has an empty cache, so its floor starts at its own start time: a
frame stamped before this process began is ``stale``, which is exactly the set of frames the
lost cache could have seen. A captured frame therefore can never be applied twice across a
restart either. The cost: a peer whose clock runs ``d`` behind cannot reach a freshly
(re)started node for its first ``d`` seconds; keep clocks synchronised (NTP).

Layout 1 (``0xD5``, no sender or time in the header) is refused (``version``): it cannot be
bound, so accepting it would reopen replay and re-attribution.

The first key seals; every key is tried when opening, so keys can be rotated without downtime
(add the new key second everywhere, then move it first, then drop the old one).

Decoding never raises into an actor: a frame that is oversized, truncated, of an unknown
version or type, malformed, fails authentication, is outside the window or a replay is
dropped and counted by reason.
"""

from __future__ import annotations

import heapq
import os
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeVar

import attrs
import cattrs
import cattrs.gen
import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import wirebounds

VERSION: Final = 1
SEAL_MARKER: Final = 0xD6  # never the first byte of a plain frame (a msgpack fixarray is 0x9X)
OLD_SEAL_MARKER: Final = 0xD5  # layout 1: no sender or time bound; refused
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
_TIME = struct.Struct(">Q")
#: sealing adds this much plus the sender id's length (see :func:`seal_overhead`)
SEAL_OVERHEAD: Final = 1 + _TIME.size + 1 + NONCE_SIZE + TAG_SIZE
_AAD: Final = b"dakera-wire/2"
MAX_SENDER_LEN: Final = 253
#: a sealed frame stamped further than this from the receiver's clock is stale (seconds)
DEFAULT_WINDOW: Final = 60.0
#: authenticated nonces remembered at most (about 180 bytes each: 23 MiB when full, which takes
#: over 2,000 frames a second for a whole window; beyond that the floor rises, see ReplayCache)
REPLAY_CACHE_SIZE: Final = 1 << 17

#: Every reason a frame can be rejected for; each is a label of dakera_wire_rejected_total.
REJECT_REASONS: Final = (
    "oversized",  # longer than the size limit
    "malformed",  # not a msgpack [version, type, sender, payload] array
    "version",  # a wire version this node does not speak
    "unknown_type",  # a type tag no message class is registered under
    "invalid",  # the payload does not fit the message class
    "auth",  # sealed, but no key opens it (wrong key, tampered, truncated)
    "unsealed",  # plain, but this node requires sealed frames
    "sealed",  # sealed, but this node has no key
    "sender",  # sealed, but the sender inside differs from the sealed header's
    "stale",  # sealed, but stamped outside the time window (or before this process started)
    "replay",  # sealed, and this exact frame was already accepted
    "handler_error",  # decoded, but handling it raised: only that stream or packet was dropped
    "bad_record",  # a replicated record or snapshot part that fails its checks, refused before the WAL
)

M = TypeVar("M")

_registry: dict[str, type] = {}
_tags: dict[type, str] = {}
_converter = cattrs.Converter()


def _strict(kind: type, accept: tuple[type, ...], reject: tuple[type, ...] = ()) -> None:
    """Structure ``kind`` only from values that already are one: cattrs' default would turn
    5 into "5" or "7" into 7, and a peer that sends the wrong type is broken or hostile."""

    def hook(value: Any, _t: Any) -> Any:
        if not isinstance(value, accept) or isinstance(value, reject):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return kind(value)

    _converter.register_structure_hook(kind, hook)


_strict(bytes, (bytes, bytearray))
_strict(str, (str,))
_strict(int, (int,), reject=(bool,))
_strict(float, (int, float), reject=(bool,))
_strict(bool, (bool,))


def message(tag: str) -> Callable[[type[M]], type[M]]:
    """Class decorator: register an attrs class as a wire message under ``tag``.

    Tags are part of the protocol: never reuse or rename one; add new classes instead.
    """

    def register(cls: type[M]) -> type[M]:
        if not attrs.has(cls):
            raise TypeError(f"{cls.__name__} must be an attrs class to be a wire message")
        if tag in _registry and _registry[tag] is not cls:
            raise ValueError(f"wire tag {tag!r} already used by {_registry[tag].__name__}")
        _registry[tag] = cls
        _tags[cls] = tag
        _bounded(cls)
        return cls  # type: ignore[return-value]

    return register


def _bounded(cls: type) -> None:
    """Structure ``cls`` as cattrs would, then check every field against its wire bound
    (:mod:`.wirebounds`): an out-of-range value rejects the frame as ``invalid``."""
    base: Callable[[Any, Any], Any] | None = None

    def hook(value: Any, _t: Any) -> Any:
        nonlocal base
        if base is None:  # built on first use: the class's annotations may name later classes
            base = cattrs.gen.make_dict_structure_fn(cls, _converter)
        msg = base(value, cls)
        wirebounds.check_message(msg)
        return msg

    _converter.register_structure_hook(cls, hook)


bound = wirebounds.bound


def register_structure_hook(cls: type, hook: Callable[[Any, Any], Any]) -> None:
    """A hand-written decoder for a hot type (it must be as strict as the generic one)."""
    _converter.register_structure_hook(cls, hook)


def register_unstructure_hook(cls: type, hook: Callable[[Any], Any]) -> None:
    """A hand-written encoder for a hot type (the inverse of its structure hook)."""
    _converter.register_unstructure_hook(cls, hook)


def registered_messages() -> dict[str, type]:
    """Tag to class, for every registered message (used by the round-trip tests)."""
    return dict(_registry)


def tag_of(msg: object) -> str:
    try:
        return _tags[type(msg)]
    except KeyError:
        raise TypeError(f"{type(msg).__name__} is not a registered wire message") from None


class FrameRejected(Exception):
    """Raised by :func:`decode_frame`; ``reason`` is one of REJECT_REASONS."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@attrs.frozen
class Envelope:
    """A decoded frame: who sent which message."""

    sender: str
    message: Any

    @property
    def tag(self) -> str:
        return _tags[type(self.message)]


def unstructure(msg: object) -> Any:
    return _converter.unstructure(msg)


def structure(payload: Any, cls: type[M]) -> M:
    return _converter.structure(payload, cls)


def seal_overhead(sender: str) -> int:
    """Bytes sealing adds to a frame from ``sender``."""
    return SEAL_OVERHEAD + len(sender.encode())


def encode_frame(msg: object, sender: str, keys: Iterable[bytes] = (), *, now: float | None = None) -> bytes:
    """Serialise ``msg`` from ``sender``; sealed with the first key when ``keys`` is non-empty,
    stamped with ``now`` (Unix seconds; the real clock when None)."""
    plain = msgpack.packb([VERSION, tag_of(msg), sender, unstructure(msg)], use_bin_type=True)
    for key in keys:
        name = sender.encode()
        if not 0 < len(name) <= MAX_SENDER_LEN:
            raise ValueError("sender must be 1..253 bytes of UTF-8")
        stamp = int((time.time() if now is None else now) * 1000)
        header = bytes([SEAL_MARKER]) + _TIME.pack(stamp) + bytes([len(name)]) + name
        nonce = os.urandom(NONCE_SIZE)
        return header + nonce + AESGCM(key).encrypt(nonce, plain, _AAD + header)
    return plain


@attrs.frozen
class _Sealed:
    plain: bytes
    sender: str
    stamp_ms: int
    nonce: bytes


def _open_sealed(data: bytes, keys: tuple[bytes, ...]) -> _Sealed:
    if data[0] == OLD_SEAL_MARKER:
        raise FrameRejected("version", "sealed layout 1 (no sender or time bound) is refused")
    fixed = 1 + _TIME.size + 1
    if len(data) < fixed:
        raise FrameRejected("auth", "sealed frame shorter than its seal")
    (stamp,) = _TIME.unpack_from(data, 1)
    end = fixed + data[fixed - 1]
    if len(data) < end + NONCE_SIZE + TAG_SIZE or data[fixed - 1] == 0:
        raise FrameRejected("auth", "sealed frame shorter than its seal")
    header, nonce, sealed = data[:end], data[end: end + NONCE_SIZE], data[end + NONCE_SIZE:]
    for key in keys:
        try:
            plain = AESGCM(key).decrypt(nonce, sealed, _AAD + header)
        except InvalidTag:
            continue
        try:
            sender = header[fixed:].decode()
        except UnicodeDecodeError:
            raise FrameRejected("malformed", "sender is not UTF-8") from None
        return _Sealed(plain=plain, sender=sender, stamp_ms=stamp, nonce=bytes(nonce))
    raise FrameRejected("auth", "no key in the keyring opens this frame")


class ReplayCache:
    """Nonces of accepted sealed frames, each kept until it leaves the window.

    ``floor_ms``: frames stamped at or before it are refused whatever their nonce; it starts at
    the owner's start time (an empty cache knows nothing older) and rises when a full cache
    evicts an entry that has not expired yet (so eviction can never let a replay through)."""

    def __init__(self, floor_ms: int, capacity: int = REPLAY_CACHE_SIZE) -> None:
        self.floor_ms = floor_ms
        self.capacity = capacity
        self._seen: set[bytes] = set()
        self._heap: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, stamp_ms: int, nonce: bytes, now_ms: int, window_ms: int) -> None:
        """Record the frame or raise FrameRejected (``stale`` or ``replay``). The caller has
        already refused a stamp outside ``window_ms`` of ``now_ms`` (:func:`decode_frame` does)."""
        if stamp_ms < self.floor_ms:
            raise FrameRejected("stale", f"stamped {now_ms - stamp_ms} ms ago")
        if nonce in self._seen:
            raise FrameRejected("replay", "this frame was already accepted")
        heap = self._heap
        while heap and heap[0][0] < now_ms - window_ms:  # expired: the window check refuses it now
            self._seen.discard(heapq.heappop(heap)[1])
        while len(heap) >= self.capacity:
            old_stamp, old = heapq.heappop(heap)
            self._seen.discard(old)
            self.floor_ms = max(self.floor_ms, old_stamp + 1)
        if stamp_ms < self.floor_ms:
            raise FrameRejected("stale", "older than the replay cache remembers")
        self._seen.add(nonce)
        heapq.heappush(heap, (stamp_ms, nonce))


def decode_frame(data: bytes, *, keys: tuple[bytes, ...] = (), max_size: int,
                 now: float | None = None, window: float = DEFAULT_WINDOW,
                 replay: ReplayCache | None = None) -> Envelope:
    """Parse one frame or raise :class:`FrameRejected` (and nothing else).

    A sealed frame must be stamped within ``window`` seconds of ``now`` (Unix seconds; the real
    clock when None); with ``replay`` it must also be new to that cache (see the module doc)."""
    if len(data) > max_size:
        raise FrameRejected("oversized", f"{len(data)} > {max_size} bytes")
    if not data:
        raise FrameRejected("malformed", "empty frame")
    sealed: _Sealed | None = None
    now_ms = window_ms = 0
    if data[0] in (SEAL_MARKER, OLD_SEAL_MARKER):
        if not keys:
            raise FrameRejected("sealed", "sealed frame but no gossip key configured")
        sealed = _open_sealed(data, keys)
        now_ms, window_ms = int((time.time() if now is None else now) * 1000), int(window * 1000)
        if abs(sealed.stamp_ms - now_ms) > window_ms:
            raise FrameRejected("stale", f"stamped {now_ms - sealed.stamp_ms} ms from now")
        data = sealed.plain
    elif keys:
        raise FrameRejected("unsealed", "plain frame but a gossip key is required")
    try:
        # raw=False: text must be valid UTF-8; strict_map_key (default): only str/bytes map keys
        obj = msgpack.unpackb(data, raw=False, use_list=True)
    except Exception as exc:  # msgpack raises a zoo of types for bad input; all mean the same
        raise FrameRejected("malformed", f"{type(exc).__name__}") from None
    if not (isinstance(obj, list) and len(obj) == 4):
        raise FrameRejected("malformed", "not a 4-element array")
    version, tag, sender, payload = obj
    if version != VERSION or isinstance(version, bool):
        raise FrameRejected("version", f"wire version {version!r}, this node speaks {VERSION}")
    if not isinstance(tag, str) or tag not in _registry:
        raise FrameRejected("unknown_type", repr(tag)[:64])
    if not isinstance(sender, str) or not 0 < len(sender) <= MAX_SENDER_LEN:
        raise FrameRejected("malformed", "sender must be a non-empty string")
    if sealed is not None and sender != sealed.sender:
        raise FrameRejected("sender", f"header says {sealed.sender[:64]!r}, frame says {sender[:64]!r}")
    try:
        msg: Any = _converter.structure(payload, _registry[tag])
    except Exception as exc:  # cattrs wraps field errors in ClassValidationError groups
        raise FrameRejected("invalid", f"{tag}: {type(exc).__name__}") from None
    if sealed is not None and replay is not None:
        # last: only a frame that is whole and authentic takes a place in the cache
        replay.check(sealed.stamp_ms, sealed.nonce, now_ms, window_ms)
    return Envelope(sender=sender, message=msg)


class Codec:
    """A node's encoder/decoder: its id, its keyring, its wall clock (Unix seconds, stamped on
    sealed frames and checked against theirs), its replay cache, and a counter hook for
    rejections. Frames stamped before the codec was made are refused (see the module doc)."""

    def __init__(self, node_id: str, keys: Iterable[bytes] = (),
                 on_reject: Callable[[str], None] | None = None, *,
                 wall_clock: Callable[[], float] = time.time, window: float = DEFAULT_WINDOW,
                 replay_capacity: int = REPLAY_CACHE_SIZE) -> None:
        self.node_id = node_id
        self.keys = tuple(keys)
        self._on_reject = on_reject
        self.wall_clock = wall_clock
        self.window = window
        self.replay = ReplayCache(int(wall_clock() * 1000), replay_capacity)
        self.overhead = seal_overhead(node_id) if self.keys else 0

    def encode(self, msg: object) -> bytes:
        return encode_frame(msg, self.node_id, self.keys, now=self.wall_clock() if self.keys else None)

    def decode(self, data: bytes, *, max_size: int) -> Envelope | None:
        """The envelope, or None when the frame was rejected (and counted)."""
        try:
            return decode_frame(data, keys=self.keys, max_size=max_size,
                                now=self.wall_clock() if self.keys else None,
                                window=self.window, replay=self.replay)
        except FrameRejected as exc:
            if self._on_reject is not None:
                self._on_reject(exc.reason)
            return None


# -- messages every node speaks, whatever else it runs -----------------------------------------
@message("ping")
@attrs.frozen
class Ping:
    """Liveness and identity check over a packet or a stream; answered by a Pong."""

    seq: int = attrs.field(metadata=bound(wirebounds.SEQ))


@message("pong")
@attrs.frozen
class Pong:
    seq: int = attrs.field(metadata=bound(wirebounds.SEQ))
    node_id: str = attrs.field(metadata=bound(wirebounds.NODE_ID))
    version: str = attrs.field(metadata=bound(wirebounds.Text(64)))
    api_address: str = attrs.field(metadata=bound(wirebounds.URL))


@message("error")
@attrs.frozen
class ErrorReply:
    """Sent on a stream instead of a reply when the request could not be served."""

    code: str = attrs.field(metadata=bound(wirebounds.Text(64)))
    detail: str = attrs.field(default="", metadata=bound(wirebounds.Text(65_536)))
