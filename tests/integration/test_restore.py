"""Restore against the real backends (SeaweedFS and a directory), raw and compressed."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncplug.config import Config, MiB, load_config
from asyncplug.errors import IntegrityError, ObjectNotFound
from asyncplug.pipeline import frames
from asyncplug.pipeline.backup import run_backup
from asyncplug.pipeline.blocks import index_key
from asyncplug.pipeline.codecs import CODECS
from asyncplug.pipeline.restore import restore_path, restore_stream
from asyncplug.storage import open_storage
from tests.restore_support import compressed, crc_metadata

KEY = "prod/cluster1/backups/20250101/20250101123456/gpbackup_0_20250101123456"
SMALL = {"restore_multipart_chunksize": 256 * 1024, "restore_max_concurrent_requests": 3}


def tuned(config: Config, **changes: Any) -> Config:
    return dataclasses.replace(config, **{**SMALL, **changes})


def text(size: int) -> bytes:
    row = b"1|155190|7706|1|17|21168.23|0.04|0.02|N|O|1996-03-13|truck|egular courts|\n"
    return (row * (size // len(row) + 1))[:size]


async def put(config: Config, body: bytes, metadata: dict[str, str] | None = None) -> None:
    async with open_storage(config) as storage:
        await storage.put(KEY, body, frames.crc32c(body), metadata)


async def restore(config: Config, ranges: list[tuple[int, int]] | None = None) -> bytes:
    with tempfile.TemporaryFile() as out:
        async with open_storage(config) as storage:
            count = await restore_stream(storage, KEY, out.fileno(), config, ranges)
        out.seek(0)
        data = out.read()
    assert count == len(data)
    return data


async def backup(config: Config, raw: bytes, frame_size: int = 64 * 1024) -> None:
    with tempfile.TemporaryFile() as source:
        source.write(raw)
        source.seek(0)
        async with open_storage(config) as storage:
            await run_backup(storage, KEY, source.fileno(), config, frame_size)


@pytest.mark.parametrize("compression", ["none", "zstd", "lz4"])
async def test_round_trip_through_backup(backend_config: Config, compression: str) -> None:
    # 11 MiB with 5 MiB parts: a multipart object (a block index beside it when raw).
    config = tuned(backend_config, compression=compression, backup_multipart_chunksize=5 * MiB)
    raw = os.urandom(3 * MiB) + text(8 * MiB)
    await backup(config, raw)
    assert await restore(config) == raw
    ranges = [(11 * MiB - 1, 11 * MiB), (5, 5), (7 * MiB, 7 * MiB + 300_000), (0, 1), (0, 1)]
    assert await restore(config, ranges) == b"".join(raw[a:b] for a, b in ranges)
    if compression == "none":  # the block index backup_data wrote is what restore checks
        async with open_storage(config) as storage:
            await storage.delete([index_key(KEY)])
        with pytest.raises(IntegrityError, match=r"index .* is missing"):
            await restore(config)


@pytest.mark.parametrize("codec", ["none", "gzip"])
def test_random_subsets(backend_config: Config, codec: str) -> None:
    raw = text(700_000)
    body = raw if codec == "none" else compressed(raw, CODECS[codec], 50_000)
    config = tuned(backend_config)
    asyncio.run(put(config, body, crc_metadata(raw) if codec == "none" else None))

    @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(st.integers(0, len(raw)), st.integers(0, 5000)), max_size=8))
    def check(pairs: list[tuple[int, int]]) -> None:
        ranges = [(a, min(a + n, len(raw))) for a, n in pairs] + [(0, len(raw))]
        assert asyncio.run(restore(config, ranges)) == b"".join(raw[a:b] for a, b in ranges)

    check()


async def test_range_beyond_the_end_writes_nothing(backend_config: Config) -> None:
    config = tuned(backend_config)
    await put(config, text(1000))
    with tempfile.TemporaryFile() as out:
        async with open_storage(config) as storage:
            with pytest.raises(Exception, match="beyond the end"):
                await restore_stream(storage, KEY, out.fileno(), config, [(0, 5), (999, 1001)])
        assert os.fstat(out.fileno()).st_size == 0


async def test_corrupt_raw_object_is_detected(backend_config: Config) -> None:
    raw = text(600_000)
    bad = raw[:1000] + b"X" + raw[1001:]
    config = tuned(backend_config)
    await put(config, bad, crc_metadata(raw))
    with pytest.raises(IntegrityError, match="does not match"):
        await restore(config)


async def test_corrupt_frame_is_detected(backend_config: Config) -> None:
    obj = bytearray(compressed(text(600_000), CODECS["zstd"], 100_000))
    obj[frames.HEADER_SIZE + 40] ^= 0x01
    config = tuned(backend_config)
    await put(config, bytes(obj))
    with pytest.raises(IntegrityError):
        await restore(config)


async def test_restore_path(backend_config: Config, tmp_path: Path) -> None:
    raw = text(900_000)
    config = tuned(backend_config)
    await backup(config, raw)
    target = tmp_path / "restored" / "gpbackup_20250101123456_metadata.sql"
    async with open_storage(config) as storage:
        assert await restore_path(storage, KEY, str(target), config) == len(raw)
        assert target.read_bytes() == raw
        with pytest.raises(ObjectNotFound):
            await restore_path(storage, KEY + "-missing", str(tmp_path / "x" / "y"), config)
    assert not (tmp_path / "x").exists()


def test_executable_quits_quietly_when_its_reader_goes_away(
    backend_options: dict[str, Any], write_config: Any, tmp_path: Path
) -> None:
    config_path = write_config(backend_options)
    config = load_config(config_path)
    asyncio.run(put(config, os.urandom(20 * MiB)))
    data_key = str(tmp_path / "backups/20250101/20250101123456/gpbackup_0_20250101123456")
    with subprocess.Popen(
        [sys.executable, "-m", "asyncplug", "restore_data", config_path, data_key],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as plugin:  # fmt: skip
        assert plugin.stdout is not None and plugin.stderr is not None
        plugin.stdout.read(100_000)
        plugin.stdout.close()  # the reader goes away early
        stderr = plugin.stderr.read().decode()
        # a normal end, as the Go plugin's: killed by SIGPIPE, nothing said (README)
        assert plugin.wait(timeout=60) == -signal.SIGPIPE
    assert stderr == ""
