"""FileStorage on disk: hidden temp/upload/meta files, cleanup after killed processes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import crc32c
import pytest

from asyncplug.config import build_config
from asyncplug.errors import InputError
from asyncplug.storage.fs import FileStorage

DIR = "prod/cluster1/backups/20250101/20250101123456"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FileStorage]:
    (tmp_path / "store").mkdir()
    config = build_config({"storage": "file", "path": str(tmp_path / "store"), "folder": "prod"})
    async with FileStorage(config) as storage:
        yield storage


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def test_metadata_sidecar_is_hidden_and_deleted_with_the_object(store: FileStorage) -> None:
    key = f"{DIR}/gpbackup_0_20250101123456"
    await store.put(key, b"data", crc32c.crc32c(b"data"), {"codec": "zstd"})
    assert files(store.root) == [f"{DIR}/.gpbackup_0_20250101123456.asyncplug-meta.json", key]
    assert [i.key async for i in store.list("prod/")] == [key]
    await store.delete([key])
    assert list(store.root.iterdir()) == []  # empty directories are removed too


async def test_leftovers_of_killed_processes_are_hidden_and_removed(store: FileStorage) -> None:
    directory = store.root / DIR
    directory.mkdir(parents=True)
    (directory / ".asyncplug-upload-gpbackup_1_20250101123456-0a1b2c").write_bytes(b"part")
    (directory / ".asyncplug-tmp-gpbackup_20250101123456_toc.yaml-3d4e5f").write_bytes(b"half")
    (directory / ".asyncplug-probe-host-123").write_bytes(b"probe")
    (directory / "gpbackup_20250101123456_report").write_bytes(b"kept")
    assert [i.key async for i in store.list(DIR)] == [f"{DIR}/gpbackup_20250101123456_report"]
    assert await store.abort_uploads(f"{DIR}/gpbackup_2") == 0  # another name: untouched
    assert await store.abort_uploads(f"{DIR}/") == 1  # one upload; the stale temp file goes too
    assert files(store.root) == [
        f"{DIR}/.asyncplug-probe-host-123",
        f"{DIR}/gpbackup_20250101123456_report",
    ]


async def test_parts_of_any_size_in_any_order(store: FileStorage) -> None:
    assert store.min_part_size == 1
    upload = await store.start_upload(f"{DIR}/x")
    await upload.put_part(2, 1, b"bc", crc32c.crc32c(b"bc"))
    await upload.put_part(1, 0, b"a", crc32c.crc32c(b"a"))
    await upload.complete()
    assert await store.get_range(f"{DIR}/x", 0, 3) == [b"abc"]


@pytest.mark.parametrize(
    "key",
    ["/abs/key", "a/../b", "a//b", "a/./b", "a/.asyncplug-tmp-x-1", "a/.b.asyncplug-meta.json"],
)
async def test_bad_keys_are_refused(store: FileStorage, key: str) -> None:
    with pytest.raises(InputError):
        await store.put(key, b"", 0)
