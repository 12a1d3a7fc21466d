"""Objects in a dict, with faults a simulation can inject: errors, slowness, an outage.

Time is Trio's (``trio.sleep``), so under ``MockClock`` a slow store costs no wall time.
"""

from __future__ import annotations

import attrs
import trio

from .objects import (
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    ObjectStoreError,
    byte_range,
    check_key,
    check_prefix,
)


@attrs.define
class StoreFaults:
    """What goes wrong: ``outage`` fails every call; ``fail_next`` fails that many calls;
    ``delay`` seconds are added to every call; ``calls`` counts them (faulty or not)."""

    outage: bool = False
    fail_next: int = 0
    delay: float = 0.0
    calls: int = 0


class MemoryObjectStore:
    conditional = True

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.faults = StoreFaults()

    async def _call(self) -> None:
        self.faults.calls += 1
        if self.faults.delay:
            await trio.sleep(self.faults.delay)
        else:
            await trio.lowlevel.checkpoint()
        if self.faults.outage:
            raise ObjectStoreError("object store unavailable (simulated outage)")
        if self.faults.fail_next > 0:
            self.faults.fail_next -= 1
            raise ObjectStoreError("object store error (simulated)")

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        check_key(key)
        await self._call()
        if if_absent and key in self.objects:
            raise ObjectExists(f"object {key} exists")
        self.objects[key] = bytes(data)

    async def get(self, key: str, *, start: int | None = None, end: int | None = None) -> bytes:
        check_key(key)
        byte_range(b"", start, end)
        await self._call()
        if key not in self.objects:
            raise ObjectNotFound(f"no object {key}")
        return byte_range(self.objects[key], start, end)

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        check_prefix(prefix)
        await self._call()
        return [ObjectInfo(k, len(v)) for k, v in sorted(self.objects.items()) if k.startswith(prefix)]

    async def delete(self, key: str) -> None:
        check_key(key)
        await self._call()
        self.objects.pop(key, None)
