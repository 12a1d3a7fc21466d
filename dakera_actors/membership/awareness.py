"""Lifeguard's local health awareness: a node that misses its own acks trusts itself less.

The score rises when this node's probes fail without anyone else confirming (no nacks came
back: the problem is likely here), and when others suspect this node; it falls with every
probe that succeeds. Probe intervals and timeouts are multiplied by ``score + 1``, so an
overloaded or badly connected node slows down instead of accusing healthy peers.
"""

from __future__ import annotations


class Awareness:
    def __init__(self, max_multiplier: int) -> None:
        self.max = max(1, max_multiplier)
        self.score = 0

    def apply(self, delta: int) -> None:
        self.score = min(self.max - 1, max(0, self.score + delta))

    def scale(self, duration: float) -> float:
        return duration * (self.score + 1)
