"""The inter-node wire format: the one module that owns frame layout and its version byte.

A plain frame is the msgpack array ``[version, type, sender, payload]``: ``type`` is the
registered tag of an attrs message class, ``sender`` the sending node's id, ``payload`` the
message unstructured by cattrs into msgpack-ready primitives.

With a gossip keyring, every frame is sealed with AES-256-GCM::

    0xD5 | nonce (12 bytes) | ciphertext+tag (plain frame, AAD = b"dakera-wire/1")

The first key seals; every key is tried when opening, so keys can be rotated without downtime
(add the new key second everywhere, then move it first, then drop the old one).

Decoding never raises into an actor: a frame that is oversized, truncated, of an unknown
version or type, malformed, or fails authentication is dropped and counted by reason.
"""

from __future__ import annotations

import os
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
SEAL_MARKER: Final = 0xD5  # never the first byte of a plain frame (a msgpack fixarray is 0x9X)
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
SEAL_OVERHEAD: Final = 1 + NONCE_SIZE + TAG_SIZE
_AAD: Final = b"dakera-wire/1"
MAX_SENDER_LEN: Final = 253

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


def encode_frame(msg: object, sender: str, keys: Iterable[bytes] = ()) -> bytes:
    """Serialise ``msg`` from ``sender``; sealed with the first key when ``keys`` is non-empty."""
    plain = msgpack.packb([VERSION, tag_of(msg), sender, unstructure(msg)], use_bin_type=True)
    for key in keys:
        nonce = os.urandom(NONCE_SIZE)
        return bytes([SEAL_MARKER]) + nonce + AESGCM(key).encrypt(nonce, plain, _AAD)
    return plain


def _open_sealed(data: bytes, keys: tuple[bytes, ...]) -> bytes:
    if len(data) < SEAL_OVERHEAD:
        raise FrameRejected("auth", "sealed frame shorter than its seal")
    nonce, sealed = data[1 : 1 + NONCE_SIZE], data[1 + NONCE_SIZE :]
    for key in keys:
        try:
            return AESGCM(key).decrypt(nonce, sealed, _AAD)
        except InvalidTag:
            continue
    raise FrameRejected("auth", "no key in the keyring opens this frame")


def decode_frame(data: bytes, *, keys: tuple[bytes, ...] = (), max_size: int) -> Envelope:
    """Parse one frame or raise :class:`FrameRejected` (and nothing else)."""
    if len(data) > max_size:
        raise FrameRejected("oversized", f"{len(data)} > {max_size} bytes")
    if not data:
        raise FrameRejected("malformed", "empty frame")
    if data[0] == SEAL_MARKER:
        if not keys:
            raise FrameRejected("sealed", "sealed frame but no gossip key configured")
        data = _open_sealed(data, keys)
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
    try:
        msg: Any = _converter.structure(payload, _registry[tag])
    except Exception as exc:  # cattrs wraps field errors in ClassValidationError groups
        raise FrameRejected("invalid", f"{tag}: {type(exc).__name__}") from None
    return Envelope(sender=sender, message=msg)


class Codec:
    """A node's encoder/decoder: its id, its keyring, and a counter hook for rejections."""

    def __init__(self, node_id: str, keys: Iterable[bytes] = (),
                 on_reject: Callable[[str], None] | None = None) -> None:
        self.node_id = node_id
        self.keys = tuple(keys)
        self._on_reject = on_reject
        self.overhead = SEAL_OVERHEAD if self.keys else 0

    def encode(self, msg: object) -> bytes:
        return encode_frame(msg, self.node_id, self.keys)

    def decode(self, data: bytes, *, max_size: int) -> Envelope | None:
        """The envelope, or None when the frame was rejected (and counted)."""
        try:
            return decode_frame(data, keys=self.keys, max_size=max_size)
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
