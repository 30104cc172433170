"""Restore failures: corruption detected, closed stdout, restore_path never half-written."""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from pathlib import Path

import pytest

from asyncplug.config import Config
from asyncplug.errors import (
    AccessDenied,
    IntegrityError,
    Interrupted,
    ObjectNotFound,
    PluginError,
    StorageError,
)
from asyncplug.pipeline import frames
from asyncplug.pipeline.codecs import CODECS
from asyncplug.pipeline.restore import restore_path, restore_stream
from asyncplug.storage.base import ObjectInfo
from tests.restore_support import MemoryStorage, compressed, crc_metadata, crc_sidecar

KEY = "prod/cluster1/backups/20250101/20250101123456/gpbackup_0_20250101123456"
CONFIG = Config(folder="prod/cluster1", restore_multipart_chunksize=4096)
RAW = os.urandom(50_000)
MULTIPART_RAW = {"asyncplug-format": "raw"}  # a multipart raw object of backup_data


def run(store: MemoryStorage, ranges: list[tuple[int, int]] | None = None) -> bytes:
    with tempfile.TemporaryFile() as out:
        asyncio.run(restore_stream(store, KEY, out.fileno(), CONFIG, ranges))
        out.seek(0)
        return out.read()


def flipped(body: bytes, at: int) -> bytes:
    return body[:at] + bytes([body[at] ^ 0x20]) + body[at + 1 :]


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_flipped_byte_in_a_frame_is_detected(codec: str) -> None:
    obj = compressed(RAW, CODECS[codec], 5000)
    store = MemoryStorage()
    store.objects[KEY] = (flipped(obj, frames.HEADER_SIZE + 100), {})
    with pytest.raises(IntegrityError, match=r"frame 0|corrupt"):
        run(store)


def test_flipped_byte_in_the_index_is_detected() -> None:
    obj = compressed(RAW, CODECS["zstd"], 5000)
    index_at = len(obj) - frames.TRAILER_SIZE - 12 * 10
    store = MemoryStorage()
    store.objects[KEY] = (flipped(obj, index_at + 7), {})
    with pytest.raises(IntegrityError, match="index checksum"):
        run(store)


def test_damaged_trailer_is_not_taken_for_a_raw_stream() -> None:
    obj = compressed(RAW, CODECS["lz4"], 5000)
    store = MemoryStorage()
    store.objects[KEY] = (flipped(obj, len(obj) - 1), {})
    with pytest.raises(IntegrityError, match="trailer is damaged"):
        run(store)


def test_raw_object_with_metadata_checksum_is_verified() -> None:
    store = MemoryStorage()
    store.objects[KEY] = (flipped(RAW, 30_000), crc_metadata(RAW))
    with pytest.raises(IntegrityError, match=r"CRC32C \w+ does not match"):
        run(store)


def test_raw_object_with_sidecar_checksum_is_verified() -> None:
    store = MemoryStorage()
    store.objects[KEY] = (flipped(RAW, 49_999), MULTIPART_RAW)
    store.objects[KEY + ".asyncplug-crc"] = (crc_sidecar(RAW), {})
    with pytest.raises(IntegrityError, match="does not match"):
        run(store)
    store.objects[KEY] = (RAW, MULTIPART_RAW)
    assert run(store) == RAW


class NoListStorage(MemoryStorage):
    """S3 without s3:ListBucket: a missing key is 403, not 404."""

    async def stat(self, key: str) -> ObjectInfo:
        if key not in self.objects:
            raise AccessDenied(f"{key}: 403 Forbidden")
        return await super().stat(key)


def test_missing_sidecar_means_no_record_even_when_s3_says_403() -> None:
    store = NoListStorage()
    store.objects[KEY] = (RAW, MULTIPART_RAW)  # copied without its sidecar
    assert run(store) == RAW


def test_sidecar_is_found_from_the_key_when_the_metadata_is_lost() -> None:
    store = NoListStorage()
    store.objects[KEY] = (flipped(RAW, 5), {})  # rewritten by another tool: no metadata
    store.objects[KEY + ".asyncplug-crc"] = (crc_sidecar(RAW), {})
    with pytest.raises(IntegrityError, match="does not match"):
        run(store)


