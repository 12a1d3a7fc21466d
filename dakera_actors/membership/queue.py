"""Infection-style dissemination: which updates ride on the next packet.

Each update is retransmitted about ``retransmit_mult * ceil(log10(n + 1))`` times, enough for
it to reach every member with high probability (SWIM, section 4.1), then dropped. Packets carry
the least-sent updates first and, among equals, the newest; a newer update about a member
replaces the queued one, so stale news never crowds out fresh news.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs

from .member import Update


@attrs.define
class _Queued:
    update: Update
    size: int
    order: int  # higher = enqueued later
    boost: int = 1  # multiplies the retransmit limit
    transmits: int = 0


class BroadcastQueue:
    def __init__(self, retransmit_mult: int) -> None:
        self.retransmit_mult = retransmit_mult
        self._by_member: dict[str, _Queued] = {}
        self._order = 0

    def __len__(self) -> int:
        return len(self._by_member)

    def enqueue(self, update: Update, size: int, *, boost: int = 1) -> None:
        """Queue ``update`` (``size`` encoded bytes), replacing older news about the same member.

        ``boost`` multiplies how often it is retransmitted: a node's news about itself (above
        all a refutation) is the one update nobody else can re-create if every copy is lost.
        """
        self._order += 1
        self._by_member[update.id] = _Queued(update, size, self._order, boost)

    def limit(self, members: int) -> int:
        return self.retransmit_mult * max(1, math.ceil(math.log10(members + 1)))

    def take(self, budget: int, members: int, *, skip: Callable[[Update], bool] | None = None) -> list[Update]:
        """Updates that fit in ``budget`` bytes, counting one transmission for each."""
        chosen: list[Update] = []
        limit = self.limit(members)
        for item in sorted(self._by_member.values(), key=lambda q: (q.transmits, -q.order)):
            if item.size > budget:
                continue
            if skip is not None and skip(item.update):
                continue
            budget -= item.size
            chosen.append(item.update)
            item.transmits += 1
            if item.transmits >= limit * item.boost:
                del self._by_member[item.update.id]
        return chosen

    def pending(self) -> list[Update]:
        return [q.update for q in self._by_member.values()]
