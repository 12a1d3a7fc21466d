"""Objects on S3-compatible storage (AWS S3, MinIO, moto ...) through aiobotocore.

aiobotocore is an asyncio library; the node is Trio. :func:`open_s3_store` opens the client on the
node's asyncio loop (:mod:`dakera_actors.runtime.aio`, the one Trio-asyncio bridge), and every call
of :class:`S3ObjectStore` is a plain Trio call that runs the asyncio coroutine through it. The
rest of the node only sees the :class:`~dakera_actors.storage.objects.ObjectStore` interface.

``prefix`` is prepended to every key, so several clusters can share one bucket.
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
from aiobotocore.session import get_session
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from ..runtime.aio import open_asyncio_loop, run_aio
from .objects import (
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    ObjectStoreError,
    byte_range,
    check_key,
    check_prefix,
)

T = TypeVar("T")
NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict"}


@attrs.frozen
class S3Settings:
    bucket: str
    endpoint: str  # the URL of the S3 service (DAKERA_S3_ENDPOINT, required with s3)
    region: str = "us-east-1"
    access_key: str | None = None  # None: the usual AWS chain (environment, profile, instance role)
    secret_key: str | None = None
    prefix: str = ""
    timeout: float = 10.0  # connect and read, seconds


class S3ObjectStore:
    """Built by :func:`open_s3_store`; valid inside its block."""

    conditional = True  # PutObject with If-None-Match: * (AWS since 2024, MinIO, moto)

    def __init__(self, client: Any, settings: S3Settings) -> None:
        self._client = client
        self.settings = settings
        self._prefix = settings.prefix.strip("/") + "/" if settings.prefix.strip("/") else ""

    async def _run(self, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            return await run_aio(fn)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in NOT_FOUND:
                raise ObjectNotFound(str(exc), code=code) from None
            if code in PRECONDITION:
                raise ObjectExists(str(exc), code=code) from None
            raise ObjectStoreError(f"S3 {code or 'error'}: {exc}", code=code or None) from None
        except (BotoCoreError, OSError) as exc:
            raise ObjectStoreError(f"S3 unreachable: {exc}", code="unreachable") from None

    def _key(self, key: str) -> str:
        return self._prefix + check_key(key)

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        full = self._key(key)
        await self._run(lambda: self._client.put_object(Bucket=self.settings.bucket, Key=full, Body=bytes(data),
                                                        **extra))

    async def get(self, key: str, *, start: int | None = None, end: int | None = None) -> bytes:
        full = self._key(key)
        byte_range(b"", start, end)
        if end is not None and end <= (start or 0):
            await self._run(lambda: self._client.head_object(Bucket=self.settings.bucket, Key=full))
            return b""  # an empty range of an object that exists
        ranged = {} if start is None and end is None else {
            "Range": f"bytes={start or 0}-{'' if end is None else end - 1}"}

        async def fetch() -> bytes:
            answer = await self._client.get_object(Bucket=self.settings.bucket, Key=full, **ranged)
            async with answer["Body"] as body:
                data: bytes = await body.read()
                return data

        try:
            return await self._run(fetch)
        except ObjectStoreError as exc:
            if exc.code == "InvalidRange":
                return b""  # a range that starts past the end: nothing there, as a slice would say
            raise

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        check_prefix(prefix)
        found: builtins.list[ObjectInfo] = []
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Bucket": self.settings.bucket, "Prefix": self._prefix + prefix}
            if token:
                args["ContinuationToken"] = token
            page = await self._run(functools.partial(self._client.list_objects_v2, **args))
            found.extend(ObjectInfo(item["Key"][len(self._prefix):], int(item["Size"]))
                         for item in page.get("Contents", []))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return sorted(found, key=lambda info: info.key)

    async def delete(self, key: str) -> None:
        full = self._key(key)
        await self._run(lambda: self._client.delete_object(Bucket=self.settings.bucket, Key=full))


@asynccontextmanager
async def open_s3_store(settings: S3Settings) -> AsyncIterator[S3ObjectStore]:
    """An :class:`S3ObjectStore` for ``settings``, with its client, closed when the block ends, on
    the node's asyncio loop (trio-asyncio; opened here unless one is open). Nothing is sent until
    the first call."""
    async with open_asyncio_loop():
        session = get_session()
        client_cm = session.create_client(
            "s3", endpoint_url=settings.endpoint, region_name=settings.region,
            aws_access_key_id=settings.access_key, aws_secret_access_key=settings.secret_key,
            config=BotoConfig(connect_timeout=settings.timeout, read_timeout=settings.timeout,
                              retries={"max_attempts": 2}, s3={"addressing_style": "path"}))
        client = await run_aio(client_cm.__aenter__)
        try:
            yield S3ObjectStore(client, settings)
        finally:
            await run_aio(lambda: client_cm.__aexit__(None, None, None))
