"""The HTTP facade.

Its names are loaded on first use: the domain imports :mod:`.errors` (Quart-free), and that must
not pull Quart in through this package's ``__init__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .errors import ApiError, bad_request
    from .responses import json_body, json_response

__all__ = ["ApiError", "bad_request", "create_app", "json_body", "json_response"]

_HOMES = {"ApiError": "errors", "bad_request": "errors", "create_app": "app", "json_body": "responses",
          "json_response": "responses"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{home}"), name)
