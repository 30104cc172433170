"""A real fake of the storage protocol for unit tests: objects in a dict, with the
S3 rules that matter (part numbering, minimum part size, CRC32C), fault injection and
counters for calls, GETs and concurrency. Shared by the backup and restore tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from asyncplug.errors import InputError, ObjectNotFound, StorageError
from asyncplug.pipeline import frames
from asyncplug.storage.base import Buffer, ObjectInfo, Storage, Upload

# fault(operation, part number or 0) -> an exception to raise, or None
Fault = Callable[[str, int], BaseException | None]


class MemoryUpload(Upload):
    def __init__(self, store: MemoryStorage, key: str, metadata: Mapping[str, str]) -> None:
        self.store, self.key, self.metadata = store, key, dict(metadata)
        self.parts: dict[int, bytes] = {}

    async def put_part(self, number: int, offset: int, data: Buffer, crc32c: int) -> None:
        store = self.store
        store.check("put_part", number)
        store.in_flight += 1
        store.max_in_flight = max(store.max_in_flight, store.in_flight)
        try:
            await asyncio.sleep(store.delay)
            # Checked after the wait: a buffer reused before put_part returned shows here.
            if frames.crc32c(data) != crc32c:
                raise StorageError(f"part {number}: bad CRC32C")
            self.parts[number] = bytes(data)
            store.part_sizes.setdefault(self.key, {})[number] = len(data)
            store.part_offsets.setdefault(self.key, {})[number] = offset
        finally:
            store.in_flight -= 1

    async def complete(self) -> None:
        self.store.check("complete", 0)
        numbers = sorted(self.parts)
        if numbers != list(range(1, len(numbers) + 1)):
            raise StorageError(f"parts {numbers} are not 1..n")
        for n in numbers[:-1]:
            if len(self.parts[n]) < self.store.min_part_size:
                raise StorageError(f"part {n} is too small ({len(self.parts[n])} bytes)")
        body = b"".join(self.parts[n] for n in numbers)
        self.store.objects[self.key] = (body, self.metadata)
        self.store.uploads.remove(self)
        self.store.calls.append("complete")

    async def abort(self) -> None:
        await asyncio.sleep(self.store.delay)
        if self in self.store.uploads:
            self.store.uploads.remove(self)
        self.store.aborted += 1


class MemoryStorage(Storage):
    """Objects in a dict; records calls, GETs, part sizes and concurrency; `fault` injects
    errors; `piece` cuts get_range results into chunks (exercising chunk-list slicing)."""

    name = "memory"

    def __init__(
        self,
        min_part_size: int = 1024,
        max_part_size: int = 5 * 1024**3,
        max_parts: int = 10_000,
        delay: float = 0.0,
        fault: Fault | None = None,
        piece: int | None = None,
    ) -> None:
        self.min_part_size = min_part_size
        self.max_part_size = max_part_size
        self.max_parts = max_parts
        self.delay = delay
        self.fault = fault
        self.piece = piece  # get_range hands back chunks of this size (None: one chunk)
        self.gets: list[tuple[str, int, int]] = []
        self.objects: dict[str, tuple[bytes, dict[str, str]]] = {}
        self.uploads: list[MemoryUpload] = []
        self.calls: list[str] = []
        self.part_sizes: dict[str, dict[int, int]] = {}
        self.part_offsets: dict[str, dict[int, int]] = {}
        self.aborted = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def check(self, operation: str, number: int) -> None:
        error = self.fault(operation, number) if self.fault else None
        if error is not None:
            raise error

    async def put(
        self, key: str, data: Buffer, crc32c: int, metadata: Mapping[str, str] | None = None
    ) -> None:
        self.check("put", 0)
        await asyncio.sleep(self.delay)
        if frames.crc32c(data) != crc32c:
            raise StorageError(f"put {key}: bad CRC32C")
        self.objects[key] = (bytes(data), dict(metadata or {}))
        self.calls.append("put")

    async def start_upload(self, key: str, metadata: Mapping[str, str] | None = None) -> Upload:
        self.check("start_upload", 0)
        upload = MemoryUpload(self, key, metadata or {})
        self.uploads.append(upload)
        self.calls.append("start_upload")
        return upload

    async def get_range(self, key: str, start: int, end: int) -> list[Buffer]:
        body = self._body(key)
        if end > len(body) or start > end:
            raise InputError(f"range {start}-{end} beyond {key} ({len(body)} bytes)")
        self.gets.append((key, start, end))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        piece = self.piece or max(end - start, 1)
        return [body[i : min(i + piece, end)] for i in range(start, end, piece)]

    async def stat(self, key: str) -> ObjectInfo:
        body = self._body(key)
        return ObjectInfo(key, len(body), dict(self.objects[key][1]))

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        for key in sorted(self.objects):
            if key.startswith(prefix):
                yield ObjectInfo(key, len(self.objects[key][0]))

    async def delete(self, keys: Sequence[str]) -> int:
        self.check("delete", 0)
        return sum(self.objects.pop(k, None) is not None for k in keys)

    async def abort_uploads(self, prefix: str) -> int:
        mine = [u for u in self.uploads if u.key.startswith(prefix)]
        for upload in mine:
            await upload.abort()
        return len(mine)

    async def check_bucket(self, write: bool) -> None:
        return None

    async def close(self) -> None:
        return None

    def _body(self, key: str) -> bytes:
        if key not in self.objects:
            raise ObjectNotFound(f"{key} not found")
        return self.objects[key][0]
