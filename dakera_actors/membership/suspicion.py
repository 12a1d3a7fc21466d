"""Lifeguard's suspicion timer: starts long, shrinks as independent members confirm.

A single suspector may be the one with the bad network, so the timeout starts at ``max``;
each distinct member that independently suspects the same incarnation brings it down
logarithmically towards ``min``, reached after ``k`` confirmations. A false suspicion thus
has time to be refuted, while a real failure seen by many is declared fast.
"""

from __future__ import annotations

import math

import attrs


@attrs.define
class Suspicion:
    incarnation: int
    started: float
    k: int
    min_timeout: float
    max_timeout: float
    origin: str = ""  # the first accuser: its own word is not a confirmation
    confirmers: set[str] = attrs.Factory(set)

    def confirm(self, by: str) -> bool:
        """Count ``by`` as an independent confirmation; False if it is not a new one."""
        if not by or by == self.origin or by in self.confirmers or len(self.confirmers) >= self.k:
            return False
        self.confirmers.add(by)
        return True

    @property
    def timeout(self) -> float:
        if self.k < 1:
            return self.min_timeout
        fraction = math.log(len(self.confirmers) + 1) / math.log(self.k + 1)
        return max(self.min_timeout, self.max_timeout - (self.max_timeout - self.min_timeout) * fraction)

    @property
    def deadline(self) -> float:
        return self.started + self.timeout
