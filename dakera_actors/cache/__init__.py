"""The L1.5 cache: a shared read cache in Redis (issue 18). :mod:`.client` is the Trio-facing
Redis client (bounded calls, one error, a health flag)."""
