"""The cold tier: every shard's history archived on object storage, and restored from it."""
