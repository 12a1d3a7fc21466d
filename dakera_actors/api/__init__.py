"""The HTTP facade."""

from .app import create_app, json_body, json_response
from .errors import ApiError, bad_request

__all__ = ["ApiError", "bad_request", "create_app", "json_body", "json_response"]
