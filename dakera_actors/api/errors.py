"""The facade's error: a :class:`~dakera_actors.errors.ServiceError` built from an HTTP status.

The JSON shape (``{"error": "<what>", "code": "<CODE>"}``) and the SDK's codes live with the
domain errors in :mod:`dakera_actors.errors`; the app turns any ``ServiceError`` raised below it
into that response. Routes raise ``ApiError`` for what only HTTP knows (a bad query string, an
unknown route); domain code raises the domain errors.
"""

from __future__ import annotations

from typing import Any

from ..errors import DEFAULT_CODES, ServiceError

__all__ = ["DEFAULT_CODES", "ApiError", "bad_request"]


class ApiError(ServiceError):
    """Raise anywhere in a route: becomes a JSON error response, never a traceback."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message, status=status, code=code, **extra)


def bad_request(message: str, **extra: Any) -> ApiError:
    return ApiError(400, message, **extra)
