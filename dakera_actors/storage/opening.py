"""The node's object store, from its configuration, checked at start.

``DAKERA_STORAGE=s3``: the node writes, reads back and deletes one probe object under its
prefix before it serves, so a wrong endpoint, bucket or key is a one-line start error naming the
variable (exit 2), not a failure found hours later.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from .objects import ObjectStore, ObjectStoreError, ObjectStoreUnusable

if TYPE_CHECKING:
    from ..config import Config
    from .s3 import S3Settings

PROBE_PREFIX = "probe"


def s3_settings(config: Config) -> S3Settings:
    from .s3 import S3Settings

    assert config.s3_endpoint is not None  # Config requires DAKERA_S3_ENDPOINT with DAKERA_STORAGE=s3
    return S3Settings(config.s3_bucket, config.s3_endpoint, config.s3_region, config.s3_access_key,
                      config.s3_secret_key, config.s3_prefix)


@asynccontextmanager
async def open_object_store(config: Config) -> AsyncIterator[ObjectStore]:
    """The S3 object store ``config`` names (``DAKERA_STORAGE=s3``), closed when the block ends."""
    assert config.storage == "s3", "only DAKERA_STORAGE=s3 opens an object store"
    from .s3 import open_s3_store  # aiobotocore and trio-asyncio load only when S3 is used

    async with open_s3_store(s3_settings(config)) as store:
        yield store


#: the setting an S3 error code points at (anything else: DAKERA_STORAGE)
BLAME = {
    "unreachable": "DAKERA_S3_ENDPOINT",
    "NoSuchBucket": "DAKERA_S3_BUCKET",
    **dict.fromkeys(("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden", "403",
                     "InvalidToken", "ExpiredToken"), "DAKERA_S3_ACCESS_KEY"),
}


def _blame(exc: ObjectStoreError) -> str:
    """Which setting an object-store error points at, by its code (never its message text)."""
    return BLAME.get(exc.code or "", "DAKERA_STORAGE")


async def probe(store: ObjectStore, node_id: str) -> float:
    """Write, read back and delete one object under ``probe/``; its seconds, or
    :class:`ObjectStoreUnusable` naming the setting to fix."""
    key = f"{PROBE_PREFIX}/{node_id or 'node'}-{secrets.token_hex(4)}"
    body = secrets.token_bytes(32)
    started = time.perf_counter()
    try:
        await store.put(key, body)
        back = await store.get(key)
        await store.delete(key)
    except ObjectStoreError as exc:
        problem = " ".join(str(exc).split())[:300]
        raise ObjectStoreUnusable(_blame(exc), f"the object store refused a probe write and read: {problem}") \
            from None
    if back != body:
        raise ObjectStoreUnusable("DAKERA_STORAGE", "the object store returned other bytes than were written")
    return time.perf_counter() - started
