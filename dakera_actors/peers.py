"""Asking another member: one request/reply by member id, or the same message to many at once.

Every service that talks to other members (routing, operations, the replicator, the shard-map
actor, the lease actor) goes through this layer: it resolves a member id to its gossip address
through the membership view, refuses at once a member that is unknown or known to be down, and
turns every way a request can fail (connect, timeout, a closed stream, an error reply) into one
:class:`PeerUnavailable`. A service decides what a failure means for its protocol; it never
handles transport errors itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import trio

from .endpoint import Endpoint, MessageStream, RemoteError
from .membership.member import Member
from .transport import TransportError


class PeerUnavailable(Exception):
    """A member could not be asked: unknown, known down, or the request failed."""

    def __init__(self, member_id: str, reason: str, *, unknown: bool = False, asked: bool = False) -> None:
        super().__init__(f"member {member_id} {reason}")
        self.member_id = member_id
        self.reason = reason
        #: True when the member is not in the membership view at all (not merely down)
        self.unknown = unknown
        #: True when the request went out (the member failed to answer); False when it was
        #: refused here, the member being unknown or known to be down
        self.asked = asked


class Peers:
    """Member-addressed requests over the endpoint; ``members`` reads the current view."""

    def __init__(self, endpoint: Endpoint, members: Callable[[], Mapping[str, Member]], *,
                 self_id: str, timeout: float) -> None:
        self.endpoint = endpoint
        self._members = members
        self.self_id = self_id
        self.timeout = timeout

    def member(self, member_id: str) -> Member | None:
        return self._members().get(member_id)

    def members(self) -> Mapping[str, Member]:
        return self._members()

    def reachable(self) -> list[str]:
        """Ids of the other members worth asking (Alive or Suspect), sorted."""
        return sorted(m.id for m in self._members().values() if m.reachable and m.id != self.self_id)

    def _address(self, member_id: str, *, down_ok: bool) -> str:
        member = self.member(member_id)
        if member is None:
            raise PeerUnavailable(member_id, "is not a member this node knows", unknown=True)
        if not member.reachable and not down_ok:
            raise PeerUnavailable(member_id, f"is {member.state.label}")
        return member.address

    async def request(self, member_id: str, msg: object, *, timeout: float | None = None,
                      down_ok: bool = False) -> Any:
        """Send ``msg`` to ``member_id`` and return its reply message (not the envelope)."""
        address = self._address(member_id, down_ok=down_ok)
        try:
            reply = await self.endpoint.request(address, msg, timeout=timeout if timeout is not None else self.timeout)
        except (TransportError, RemoteError) as exc:
            raise PeerUnavailable(member_id, f"did not answer: {exc}", asked=True) from None
        return reply.message

    async def open_stream(self, member_id: str, first: object, *, timeout: float | None = None) -> MessageStream:
        """A stream to ``member_id`` opened with ``first`` (for replies longer than one frame)."""
        address = self._address(member_id, down_ok=False)
        try:
            return await self.endpoint.open_stream(address, first,
                                                   timeout=timeout if timeout is not None else self.timeout)
        except (TransportError, RemoteError) as exc:
            raise PeerUnavailable(member_id, f"did not answer: {exc}") from None

    async def receive_until(self, member_id: str, first: object, done: Callable[[Any], bool], *,
                            timeout: float | None = None) -> list[Any]:
        """Open a stream to ``member_id`` with ``first`` and read its replies until one for which
        ``done`` is true (included); a failure anywhere on the way is a :class:`PeerUnavailable`."""
        replies: list[Any] = []
        stream = await self.open_stream(member_id, first, timeout=timeout)
        try:
            async with stream:
                while not replies or not done(replies[-1]):
                    replies.append((await stream.receive()).message)
        except (TransportError, RemoteError) as exc:
            raise PeerUnavailable(member_id, f"stream failed: {exc}") from None
        return replies

    async def gather(self, member_ids: Iterable[str], msg: object | Callable[[str], object], *,
                     timeout: float | None = None) -> dict[str, Any]:
        """Ask every member in ``member_ids`` at once (``msg`` may be a function of the id); each
        maps to its reply message or to the :class:`PeerUnavailable` that says why there is none."""
        out: dict[str, Any] = {}

        async def one(member_id: str) -> None:
            message = msg(member_id) if callable(msg) else msg
            try:
                out[member_id] = await self.request(member_id, message, timeout=timeout)
            except PeerUnavailable as exc:
                out[member_id] = exc

        async with trio.open_nursery() as nursery:
            for member_id in dict.fromkeys(member_ids):
                nursery.start_soon(one, member_id)
        return out

    async def send(self, member_id: str, msg: object) -> bool:
        """One datagram (gossip, lease) to ``member_id``; False when its address is unknown."""
        member = self.member(member_id)
        if member is None or member_id == self.self_id:
            return False
        await self.endpoint.send(member.address, msg)
        return True
