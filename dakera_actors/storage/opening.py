"""The node's object store, from its configuration, checked at start.

``DAKERA_STORAGE=filesystem`` (the embedded default) lays objects out as files under
``DAKERA_STORAGE_PATH`` (``<data dir>/objects`` when unset); ``DAKERA_STORAGE=s3`` talks to an
S3-compatible endpoint. Either way the node writes, reads back and deletes one probe object under
``probe/`` before it serves, so a wrong path, endpoint, bucket or key is a one-line start error
naming the variable (exit 2), not a failure found hours later.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..wal.log import DIR_MODE
from .filesystem import FileObjectStore
from .objects import ObjectStore, ObjectStoreError, ObjectStoreUnusable

if TYPE_CHECKING:
    from ..config import Config
    from .s3 import S3Settings

PROBE_PREFIX = "probe"
#: the filesystem store's directory under the data dir when DAKERA_STORAGE_PATH is unset
OBJECTS_DIR = "objects"


def s3_settings(config: Config) -> S3Settings:
    from .s3 import S3Settings

    assert config.s3_endpoint is not None  # Config requires DAKERA_S3_ENDPOINT with DAKERA_STORAGE=s3
    return S3Settings(config.s3_bucket, config.s3_endpoint, config.s3_region, config.s3_access_key,
                      config.s3_secret_key, config.s3_prefix)


def filesystem_root(config: Config, data_dir: Path | str) -> Path:
    """Where ``DAKERA_STORAGE=filesystem`` keeps its objects."""
    return Path(config.storage_path) if config.storage_path is not None else Path(data_dir) / OBJECTS_DIR


def location_setting(config: Config) -> str:
    """The variable that says where objects go: the one to fix when the store cannot be used."""
    if config.storage == "s3":
        return "DAKERA_STORAGE"  # an S3 failure's code usually names a sharper one (see BLAME)
    return "DAKERA_STORAGE_PATH" if config.storage_path is not None else "DAKERA_DATA_DIR"


def describe(config: Config, data_dir: Path | str) -> str:
    """Where objects go, for logs and the admin views: a directory, or ``s3://bucket/prefix``
    (never an endpoint's credentials)."""
    if config.storage == "s3":
        return f"s3://{config.s3_bucket}/{config.s3_prefix}"
    return str(filesystem_root(config, data_dir))


@asynccontextmanager
async def open_object_store(config: Config, data_dir: Path | str) -> AsyncIterator[ObjectStore]:
    """The object store ``config`` names, closed when the block ends. ``data_dir`` is the node's,
    under which the filesystem store lives unless ``DAKERA_STORAGE_PATH`` says otherwise."""
    if config.storage == "s3":
        from .s3 import open_s3_store  # aiobotocore and trio-asyncio load only when S3 is used

        async with open_s3_store(s3_settings(config)) as store:
            yield store
        return
    root = filesystem_root(config, data_dir)
    try:
        # 0700 like the data dir: these are the node's memories (an existing directory keeps the
        # mode its operator gave it, e.g. one shared by the nodes of a local cluster)
        root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise ObjectStoreUnusable(location_setting(config),
                                  f"cannot create the object directory {root}: {exc.strerror or exc}") from None
    if not root.is_dir():
        raise ObjectStoreUnusable(location_setting(config), f"{root} is not a directory")
    yield FileObjectStore(root)


#: the setting an S3 error code points at (anything else: DAKERA_STORAGE)
BLAME = {
    "unreachable": "DAKERA_S3_ENDPOINT",
    "NoSuchBucket": "DAKERA_S3_BUCKET",
    **dict.fromkeys(("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden", "403",
                     "InvalidToken", "ExpiredToken"), "DAKERA_S3_ACCESS_KEY"),
}


def _blame(exc: ObjectStoreError, fallback: str = "DAKERA_STORAGE") -> str:
    """Which setting an object-store error points at, by its code (never its message text)."""
    return BLAME.get(exc.code or "", fallback)


async def probe(store: ObjectStore, node_id: str, *, setting: str = "DAKERA_STORAGE") -> float:
    """Write, read back and delete one object under ``probe/``; its seconds, or
    :class:`ObjectStoreUnusable` naming the setting to fix (``setting`` when the error's code
    does not point at a sharper one)."""
    key = f"{PROBE_PREFIX}/{node_id or 'node'}-{secrets.token_hex(4)}"
    body = secrets.token_bytes(32)
    started = time.perf_counter()
    try:
        await store.put(key, body)
        back = await store.get(key)
        await store.delete(key)
    except ObjectStoreError as exc:
        problem = " ".join(str(exc).split())[:300]
        raise ObjectStoreUnusable(_blame(exc, setting),
                                  f"the object store refused a probe write and read: {problem}") from None
    if back != body:
        raise ObjectStoreUnusable(setting, "the object store returned other bytes than were written")
    return time.perf_counter() - started


#: the backup store's directory under the data dir when DAKERA_BACKUP_PATH is unset
BACKUPS_DIR = "backups"


def describe_backups(config: Config, data_dir: Path | str) -> str:
    """Where backup bundles go, for records and logs (never credentials)."""
    if config.backup_storage == "s3":
        return f"s3://{config.backup_s3_bucket}/{config.backup_s3_prefix}".rstrip("/")
    return str(Path(config.backup_path) if config.backup_path is not None else Path(data_dir) / BACKUPS_DIR)


@asynccontextmanager
async def open_backup_store(config: Config, data_dir: Path | str) -> AsyncIterator[ObjectStore]:
    """The store backup bundles go to (``DAKERA_BACKUP_STORAGE``), closed when the block ends: a
    directory (by default under the data dir: this node's own) or its own S3 bucket, with the same
    credentials as the cold tier's."""
    if config.backup_storage == "s3":
        from .s3 import S3Settings, open_s3_store

        assert config.backup_s3_endpoint is not None  # Config requires it with DAKERA_BACKUP_STORAGE=s3
        settings = S3Settings(config.backup_s3_bucket, config.backup_s3_endpoint, config.backup_s3_region,
                              config.s3_access_key, config.s3_secret_key, config.backup_s3_prefix)
        async with open_s3_store(settings) as store:
            yield store
        return
    root = Path(describe_backups(config, data_dir))
    setting = "DAKERA_BACKUP_PATH" if config.backup_path is not None else "DAKERA_DATA_DIR"
    try:
        root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before the node serves
    except OSError as exc:
        raise ObjectStoreUnusable(setting, f"cannot create the backup directory {root}: {exc.strerror or exc}") from None
    yield FileObjectStore(root)
