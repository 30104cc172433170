"""Fetch planning: splitting, coalescing, reuse within the window, frames only once."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from asyncplug.pipeline import frames
from asyncplug.pipeline.codecs import CODECS
from asyncplug.pipeline.ranges import COALESCE_GAP, Plan, plan_frames, plan_raw
from tests.restore_support import compressed

KiB = 1024


def spans(plan: Plan) -> list[tuple[int, int]]:
    return [(f.start, f.end) for f in plan.fetches]


def apply(plan: Plan, data: bytes) -> bytes:
    """What the restore engine writes for a raw plan."""
    out = []
    for piece in plan.slices:
        fetch = plan.fetches[piece.fetch]
        assert fetch.start <= piece.start <= piece.end <= fetch.end
        out.append(data[piece.start : piece.end])
    return b"".join(out)


def check_window(plan: Plan, reuse: int) -> None:
    """Every slice uses one of the `reuse` newest fetches, and fetches appear in order."""
    newest = -1
    for piece in plan.slices:
        assert piece.fetch <= newest + 1  # numbered in order of first use
        newest = max(newest, piece.fetch)
        assert piece.fetch > newest - reuse
    for number, last in enumerate(plan.last_use):
        assert plan.slices[last].fetch == number


def test_whole_object_is_cut_into_chunks() -> None:
    plan = plan_raw([(0, 10 * KiB + 1)], chunk=4 * KiB, reuse=4)
    assert spans(plan) == [(0, 4096), (4096, 8192), (8192, 10241)]
    assert [(s.start, s.end) for s in plan.slices] == spans(plan)


def test_empty_ranges_fetch_nothing() -> None:
    plan = plan_raw([(5, 5), (0, 0)], chunk=4096, reuse=4)
    assert plan.fetches == [] and plan.slices == []


def test_nearby_small_ranges_share_one_get() -> None:
    plan = plan_raw([(0, 10), (10, 20), (100, 110)], chunk=1 << 20, reuse=4)
    assert spans(plan) == [(0, 110)]
    assert [(s.start, s.end) for s in plan.slices] == [(0, 20), (100, 110)]


def test_far_ranges_get_their_own_get() -> None:
    far = 10 + COALESCE_GAP + 1
    plan = plan_raw([(0, 10), (far, far + 10)], chunk=64 << 20, reuse=4)
    assert spans(plan) == [(0, 10), (far, far + 10)]


def test_coalescing_never_exceeds_a_chunk() -> None:
    plan = plan_raw([(0, 3000), (3000, 6000)], chunk=4096, reuse=4)
    assert spans(plan) == [(0, 4096), (4096, 6000)]


def test_descending_neighbours_merge_backwards() -> None:
    data = bytes(range(256)) * 2
    plan = plan_raw([(200, 300), (100, 200), (0, 50)], chunk=4096, reuse=4)
    assert spans(plan) == [(0, 300)]
    assert apply(plan, data) == data[200:300] + data[100:200] + data[:50]


def test_repeated_range_is_sliced_from_a_recent_fetch() -> None:
    far = 2 * COALESCE_GAP
    plan = plan_raw([(0, 10), (far, far + 10), (2, 8)], chunk=4096, reuse=2)
    assert spans(plan) == [(0, 10), (far, far + 10)]
    # Beyond the reuse window it is fetched again rather than held.
    plan = plan_raw([(0, 10), (far, far + 10), (2 * far, 2 * far + 10), (2, 8)], 4096, 2)
    assert len(plan.fetches) == 4


def test_compressed_fetches_only_overlapping_frames_once() -> None:
    raw = bytes(range(256)) * 400  # 102400 bytes, 100 frames of 1024
    obj = compressed(raw, CODECS["zstd"], 1024)
    trailer = frames.parse_trailer(obj[-frames.TRAILER_SIZE :], len(obj))
    assert trailer is not None
    index = frames.FrameIndex(trailer, obj[trailer.index_offset : -frames.TRAILER_SIZE])
    plan = plan_frames([(1000, 1100), (1050, 1060), (50_000, 50_001)], index, 8192, 4, gap=0)
    used = [f.number for fetch in plan.fetches for f in fetch.frames]
    assert used == [0, 1, 48]  # frame 1 serves two ranges, fetched once
    assert len(plan.fetches) == 2


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(0, 5000),
    data=st.data(),
    chunk=st.integers(1, 1500),
    reuse=st.integers(1, 6),
    gap=st.integers(0, 600),
)
def test_raw_plan_writes_exactly_the_ranges(
    size: int, data: st.DataObject, chunk: int, reuse: int, gap: int
) -> None:
    bound = st.integers(0, size)
    pairs = data.draw(st.lists(st.tuples(bound, bound).map(sorted), max_size=12))
    ranges = [(a, b) for a, b in pairs]
    blob = bytes(i % 251 for i in range(size))
    plan = plan_raw(ranges, chunk, reuse, gap)
    assert apply(plan, blob) == b"".join(blob[a:b] for a, b in ranges)
    assert all(0 < f.end - f.start <= chunk for f in plan.fetches)
    check_window(plan, reuse)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), chunk=st.integers(1, 5000), reuse=st.integers(1, 4))
def test_frame_plan_covers_the_ranges_within_the_window(
    data: st.DataObject, chunk: int, reuse: int
) -> None:
    raw = bytes(i % 251 for i in range(10_000))
    obj = compressed(raw, CODECS["lz4"], 700)
    trailer = frames.parse_trailer(obj[-frames.TRAILER_SIZE :], len(obj))
    assert trailer is not None
    index = frames.FrameIndex(trailer, obj[trailer.index_offset : -frames.TRAILER_SIZE])
    bound = st.integers(0, len(raw))
    ranges = data.draw(st.lists(st.tuples(bound, bound).map(lambda p: (min(p), max(p)))))
    plan = plan_frames(ranges, index, chunk, reuse, gap=data.draw(st.integers(0, 3000)))
    check_window(plan, reuse)
    out = []
    for piece in plan.slices:
        fetch = plan.fetches[piece.fetch]
        decoded = {i for f in fetch.frames for i in range(f.raw_start, f.raw_start + f.raw_len)}
        assert set(range(piece.start, piece.end)) <= decoded  # only decoded frames are used
        out.append(raw[piece.start : piece.end])
    assert b"".join(out) == b"".join(raw[a:b] for a, b in ranges)
    for fetch in plan.fetches:
        assert fetch.frames and (fetch.cost <= chunk or len(fetch.frames) == 1)
        assert fetch.start == fetch.frames[0].offset
        assert fetch.end == fetch.frames[-1].offset + fetch.frames[-1].length


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 300_000),
    st.lists(st.tuples(st.integers(0, 300_000), st.integers(0, 40_000)), max_size=12),
    st.sampled_from([1000, 4096, 30_000, 65_536]),
    st.integers(1, 4),
)
def test_aligned_fetches_hold_whole_blocks(
    size: int, pairs: list[tuple[int, int]], chunk: int, reuse: int
) -> None:
    block = 8 * KiB
    data = bytes(n % 251 for n in range(size))
    ranges = [(min(a, size), min(a + n, size)) for a, n in pairs]
    plan = plan_raw(ranges, chunk, reuse, align=block, size=size)
    assert apply(plan, data) == b"".join(data[a:b] for a, b in ranges)
    check_window(plan, reuse)
    for fetch in plan.fetches:  # every byte written lies in a block checked whole
        assert fetch.start % block == 0
        assert fetch.end % block == 0 or fetch.end == size
        assert fetch.end - fetch.start <= chunk + 2 * block


def test_aligned_subset_reads_at_most_a_block_more_per_edge() -> None:
    block = 256 * KiB
    size = 1024**3
    ranges = [(n * size // 20 + 12_345, n * size // 20 + 12_345 + size // 2000) for n in range(20)]
    plain = plan_raw(ranges, 12 * 1024 * KiB, 4)
    aligned = plan_raw(ranges, 12 * 1024 * KiB, 4, align=block, size=size)
    extra = sum(f.end - f.start for f in aligned.fetches) - sum(
        f.end - f.start for f in plain.fetches
    )
    assert 0 < extra <= 2 * block * len(ranges)
