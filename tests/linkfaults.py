"""Who can send to whom in a discrete-event simulation: partitions, one-way cuts, deaf and mute
nodes. Shared by the lease simulator (tests/lease/sim.py) and the replication simulator
(tests/replication/sim.py)."""

from __future__ import annotations

from collections.abc import Iterable


class LinkFaults:
    """The network's faults between nodes, by id; no faults at first."""

    def __init__(self) -> None:
        self.groups: list[set[str]] = []  # a partition: nodes talk only inside their group
        self.cut: set[tuple[str, str]] = set()  # one-way cuts: (a, b) means a cannot reach b
        self.deaf: set[str] = set()  # these nodes send but receive nothing
        self.mute: set[str] = set()  # these nodes receive but send nothing

    def partition(self, *groups: Iterable[str]) -> None:
        self.groups = [set(g) for g in groups]

    def heal(self) -> None:
        self.groups, self.cut, self.deaf, self.mute = [], set(), set(), set()

    def can_talk(self, a: str, b: str) -> bool:
        """Does a message from ``a`` reach ``b``?"""
        if (a, b) in self.cut or a in self.mute or b in self.deaf:
            return False
        if not self.groups:
            return True
        ga = next((i for i, g in enumerate(self.groups) if a in g), -1)
        gb = next((i for i, g in enumerate(self.groups) if b in g), -1)
        return ga == gb
