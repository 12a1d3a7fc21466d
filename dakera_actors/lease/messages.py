"""The lease's wire messages. Tags are protocol: never reuse or rename one."""

from __future__ import annotations

import attrs

from ..wire import message


@message("lease.request")
@attrs.frozen
class LeaseRequest:
    """Grant me (the sender) a lease of ``ttl`` seconds under ``token``."""

    token: int
    ttl: float
    renew: bool = False
    config_version: int = 0
    bootstrap: list[str] = attrs.field(factory=list)  # the proposed first voters, before any config
    voters: list[str] = attrs.field(factory=list)  # the candidate's configuration (version above)


@message("lease.grant")
@attrs.frozen
class LeaseGrant:
    token: int
    granted: bool
    highest: int  # the highest token this voter has seen: a refused candidate learns to outbid it
    reason: str = ""


@message("lease.release")
@attrs.frozen
class LeaseRelease:
    """A candidate that did not reach quorum gives back the grant it got under ``token``."""

    token: int


@message("lease.announce")
@attrs.frozen
class LeaseAnnounce:
    """The holder's heartbeat to every member: who leads, under which token, for how long."""

    token: int
    remaining: float
    voters: list[str] = attrs.field(factory=list)
    config_version: int = 0


@message("lease.config")
@attrs.frozen
class ConfigCommit:
    """The leader's new voter set, fenced by its token."""

    token: int
    voters: list[str]
    version: int


@message("lease.config-ack")
@attrs.frozen
class ConfigAck:
    version: int


@message("lease.prevote")
@attrs.frozen
class LeasePreVote:
    """Would you grant me (the sender) a lease under ``token``? Binds nobody: the voter promises
    nothing and records nothing, and the candidate has not persisted ``token``. Only a candidate
    that *hears* a quorum of yeses starts the real campaign, so a node that cannot receive never
    holds voters or burns tokens. Fields as in :class:`LeaseRequest`."""

    token: int
    ttl: float
    config_version: int = 0
    bootstrap: list[str] = attrs.field(factory=list)
    voters: list[str] = attrs.field(factory=list)


@message("lease.prevote-reply")
@attrs.frozen
class LeasePreVoteReply:
    token: int
    granted: bool
    highest: int  # as in LeaseGrant: a refused candidate learns the token to outbid
    reason: str = ""
