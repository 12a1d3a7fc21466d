"""The object-store interface the cold tier writes through, whatever the backend.

Objects are immutable blobs named by keys (``a/b/c``: ``/``-separated, no empty, ``.`` or ``..``
segment, at most 1024 bytes of UTF-8). Every backend offers put (optionally only if the key is
absent, where the backend can say so atomically), get (optionally a byte range), list by prefix
and delete, and raises the same errors: :class:`ObjectNotFound`, :class:`ObjectExists` (a
conditional put that lost), :class:`ObjectStoreError` for anything else (unreachable, refused
credentials, a full disk), so callers never see a backend's own exceptions.
"""

from __future__ import annotations

from typing import Protocol

import attrs

MAX_KEY_BYTES = 1024


class ObjectStoreError(Exception):
    """The store could not do what was asked (unreachable, refused, out of space ...).

    ``code`` is the backend's own name for the failure where it has one (an S3 error code such
    as ``NoSuchBucket``, or ``"unreachable"``), so callers can tell failures apart without
    reading the message."""

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class ObjectNotFound(ObjectStoreError):
    """No object has this key."""


class ObjectExists(ObjectStoreError):
    """A put that asked for an absent key found one there (the conditional put lost)."""


class ObjectStoreUnusable(Exception):
    """The configured object store cannot be used; ``variable`` is the setting to look at."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


@attrs.frozen
class ObjectInfo:
    key: str
    size: int


def check_key(key: str) -> str:
    """``key`` if it is a valid object key; ValueError naming the problem otherwise."""
    if not isinstance(key, str) or not key:
        raise ValueError("an object key must be a non-empty string")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"an object key is at most {MAX_KEY_BYTES} bytes")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"object key {key!r} has an empty, '.' or '..' segment")
    if any(ord(c) < 32 or c == "\\" for c in key):
        raise ValueError(f"object key {key!r} has a control character or a backslash")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a key's beginning (a trailing ``/`` allowed)."""
    if prefix:
        check_key(prefix.rstrip("/") or "x")
    return prefix


def byte_range(data: bytes, start: int | None, end: int | None) -> bytes:
    """``data[start:end]`` with the checks every backend applies to a range."""
    if start is not None and start < 0 or end is not None and end < 0:
        raise ValueError("a byte range is never negative")
    if start is not None and end is not None and end < start:
        raise ValueError("a byte range ends before it starts")
    return data[start:end]


class ObjectStore(Protocol):
    """What the cold tier needs of object storage (all calls are Trio-native)."""

    #: True when ``put(..., if_absent=True)`` is atomic against concurrent writers
    conditional: bool

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        """Store ``data`` under ``key`` durably (replacing what is there unless ``if_absent``)."""
        ...

    async def get(self, key: str, *, start: int | None = None, end: int | None = None) -> bytes:
        """The object's bytes, or ``[start:end)`` of them."""
        ...

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key``; removing an absent key is not an error."""
        ...
