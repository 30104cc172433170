"""Never a broken object: every failure and every cancellation leaves no object under the
key and no unfinished upload, and the error propagates."""

from __future__ import annotations

import asyncio
import os
import socket
import threading

import pytest

from asyncplug.errors import PluginError, StorageError
from asyncplug.pipeline.backup import run_backup, sidecar_key
from asyncplug.pipeline.blocks import index_key
from tests.backup_support import fail_at, pipe_feed
from tests.memory_storage import MemoryStorage
from tests.unit.test_backup_stream import KEY, PART, config_for

DATA = os.urandom(12 * PART)


def assert_nothing_left(storage: MemoryStorage) -> None:
    assert KEY not in storage.objects
    assert sidecar_key(KEY) not in storage.objects
    assert index_key(KEY) not in storage.objects
    assert not storage.uploads


@pytest.mark.parametrize("compression", ["none", "zstd"])
@pytest.mark.parametrize(
    ("operation", "number"),
    [("start_upload", 0), ("put_part", 1), ("put_part", 3), ("complete", 0), ("put", 0)],
)
async def test_a_storage_failure_aborts_and_propagates(
    compression: str, operation: str, number: int
) -> None:
    # "put" here is the block index (raw) or nothing (compressed): both must leave no object.
    storage = MemoryStorage(min_part_size=PART, fault=fail_at(operation, number))
    data = os.urandom(12 * PART)
    with pipe_feed(data) as fd:
        if operation == "put" and compression != "none":
            await run_backup(storage, KEY, fd, config_for(compression), frame_size=1000)
            return  # a compressed multipart object has no index object: nothing to fail
        with pytest.raises(StorageError, match="injected"):
            await run_backup(storage, KEY, fd, config_for(compression), frame_size=1000)
    assert_nothing_left(storage)
    if operation in ("put_part", "complete"):
        assert storage.aborted == 1


async def test_a_failed_single_put_leaves_nothing() -> None:
    storage = MemoryStorage(min_part_size=PART, fault=fail_at("put"))
    with pipe_feed(b"small") as fd, pytest.raises(StorageError):
        await run_backup(storage, KEY, fd, config_for())
    assert_nothing_left(storage)


async def test_a_part_failure_stops_a_stalled_reader() -> None:
    """stdin stays open and silent after a few parts; the failed part still ends the backup."""
    storage = MemoryStorage(min_part_size=PART, fault=fail_at("put_part", 2))
    hold = threading.Event()
    with pipe_feed(DATA[: 4 * PART], keep_open=hold) as fd, pytest.raises(StorageError):
        await asyncio.wait_for(run_backup(storage, KEY, fd, config_for()), 30)
    assert_nothing_left(storage)


async def test_an_unreadable_stream_is_an_error_and_leaves_nothing(tmp_path: object) -> None:
    storage = MemoryStorage(min_part_size=PART)
    fd = os.open(os.path.dirname(__file__), os.O_RDONLY)  # a directory: EISDIR on read
    try:
        with pytest.raises(PluginError, match="cannot read the backup stream"):
            await run_backup(storage, KEY, fd, config_for())
    finally:
        os.close(fd)
    assert_nothing_left(storage)


async def test_a_read_error_mid_stream_aborts_the_upload() -> None:
    """A TCP reset on the input after several parts were uploaded (ECONNRESET on read)."""
    storage = MemoryStorage(min_part_size=PART)
    with socket.create_server(("127.0.0.1", 0)) as server:
        sender = socket.create_connection(server.getsockname())
        receiver, _ = server.accept()
    with sender, receiver:
        sender.sendall(DATA[: 6 * PART])
        task = asyncio.ensure_future(run_backup(storage, KEY, receiver.fileno(), config_for()))
        while not storage.part_sizes.get(KEY):  # wait for the upload to be under way
            await asyncio.sleep(0.01)
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sender.close()  # linger 0: a reset, not an EOF
        with pytest.raises(PluginError, match="cannot read the backup stream"):
            await asyncio.wait_for(task, 30)
    assert_nothing_left(storage)
    assert storage.aborted == 1


@pytest.mark.parametrize("compression", ["none", "lz4"])
async def test_cancellation_mid_stream_aborts(compression: str) -> None:
    storage = MemoryStorage(min_part_size=PART, delay=0.01)
    hold = threading.Event()
    with pipe_feed(DATA, keep_open=hold) as fd:
        task = asyncio.ensure_future(
            run_backup(storage, KEY, fd, config_for(compression), frame_size=1000)
        )
        while len(storage.part_sizes.get(KEY, ())) < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert_nothing_left(storage)
    assert storage.aborted == 1


async def test_a_second_cancellation_still_waits_for_the_abort() -> None:
    storage = MemoryStorage(min_part_size=PART, delay=0.05)  # abort() takes 50 ms
    hold = threading.Event()
    with pipe_feed(DATA, keep_open=hold) as fd:
        task = asyncio.ensure_future(run_backup(storage, KEY, fd, config_for()))
        while not storage.part_sizes.get(KEY):
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.sleep(0.01)  # now inside the abort
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert_nothing_left(storage)
    assert storage.aborted == 1


async def test_cancellation_during_a_single_put_leaves_nothing() -> None:
    storage = MemoryStorage(min_part_size=PART, delay=0.05)
    with pipe_feed(b"x" * 100) as fd:
        task = asyncio.ensure_future(run_backup(storage, KEY, fd, config_for()))
        await asyncio.sleep(0.03)  # the put is under way (it takes 50 ms)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert_nothing_left(storage)
