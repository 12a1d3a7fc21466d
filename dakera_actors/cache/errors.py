"""The cache's one error: callers go on without the cache (forward the read, wait out the lease)."""

from __future__ import annotations


class CacheUnavailable(Exception):
    """Redis did not answer in time, refused, or is not configured."""
