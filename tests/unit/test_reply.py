"""One reply for a forwarded request and an operator command: a refusal crosses nodes intact."""

from __future__ import annotations

import json

from dakera_actors.errors import NotFound, ServiceError, Unavailable
from dakera_actors.routing.messages import Reply
from dakera_actors.wire import decode_frame, encode_frame


def test_a_refusal_keeps_its_status_message_and_code_across_a_reply() -> None:
    for err in (Unavailable("shard 3 is moving"), NotFound("no member 'x'", code="NOT_FOUND"),
                ServiceError("boom", status=500)):
        reply = Reply.of_error(err, owner="http://owner:3300")
        assert reply.status == err.status and reply.owner == "http://owner:3300"
        assert json.loads(reply.body) == err.body()
        back = decode_frame(encode_frame(reply, "n1"), max_size=1 << 20).message.error()
        assert (back.status, back.message, back.code) == (err.status, err.message, err.code)


def test_a_reply_without_a_readable_body_is_still_an_error_with_its_status() -> None:
    for body in (b"", b"not json", b"[1, 2]"):
        err = Reply(503, body).error()
        assert (err.status, err.message, err.code) == (503, "failed", "SERVICE_UNAVAILABLE")
