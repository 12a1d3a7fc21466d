"""The lease's wire messages. Tags are protocol: never reuse or rename one."""

from __future__ import annotations

import attrs

from ..wire import message
from ..wirebounds import MEMBERS, REASON, SECONDS, TOKEN, VERSION, bound


@message("lease.request")
@attrs.frozen
class LeaseRequest:
    """Grant me (the sender) a lease of ``ttl`` seconds under ``token``."""

    token: int = attrs.field(metadata=bound(TOKEN))
    ttl: float = attrs.field(metadata=bound(SECONDS))
    renew: bool = False
    config_version: int = attrs.field(default=0, metadata=bound(VERSION))
    #: the proposed first voters, before any config
    bootstrap: list[str] = attrs.field(factory=list, metadata=bound(MEMBERS))
    voters: list[str] = attrs.field(factory=list, metadata=bound(MEMBERS))  # the candidate's configuration (version above)


@message("lease.grant")
@attrs.frozen
class LeaseGrant:
    token: int = attrs.field(metadata=bound(TOKEN))
    granted: bool
    #: the highest token this voter has seen: a refused candidate learns to outbid it
    highest: int = attrs.field(metadata=bound(TOKEN))
    reason: str = attrs.field(default="", metadata=bound(REASON))


@message("lease.release")
@attrs.frozen
class LeaseRelease:
    """A candidate that did not reach quorum gives back the grant it got under ``token``."""

    token: int = attrs.field(metadata=bound(TOKEN))


@message("lease.announce")
@attrs.frozen
class LeaseAnnounce:
    """The holder's heartbeat to every member: who leads, under which token, for how long."""

    token: int = attrs.field(metadata=bound(TOKEN))
    remaining: float = attrs.field(metadata=bound(SECONDS))
    voters: list[str] = attrs.field(factory=list, metadata=bound(MEMBERS))
    config_version: int = attrs.field(default=0, metadata=bound(VERSION))


@message("lease.config")
@attrs.frozen
class ConfigCommit:
    """The leader's new voter set, fenced by its token."""

    token: int = attrs.field(metadata=bound(TOKEN))
    voters: list[str] = attrs.field(metadata=bound(MEMBERS))
    version: int = attrs.field(metadata=bound(VERSION))


@message("lease.config-ack")
@attrs.frozen
class ConfigAck:
    version: int = attrs.field(metadata=bound(VERSION))


@message("lease.prevote")
@attrs.frozen
class LeasePreVote:
    """Would you grant me (the sender) a lease under ``token``? Binds nobody: the voter promises
    nothing and records nothing, and the candidate has not persisted ``token``. Only a candidate
    that *hears* a quorum of yeses starts the real campaign, so a node that cannot receive never
    holds voters or burns tokens. Fields as in :class:`LeaseRequest`."""

    token: int = attrs.field(metadata=bound(TOKEN))
    ttl: float = attrs.field(metadata=bound(SECONDS))
    config_version: int = attrs.field(default=0, metadata=bound(VERSION))
    bootstrap: list[str] = attrs.field(factory=list, metadata=bound(MEMBERS))
    voters: list[str] = attrs.field(factory=list, metadata=bound(MEMBERS))


@message("lease.prevote-reply")
@attrs.frozen
class LeasePreVoteReply:
    token: int = attrs.field(metadata=bound(TOKEN))
    granted: bool
    #: as in LeaseGrant: a refused candidate learns the token to outbid
    highest: int = attrs.field(metadata=bound(TOKEN))
    reason: str = attrs.field(default="", metadata=bound(REASON))
