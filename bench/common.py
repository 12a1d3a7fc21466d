"""Helpers the bench scripts share: plain tables and loopback ports."""

from __future__ import annotations

from dakera_actors.testing.cluster import free_port

__all__ = ["free_port", "print_table"]


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Right-aligned columns, a dashed rule under the headers."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
