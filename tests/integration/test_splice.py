"""restore_data's splice path (pipeline/splice.py) against SeaweedFS, through the fault proxy.

Every test restores a raw object as backup_data marks it into a real pipe, so the fast
path runs; a fault makes it hand over to the regular path at the first byte it did not
write, and the output must still be the object, byte for byte.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import random
import threading
from dataclasses import dataclass

import pytest

from asyncplug.config import build_config
from asyncplug.crc import crc32c
from asyncplug.errors import IntegrityError, Interrupted
from asyncplug.pipeline import blocks, frames, restore, splice
from asyncplug.pipeline.restore import restore_stream
from asyncplug.storage.s3 import S3Storage
from bench.seaweed import SeaweedServer
from tests.conftest import s3_options
from tests.integration.test_s3_faults import Fault, FaultProxy

KEY = "prod/backups/20250101/20250101123456/gpbackup_0_20250101123456"
CHUNK = 256 * 1024
DATA = random.Random(7).randbytes(5 * CHUNK + 12_345)  # six GETs, the last one short


def options(seaweed: SeaweedServer, bucket: str, proxy: FaultProxy) -> dict[str, object]:
    return s3_options(
        seaweed,
        bucket,
        endpoint=proxy.endpoint,
        max_retries=2,
        restore_multipart_chunksize=CHUNK,
        restore_max_concurrent_requests=3,
    )


async def store(
    storage: S3Storage, data: bytes, crc: int | None = None, indexed: bool = False
) -> None:
    """As backup_data stores it: with a block index (indexed), or as asyncplug 0.1 did."""
    metadata = {
        frames.META_FORMAT: frames.FORMAT_RAW,
        frames.META_CRC: f"{crc32c(data) if crc is None else crc:08x}",
        frames.META_SIZE: str(len(data)),
    }
    if indexed:
        metadata[blocks.META_INDEX] = "1"
        recorder = blocks.BlockRecorder()
        recorder.update(memoryview(data))
        index = recorder.finish()
        await storage.put(blocks.index_key(KEY), index, crc32c(index))
    await storage.put(KEY, data, crc32c(data), metadata)


async def restore_to_pipe(storage: S3Storage, config_options: dict[str, object]) -> bytes:
    """restore_stream into a real pipe, drained by a thread; returns what came out."""
    read_fd, write_fd = os.pipe()
    out = bytearray()

    def drain() -> None:
        while chunk := os.read(read_fd, 1 << 20):
            out.extend(chunk)
        os.close(read_fd)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        count = await restore_stream(storage, KEY, write_fd, build_config(config_options))
    finally:
        os.close(write_fd)
        await asyncio.to_thread(reader.join)
    assert count == len(out)
    return bytes(out)


async def round_trip(
    seaweed: SeaweedServer,
    bucket: str,
    proxy: FaultProxy,
    caplog: pytest.LogCaptureFixture,
    **extra: object,
) -> None:
    """Store DATA as backup_data marks it, restore it into a pipe: the same bytes come out.
    The proxy's log holds the restore's requests only; caplog the restore's debug lines."""
    indexed = bool(extra.pop("indexed", False))
    opts = {**options(seaweed, bucket, proxy), **extra}
    async with S3Storage(build_config(opts)) as storage:
        await store(storage, DATA, indexed=indexed)
        proxy.seen.clear()
        with caplog.at_level(logging.DEBUG, logger="asyncplug.pipeline"):
            assert await restore_to_pipe(storage, opts) == DATA


def data_gets(proxy: FaultProxy) -> list[str]:
    return [h.get("Range", "") for m, _, h in proxy.seen if m == "GET"]


