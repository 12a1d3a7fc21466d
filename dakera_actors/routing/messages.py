"""The messages of a forwarded request and the one reply every forwarded request or operator
command gets: a status and a JSON body, as the node that served it answered."""

from __future__ import annotations

import json
from typing import Any

import attrs

from ..errors import ServiceError
from ..wire import message
from ..wirebounds import STATUS, URL, VERSION, Blob, Int, Mapping, Text, bound


@message("route.forward")
@attrs.frozen
class Forward:
    op: str = attrs.field(metadata=bound(Text(64)))
    body: bytes = attrs.field(metadata=bound(Blob()))
    args: dict[str, str] = attrs.field(metadata=bound(Mapping(Text(256), Text(65_536), max_len=64)))
    memory_id: str = attrs.field(default="", metadata=bound(Text()))
    agent: str = attrs.field(default="", metadata=bound(Text()))  # the agent named in the path, for the agents/... routes
    hops: int = attrs.field(default=0, metadata=bound(Int(0, 64)))
    map_version: int = attrs.field(default=0, metadata=bound(VERSION))
    #: set on writes by the node that took them from HTTP: the owner applies each id once
    request_id: str = attrs.field(default="", metadata=bound(Text(128)))


@message("route.reply")
@attrs.frozen
class Reply:
    """The answer to a forwarded request or an operator command: ``status`` and the JSON ``body``
    (an error's body when the status is not 200); ``owner`` is the API address of the node that
    served a forwarded request (empty for a command)."""

    status: int = attrs.field(metadata=bound(STATUS))
    body: bytes = attrs.field(metadata=bound(Blob()))
    owner: str = attrs.field(default="", metadata=bound(URL))

    @classmethod
    def of_error(cls, err: ServiceError, owner: str = "") -> Reply:
        """The reply that carries a refused request's status and error body to the asker."""
        return cls(err.status, json.dumps(err.body()).encode(), owner)

    def error(self) -> ServiceError:
        """The refusal this reply carries (its status is not 200), as the asker re-raises it."""
        try:
            body: Any = json.loads(self.body) if self.body else None
        except ValueError:
            body = None
        return ServiceError.from_reply(self.status, body)
