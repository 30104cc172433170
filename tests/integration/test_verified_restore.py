"""Verified restores through the installed executable, as gprestore's helper drives it:
the helper reads our stdout and ignores the exit status once it has its bytes, so a
flipped byte in a stored object must never reach stdout. S3 (the splice path and the
regular path) and a directory; restore_data, restore_data_subset, restore_file, verify."""

from __future__ import annotations

import asyncio
import os
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from asyncplug.config import Config, build_config
from asyncplug.pipeline.blocks import BLOCK_SIZE, index_key
from asyncplug.storage import open_storage
from tests.conftest import file_options, s3_options
from tests.integration.runner import Plugin, make_plugin, one_line_error

TS = "20250101123456"
FOLDER = "prod/cluster1"
DATA = random.Random(15).randbytes(5 * BLOCK_SIZE + 12_345)  # 5 blocks and a partial one
# GETs that never end on a block boundary: every fetch is widened to whole blocks.
OPTIONS = {"restore_multipart_chunksize": 300_000, "log_level": "debug"}
FIRST, MIDDLE, LAST = 7, 2 * BLOCK_SIZE + 99, 5 * BLOCK_SIZE + 12_000


def path(n: int = 0) -> str:
    return f"/data/seg{n}/backups/{TS[:8]}/{TS}/gpbackup_{n}_{TS}"


def key(n: int = 0) -> str:
    return f"{FOLDER}/backups/{TS[:8]}/{TS}/gpbackup_{n}_{TS}"