async def test_whole_object_is_spliced_in_chunk_gets(
    seaweed: SeaweedServer, bucket: str, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    await round_trip(seaweed, bucket, proxy, caplog)
    starts = [int(r.split("=")[1].split("-")[0]) for r in data_gets(proxy)]
    assert starts == list(range(0, len(DATA), CHUNK))  # one GET a chunk, nothing read twice
    assert f"spliced {len(DATA)} bytes" in caplog.text
    # After the first response, every GET is pinned to the object it started reading.
    assert all(h.get("If-Match") for m, _, h in proxy.seen[-3:] if m == "GET")


@pytest.mark.parametrize(
    "fault",
    [
        Fault("GET", "cut"),
        Fault("GET", "reset"),
        Fault("GET", "status", 500, "InternalError"),
        Fault("GET", "status", 503, "SlowDown"),
    ],
    ids=["cut", "reset", "500", "503"],
)
@pytest.mark.parametrize("indexed", [False, True], ids=["0.1", "indexed"])
async def test_a_fault_hands_over_to_the_regular_path_at_the_exact_byte(
    seaweed: SeaweedServer,
    bucket: str,
    proxy: FaultProxy,
    fault: Fault,
    indexed: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The index GET comes first when there is one: a kind the proxy does not know lets it
    # through, and the fault hits the data.
    proxy.faults = [Fault("GET", "pass"), fault] if indexed else [fault]
    await round_trip(seaweed, bucket, proxy, caplog, indexed=indexed)
    assert "splice path stopped at byte" in caplog.text
    assert not proxy.faults


@dataclass
class FourthGetCut(FaultProxy):
    """Cuts the body of the fourth GET it sees, after three chunks went out whole (the
    fifth with nth=5: the index GET comes first)."""

    gets: int = 0
    nth: int = 4

    def _take(self, method: str, body: int = 0) -> Fault | None:
        if method != "GET":
            return None
        self.gets += 1
        return Fault("GET", "cut") if self.gets == self.nth else None


async def test_a_cut_in_a_later_chunk_resumes_where_the_splice_stopped(
    seaweed: SeaweedServer, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await FourthGetCut(seaweed.endpoint).start()
    try:
        await round_trip(seaweed, bucket, proxy, caplog)
    finally:
        await proxy.stop()
    # The fourth GET is chunk 3 (three go out at once, the next when the first is done);
    # the proxy sends half of its body, then the regular path GETs from that byte on.
    cut = 3 * CHUNK + CHUNK // 2
    assert f"splice path stopped at byte {cut} " in caplog.text
    assert any(r.startswith(f"bytes={cut}-") for r in data_gets(proxy))


async def test_a_cut_with_a_block_index_resumes_after_the_last_checked_block(
    seaweed: SeaweedServer, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await FourthGetCut(seaweed.endpoint, nth=5).start()
    try:
        await round_trip(seaweed, bucket, proxy, caplog, indexed=True)
    finally:
        await proxy.stop()
    # Half of chunk 3 arrived, but its block was not complete: nothing of it went out,
    # and the regular path starts at the block.
    assert f"splice path stopped at byte {3 * CHUNK} " in caplog.text
    assert any(r.startswith(f"bytes={3 * CHUNK}-") for r in data_gets(proxy))


async def test_indexed_object_is_spliced_and_checked_block_by_block(
    seaweed: SeaweedServer, bucket: str, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    await round_trip(seaweed, bucket, proxy, caplog, indexed=True)
    assert f"spliced {len(DATA)} bytes" in caplog.text


async def test_wrong_recorded_crc_is_detected(
    seaweed: SeaweedServer, bucket: str, proxy: FaultProxy
) -> None:
    opts = options(seaweed, bucket, proxy)
    async with S3Storage(build_config(opts)) as storage:
        await store(storage, DATA, crc=crc32c(DATA) ^ 1)
        with pytest.raises(IntegrityError, match="does not match the recorded"):
            await restore_to_pipe(storage, opts)


async def test_reader_going_away_stops_the_restore(
    seaweed: SeaweedServer, bucket: str, proxy: FaultProxy
) -> None:
    opts = options(seaweed, bucket, proxy)
    async with S3Storage(build_config(opts)) as storage:
        await store(storage, DATA)
        read_fd, write_fd = os.pipe()
        os.close(read_fd)  # the reader is gone before the first byte
        try:
            with pytest.raises(Interrupted, match="stdout closed by the reader"):
                await restore_stream(storage, KEY, write_fd, build_config(opts))
        finally:
            os.close(write_fd)


async def test_only_plain_http_gives_a_source(seaweed: SeaweedServer, bucket: str) -> None:
    tls = s3_options(seaweed, bucket, endpoint="https://127.0.0.1:9")
    async with S3Storage(build_config(tls)) as storage:
        assert storage.http_source(KEY) is None
    plain = s3_options(seaweed, bucket)
    async with S3Storage(build_config(plain)) as storage:
        source = storage.http_source(KEY)
        assert source is not None and source.port == seaweed.s3_port
        head = source.request(0, 10, '"etag"').decode("latin-1")
        assert head.startswith("GET /") and "range: bytes=0-9\r\n" in head.lower()
        assert 'if-match: "etag"\r\n' in head.lower()


async def test_restore_splice_off_keeps_the_regular_path(
    seaweed: SeaweedServer, bucket: str, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    await round_trip(seaweed, bucket, proxy, caplog, restore_splice="off")
    assert "spliced" not in caplog.text and "restore of" in caplog.text


async def test_a_pipe_quota_used_up_keeps_the_regular_path(
    seaweed: SeaweedServer,
    bucket: str,
    proxy: FaultProxy,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past pipe-user-pages-soft a new pipe holds 8 KiB and cannot grow: no splicing."""

    def quota_used_up(fd: int) -> None:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 8192)

    monkeypatch.setattr(splice, "grow_pipe", quota_used_up)
    await round_trip(seaweed, bucket, proxy, caplog)
    assert "splice path not taken: a new pipe holds only 8192 bytes" in caplog.text
    assert "spliced" not in caplog.text


async def test_a_small_table_takes_the_regular_path_in_two_round_trips(
    seaweed: SeaweedServer, bucket: str, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """Below restore.SPLICE_MIN the splice path's thread and connection cost more than
    they save: HEAD of the object, then the index and the data GET side by side."""
    small = DATA[: restore.SPLICE_MIN - 1]
    opts = options(seaweed, bucket, proxy)
    async with S3Storage(build_config(opts)) as storage:
        await store(storage, small, indexed=True)
        proxy.seen.clear()
        with caplog.at_level(logging.DEBUG, logger="asyncplug.pipeline"):
            read_fd, write_fd = os.pipe()
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, 1 << 20)  # the object fits: no drain
            try:
                count = await restore_stream(storage, KEY, write_fd, build_config(opts))
                out = os.read(read_fd, 2 << 20)
            finally:
                os.close(write_fd)
                os.close(read_fd)
    assert count == len(small) and out == small
    assert "spliced" not in caplog.text
    seen = [(method, path.split("?")[0].rsplit("/", 1)[1]) for method, path, _ in proxy.seen]
    name = KEY.rsplit("/", 1)[1]
    assert seen[0] == ("HEAD", name)
    assert sorted(seen[1:3]) == [("GET", name), ("GET", name + blocks.INDEX_SUFFIX)]
    assert all(method == "GET" for method, _ in seen[1:])
