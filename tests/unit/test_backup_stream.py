"""Backup round trips on the in-memory storage: sizes around part boundaries, growing parts,
every codec, single put vs multipart, checksum records, concurrency bound."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from asyncplug.config import build_config
from asyncplug.pipeline import frames
from asyncplug.pipeline.backup import backup_path, run_backup, sidecar_key
from asyncplug.pipeline.blocks import BLOCK_SIZE, BlockIndex, index_key
from asyncplug.pipeline.parts import plan_parts
from tests.backup_support import kwargs_for_config, pipe_feed, read_back, text_rows
from tests.memory_storage import MemoryStorage

KEY = "f/backups/20250101/20250101123456/gpbackup_0_20250101123456"
PART = 1024
FRAME = 1000


def config_for(compression: str = "none", **extra: object):  # type: ignore[no-untyped-def]
    return build_config(
        kwargs_for_config(
            backup_multipart_chunksize=PART,
            backup_max_concurrent_requests=3,
            backup_queue_depth=1,
            compression=compression,
            **extra,
        )
    )


def growing_storage() -> MemoryStorage:
    # 8 parts of at most 4 KiB: the plan doubles every part (1, 2, 4, 4, ... KiB).
    return MemoryStorage(min_part_size=PART, max_part_size=4 * PART, max_parts=8)


async def backup(storage: MemoryStorage, data: bytes, compression: str = "none") -> int:
    with pipe_feed(data) as fd:
        return await run_backup(storage, KEY, fd, config_for(compression), frame_size=FRAME)


SIZES = [0, 1, PART - 1, PART, PART + 1, 2 * PART - 1, 2 * PART, 2 * PART + 1, 20 * PART + 7]


@pytest.mark.parametrize("size", SIZES)
async def test_raw_round_trip_around_part_boundaries(size: int) -> None:
    storage = MemoryStorage(min_part_size=PART)
    data = os.urandom(size)
    assert await backup(storage, data) == size
    stored, meta = await read_back(storage, KEY)
    assert stored == data
    assert meta["asyncplug-format"] == "raw"
    assert not storage.uploads
    assert meta["asyncplug-index"] == "1"
    assert_block_index(storage, data)
    assert sidecar_key(KEY) not in storage.objects  # the 0.1 record: the index replaces it
    if size <= PART:  # fits one part: one put (the 0.1 checksum in the metadata), the index
        assert storage.calls == ["put", "put"]
        assert meta["asyncplug-crc32c"] == f"{frames.crc32c(data):08x}"
        assert meta["asyncplug-size"] == str(size)
    else:  # multipart, then the index
        assert storage.calls == ["start_upload", "complete", "put"]
        sizes = storage.part_sizes[KEY]
        assert sum(sizes.values()) == size
        assert all(sizes[n] == PART for n in sorted(sizes)[:-1])
        offsets = storage.part_offsets[KEY]
        assert [offsets[n] for n in sorted(offsets)] == [PART * (n - 1) for n in sorted(offsets)]


def assert_block_index(storage: MemoryStorage, data: bytes, block: int = BLOCK_SIZE) -> None:
    body = storage.objects[index_key(KEY)][0]
    index = BlockIndex(KEY, body, len(body))
    index.add_pages(0, body, 0)
    assert (index.raw_size, index.block_size) == (len(data), block)
    expected = [frames.crc32c(data[at : at + block]) for at in range(0, len(data), block)]
    assert [index.crc(n) for n in range(index.count)] == expected


async def test_block_index_of_a_stream_over_many_blocks_and_parts() -> None:
    # Parts of 5 MiB + 1000 bytes: blocks straddle parts; the last block is partial.
    storage = MemoryStorage(min_part_size=5 * 1024 * 1024)
    data = os.urandom(3 * (5 * 1024 * 1024 + 1000) + 12345)
    with pipe_feed(data) as fd:
        config = build_config(kwargs_for_config(backup_multipart_chunksize=5 * 1024 * 1024 + 1000))
        assert await run_backup(storage, KEY, fd, config) == len(data)
    stored, _ = await read_back(storage, KEY)
    assert stored == data
    assert_block_index(storage, data)
    assert len(storage.part_sizes[KEY]) == 4  # the part CRCs (combined) were accepted


@pytest.mark.parametrize("codec", ["zstd", "gzip", "lz4"])
@pytest.mark.parametrize("size", [0, 1, FRAME - 1, FRAME, FRAME + 1, 3 * PART, 40 * FRAME + 3])
@pytest.mark.parametrize("kind", ["random", "text"])
async def test_compressed_round_trip(codec: str, size: int, kind: str) -> None:
    storage = MemoryStorage(min_part_size=PART)
    data = os.urandom(size) if kind == "random" else text_rows(size)
    assert await backup(storage, data, codec) == size
    stored, meta = await read_back(storage, KEY)
    assert stored == data
    assert meta == {"asyncplug-format": "framed-v1"}  # the format carries its own checks
    assert not storage.uploads and sidecar_key(KEY) not in storage.objects
    assert index_key(KEY) not in storage.objects
    body = storage.objects[KEY][0]
    assert storage.calls == (["put"] if len(body) <= PART else ["start_upload", "complete"])
    trailer = frames.parse_trailer(body[-frames.TRAILER_SIZE :], len(body))
    assert trailer is not None and trailer.codec.name == codec
    assert trailer.frame_count == -(-size // FRAME)


@pytest.mark.parametrize("compression", ["none", "zstd", "gzip", "lz4"])
async def test_parts_grow_as_the_plan_says(compression: str) -> None:
    storage = growing_storage()
    plan = plan_parts(PART, PART, 4 * PART, 8)
    data = os.urandom(plan.capacity() - 3000)  # framing overhead still fits
    await backup(storage, data, compression)
    assert (await read_back(storage, KEY))[0] == data
    sizes = storage.part_sizes[KEY]
    assert [sizes[n] for n in sorted(sizes)][:-1] == [plan.size(n) for n in sorted(sizes)][:-1]
    assert [sizes[n] for n in sorted(sizes)][:4] == [1024, 2048, 4096, 4096]


async def test_a_stream_longer_than_the_limits_allow_fails_and_leaves_nothing() -> None:
    storage = growing_storage()
    plan = plan_parts(PART, PART, 4 * PART, 8)
    with pytest.raises(Exception, match="larger than"):
        await backup(storage, os.urandom(plan.capacity() + 1))
    assert not storage.objects and not storage.uploads and storage.aborted == 1


async def test_uploads_run_concurrently_within_the_limit() -> None:
    storage = MemoryStorage(min_part_size=PART, delay=0.01)
    data = os.urandom(30 * PART)
    await backup(storage, data)
    assert (await read_back(storage, KEY))[0] == data
    assert 1 < storage.max_in_flight <= 3


async def test_backup_path_reads_a_file(tmp_path: Path) -> None:
    storage = MemoryStorage(min_part_size=PART)
    data = text_rows(10 * PART + 5)
    path = tmp_path / "gpbackup_20250101123456_metadata.sql"
    path.write_bytes(data)
    assert await backup_path(storage, KEY, str(path), config_for()) == len(data)
    assert (await read_back(storage, KEY))[0] == data
    assert path.read_bytes() == data  # the local file stays


async def test_backup_path_of_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    storage = MemoryStorage()
    with pytest.raises(Exception, match="cannot open"):
        await backup_path(storage, KEY, str(tmp_path / "missing"), config_for())
    assert not storage.objects