@pytest.fixture(params=["s3-splice", "s3-regular", "file"])
def options(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "file":
        return file_options(tmp_path / "store", **OPTIONS)
    splice = "on" if request.param == "s3-splice" else "off"
    server = request.getfixturevalue("seaweed")
    return s3_options(server, request.getfixturevalue("bucket"), restore_splice=splice, **OPTIONS)


@pytest.fixture
def plugin(options: dict[str, Any], write_config: Callable[..., str], tmp_path: Path) -> Plugin:
    return make_plugin(options, write_config, tmp_path)


def config_of(options: dict[str, Any]) -> Config:
    return build_config({k: v for k, v in options.items() if k != "log_level"})


async def corrupt(config: Config, name: str, at: int) -> None:
    """Flip one byte of an object in place, keeping its metadata."""
    async with open_storage(config) as storage:
        info = await storage.stat(name)
        body = bytearray(b"".join(await storage.get_range(name, 0, info.size)))
        body[at] ^= 0x40
        from asyncplug.crc import crc32c

        await storage.put(name, bytes(body), crc32c(body), dict(info.metadata))


def spliced(plugin: Plugin) -> bool:
    """Did the last runs take the splice path (from the debug log)?"""
    logs = "".join(p.read_text() for p in (plugin.home.parent / "logs").glob("*.log"))
    return 'pipeline/splice.py", line' in logs or re.search(r"spliced \d+ bytes", logs) is not None


def test_a_clean_backup_restores_and_verifies(plugin: Plugin, options: dict[str, Any]) -> None:
    plugin("backup_data", path(), stdin=DATA)
    assert plugin("restore_data", path()).stdout == DATA
    assert spliced(plugin) == (options.get("restore_splice") == "on")
    proc = plugin("verify", TS)
    assert proc.stdout.decode() == (
        f"ok\t{key()}\t{len(DATA)}\tchecked 6 blocks of {BLOCK_SIZE} bytes\n"
    )


@pytest.mark.parametrize("at", [FIRST, MIDDLE, LAST])
def test_no_byte_of_a_corrupt_block_reaches_stdout(
    plugin: Plugin, options: dict[str, Any], tmp_path: Path, at: int
) -> None:
    plugin("backup_data", path(), stdin=DATA)
    asyncio.run(corrupt(config_of(options), key(), at))
    bad = at - at % BLOCK_SIZE

    proc = plugin("restore_data", path(), check=False)
    assert proc.returncode == 8
    assert proc.stdout == DATA[:bad]  # everything before the block, nothing of it
    assert f"{key()} is corrupt at byte {bad}" in one_line_error(proc)
    assert spliced(plugin) == (options.get("restore_splice") == "on")

    offsets = tmp_path / "offsets"
    over = [(0, 100), (bad + 10, bad + 20)]  # the second range lies in the bad block
    offsets.write_text(f"2 {over[0][0]} {over[0][1]} {over[1][0]} {over[1][1]}")
    proc = plugin("restore_data_subset", path(), str(offsets), check=False)
    assert proc.returncode == 8
    assert proc.stdout == (DATA[:100] if bad else b"")
    # Ranges around the bad block, right up to its edges: byte-identical, exit 0.
    clean = [(r, r + 1000) for r in range(0, len(DATA) - 1000, 200_000)]
    clean = [(s, e) for s, e in clean if e <= bad or s >= bad + BLOCK_SIZE]
    after = min(bad + BLOCK_SIZE, len(DATA))
    clean += [(after, min(after + 5, len(DATA))), (max(bad - 5, 0), bad)]
    offsets.write_text(f"{len(clean)} " + " ".join(f"{s} {e}" for s, e in clean))
    proc = plugin("restore_data_subset", path(), str(offsets))
    assert proc.stdout == b"".join(DATA[s:e] for s, e in clean)

    proc = plugin("verify", TS, check=False)
    assert proc.returncode == 8
    assert proc.stdout.decode().startswith(f"CORRUPT\t{key()}\t{len(DATA)}\t")
    assert f"{key()} at byte {bad}" in one_line_error(proc)


def test_restore_file_of_a_corrupt_object_writes_no_file(
    plugin: Plugin, options: dict[str, Any], tmp_path: Path
) -> None:
    source = tmp_path / "backups" / TS[:8] / TS / f"gpbackup_{TS}_metadata.sql"
    source.parent.mkdir(parents=True)
    source.write_bytes(DATA)
    plugin("backup_file", str(source))
    name = f"{FOLDER}/backups/{TS[:8]}/{TS}/{source.name}"
    asyncio.run(corrupt(config_of(options), name, MIDDLE))
    source.unlink()
    proc = plugin("restore_file", str(source), check=False)
    assert proc.returncode == 8
    assert f"corrupt at byte {2 * BLOCK_SIZE}" in one_line_error(proc)
    assert os.listdir(source.parent) == []
    proc = plugin("verify", name, check=False)  # one object, by its key
    assert proc.returncode == 8 and proc.stdout.decode().startswith(f"CORRUPT\t{name}\t")


def test_a_damaged_or_missing_index_writes_nothing(plugin: Plugin, options: dict[str, Any]) -> None:
    config = config_of(options)
    plugin("backup_data", path(), stdin=DATA)
    asyncio.run(corrupt(config, index_key(key()), 40))  # a block CRC
    proc = plugin("restore_data", path(), check=False)
    assert (proc.returncode, proc.stdout) == (8, b"")
    assert "block index" in one_line_error(proc)
    assert plugin("verify", TS, check=False).returncode == 8

    async def drop() -> None:
        async with open_storage(config) as storage:
            await storage.delete([index_key(key())])

    asyncio.run(drop())
    proc = plugin("restore_data", path(), check=False)
    assert (proc.returncode, proc.stdout) == (8, b"")
    assert "is missing" in one_line_error(proc)
    proc = plugin("verify", path(), check=False)
    assert proc.returncode == 8 and "is missing" in proc.stdout.decode()


def test_verify_names_every_corrupt_object_of_a_backup(
    backend_options: dict[str, Any], write_config: Callable[..., str], tmp_path: Path
) -> None:
    plugin = make_plugin(backend_options, write_config, tmp_path)
    zstd = make_plugin({**backend_options, "compression": "zstd"}, write_config, tmp_path, "z.yaml")
    text = b"".join(b"%d\tsome row of text\n" % n for n in range(200_000))
    plugin("backup_data", path(0), stdin=DATA)
    plugin("backup_data", path(1), stdin=DATA[:1000])
    zstd("backup_data", path(2), stdin=text)
    go = key(3)  # an object as the Go plugin writes it: no record at all

    async def setup() -> None:
        async with open_storage(build_config(backend_options)) as storage:
            from asyncplug.crc import crc32c

            await storage.put(go, b"abc", crc32c(b"abc"))

    asyncio.run(setup())
    lines = plugin("verify", TS).stdout.decode().splitlines()
    assert [line.split("\t")[:2] for line in lines] == [
        ["ok", key(0)], ["ok", key(1)], ["ok", key(2)], ["unverified", go]
    ]  # fmt: skip
    assert lines[2].endswith("zstd frames")

    config = build_config(backend_options)
    asyncio.run(corrupt(config, key(0), LAST))
    asyncio.run(corrupt(config, key(2), 100))  # inside the first zstd frame
    proc = plugin("verify", TS, check=False)
    assert proc.returncode == 8
    states = [line.split("\t")[0] for line in proc.stdout.decode().splitlines()]
    assert states == ["CORRUPT", "ok", "CORRUPT", "unverified"]
    error = one_line_error(proc)
    assert f"2 of 4 object(s) corrupt: {key(0)} at byte {5 * BLOCK_SIZE}; {key(2)}" in error
    proc = plugin("restore_data", path(2), check=False)  # compressed: checked before writing
    assert (proc.returncode, proc.stdout) == (8, b"")
