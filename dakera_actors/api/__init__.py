"""The HTTP facade."""

from .app import create_app
from .errors import ApiError, bad_request
from .responses import json_body, json_response

__all__ = ["ApiError", "bad_request", "create_app", "json_body", "json_response"]
