"""Byte-for-byte verification by streaming hash: every restore is hashed as it arrives.

XXH3-128 runs at about 8 GB/s here; SHA-256 managed 0.7 GB/s and slowed restores
down on 2 cores, which would have put the verifier, not the plugin, in the numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import xxhash

ALGORITHM = "xxh3_128"
CHUNK = 1024 * 1024


class Digest(Protocol):
    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...
    def hexdigest(self) -> str: ...


def new_digest() -> Digest:
    """The streaming hash for datasets, restores and subsets alike."""
    return xxhash.xxh3_128()


def digest_file(path: str, ranges: Sequence[tuple[int, int]] | None = None) -> tuple[str, int]:
    """(hex digest, byte count) of the file, or of its `ranges` concatenated in order."""
    digest = new_digest()
    total = 0
    with open(path, "rb") as f:
        if ranges is None:
            size = f.seek(0, 2)
            ranges = [(0, size)]
        for start, end in ranges:
            f.seek(start)
            left = end - start
            while left > 0:
                data = f.read(min(CHUNK, left))
                if not data:
                    raise ValueError(f"{path} ends before offset {end}")
                digest.update(data)
                left -= len(data)
                total += len(data)
    return digest.hexdigest(), total
