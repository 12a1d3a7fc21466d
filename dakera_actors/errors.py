"""Domain errors: why a request is refused, raised by the store, routing and operations.

Each carries the reply status it stands for (the numbers are HTTP's, because that is what a
client finally sees and what a forwarded reply carries between nodes) and the error code the
official SDKs know. Nothing here imports the HTTP facade: ``api/`` maps these to responses.
"""

from __future__ import annotations

from typing import Any, ClassVar

#: the codes the official ``dakera`` SDK knows, so its exceptions carry a useful ``code``
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


class ServiceError(Exception):
    """A refused request: ``status`` (the reply status), a message, a code, extra JSON fields."""

    default_status: ClassVar[int] = 500

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status = status if status is not None else self.default_status
        self.message = message
        self.code = code or DEFAULT_CODES.get(self.status, "ERROR")
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The one JSON error shape: ``{"error": "<what>", "code": "<CODE>", ...}``."""
        return {"error": self.message, "code": self.code, **self.extra}

    @classmethod
    def from_reply(cls, status: int, body: Any) -> ServiceError:
        """Rebuild the error another node answered with (a forwarded request or operation)."""
        fields = body if isinstance(body, dict) else {}
        return ServiceError(str(fields.get("error", "failed")), status=status, code=fields.get("code"))


class InvalidRequest(ServiceError):
    """The request itself is wrong (400): a field, a body, a value."""

    default_status = 400


class NotFound(ServiceError):
    """What the request names does not exist (404)."""

    default_status = 404


class Conflict(ServiceError):
    """The request cannot apply in this node's state or mode (409)."""

    default_status = 409


class TooLarge(ServiceError):
    """The request or what it would produce is over a configured limit (413)."""

    default_status = 413


class Unavailable(ServiceError):
    """Cannot be served now; retrying shortly may succeed (503, with ``retry_after``)."""

    default_status = 503

    def __init__(self, message: str, *, retry_after: int = 1, **extra: Any) -> None:
        super().__init__(message, retry_after=retry_after, **extra)
