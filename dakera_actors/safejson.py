"""The one JSON parser for request bodies: strict, depth-bounded, with errors that say what is wrong.

Used by the HTTP facade and by the owner of a forwarded request, so a body is judged the same way
whichever node it reaches. Python's parser recurses once per nesting level: a body of 100 000
``[`` raises RecursionError deep in the C decoder (and anything that walks the result later, from
``json.dumps`` to msgpack, recurses as well). The depth is therefore measured on the raw bytes
before the parser runs, in C-speed passes (one regex over strings, one numpy cumulative sum).

Nothing here knows HTTP: a bad body raises :class:`JsonInvalid`; the facade answers 400 with its
message and a forwarded request relays the same 400.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

#: nesting limit for a request body: memories' metadata is the deepest legitimate part, and
#: serde_json (the Rust server the SDK is written against) stops at 128
MAX_DEPTH = 64

# a JSON string, escapes included (the "unrolled loop" form: linear, no backtracking)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OPEN = np.zeros(256, dtype=np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


class JsonInvalid(ValueError):
    """A body that is not acceptable JSON. ``str(exc)`` says why, for the client."""


def nesting_depth(raw: bytes) -> int:
    """The deepest bracket nesting of ``raw`` outside strings (an upper bound for malformed input)."""
    if b"[" not in raw and b"{" not in raw:
        return 0
    bare = _STRING.sub(b"", raw) if b'"' in raw else raw
    steps = _OPEN[np.frombuffer(bare, dtype=np.uint8)]
    if not steps.any():
        return 0
    return int(np.cumsum(steps, dtype=np.int64).max())


def loads(raw: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Strict JSON from ``raw``: UTF-8, no NaN/Infinity, no lone surrogates, at most ``max_depth``
    levels of nesting. Raises :class:`JsonInvalid` otherwise."""
    depth = nesting_depth(raw)
    if depth > max_depth:
        raise JsonInvalid(f"malformed JSON: nested {depth} levels deep, at most {max_depth} are allowed")
    try:
        body = json.loads(raw, parse_constant=_no_constants, parse_float=_finite_float)
    except RecursionError:  # belt and braces: the depth check above should make this unreachable
        raise JsonInvalid(f"malformed JSON: nested too deeply (at most {max_depth} levels)") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise JsonInvalid(f"malformed JSON: {exc}") from None
    try:
        # a \ud800 escape parses into a lone surrogate, which no UTF-8 log can store
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise JsonInvalid("malformed JSON: a string holds an unpaired UTF-16 surrogate escape") from None
    return body


def loads_body(raw: bytes, *, required: bool) -> Any:
    """A request body: :func:`loads` of ``raw``, or None when it is empty and not ``required``
    (:class:`JsonInvalid` when it is empty and required)."""
    if not raw:
        if required:
            raise JsonInvalid("request body must be a JSON object")
        return None
    return loads(raw)


def dumps(body: Any) -> bytes:
    """Compact JSON bytes of an answer."""
    return json.dumps(body, separators=(",", ":")).encode()


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:32]} is out of range (Infinity is not valid JSON)")
    return value


def _no_constants(name: str) -> Any:
    # NaN and Infinity are not JSON; Python's parser accepts them unless told not to
    raise ValueError(f"{name} is not valid JSON")
