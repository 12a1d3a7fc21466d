"""The one JSON error shape, ``{"error": "<what>", "code": "<CODE>"}``, and its status codes.

Codes are the ones the official ``dakera`` SDK knows, so its exceptions carry a useful ``code``.
"""

from __future__ import annotations

from typing import Any

DEFAULT_CODES = {
    400: "INVALID_REQUEST",
    401: "AUTHENTICATION_REQUIRED",
    403: "INSUFFICIENT_SCOPE",
    404: "ROUTE_NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    501: "NOT_IMPLEMENTED",
    503: "SERVICE_UNAVAILABLE",
    504: "QUERY_TIMEOUT",
}


class ApiError(Exception):
    """Raise anywhere in a route: becomes a JSON error response, never a traceback."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or DEFAULT_CODES.get(status, "ERROR")
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "code": self.code, **self.extra}


def bad_request(message: str, **extra: Any) -> ApiError:
    return ApiError(400, message, **extra)
