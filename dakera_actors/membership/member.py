"""Members, their states, and the one rule that decides which news about a member wins.

Every piece of membership news is an :class:`Update`: "member X is <state> at incarnation i".
Only X itself raises its incarnation (to refute a suspicion or announce new metadata), so
incarnations order X's own claims, and :func:`supersedes` orders the rest:

- a higher incarnation always wins;
- at the same incarnation, the worse news wins: Dead/Left over Suspect over Alive
  (so a refutation must come with a strictly higher incarnation);
- Left is final for that incarnation: a node that leaves and comes back does so with a higher one.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from ..wirebounds import (
    ADDRESS,
    ID_MAX,
    NODE_ID,
    SEQ,
    TOKEN,
    URL,
    VERSION,
    Bool,
    Fixed,
    Keys,
    OneOf,
    Opaque,
    Text,
    bound,
)


class MemberState(enum.IntEnum):
    """Ordered by how bad the news is: at one incarnation, a higher value wins."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3

    @property
    def label(self) -> str:
        """The API's spelling: Alive, Suspect, Dead, Left."""
        return self.name.capitalize()


#: the wire bounds of an Update's fields (see :mod:`dakera_actors.wirebounds`)
STATE = OneOf(frozenset(int(s) for s in MemberState))
#: member metadata: the keys this version reads are typed (a leader's map header is compared with
#: the installed map's key); keys from newer versions pass as small opaque values
META = Keys({"maintenance": Bool(), "map": Fixed((TOKEN, VERSION)), "archive_behind": Bool()},
            other=Opaque(max_depth=4, max_items=64))


@attrs.frozen
class Update:
    """One piece of membership news; also the unit of push-pull state exchange."""

    id: str = attrs.field(metadata=bound(NODE_ID))
    state: int = attrs.field(metadata=bound(STATE))  # a MemberState value (an int on the wire)
    incarnation: int = attrs.field(metadata=bound(SEQ))
    address: str = attrs.field(default="", metadata=bound(ADDRESS))  # gossip address
    api: str = attrs.field(default="", metadata=bound(URL))  # API URL
    meta: dict[str, Any] = attrs.field(factory=dict, metadata=bound(META))
    by: str = attrs.field(default="", metadata=bound(Text(ID_MAX)))  # who suspected/declared (for Suspect/Dead), for suspicion confirmations


@attrs.frozen
class Member:
    """What one node believes about one member."""

    id: str
    address: str
    api: str
    incarnation: int
    state: MemberState
    meta: dict[str, Any] = attrs.field(factory=dict)
    since: float = 0.0  # trio time of the last state change, on the node holding this view

    @property
    def alive(self) -> bool:
        return self.state == MemberState.ALIVE

    @property
    def reachable(self) -> bool:
        """Worth probing and gossiping to: not known to be gone."""
        return self.state in (MemberState.ALIVE, MemberState.SUSPECT)

    @property
    def maintenance(self) -> bool:
        return bool(self.meta.get("maintenance", False))

    @property
    def archive_behind(self) -> bool:
        """Whether this member's cold-tier archive is behind (it says so in its metadata)."""
        return bool(self.meta.get("archive_behind", False))

    def as_update(self) -> Update:
        return Update(id=self.id, state=int(self.state), incarnation=self.incarnation,
                      address=self.address, api=self.api, meta=self.meta)


def supersedes(current: Member | None, update: Update) -> bool:
    """True when ``update`` is newer news than what ``current`` says about the same member."""
    if current is None:
        return True
    if update.incarnation != current.incarnation:
        return update.incarnation > current.incarnation
    return update.state > current.state
