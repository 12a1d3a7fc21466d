"""The RESP2 codec, pure: any reply split anywhere parses to the same value; anything that is not
RESP is a ProtocolError (never another exception, never a wrong value)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dakera_actors.cache.resp import (
    MAX_DEPTH,
    NEED_MORE,
    ProtocolError,
    ReplyError,
    ReplyParser,
    encode_command,
)


def encode_reply(value: Any) -> bytes:
    """The server's side, for the test: a value as Redis would send it."""
    if isinstance(value, ReplyError):
        return b"-" + str(value).encode() + b"\r\n"
    if isinstance(value, str):
        return b"+" + value.encode() + b"\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if value is None:
        return b"$-1\r\n"
    return b"*%d\r\n" % len(value) + b"".join(encode_reply(v) for v in value)


line_text = st.text(st.characters(blacklist_characters="\r\n", codec="utf-8"), max_size=30)
leaf = st.one_of(st.binary(max_size=200), st.integers(-2**63, 2**63 - 1), line_text, st.none(),
                 line_text.map(lambda t: ReplyError("ERR " + t)))
replies = st.recursive(leaf, lambda inner: st.lists(inner, max_size=6), max_leaves=30)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, ReplyError) or isinstance(b, ReplyError):
        return type(a) is type(b) and str(a) == str(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@settings(max_examples=300)
@given(st.lists(replies, min_size=1, max_size=4), st.data())
def test_any_split_of_a_stream_of_replies_parses_to_the_same_values(values: list[Any], data: st.DataObject) -> None:
    wire = b"".join(encode_reply(v) for v in values)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    parser = ReplyParser()
    got: list[Any] = []
    start = 0
    for cut in [*cuts, len(wire)]:
        parser.feed(wire[start:cut])
        start = cut
        while (reply := parser.next()) is not NEED_MORE:
            got.append(reply)
    assert len(got) == len(values) and all(same(g, v) for g, v in zip(got, values, strict=True))
    assert parser.pending == 0


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_random_bytes_parse_or_raise_protocol_error_only(wire: bytes) -> None:
    parser = ReplyParser()
    parser.feed(wire)
    try:
        while parser.next() is not NEED_MORE:
            pass
    except ProtocolError:
        pass


@pytest.mark.parametrize("wire", [b"*1\r\n" * (MAX_DEPTH + 1) + b":1\r\n", b"$-2\r\n", b": 1\r\n", b":+1\r\n",
                                  b"$ 3\r\nabc\r\n", b"+" + b"x" * 70_000])
def test_what_redis_never_sends_is_refused(wire: bytes) -> None:
    parser = ReplyParser()
    parser.feed(wire)
    with pytest.raises(ProtocolError):
        parser.next()


def test_an_incomplete_reply_waits_for_more_and_consumes_nothing() -> None:
    parser = ReplyParser()
    parser.feed(b"*2\r\n$3\r\nabc\r\n:4")
    assert parser.next() is NEED_MORE and parser.pending == 15
    parser.feed(b"2\r\n")
    assert parser.next() == [b"abc", 42] and parser.next() is NEED_MORE


def test_commands_refuse_what_has_no_redis_form() -> None:
    with pytest.raises(TypeError):
        encode_command("SET", "k", True)
    with pytest.raises(TypeError):
        encode_command("SET", "k", None)
    with pytest.raises(ValueError):
        encode_command()
    assert encode_command("INCRBYFLOAT", "k", 0.5) == b"*3\r\n$11\r\nINCRBYFLOAT\r\n$1\r\nk\r\n$3\r\n0.5\r\n"
    assert ReplyError("NOSCRIPT No matching script").kind == "NOSCRIPT"
