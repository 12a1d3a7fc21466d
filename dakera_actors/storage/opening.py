"""The node's object store, from its configuration, checked at start.

``DAKERA_STORAGE=s3``: the node writes, reads back and deletes one probe object under its
prefix before it serves, so a wrong endpoint, bucket or key is a one-line start error naming the
variable (exit 2), not a failure found hours later. ``filesystem`` is a directory under the data
dir, which the WAL has already proven writable.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .filesystem import FileObjectStore
from .objects import ObjectStore, ObjectStoreError, ObjectStoreUnusable

if TYPE_CHECKING:
    from ..config import Config
    from .s3 import S3Settings

OBJECTS_DIR = "objects"
PROBE_PREFIX = "probe"


def s3_settings(config: Config) -> S3Settings:
    from .s3 import S3Settings

    return S3Settings(config.s3_bucket, config.s3_endpoint, config.s3_region, config.s3_access_key,
                      config.s3_secret_key, config.s3_prefix)


@asynccontextmanager
async def open_object_store(config: Config, data_dir: Path) -> AsyncIterator[ObjectStore]:
    """The object store ``config`` names (closed when the block ends)."""
    if config.storage == "s3":
        from .s3 import open_s3_store  # aiobotocore and trio-asyncio load only when S3 is used

        async with open_s3_store(s3_settings(config)) as store:
            yield store
    else:
        yield FileObjectStore(data_dir / OBJECTS_DIR)


def _blame(problem: str) -> str:
    """Which setting an S3 error points at."""
    if "unreachable" in problem:
        return "DAKERA_S3_ENDPOINT"
    if "NoSuchBucket" in problem:
        return "DAKERA_S3_BUCKET"
    if any(code in problem for code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
                                         "Forbidden", "403", "InvalidToken", "ExpiredToken")):
        return "DAKERA_S3_ACCESS_KEY"
    return "DAKERA_STORAGE"


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
        raise ObjectStoreUnusable(_blame(problem), f"the object store refused a probe write and read: {problem}") \
            from None
    if back != body:
        raise ObjectStoreUnusable("DAKERA_STORAGE", "the object store returned other bytes than were written")
    return time.perf_counter() - started
