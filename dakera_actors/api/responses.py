"""JSON in and out: the response helpers every route uses."""

from __future__ import annotations

import json
import math
from typing import Any

from quart import Response, request

from .errors import ApiError, bad_request


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status=status,
                    content_type="application/json", headers=headers)


def error_response(err: ApiError) -> Response:
    headers = {}
    if err.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="dakera"'
    if "retry_after" in err.extra:
        headers["Retry-After"] = str(err.extra["retry_after"])  # the SDK waits this long, then retries
    return json_response(err.body(), err.status, headers or None)


async def json_body(*, required: bool = True) -> Any:
    """The request's JSON body, or a 400 that says what is wrong with it."""
    return parse_json(await request_bytes(), required=required)


async def request_bytes() -> bytes:
    """The raw request body (bounded by MAX_CONTENT_LENGTH)."""
    data = await request.get_data(cache=True, as_text=False)
    return data if isinstance(data, bytes) else data.encode()


def parse_json(raw: bytes, *, required: bool = True) -> Any:
    """Strict JSON: no NaN/Infinity, no lone surrogates; a 400 ApiError otherwise."""
    if not raw:
        if required:
            raise bad_request("request body must be a JSON object")
        return None
    try:
        body = json.loads(raw, parse_constant=_no_constants, parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad_request(f"malformed JSON: {exc}") from None
    try:
        # a \ud800 escape parses into a lone surrogate, which no UTF-8 log can store
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request("malformed JSON: a string holds an unpaired UTF-16 surrogate escape") from None
    return body


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:32]} is out of range (Infinity is not valid JSON)")
    return value


def _no_constants(name: str) -> Any:
    # NaN and Infinity are not JSON; Python's parser accepts them unless told not to
    raise ValueError(f"{name} is not valid JSON")
