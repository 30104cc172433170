"""Verified restores on the in-memory storage: whatever byte of a stored object is
flipped, a reader never receives a byte of a corrupt block (or frame), and the restore
stops with IntegrityError naming the offset. Objects are written by run_backup."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncplug.config import build_config
from asyncplug.errors import IntegrityError
from asyncplug.pipeline import blocks
from asyncplug.pipeline.backup import run_backup
from asyncplug.pipeline.blocks import BLOCK_SIZE, BlockMismatch, index_key
from asyncplug.pipeline.restore import restore_path, restore_stream, verify_object
from tests.backup_support import kwargs_for_config, pipe_feed
from tests.memory_storage import MemoryStorage

KEY = "f/backups/20250101/20250101123456/gpbackup_0_20250101123456"
DATA = os.urandom(3 * BLOCK_SIZE + 70_001)  # three whole blocks and a partial one
# GETs of 100,000 bytes: never a block boundary, so every fetch is widened to whole blocks.
CONFIG = build_config(
    kwargs_for_config(
        restore_multipart_chunksize=100_000,
        restore_max_concurrent_requests=3,
        backup_multipart_chunksize=5 * 1024 * 1024,
    )
)


def backed_up() -> MemoryStorage:
    storage = MemoryStorage(min_part_size=5 * 1024 * 1024)
    with pipe_feed(DATA) as fd:
        asyncio.run(run_backup(storage, KEY, fd, CONFIG))
    return storage


STORED = backed_up()


def store(flip: int | None = None, index_flip: int | None = None) -> MemoryStorage:
    """A copy of the backed-up object, with one byte flipped in it or in its index."""
    copy = MemoryStorage(piece=4093)
    copy.objects = dict(STORED.objects)
    body, meta = copy.objects[KEY]
    if flip is not None:
        copy.objects[KEY] = (flipped(body, flip), meta)
    if index_flip is not None:
        index, imeta = copy.objects[index_key(KEY)]
        copy.objects[index_key(KEY)] = (flipped(index, index_flip), imeta)
    return copy


def flipped(body: bytes, at: int) -> bytes:
    return body[:at] + bytes([body[at] ^ 0x01]) + body[at + 1 :]


def restore(storage: MemoryStorage, ranges: list[tuple[int, int]] | None = None):  # type: ignore[no-untyped-def]
    """(bytes the reader received, the error or None): a reader that ignores the outcome."""
    with tempfile.TemporaryFile() as out:
        error = None
        try:
            asyncio.run(restore_stream(storage, KEY, out.fileno(), CONFIG, ranges))
        except IntegrityError as exc:
            error = exc
        out.seek(0)
        return out.read(), error


def block_start(offset: int) -> int:
    return offset - offset % BLOCK_SIZE


def expected(ranges: list[tuple[int, int]], bad: int) -> tuple[bytes, bool]:
    """What a subset may write with the block holding `bad` corrupt: every range in order
    up to the first one touching that block, and that one up to the block."""
    first, last = block_start(bad), block_start(bad) + BLOCK_SIZE
    out = []
    for start, end in ranges:
        if start < last and first < end and start < end:
            out.append(DATA[start : max(start, first)])
            return b"".join(out), True
        out.append(DATA[start:end])
    return b"".join(out), False


def test_a_clean_object_restores_whole_and_in_ranges() -> None:
    assert restore(store()) == (DATA, None)
    ranges = [(5, 10), (len(DATA) - 3, len(DATA)), (BLOCK_SIZE - 1, BLOCK_SIZE + 1)]
    assert restore(store(), ranges) == (b"".join(DATA[a:b] for a, b in ranges), None)


@pytest.mark.parametrize("where", [0, BLOCK_SIZE + 17, 3 * BLOCK_SIZE + 70_000])
def test_whole_restore_stops_before_the_corrupt_block(where: int) -> None:
    got, error = restore(store(flip=where))
    assert got == DATA[: block_start(where)]
    assert isinstance(error, BlockMismatch) and error.offset == block_start(where)
    assert f"at byte {block_start(where)}" in str(error)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.integers(0, len(DATA) - 1),
    st.lists(st.tuples(st.integers(0, len(DATA)), st.integers(0, 300_000)), max_size=6),
)
def test_no_byte_of_a_corrupt_block_ever_reaches_the_reader(
    bad: int, pairs: list[tuple[int, int]]
) -> None:
    storage = store(flip=bad)
    got, error = restore(storage)
    assert got == DATA[: block_start(bad)] and isinstance(error, BlockMismatch)
    ranges = [(a, min(a + n, len(DATA))) for a, n in pairs]
    got, error = restore(storage, ranges)
    want, fails = expected(ranges, bad)
    assert got == want  # ranges that avoid the block come out byte-identical
    assert (error is not None) == fails


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_a_flipped_byte_in_the_index_writes_nothing(data: st.DataObject) -> None:
    size = len(STORED.objects[index_key(KEY)][0])
    got, error = restore(store(index_flip=data.draw(st.integers(0, size - 1))))
    assert got == b""
    assert error is not None and "block index" in str(error)


def test_a_missing_index_writes_nothing() -> None:
    storage = store()
    del storage.objects[index_key(KEY)]
    got, error = restore(storage)
    assert got == b"" and error is not None and "is missing" in str(error)
    assert restore(storage, [(0, 10)])[0] == b""


def test_an_index_is_found_from_the_key_when_the_metadata_is_lost() -> None:
    storage = store(flip=2 * BLOCK_SIZE)
    body, _ = storage.objects[KEY]
    storage.objects[KEY] = (body, {})  # rewritten by another tool
    got, error = restore(storage)
    assert got == DATA[: 2 * BLOCK_SIZE] and isinstance(error, BlockMismatch)


def counting(stat: Callable[[str], Awaitable[object]], stats: list[str]):  # type: ignore[no-untyped-def]
    async def counted(key: str) -> object:
        stats.append(key)
        return await stat(key)

    return counted


def test_a_marked_small_index_is_read_without_a_head_first() -> None:
    """A small table's restore: the index backup marked is one GET, no HEAD of its key,
    whole and in ranges; a shorter index than this version writes is looked up the long
    way and still judged."""
    for ranges in (None, [(5, 10)]):
        storage = store()
        stats: list[str] = []
        storage.stat = counting(storage.stat, stats)  # type: ignore[method-assign]
        got, error = restore(storage, ranges)
        assert error is None and got == (DATA if ranges is None else DATA[5:10])
        assert index_key(KEY) not in stats
        assert [g for g in storage.gets if g[0] == index_key(KEY)] == [
            (index_key(KEY), 0, blocks.index_size(len(DATA)))
        ]
    storage = store()
    index, meta = storage.objects[index_key(KEY)]
    storage.objects[index_key(KEY)] = (index[:-8], meta)  # cut short
    got, error = restore(storage)
    assert got == b"" and error is not None and "does not match its own size" in str(error)


def test_an_index_of_another_size_is_corruption() -> None:
    storage = store()
    body, meta = storage.objects[KEY]
    storage.objects[KEY] = (body[:-1], meta)
    got, error = restore(storage)
    assert got == b"" and error is not None and "records" in str(error)


def test_restore_file_of_a_corrupt_object_leaves_no_file(tmp_path: os.PathLike[str]) -> None:
    target = os.path.join(tmp_path, "out")
    with pytest.raises(BlockMismatch):
        asyncio.run(restore_path(store(flip=BLOCK_SIZE), KEY, target, CONFIG))
    assert os.listdir(tmp_path) == []
    asyncio.run(restore_path(store(), KEY, target, CONFIG))
    with open(target, "rb") as f:
        assert f.read() == DATA


def test_verify_object_names_the_offset() -> None:
    async def check(storage: MemoryStorage) -> str:
        return await verify_object(storage, await storage.stat(KEY), CONFIG)

    assert asyncio.run(check(store())) == f"4 blocks of {BLOCK_SIZE} bytes"
    with pytest.raises(BlockMismatch) as caught:
        asyncio.run(check(store(flip=3 * BLOCK_SIZE + 5)))
    assert caught.value.offset == 3 * BLOCK_SIZE


def test_block_index_format_round_trip() -> None:
    crcs = list(range(2 * blocks.PAGE_BLOCKS + 3))
    size = len(crcs) * 1000 - 1
    body = blocks.pack(crcs, size, 1000)
    assert len(body) == blocks.index_size(size, 1000)
    index = blocks.BlockIndex(KEY, body, len(body))
    index.add_pages(0, body, 0)
    assert [index.crc(n) for n in range(index.count)] == crcs
    assert list(index.pages_of(0, size)) == [0, 1, 2]
    with pytest.raises(IntegrityError, match="header"):
        blocks.BlockIndex(KEY, flipped(body, 9), len(body))
    with pytest.raises(IntegrityError, match="size"):
        blocks.BlockIndex(KEY, body, len(body) - 4)
