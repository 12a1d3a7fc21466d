"""Shard placement and the shard map (issue 6, in progress)."""
