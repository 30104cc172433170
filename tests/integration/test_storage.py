"""One conformance suite for every backend: each test runs against real SeaweedFS (s3)
and a directory (file) through the `backend_config` fixture (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import crc32c
import pytest

from asyncplug.config import Config, build_config
from asyncplug.errors import InputError, IntegrityError, ObjectNotFound, StorageError
from asyncplug.storage import Storage, open_storage
from asyncplug.storage.base import ObjectInfo
from bench.seaweed import SeaweedServer
from tests.conftest import file_options, s3_options

PREFIX = "prod/cluster1/backups/20250101/20250101123456/"


def payload(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
async def storage(backend_config: Config) -> AsyncIterator[Storage]:
    if backend_config.storage == "file":  # the directory must exist (a missing mount fails)
        Path(backend_config.path).mkdir()
    async with open_storage(backend_config) as store:
        yield store


async def listing(store: Storage, prefix: str = PREFIX) -> list[ObjectInfo]:
    return [info async for info in store.list(prefix)]


async def put(store: Storage, key: str, data: bytes, **metadata: str) -> None:
    await store.put(key, data, crc32c.crc32c(data), metadata or None)


async def test_put_stat_and_every_range_edge(storage: Storage) -> None:
    data = payload(100_000)
    key = PREFIX + "gpbackup_0_20250101123456"
    await put(storage, key, data)
    assert (await storage.stat(key)).size == len(data)
    n = len(data)
    for start, end in [(0, 0), (7, 7), (n, n), (0, 1), (0, n), (n - 1, n), (5, 50_001)]:
        assert b"".join(await storage.get_range(key, start, end)) == data[start:end]
    assert await storage.get_range(key, 3, 3) == []
    for start, end in [(n, n + 1), (10, n + 1), (n + 5, n + 9)]:
        with pytest.raises(InputError):
            await storage.get_range(key, start, end)


async def test_put_takes_bytearray_and_memoryview_slices(storage: Storage) -> None:
    buffer = bytearray(payload(70_000, seed=2))
    view = memoryview(buffer)[1000:61_000]
    await storage.put(PREFIX + "view", view, crc32c.crc32c(view))
    await storage.put(PREFIX + "array", buffer, crc32c.crc32c(buffer))
    assert b"".join(await storage.get_range(PREFIX + "view", 0, 60_000)) == buffer[1000:61_000]
    assert b"".join(await storage.get_range(PREFIX + "array", 0, 70_000)) == buffer


async def test_metadata_round_trip(storage: Storage) -> None:
    await put(storage, PREFIX + "a", b"abc", format="asyncplug-v1", codec="zstd")
    assert (await storage.stat(PREFIX + "a")).metadata == {
        "format": "asyncplug-v1",
        "codec": "zstd",
    }
    upload = await storage.start_upload(PREFIX + "b", {"codec": "lz4"})
    await upload.put_part(1, 0, b"xyz", crc32c.crc32c(b"xyz"))
    await upload.complete()
    assert (await storage.stat(PREFIX + "b")).metadata == {"codec": "lz4"}
    await put(storage, PREFIX + "a", b"replaced")  # an overwrite without metadata drops it
    assert (await storage.stat(PREFIX + "a")).metadata == {}


async def test_multipart_with_parts_put_out_of_order(storage: Storage) -> None:
    part = max(storage.min_part_size, 4096)
    data = payload(2 * part + 1234, seed=3)
    bounds = [(1, 0, part), (2, part, 2 * part), (3, 2 * part, len(data))]
    key = PREFIX + "gpbackup_1_20250101123456"
    upload = await storage.start_upload(key)
    order = [bounds[2], bounds[0], bounds[1]]
    await asyncio.gather(
        *(upload.put_part(n, lo, data[lo:hi], crc32c.crc32c(data[lo:hi])) for n, lo, hi in order)
    )
    assert await listing(storage) == []  # nothing visible before complete()
    await upload.complete()
    assert (await storage.stat(key)).size == len(data)
    assert b"".join(await storage.get_range(key, 0, len(data))) == data
    assert b"".join(await storage.get_range(key, part - 1, part + 1)) == data[part - 1 : part + 1]


async def test_empty_multipart_upload_is_an_empty_object(storage: Storage) -> None:
    upload = await storage.start_upload(PREFIX + "empty")
    await upload.complete()
    assert (await storage.stat(PREFIX + "empty")).size == 0


async def test_wrong_crc_is_rejected(storage: Storage) -> None:
    data = b"some bytes"
    with pytest.raises(IntegrityError):
        await storage.put(PREFIX + "bad", data, crc32c.crc32c(data) ^ 1)
    upload = await storage.start_upload(PREFIX + "bad-multipart")
    with pytest.raises(IntegrityError):
        await upload.put_part(1, 0, data, crc32c.crc32c(data) ^ 1)
    await upload.abort()
    assert await listing(storage) == []


async def test_abort_leaves_nothing_and_is_idempotent(storage: Storage) -> None:
    upload = await storage.start_upload(PREFIX + "aborted")
    await upload.put_part(1, 0, b"part", crc32c.crc32c(b"part"))
    await upload.abort()
    await upload.abort()
    assert await listing(storage) == []
    assert await storage.abort_uploads(PREFIX) == 0


async def test_abort_uploads_finds_uploads_of_another_process(
    storage: Storage, backend_config: Config
) -> None:
    async with open_storage(backend_config) as other:  # its own client / file handles
        mine = await other.start_upload(PREFIX + "gpbackup_2_20250101123456")
        await mine.put_part(1, 0, b"abc", crc32c.crc32c(b"abc"))
        outside = await other.start_upload("prod/cluster1/backups/20250102/x/keep")
        assert await storage.abort_uploads(PREFIX) == 1
        assert await storage.abort_uploads(PREFIX) == 0
        with pytest.raises(StorageError):
            await mine.complete()
        await outside.abort()


async def test_temp_files_and_unfinished_uploads_are_never_listed(storage: Storage) -> None:
    upload = await storage.start_upload(PREFIX + "unfinished")
    await upload.put_part(1, 0, b"abc", crc32c.crc32c(b"abc"))
    await put(storage, PREFIX + "done", b"done", codec="none")
    assert [info.key for info in await listing(storage)] == [PREFIX + "done"]
    assert [info.key for info in await listing(storage, "prod/")] == [PREFIX + "done"]
    await upload.abort()


async def test_list_paginates_and_delete_many(storage: Storage) -> None:
    gate = asyncio.Semaphore(16)
    keys = [f"{PREFIX}gpbackup_{i:04d}" for i in range(1100)]

    async def one(i: int, key: str) -> None:
        async with gate:
            await put(storage, key, b"x" * (i % 7))

    await asyncio.gather(*(one(i, k) for i, k in enumerate(keys)))
    await put(storage, "prod/cluster1/backups/20250101/20250101999999/other", b"keep")
    found = await listing(storage)
    assert [info.key for info in found] == keys  # all of them, sorted by key
    assert [info.size for info in found] == [i % 7 for i in range(1100)]
    assert await listing(storage, PREFIX + "gpbackup_105") == found[1050:1060]
    missing = [PREFIX + "never-written", PREFIX + "nope/deeper"]
    assert await storage.delete(keys + missing) == len(keys) + len(missing)
    assert await listing(storage) == []
    assert [i.key for i in await listing(storage, "prod/")] == [
        "prod/cluster1/backups/20250101/20250101999999/other"
    ]


async def test_missing_key_is_object_not_found(storage: Storage) -> None:
    with pytest.raises(ObjectNotFound):
        await storage.stat(PREFIX + "missing")
    with pytest.raises(ObjectNotFound):
        await storage.get_range(PREFIX + "missing", 0, 10)
    assert await storage.delete([PREFIX + "missing"]) == 1


async def test_check_bucket_succeeds_and_leaves_no_probe(storage: Storage) -> None:
    await storage.check_bucket(write=False)
    await storage.check_bucket(write=True)
    assert await listing(storage, "prod/") == []


async def test_check_bucket_fails_on_a_missing_bucket(seaweed: SeaweedServer) -> None:
    config = build_config(s3_options(seaweed, "no-such-bucket-here"))
    async with open_storage(config) as store:
        with pytest.raises(StorageError, match=r"no-such-bucket-here.*does not exist"):
            await store.check_bucket(write=False)


async def test_check_bucket_fails_on_a_missing_directory(tmp_path: Path) -> None:
    config = build_config(file_options(tmp_path / "absent"))
    async with open_storage(config) as store:
        with pytest.raises(StorageError, match=r"absent.*does not exist"):
            await store.check_bucket(write=False)


async def test_check_bucket_fails_when_path_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    async with open_storage(build_config(file_options(tmp_path / "file"))) as store:
        with pytest.raises(StorageError, match="not a directory"):
            await store.check_bucket(write=False)


async def test_check_bucket_fails_on_an_unwritable_folder(tmp_path: Path) -> None:
    # The folder cannot be created (a file is in the way): root can't chmod its way out.
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "prod").write_text("in the way")
    async with open_storage(build_config(file_options(tmp_path / "store"))) as store:
        await store.check_bucket(write=False)
        with pytest.raises(StorageError, match="prod"):
            await store.check_bucket(write=True)
