"""backup_data on the real backends (SeaweedFS and a directory): round trips of every codec
around part boundaries and with growing parts, read back through get_range and
frames.FrameIndex; injected failures, cancellation and signals leave no object and no
unfinished upload; the peak RSS of a 1 GiB stream stays under the budget."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from asyncplug.config import Config, build_config
from asyncplug.errors import Interrupted, ObjectNotFound, StorageError
from asyncplug.keys import object_key
from asyncplug.pipeline.backup import run_backup, sidecar_key
from asyncplug.pipeline.blocks import BlockIndex, index_key
from asyncplug.pipeline.frames import crc32c
from asyncplug.storage import Storage, open_storage
from bench.procs import run_child
from bench.seaweed import SeaweedServer
from tests.backup_support import FaultyStorage, fail_at, pipe_feed, read_back, text_rows
from tests.conftest import file_options, s3_options
from tests.integration.runner import EXECUTABLE, make_plugin

MiB = 1024 * 1024
PART = 5 * MiB  # S3's minimum part size: the smallest real test setting
FRAME = 1 * MiB
TS = "20250101123456"
PREFIX = f"prod/cluster1/backups/{TS[:8]}/{TS}/"
KEY = PREFIX + f"gpbackup_0_{TS}"
CODECS = ["none", "zstd", "gzip", "lz4"]


def small(config: Config, compression: str = "none") -> Config:
    options = {
        **{k: v for k, v in vars(config).items() if v not in ("", None)},
        "backup_multipart_chunksize": PART,
        "backup_max_concurrent_requests": 3,
        "backup_queue_depth": 1,
        "compression": compression,
    }
    return build_config(options)


async def store(storage: Storage, config: Config, data: bytes) -> None:
    with pipe_feed(data) as fd:
        assert await run_backup(storage, KEY, fd, config, frame_size=FRAME) == len(data)


async def nothing_left(storage: Storage) -> None:
    for key in (KEY, sidecar_key(KEY), index_key(KEY)):
        with pytest.raises(ObjectNotFound):
            await storage.stat(key)
    assert await storage.abort_uploads(PREFIX) == 0


# Raw: every size around the first part boundary. Compressed: framing moves the boundary
# (the unit tests walk it byte by byte); here empty, tiny and more than one part.
CASES = [("none", size) for size in (0, 1, PART - 1, PART, PART + 1)] + [
    (codec, size) for codec in CODECS[1:] for size in (0, 1, PART + 1)
]


@pytest.mark.parametrize(("compression", "size"), CASES)
async def test_round_trip_around_the_first_part_boundary(
    backend_config: Config, compression: str, size: int
) -> None:
    config = small(backend_config, compression)
    data = os.urandom(size)
    async with open_storage(config) as storage:
        await store(storage, config, data)
        stored, meta = await read_back(storage, KEY)
        assert stored == data
        if compression == "none":
            assert meta["asyncplug-format"] == "raw"
            if size <= PART:  # a single put: the checksum rides in the metadata
                assert meta["asyncplug-crc32c"] == f"{crc32c(data):08x}"
                assert meta["asyncplug-size"] == str(size)
            index_size = (await storage.stat(index_key(KEY))).size  # raw: always an index
            body = b"".join(await storage.get_range(index_key(KEY), 0, index_size))
            index = BlockIndex(KEY, body, index_size)
            index.add_pages(0, body, 0)
            assert index.raw_size == size
            assert [index.crc(n) for n in range(index.count)] == [
                crc32c(data[at : at + index.block_size]) for at in range(0, size, index.block_size)
            ]
        else:
            assert meta["asyncplug-format"] == "framed-v1"
        assert await storage.abort_uploads(PREFIX) == 0


@pytest.mark.parametrize("compression", CODECS)
async def test_round_trip_with_growing_parts(backend_config: Config, compression: str) -> None:
    config = small(backend_config, compression)
    if compression != "none":
        config = dataclasses.replace(config, compression_level=1)
    async with open_storage(config) as storage:
        # Limits of 3 parts of at most 10 MiB make the plan double at once: 5, 10, 10 MiB.
        storage.max_parts, storage.max_part_size = 3, 10 * MiB
        data = os.urandom(16 * MiB)  # incompressible: compressed parts grow the same way
        await store(storage, config, data)
        assert (await read_back(storage, KEY))[0] == data
        assert await storage.abort_uploads(PREFIX) == 0


@pytest.mark.parametrize(
    ("operation", "number"), [("put_part", 1), ("put_part", 3), ("complete", 0), ("put", 0)]
)
async def test_injected_failures_leave_nothing(
    backend_config: Config, operation: str, number: int
) -> None:
    config = small(backend_config)
    async with open_storage(config) as real:
        storage = FaultyStorage(real, fail_at(operation, number))
        data = os.urandom(4 * PART if operation != "put" else PART // 2)
        with pytest.raises(StorageError, match="injected"):
            await store(storage, config, data)
        await nothing_left(real)


@pytest.mark.parametrize("compression", ["none", "zstd"])
async def test_cancellation_mid_stream_leaves_nothing(
    backend_config: Config, compression: str
) -> None:
    config = small(backend_config, compression)
    async with open_storage(config) as real:
        storage = FaultyStorage(real, lambda op, n: None)
        hold = threading.Event()
        with pipe_feed(os.urandom(6 * PART), keep_open=hold) as fd:
            task = asyncio.ensure_future(run_backup(storage, KEY, fd, config, frame_size=FRAME))
            while storage.parts_done < 2:  # parts are stored: the upload is under way
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await nothing_left(real)


# --- the executable ---------------------------------------------------------------


def uploads_under_way(server: SeaweedServer, bucket: str) -> int:
    return len(server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))


@pytest.mark.parametrize(
    ("backend", "signum"),
    [
        ("s3", signal.SIGTERM),
        ("s3", signal.SIGINT),
        ("s3", signal.SIGHUP),
        ("file", signal.SIGTERM),
    ],
)
def test_a_signal_mid_stream_leaves_nothing(
    request: pytest.FixtureRequest,
    write_config: Callable[..., str],
    tmp_path: Path,
    backend: str,
    signum: signal.Signals,
) -> None:
    if backend == "s3":
        server: SeaweedServer = request.getfixturevalue("seaweed")
        bucket = request.getfixturevalue("bucket")
        options: dict[str, Any] = s3_options(server, bucket)
    else:
        options = file_options(tmp_path / "store")
    options.update(backup_multipart_chunksize="5MiB", backup_max_concurrent_requests=2)
    plugin = make_plugin(options, write_config, tmp_path)
    local = str(tmp_path / "seg0" / "backups" / TS[:8] / TS / f"gpbackup_0_{TS}")
    proc = plugin.popen("backup_data", local, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(os.urandom(20 * MiB))  # returns once the plugin has read most of it
    proc.stdin.flush()
    if backend == "s3":
        deadline = time.monotonic() + 60
        while not uploads_under_way(server, bucket) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert uploads_under_way(server, bucket) == 1
    proc.send_signal(signum)
    code = proc.wait(timeout=60)
    err = proc.stderr.read().decode()
    proc.stdin.close()
    proc.stderr.close()
    assert code == Interrupted.exit_code
    assert err.count("\n") == 1 and err.startswith("asyncplug: ") and "Traceback" not in err
    if backend == "s3":
        assert uploads_under_way(server, bucket) == 0
    config = build_config(options)

    async def check() -> None:
        async with open_storage(config) as storage:
            key = object_key(config.folder, local)
            for name in (key, sidecar_key(key)):
                with pytest.raises(ObjectNotFound):
                    await storage.stat(name)
            assert await storage.abort_uploads(config.folder) == 0

    asyncio.run(check())


def test_rss_of_a_1_gib_stream_stays_under_the_budget(
    seaweed: SeaweedServer, bucket: str, write_config: Callable[..., str], tmp_path: Path
) -> None:
    """Default settings, the executable, 1 GiB on stdin: peak RSS <= 150 MB (os.wait4).

    bench.procs runs it through a small launcher: a child forked straight from pytest
    would report pytest's own RSS, which Linux keeps in ru_maxrss across exec."""
    plugin = make_plugin(s3_options(seaweed, bucket), write_config, tmp_path)
    local = str(tmp_path / "seg0" / "backups" / TS[:8] / TS / f"gpbackup_0_{TS}")
    source = tmp_path / "stream.bin"
    block = os.urandom(16 * MiB)
    with open(source, "wb") as out:
        for _ in range(64):
            out.write(block)
    run = run_child([EXECUTABLE, "backup_data", plugin.config, local], stdin_file=str(source),
                    env=plugin.env)  # fmt: skip
    source.unlink()
    assert run.ok, run.failure()
    assert run.maxrss_kib * 1024 <= 150 * 10**6, f"peak RSS {run.maxrss_kib / 1024:.0f} MiB"
    key = object_key("prod/cluster1", local)
    client = seaweed.client()
    assert client.head_object(Bucket=bucket, Key=key)["ContentLength"] == 1024 * MiB
    client.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": key}, {"Key": key + ".asyncplug-crc"}]}
    )


def test_a_compressed_backup_restores_with_a_config_that_says_none(
    backend_options: dict[str, Any], write_config: Callable[..., str], tmp_path: Path
) -> None:
    """The format describes itself: restore never looks at the compression option."""
    zstd = make_plugin({**backend_options, "compression": "zstd"}, write_config, tmp_path, "z.yaml")
    none = make_plugin({**backend_options, "compression": "none"}, write_config, tmp_path)
    local = str(tmp_path / "seg0" / "backups" / TS[:8] / TS / f"gpbackup_0_{TS}")
    data = text_rows(9 * MiB + 123)
    zstd("backup_data", local, stdin=data)
    assert none("restore_data", local).stdout == data
    config = build_config(backend_options)

    async def stored_size() -> int:
        async with open_storage(config) as storage:
            return (await storage.stat(object_key(config.folder, local))).size

    assert asyncio.run(stored_size()) < len(data) // 2  # it really was compressed
