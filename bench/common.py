"""Helpers the bench scripts share: plain tables, percentiles and loopback ports."""

from __future__ import annotations

from dakera_actors.testing.cluster import free_port

__all__ = ["free_port", "percentile", "print_table"]


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values`` by rank (no interpolation); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Right-aligned columns, a dashed rule under the headers."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
