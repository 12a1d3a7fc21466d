"""RESP2, the Redis wire protocol, as a pure codec: commands out, replies in. No I/O here.

A command is an array of bulk strings (``*<n>\\r\\n`` then ``$<len>\\r\\n<bytes>\\r\\n`` per
argument); a reply is one of five types, told by its first byte: ``+`` a simple string (returned
as ``str``), ``-`` an error (returned as a :class:`ReplyError` value, not raised: the caller
decides), ``:`` an integer, ``$`` a bulk string (``bytes``, or None for ``$-1``) and ``*`` an
array (a list, or None for ``*-1``) of replies, nested to any depth Lua gives back.

:class:`ReplyParser` is incremental: :meth:`ReplyParser.feed` any split of the byte stream, in any
number of pieces, and :meth:`ReplyParser.next` gives each reply once it is whole. Anything that is
not RESP (an unknown type byte, a length that is not a number, a missing CRLF, a bulk or array
larger than the bounds) raises :class:`ProtocolError`: the connection must then be dropped, as
nothing after it can be trusted.
"""

from __future__ import annotations

from typing import Any

#: a single bulk reply or command argument larger than this is refused (Redis's own proto-max-bulk-len
#: default is 512 MB; the cache bounds its entries far below)
MAX_BULK = 64 * 1024 * 1024
#: elements of one array reply; nesting deeper than MAX_DEPTH is refused
MAX_ARRAY = 1024 * 1024
MAX_DEPTH = 16
#: a header line (type byte, length or simple string) longer than this is refused
MAX_LINE = 64 * 1024


class ProtocolError(Exception):
    """The bytes read are not a RESP2 reply: the connection is unusable."""


class ReplyError(Exception):
    """An error reply (``-ERR ...``, ``-NOSCRIPT ...``): Redis is there and said no. Returned by the
    parser as a value (inside an array too); the client raises it."""

    @property
    def kind(self) -> str:
        """The error's first word: ``ERR``, ``NOSCRIPT``, ``WRONGTYPE``, ``NOAUTH`` ..."""
        return str(self).split(" ", 1)[0]


def _arg(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):  # before int: True is an int, and Redis has no booleans
        raise TypeError("a Redis argument cannot be a bool")
    if isinstance(value, (int, float)):
        return repr(value).encode() if isinstance(value, float) else str(value).encode()
    raise TypeError(f"a Redis argument must be bytes, str, int or float, not {type(value).__name__}")


def encode_command(*args: Any) -> bytes:
    """One command as RESP: an array of bulk strings (str as UTF-8, numbers in decimal)."""
    if not args:
        raise ValueError("a command needs at least its name")
    out = [b"*%d\r\n" % len(args)]
    for value in args:
        data = _arg(value)
        if len(data) > MAX_BULK:
            raise ValueError(f"argument of {len(data)} bytes is over {MAX_BULK}")
        out.append(b"$%d\r\n" % len(data))
        out.append(data)
        out.append(b"\r\n")
    return b"".join(out)


def _integer(text: bytes, what: str) -> int:
    """A RESP integer: an optional minus and ASCII digits only (``int()`` alone would also take
    spaces, a plus sign and underscores)."""
    digits = text[1:] if text[:1] == b"-" else text
    if not digits.isdigit() or len(digits) > 20 or not digits.isascii():
        raise ProtocolError(f"{what} {text[:40]!r} is not a number")
    return int(text)


class _Incomplete(Exception):
    """Not enough bytes yet (internal: the parse starts over when more arrive)."""


class ReplyParser:
    """Feed bytes, take whole replies (see the module docstring)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes | bytearray) -> None:
        if self._pos:
            del self._buf[:self._pos]  # drop what earlier replies used
            self._pos = 0
        self._buf += data

    @property
    def pending(self) -> int:
        """Bytes received and not yet part of a whole reply."""
        return len(self._buf) - self._pos

    def next(self) -> Any:
        """The next whole reply, or the sentinel :data:`NEED_MORE` when the bytes so far end
        inside one (nothing is consumed then)."""
        try:
            reply, end = self._parse(self._pos, 0)
        except _Incomplete:
            return NEED_MORE
        self._pos = end
        return reply

    def _line(self, pos: int) -> tuple[bytes, int]:
        end = self._buf.find(b"\r\n", pos)
        if end < 0:
            if len(self._buf) - pos > MAX_LINE:
                raise ProtocolError(f"a header line longer than {MAX_LINE} bytes")
            raise _Incomplete
        if end - pos > MAX_LINE:
            raise ProtocolError(f"a header line longer than {MAX_LINE} bytes")
        return bytes(self._buf[pos:end]), end + 2

    def _length(self, text: bytes, what: str, bound: int) -> int:
        n = _integer(text, f"{what} length")
        if n < -1 or n > bound:
            raise ProtocolError(f"{what} length {n} out of range")
        return n

    def _parse(self, pos: int, depth: int) -> tuple[Any, int]:
        if pos >= len(self._buf):
            raise _Incomplete
        kind = self._buf[pos]
        line, after = self._line(pos + 1)
        if kind == 0x2B:  # + simple string
            return line.decode("utf-8", "replace"), after
        if kind == 0x2D:  # - error
            return ReplyError(line.decode("utf-8", "replace")), after
        if kind == 0x3A:  # : integer
            return _integer(line, "integer reply"), after
        if kind == 0x24:  # $ bulk
            n = self._length(line, "bulk", MAX_BULK)
            if n == -1:
                return None, after
            if len(self._buf) < after + n + 2:
                raise _Incomplete
            if self._buf[after + n:after + n + 2] != b"\r\n":
                raise ProtocolError("a bulk reply does not end with CRLF")
            return bytes(self._buf[after:after + n]), after + n + 2
        if kind == 0x2A:  # * array
            n = self._length(line, "array", MAX_ARRAY)
            if n == -1:
                return None, after
            if depth >= MAX_DEPTH:
                raise ProtocolError(f"arrays nested deeper than {MAX_DEPTH}")
            items = []
            for _ in range(n):
                item, after = self._parse(after, depth + 1)
                items.append(item)
            return items, after
        raise ProtocolError(f"unknown reply type byte {bytes([kind])!r}")


class _NeedMore:
    def __repr__(self) -> str:
        return "NEED_MORE"


#: what :meth:`ReplyParser.next` returns while a reply is incomplete
NEED_MORE: Any = _NeedMore()

__all__ = ["MAX_BULK", "NEED_MORE", "ProtocolError", "ReplyError", "ReplyParser", "encode_command"]