def test_truncated_raw_object_fails_on_its_recorded_size() -> None:
    store = MemoryStorage()
    store.objects[KEY] = (RAW[:-1], crc_metadata(RAW))
    with pytest.raises(IntegrityError, match="recorded 50000"):
        run(store)


def test_object_without_a_record_restores_unchecked() -> None:
    store = MemoryStorage()  # as the reference Go plugin stores it
    store.objects[KEY] = (RAW, {})
    assert run(store) == RAW
    assert run(store, [(10, 20), (5, 6)]) == RAW[10:20] + RAW[5:6]


def test_closed_stdout_gives_interrupted_and_no_hang() -> None:
    big = os.urandom(3 * 1024 * 1024)
    store = MemoryStorage(piece=65536)
    store.objects[KEY] = (big, {})
    read_fd, write_fd = os.pipe()

    def reader() -> None:
        os.read(read_fd, 1000)
        os.close(read_fd)  # the reader goes away early

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        with pytest.raises(Interrupted, match="stdout closed by the reader"):
            asyncio.run(asyncio.wait_for(restore_stream(store, KEY, write_fd, CONFIG), 30))
    finally:
        thread.join()
        os.close(write_fd)
    assert len(store.gets) < len(big) // 4096  # outstanding GETs were not all made


class FailingStorage(MemoryStorage):
    """Fails every GET that starts past `fail_at`."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at

    async def get_range(self, key: str, start: int, end: int) -> list[bytes]:
        if start >= self.fail_at:
            raise StorageError(f"injected failure at {start}")
        return await super().get_range(key, start, end)


def test_restore_path_round_trip_creates_parents(tmp_path: Path) -> None:
    store = MemoryStorage()
    store.objects[KEY] = (RAW, crc_metadata(RAW))
    target = tmp_path / "a" / "b" / "gpbackup_20250101123456_metadata.sql"
    assert asyncio.run(restore_path(store, KEY, str(target), CONFIG)) == len(RAW)
    assert target.read_bytes() == RAW
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_restore_path_of_a_missing_object_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "new" / "file"
    with pytest.raises(ObjectNotFound):
        asyncio.run(restore_path(MemoryStorage(), KEY, str(target), CONFIG))
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("fault", ["storage", "corrupt"])
def test_restore_path_failure_leaves_no_partial_file(tmp_path: Path, fault: str) -> None:
    target = tmp_path / "file"
    target.write_bytes(b"old content")
    if fault == "storage":
        store: MemoryStorage = FailingStorage(fail_at=20_000)
        store.objects[KEY] = (RAW, {})
    else:
        store = MemoryStorage()
        store.objects[KEY] = (flipped(RAW, 100), crc_metadata(RAW))
    with pytest.raises(StorageError):
        asyncio.run(restore_path(store, KEY, str(target), CONFIG))
    assert os.listdir(tmp_path) == ["file"]
    assert target.read_bytes() == b"old content"


def test_restore_path_of_a_compressed_object(tmp_path: Path) -> None:
    store = MemoryStorage()
    store.objects[KEY] = (compressed(RAW, CODECS["zstd"], 3000), {})
    target = tmp_path / "out"
    asyncio.run(restore_path(store, KEY, str(target), CONFIG))
    assert target.read_bytes() == RAW


def test_restore_path_into_an_unusable_directory_is_one_clean_error(tmp_path: Path) -> None:
    store = MemoryStorage()
    store.objects[KEY] = (RAW, {})
    (tmp_path / "plain").write_bytes(b"a file, not a directory")
    with pytest.raises(PluginError, match="cannot create"):
        asyncio.run(restore_path(store, KEY, str(tmp_path / "plain" / "sub" / "f"), CONFIG))
    with pytest.raises(PluginError, match="cannot write"):  # the target is a directory
        asyncio.run(restore_path(store, KEY, str(tmp_path), CONFIG))
    assert sorted(os.listdir(tmp_path)) == ["plain"]
