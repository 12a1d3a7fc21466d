"""JSON in and out: the response helpers every route uses."""

from __future__ import annotations

import json
from typing import Any

from quart import Response, request

from .. import safejson
from ..errors import ServiceError


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status=status,
                    content_type="application/json", headers=headers)


def json_bytes_response(data: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A response of already-serialized JSON (serialized off the event loop when large)."""
    return Response(data, status=status, content_type="application/json", headers=headers)


def error_response(err: ServiceError) -> Response:
    headers = {}
    if err.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="dakera"'
    if err.status == 413:
        # the body was refused unread: the connection cannot carry another request after it
        headers["Connection"] = "close"
    if "retry_after" in err.extra:
        headers["Retry-After"] = str(err.extra["retry_after"])  # the SDK waits this long, then retries
    return json_response(err.body(), err.status, headers or None)


async def json_body(*, required: bool = True) -> Any:
    """The request's JSON body; a bad one raises :class:`~dakera_actors.safejson.JsonInvalid`,
    which the app answers with a 400 that says what is wrong with it."""
    return safejson.loads_body(await request_bytes(), required=required)


async def request_bytes() -> bytes:
    """The raw request body (bounded by MAX_CONTENT_LENGTH)."""
    data = await request.get_data(cache=True, as_text=False)
    return data if isinstance(data, bytes) else data.encode()

