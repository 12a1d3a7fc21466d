"""Backup jobs asked of the leader over the peer transport: the command a node sends when a
backup or a restore arrives at it but runs on the leader (a shared backup store), the leader's
side that starts it, and the asking side that turns the reply back into the record or the error."""

from __future__ import annotations

import json
from typing import Any

import attrs

from ..endpoint import Endpoint, MessageStream
from ..errors import ServiceError, Unavailable
from ..peers import Peers, PeerUnavailable
from ..routing.messages import Reply
from ..wire import Envelope, message
from ..wirebounds import Blob, OneOf, bound
from .service import Backups

COMMAND_TIMEOUT = 60.0  # the leader checks a whole bundle before it answers a restore


@message("backup.job")
@attrs.frozen
class BackupJobCommand:
    """Start a job on the leader: ``create`` (the SDK's backup request) or ``restore`` (the
    restore's request as :meth:`Backups.restore` parsed it); answered with the job's record."""

    kind: str = attrs.field(metadata=bound(OneOf(frozenset({"create", "restore"}))))
    request: bytes = attrs.field(metadata=bound(Blob(1 << 20)))


def serve_backup_jobs(endpoint: Endpoint, backups: Backups) -> None:
    """Answer other nodes' :class:`BackupJobCommand` with ``backups`` (refused unless it leads)."""

    async def serve(envelope: Envelope, stream: MessageStream) -> None:
        command: BackupJobCommand = envelope.message
        try:
            reply = Reply(200, json.dumps(await backups.serve(command.kind, json.loads(command.request))).encode())
        except ServiceError as err:
            reply = Reply.of_error(err)
        except ValueError:
            reply = Reply.of_error(Unavailable("the backup command did not read"))
        await stream.send(reply)

    endpoint.on_stream(BackupJobCommand, serve)


def forwarder(peers: Peers) -> Any:
    """``forward(leader, kind, request)`` for :class:`Backups`: the leader's record, or its refusal."""

    async def forward(leader: str, kind: str, request: Any) -> Any:
        try:
            reply = await peers.request(leader, BackupJobCommand(kind, json.dumps(request).encode()),
                                        timeout=COMMAND_TIMEOUT)
        except PeerUnavailable as exc:
            raise Unavailable(f"the leader {leader} did not take the job ({exc}); retry") from None
        if not isinstance(reply, Reply):
            raise Unavailable(f"the leader {leader} answered with something else; retry")
        if reply.status != 200:
            raise reply.error()
        return json.loads(reply.body)

    return forward
