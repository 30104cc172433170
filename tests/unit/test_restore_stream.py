"""restore_stream against the in-memory Storage: whole and subset, raw and compressed."""

from __future__ import annotations

import asyncio
import fcntl
import os
import tempfile
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncplug.config import Config
from asyncplug.errors import InputError
from asyncplug.pipeline import restore as restore_module
from asyncplug.pipeline.codecs import CODECS
from asyncplug.pipeline.restore import restore_path, restore_stream
from tests.restore_support import MemoryStorage, compressed, crc_metadata

KEY = "prod/cluster1/backups/20250101/20250101123456/gpbackup_0_20250101123456"
CONFIG = Config(
    folder="prod/cluster1",
    restore_multipart_chunksize=3000,
    restore_max_concurrent_requests=3,
    compression_workers=2,
)


def text(size: int) -> bytes:
    row = b"1|Customer#000000001|IVhzIApeRb|15|25-989-741-2988|711.56|\n"
    return (row * (size // len(row) + 1))[:size]


def restore(
    store: MemoryStorage, ranges: list[tuple[int, int]] | None, config: Config = CONFIG
) -> tuple[int, bytes]:
    """Run restore_stream into a temp file; (returned count, bytes written)."""
    with tempfile.TemporaryFile() as out:
        count = asyncio.run(restore_stream(store, KEY, out.fileno(), config, ranges))
        out.seek(0)
        return count, out.read()


def stored(raw: bytes, codec: str, frame: int = 1000) -> MemoryStorage:
    store = MemoryStorage(piece=777)
    if codec == "none":
        store.objects[KEY] = (raw, crc_metadata(raw))
    else:
        store.objects[KEY] = (compressed(raw, CODECS[codec], frame), {})
    return store


FORMATS = ["none", *sorted(CODECS)]
ranges_of = st.data()


@pytest.mark.parametrize("codec", FORMATS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.integers(0, 20_000), data=ranges_of)
def test_subsets_match_slicing(codec: str, size: int, data: st.DataObject) -> None:
    raw = os.urandom(size // 2) + text(size - size // 2)
    bound = st.integers(0, size)
    pair = st.tuples(bound, bound).map(lambda p: (min(p), max(p)))
    one_byte = st.integers(0, max(size - 1, 0)).map(lambda i: (i, min(i + 1, size)))
    ranges = data.draw(st.lists(st.one_of(pair, one_byte, st.just((0, size))), max_size=10))
    count, out = restore(stored(raw, codec), ranges)
    assert out == b"".join(raw[a:b] for a, b in ranges)
    assert count == len(out)


@pytest.mark.parametrize("codec", FORMATS)
@pytest.mark.parametrize("size", [0, 1, 47, 48, 64, 2999, 3000, 3001, 25_000])
def test_whole_stream(codec: str, size: int) -> None:
    raw = text(size)
    count, out = restore(stored(raw, codec), None)
    assert out == raw and count == size


@pytest.mark.parametrize("codec", FORMATS)
def test_spec_examples(codec: str) -> None:
    raw = os.urandom(1_000_000)
    store = stored(raw, codec, frame=64 * 1024)
    big = Config(folder="f")  # defaults
    assert restore(store, [(3, 10)], big)[1] == raw[3:10]
    assert restore(store, [(900_000, 900_001)], big)[1] == raw[900_000:900_001]
    assert restore(store, [(0, 700_000), (900_000, 900_001)], big)[1] == (
        raw[:700_000] + raw[900_000:900_001]
    )


@pytest.mark.parametrize("codec", FORMATS)
def test_range_beyond_the_end_is_refused_before_any_output(codec: str) -> None:
    raw = text(5000)
    with tempfile.TemporaryFile() as out:
        with pytest.raises(InputError, match="beyond the end"):
            asyncio.run(restore_stream(stored(raw, codec), KEY, out.fileno(), CONFIG,
                                       [(0, 10), (4990, 5001)]))  # fmt: skip
        assert os.fstat(out.fileno()).st_size == 0


def test_raw_object_costs_no_extra_round_trip() -> None:
    raw = text(100_000)
    store = stored(raw, "none")
    assert restore(store, None)[1] == raw
    # The tail GET runs beside the first data GET: one GET per chunk, plus one.
    assert len(store.gets) == -(-len(raw) // CONFIG.restore_multipart_chunksize) + 1
    small = stored(text(2000), "none")
    restore(small, None)
    assert len(small.gets) == 1  # the first GET holds the tail too


def test_concurrency_and_window_are_bounded() -> None:
    raw = text(200_000)
    store = stored(raw, "none")
    store.delay = 0.002
    assert restore(store, None)[1] == raw
    assert store.max_in_flight == CONFIG.restore_max_concurrent_requests


def test_subset_coalesces_nearby_ranges() -> None:
    raw = text(1_000_000)
    store = stored(raw, "none")
    ranges = [(i * 40_000, i * 40_000 + 100) for i in range(20)]
    assert restore(store, ranges, Config(folder="f"))[1] == b"".join(raw[a:b] for a, b in ranges)
    data_gets = [g for g in store.gets if g[2] != len(raw)]
    assert len(data_gets) == 1  # 20 ranges, 40 kB apart: one GET


def test_a_slow_reader_holds_back_fetching() -> None:
    """While the reader reads nothing, at most concurrency + 1 chunks are fetched beyond
    what the pipe holds (the writer grows it to 1 MiB)."""
    chunk = 1024 * 1024
    raw = os.urandom(12 * chunk)
    store = MemoryStorage(piece=65536)
    store.objects[KEY] = (raw, {})
    config = Config(folder="f", restore_multipart_chunksize=chunk,
                    restore_max_concurrent_requests=3)  # fmt: skip
    read_fd, write_fd = os.pipe()

    async def main() -> bytes:
        restore = asyncio.create_task(restore_stream(store, KEY, write_fd, config))
        for _ in range(50):  # let it run until it is stuck on the full pipe
            await asyncio.sleep(0.01)
        in_pipe = -(-fcntl.fcntl(write_fd, fcntl.F_GETPIPE_SZ) // chunk)
        data_gets = [g for g in store.gets if g[2] - g[1] == chunk]
        assert len(data_gets) <= config.restore_max_concurrent_requests + 1 + in_pipe
        assert len(data_gets) < len(raw) // chunk  # held back: not all fetched
        data = bytearray()
        loop = asyncio.get_running_loop()
        while len(data) < len(raw):
            data += await loop.run_in_executor(None, os.read, read_fd, 1 << 20)
        assert await restore == len(raw)
        return bytes(data)

    try:
        assert asyncio.run(main()) == raw
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_non_blocking_stdout_is_written_whole() -> None:
    raw = os.urandom(1024 * 1024)
    store = stored(raw, "none")
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    chunks: list[bytes] = []

    def drain() -> None:
        while chunk := os.read(read_fd, 65536):
            chunks.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        assert asyncio.run(restore_stream(store, KEY, write_fd, CONFIG)) == len(raw)
    finally:
        os.close(write_fd)
        reader.join()
        os.close(read_fd)
    assert b"".join(chunks) == raw


@pytest.mark.parametrize("marked", [True, False])
def test_only_unmarked_objects_get_their_tail_probed(marked: bool) -> None:
    """backup_data marks raw objects: reading one costs no tail GET. An object without the
    mark (the Go plugin's) is probed for a trailer first."""
    raw = os.urandom(1024 * 1024)
    metadata = {"asyncplug-format": "raw"} if marked else {}
    store = MemoryStorage(piece=65536)
    store.objects[KEY] = (raw, metadata)
    count, out = restore(store, [(10, 20), (5000, 9000)])
    assert out == raw[10:20] + raw[5000:9000] and count == len(out)
    tail_gets = [g for g in store.gets if g[2] == len(raw)]
    assert (tail_gets == []) is marked


@pytest.mark.parametrize("codec", FORMATS)
def test_a_long_range_is_planned_a_window_at_a_time(
    codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole 5 TiB restore must not plan 437k GETs up front: each plan covers a window."""
    monkeypatch.setattr(restore_module, "WINDOW_GETS", 2)
    planned: list[int] = []
    for name in ("plan_raw", "plan_frames"):
        real = getattr(restore_module, name)

        def recording(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            plan = _real(*args, **kwargs)
            planned.append(plan.output_size)
            return plan

        monkeypatch.setattr(restore_module, name, recording)
    raw = text(25_000)
    assert restore(stored(raw, codec), None) == (len(raw), raw)
    assert len(planned) >= 5 and max(planned) <= 2 * CONFIG.restore_multipart_chunksize
    planned.clear()
    assert restore(stored(raw, codec), [(100, 24_000)])[1] == raw[100:24_000]
    assert len(planned) >= 4 and max(planned) <= 2 * CONFIG.restore_multipart_chunksize
    # restore_file writes each window at its own offset.
    with tempfile.TemporaryDirectory() as tmp:
        target = os.path.join(tmp, "restored")
        assert asyncio.run(restore_path(stored(raw, codec), KEY, target, CONFIG)) == len(raw)
        with open(target, "rb") as restored:
            assert restored.read() == raw
