"""Test helpers for backup: a wrapper that injects faults into a real backend, stream
feeders, and a reader that decodes what backup wrote (raw or framed) through get_range
and frames.FrameIndex. The in-memory fake is tests/memory_storage.py."""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from asyncplug.errors import StorageError
from asyncplug.pipeline import frames
from asyncplug.storage.base import Buffer, ObjectInfo, Storage, Upload
from tests.memory_storage import Fault


class FaultyUpload(Upload):
    def __init__(self, inner: Upload, wrapper: FaultyStorage) -> None:
        self.inner, self.wrapper, self.key = inner, wrapper, inner.key

    async def put_part(self, number: int, offset: int, data: Buffer, crc32c: int) -> None:
        self.wrapper.check("put_part", number)
        await self.inner.put_part(number, offset, data, crc32c)
        self.wrapper.parts_done += 1

    async def complete(self) -> None:
        self.wrapper.check("complete", 0)
        await self.inner.complete()

    async def abort(self) -> None:
        await self.inner.abort()


class FaultyStorage(Storage):
    """A real backend with `fault` injected before put/start_upload/put_part/complete."""

    def __init__(self, inner: Storage, fault: Fault) -> None:
        self.inner, self.fault, self.name = inner, fault, inner.name
        self.min_part_size = inner.min_part_size
        self.max_part_size = inner.max_part_size
        self.max_parts = inner.max_parts
        self.parts_done = 0

    def check(self, operation: str, number: int) -> None:
        error = self.fault(operation, number)
        if error is not None:
            raise error

    async def put(
        self, key: str, data: Buffer, crc32c: int, metadata: Mapping[str, str] | None = None
    ) -> None:
        self.check("put", 0)
        await self.inner.put(key, data, crc32c, metadata)

    async def start_upload(self, key: str, metadata: Mapping[str, str] | None = None) -> Upload:
        self.check("start_upload", 0)
        return FaultyUpload(await self.inner.start_upload(key, metadata), self)

    async def get_range(self, key: str, start: int, end: int) -> list[bytes]:
        return await self.inner.get_range(key, start, end)

    async def stat(self, key: str) -> ObjectInfo:
        return await self.inner.stat(key)

    def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        return self.inner.list(prefix)

    async def delete(self, keys: Sequence[str]) -> int:
        return await self.inner.delete(keys)

    async def abort_uploads(self, prefix: str) -> int:
        return await self.inner.abort_uploads(prefix)

    async def check_bucket(self, write: bool) -> None:
        await self.inner.check_bucket(write)

    async def close(self) -> None:
        await self.inner.close()


def fail_at(operation: str, number: int = 0, error: BaseException | None = None) -> Fault:
    """A fault raising `error` (a StorageError by default) at one operation/part."""
    failure = error or StorageError(f"injected failure at {operation} {number}")

    def fault(op: str, n: int) -> BaseException | None:
        return failure if op == operation and n == number else None

    return fault


@contextmanager
def pipe_feed(data: bytes, keep_open: threading.Event | None = None) -> Iterator[int]:
    """The read end of a pipe a thread writes `data` into; closed after the data unless
    `keep_open` is given (then closed once it is set). Yields the read fd."""
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(write_fd, view[: 1 << 20]) :]
            if keep_open is not None:
                keep_open.wait(60)
        except OSError:
            pass  # the reader went away
        finally:
            os.close(write_fd)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield read_fd
    finally:
        if keep_open is not None:
            keep_open.set()
        os.close(read_fd)
        thread.join(60)


async def read_back(storage: Storage, key: str) -> tuple[bytes, dict[str, str]]:
    """The stream as stored (decoded when framed) and the object's metadata."""
    info = await storage.stat(key)
    size = info.size
    tail = b"".join(await storage.get_range(key, max(size - frames.TRAILER_SIZE, 0), size))
    trailer = frames.parse_trailer(tail, size)
    if trailer is None:
        return b"".join(await storage.get_range(key, 0, size)), dict(info.metadata)
    head = b"".join(await storage.get_range(key, 0, frames.HEADER_SIZE))
    frames.check_header(head)
    end = trailer.index_offset + trailer.index_len
    index = frames.FrameIndex(
        trailer, b"".join(await storage.get_range(key, trailer.index_offset, end))
    )
    out = bytearray()
    for frame in index.covering(0, index.raw_size):
        packed = b"".join(await storage.get_range(key, frame.offset, frame.offset + frame.length))
        out += index.decode(frame, packed)
    return bytes(out), dict(info.metadata)


def text_rows(size: int, seed: int = 1) -> bytes:
    """COPY-like rows (pipe-separated), compressible like real table data."""
    rows, n = [], seed
    total = 0
    while total < size:
        n = (n * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        row = f"{n % 100000}|Customer#{n % 999983:09d}|{n % 25}|{(n >> 20) % 100000 / 100:.2f}|x\n"
        rows.append(row)
        total += len(row)
    return "".join(rows).encode()[:size]


def kwargs_for_config(**options: Any) -> dict[str, Any]:
    """Options of a file-backend config (the path is never touched by MemoryStorage)."""
    return {"storage": "file", "path": "/nonexistent", "folder": "f", **options}
