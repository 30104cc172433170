"""Test helpers for restore: an in-memory Storage (a real fake) and object builders."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence

from asyncplug.errors import InputError, ObjectNotFound
from asyncplug.pipeline import frames
from asyncplug.pipeline.codecs import Codec
from asyncplug.storage.base import Buffer, ObjectInfo, Storage, Upload


class MemoryUpload(Upload):
    def __init__(self, store: MemoryStorage, key: str, metadata: Mapping[str, str]) -> None:
        self.store, self.key, self.metadata = store, key, dict(metadata)
        self.parts: dict[int, bytes] = {}

    async def put_part(self, number: int, offset: int, data: Buffer, crc32c: int) -> None:
        assert frames.crc32c(data) == crc32c
        self.parts[number] = bytes(data)

    async def complete(self) -> None:
        body = b"".join(self.parts[n] for n in sorted(self.parts))
        self.store.objects[self.key] = (body, self.metadata)

    async def abort(self) -> None:
        self.parts.clear()


class MemoryStorage(Storage):
    """Objects in a dict. get_range hands back `piece`-byte chunks (exercising the
    chunk-list slicing) and records every GET in `gets`."""

    name = "memory"

    def __init__(self, piece: int = 4093, delay: float = 0.0) -> None:
        self.objects: dict[str, tuple[bytes, dict[str, str]]] = {}
        self.piece = piece
        self.delay = delay
        self.gets: list[tuple[str, int, int]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def put(
        self, key: str, data: Buffer, crc32c: int, metadata: Mapping[str, str] | None = None
    ) -> None:
        assert frames.crc32c(data) == crc32c
        self.objects[key] = (bytes(data), dict(metadata or {}))

    async def start_upload(self, key: str, metadata: Mapping[str, str] | None = None) -> Upload:
        return MemoryUpload(self, key, metadata or {})

    async def get_range(self, key: str, start: int, end: int) -> list[bytes]:
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
        return [body[i : min(i + self.piece, end)] for i in range(start, end, self.piece)]

    async def stat(self, key: str) -> ObjectInfo:
        body = self._body(key)
        return ObjectInfo(key, len(body), dict(self.objects[key][1]))

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        for key in sorted(self.objects):
            if key.startswith(prefix):
                yield ObjectInfo(key, len(self.objects[key][0]))

    async def delete(self, keys: Sequence[str]) -> int:
        return sum(self.objects.pop(k, None) is not None for k in keys)

    async def abort_uploads(self, prefix: str) -> int:
        return 0

    async def check_bucket(self, write: bool) -> None:
        return None

    async def close(self) -> None:
        return None

    def _body(self, key: str) -> bytes:
        if key not in self.objects:
            raise ObjectNotFound(f"{key} does not exist")
        return self.objects[key][0]


def compressed(raw: bytes, codec: Codec, frame_size: int) -> bytes:
    """A v1 compressed object of `raw`, cut into frames of `frame_size` raw bytes."""
    body, entries = [], []
    for i in range(0, len(raw), frame_size):
        part = raw[i : i + frame_size]
        packed = codec.compress(part, codec.default_level)
        body.append(packed)
        entries.append((len(packed), len(part), frames.crc32c(part)))
    head = frames.pack_header(codec)
    index = frames.pack_index(entries)
    index_offset = len(head) + sum(map(len, body))
    trailer = frames.pack_trailer(index_offset, index, len(raw), codec)
    return head + b"".join(body) + index + trailer


def crc_metadata(raw: bytes) -> dict[str, str]:
    """The user metadata backup_data puts on a single-PUT raw object."""
    return {"asyncplug-crc32c": f"{frames.crc32c(raw):08x}", "asyncplug-size": str(len(raw))}


def crc_sidecar(raw: bytes) -> bytes:
    """The `<key>.asyncplug-crc` body backup_data writes beside a multipart raw object."""
    return json.dumps({"size": len(raw), "crc32c": f"{frames.crc32c(raw):08x}"}).encode()
