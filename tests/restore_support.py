"""Test helpers for restore: an in-memory Storage (a real fake) and object builders."""

from __future__ import annotations

import json

from asyncplug.pipeline import frames
from asyncplug.pipeline.codecs import Codec
from asyncplug.storage.base import S3_MIN_PART_SIZE
from tests.memory_storage import MemoryStorage as SharedMemoryStorage


class MemoryStorage(SharedMemoryStorage):
    """The shared fake with the restore tests' defaults: odd-sized 4093-byte chunks from
    get_range, and S3's minimum part size."""

    def __init__(self, piece: int = 4093, delay: float = 0.0) -> None:
        super().__init__(min_part_size=S3_MIN_PART_SIZE, delay=delay, piece=piece)


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
