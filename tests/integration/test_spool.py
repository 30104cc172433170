"""Parts too big for the memory budget are buffered in spool_dir (spool.py), on both backends."""

from __future__ import annotations

import dataclasses
import errno
import json
import mmap
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from asyncplug import spool
from asyncplug.config import Config, build_config
from asyncplug.errors import PluginError
from asyncplug.pipeline import parts
from asyncplug.storage import open_storage
from bench.procs import run_child
from bench.seaweed import SeaweedServer
from tests.backup_support import read_back
from tests.conftest import s3_options
from tests.integration.test_backup import KEY, PREFIX, small, store
from tests.integration.test_s3_faults import Fault, FaultProxy

MiB = 1024 * 1024


def rss_file_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


def test_released_pages_leave_memory_and_keep_their_data(tmp_path: Path) -> None:
    size = 64 * MiB
    buf = spool.spool_map(size, str(tmp_path))
    assert isinstance(buf, spool.SpoolMap) and not os.listdir(tmp_path)  # no name
    block = os.urandom(MiB)
    before = rss_file_kib()
    for at in range(0, size, MiB):
        buf[at : at + MiB] = block
    assert rss_file_kib() - before > 48 * 1024  # the pages are in this process
    spool.release(buf, 0, size)
    assert rss_file_kib() - before < 16 * 1024  # and now they are not
    assert all(buf[at : at + MiB] == block for at in range(0, size, 8 * MiB))
    buf.close()


def test_release_leaves_anonymous_memory_alone() -> None:
    buf = mmap.mmap(-1, 4 * mmap.PAGESIZE)
    buf[:4] = b"keep"
    spool.release(buf, 0, len(buf))  # MADV_DONTNEED here would zero it
    assert buf[:4] == b"keep"


def test_a_missing_or_full_spool_dir_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(PluginError, match=r"cannot spool .* in .*/nowhere: .*set spool_dir"):
        spool.spool_map(MiB, str(tmp_path / "nowhere"))

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(PluginError, match=r"cannot spool a 1048576-byte part in .*: no room"):
        spool.spool_map(MiB, str(tmp_path))
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("compression", ["none", "zstd"])
async def test_big_parts_are_spooled_and_come_back_whole(
    backend_config: Config, compression: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    config = dataclasses.replace(small(backend_config, compression), spool_dir=str(spool_dir))
    made: list[int] = []

    def counted(size: int, directory: str) -> spool.SpoolMap:
        assert directory == str(spool_dir)
        made.append(size)
        return spool.spool_map(size, directory)

    monkeypatch.setattr(parts, "spool_map", counted)
    async with open_storage(config) as storage:
        # 6 parts of at most 40 MiB: the plan doubles at once (5, 10, 20, 40 MiB); the
        # budget is 5 MiB x (3 + 1), so raw parts over 10 MiB are spooled.
        storage.max_parts, storage.max_part_size = 6, 40 * MiB
        data = os.urandom(100 * MiB)
        await store(storage, config, data)
        assert (await read_back(storage, KEY))[0] == data
        assert await storage.abort_uploads(PREFIX) == 0
    # zstd's frames in flight come out of the budget: its 10 MiB parts are spooled too
    assert made and min(made) > (10 if compression == "none" else 5) * MiB
    assert not os.listdir(spool_dir)


CHILD = """
import asyncio, json, os, sys, threading
from asyncplug.config import build_config
from asyncplug.pipeline.backup import run_backup
from asyncplug.pipeline.restore import restore_stream
from asyncplug.storage import open_storage

SIZE = 512 * 2**20
KEY = "prod/cluster1/spool/gpbackup_0_20250101123456"

def feed(fd):
    with os.fdopen(fd, "wb") as out:
        for _ in range(SIZE // 2**20):
            out.write(os.urandom(2**20))

async def main(options):
    config = build_config(options)
    async with open_storage(config) as storage:
        # 9 parts: the plan doubles every part (8, 16, ..., 256 MiB for 512 MiB).
        storage.max_parts = 9
        read, write = os.pipe()
        threading.Thread(target=feed, args=(write,), daemon=True).start()
        assert await run_backup(storage, KEY, read, config) == SIZE
        with open(os.devnull, "wb") as sink:  # restore checks the whole-stream CRC32C
            assert await restore_stream(storage, KEY, sink.fileno(), config) == SIZE
        await storage.delete([KEY, KEY + ".asyncplug-crc"])

asyncio.run(main(json.loads(sys.argv[1])))
"""


def test_peak_rss_stays_in_the_budget_while_parts_grow_past_it(
    seaweed: SeaweedServer, bucket: str, tmp_path: Path
) -> None:
    """Default settings (64 MiB budget) with parts up to 256 MiB: without the spool the
    process would hold 2 x 256 MiB at the end; it must stay under 150 MB (os.wait4)."""
    options: dict[str, Any] = {**s3_options(seaweed, bucket), "spool_dir": str(tmp_path)}
    run = run_child([sys.executable, "-c", CHILD, json.dumps(options)], drain_stdout=True)
    assert run.ok, run.failure()
    assert run.maxrss_kib * 1024 <= 150 * 10**6, f"peak RSS {run.maxrss_kib / 1024:.0f} MiB"
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("route", ["lean, a failed part retried", "botocore, through http_proxy"])
async def test_spooled_parts_survive_retries_and_proxies(
    seaweed: SeaweedServer, bucket: str, tmp_path: Path, route: str
) -> None:
    """A spooled part is sent again from its file after a 500 (lean path), and sent in
    steps through aiohttp when a proxy makes botocore carry it."""
    proxy = await FaultProxy(seaweed.endpoint).start()
    try:
        if route.startswith("lean"):
            options = s3_options(seaweed, bucket, endpoint=proxy.endpoint, max_retries=3)
        else:
            options = s3_options(seaweed, bucket, http_proxy=proxy.endpoint)
        config = dataclasses.replace(small(build_config(options)), spool_dir=str(tmp_path))
        async with open_storage(config) as storage:
            storage.max_parts, storage.max_part_size = 6, 40 * MiB
            # Two 500s for the spooled part (the only one of 20 MiB): it is sent three times.
            proxy.faults = [Fault("PUT", "status", 500, "InternalError", 20 * MiB)] * 2
            data = os.urandom(40 * MiB)  # parts of 5, 10, 20 (spooled) and 5 MiB
            await store(storage, config, data)
            assert not proxy.faults
            assert (await read_back(storage, KEY))[0] == data
        big = [h for m, _, h in proxy.seen if m == "PUT" and h["Content-Length"] == str(20 * MiB)]
        assert len(big) == 3
        puts = [h.get("User-Agent", "") for m, _, h in proxy.seen if m == "PUT"]
        lean = route.startswith("lean")
        assert puts and all((agent == "asyncplug") == lean for agent in puts)
    finally:
        await proxy.stop()
    assert not os.listdir(tmp_path)
