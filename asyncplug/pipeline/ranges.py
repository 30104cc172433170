"""Fetch planning for restores: which GETs to issue, and which slice of each to write when.

A `Plan` turns the requested ranges (in the listed order) into
- `fetches`: spans of the stored object to GET, numbered in order of first use; for a
  compressed object each fetch also names the frames to decode from it;
- `slices`: (fetch, raw start, raw end) in output order, the bytes to write.

Rules:
- a range longer than the chunk size is split into chunk-size pieces (one GET each);
- small ranges that follow each other in the list and lie within COALESCE_GAP of each
  other share one GET of at most one chunk (reading the gap is cheaper than a request);
- a later range that lies inside one of the last `reuse` fetches is sliced from it
  instead of being fetched again (each frame once, within the window);
- raw fetches of an object with a block index start and end on block boundaries
  (`align`; the last block ends at the object's end), so that every byte written is in
  a block checked whole: a range's edges cost at most one block more each.

The restore engine holds fetches until their last slice is written, within a byte budget
of chunk * (concurrency + 1). Reuse is limited to the last `reuse` (= concurrency)
fetches, so what is held back for a later slice stays within that budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from asyncplug.pipeline.frames import Frame, FrameIndex

# Largest hole worth reading rather than paying another GET. A GET costs about one
# time-to-first-byte (~10 ms on S3, from the AWS performance guidelines' "first-byte
# latency" range) during which one connection could have streamed ~100 MiB/s * 10 ms
# = 1 MiB. Below that, reading the hole is cheaper than a round trip (the same rule as
# Apache Arrow's ReadRangeCache: hole limit = TTFB * bandwidth). On a local server a
# round trip is cheaper, but 1 MiB of waste per merge stays small next to a chunk.
COALESCE_GAP = 1024 * 1024


@dataclass
class Fetch:
    start: int  # object bytes [start, end) to GET
    end: int
    frames: list[Frame] = field(default_factory=list)  # compressed: frames to decode, in order

    @property
    def raw_len(self) -> int:
        """Bytes this fetch holds once decoded."""
        return sum(f.raw_len for f in self.frames) if self.frames else self.end - self.start

    @property
    def cost(self) -> int:
        """Most bytes it holds at once: a compressed fetch holds its compressed bytes while
        its frames are decoded."""
        return self.raw_len + (self.end - self.start if self.frames else 0)


@dataclass(frozen=True)
class Slice:
    fetch: int
    start: int  # raw stream bytes [start, end) to write, taken from that fetch
    end: int


@dataclass
class Plan:
    fetches: list[Fetch] = field(default_factory=list)
    slices: list[Slice] = field(default_factory=list)
    last_use: list[int] = field(default_factory=list)  # per fetch: index of its last slice

    @property
    def output_size(self) -> int:
        return sum(s.end - s.start for s in self.slices)

    def _add(self, fetch: int, start: int, end: int) -> None:
        last = self.slices[-1] if self.slices else None
        if last is not None and last.fetch == fetch and last.end == start:
            self.slices[-1] = Slice(fetch, last.start, end)  # contiguous: one slice
        else:
            self.slices.append(Slice(fetch, start, end))
        self.last_use[fetch] = len(self.slices) - 1

    def _new(self, fetch: Fetch) -> int:
        self.fetches.append(fetch)
        self.last_use.append(-1)
        return len(self.fetches) - 1


def plan_raw(
    ranges: Sequence[tuple[int, int]],
    chunk: int,
    reuse: int,
    gap: int = COALESCE_GAP,
    align: int = 1,
    size: int = 0,
) -> Plan:
    """Plan GETs of a raw object: raw offsets are object offsets. With align > 1 every
    fetch covers whole blocks of `align` bytes of an object of `size` bytes."""
    plan = Plan()
    edges = _Edges(align, size)
    for start, end in ranges:
        while start < end:
            fetch, stop = _place_raw(plan, start, end, chunk, reuse, gap, edges)
            plan._add(fetch, start, stop)
            start = stop
    return plan


@dataclass(frozen=True)
class _Edges:
    align: int
    size: int

    def down(self, at: int) -> int:
        return at - at % self.align

    def up(self, at: int) -> int:
        return at if self.align == 1 else min(-(-at // self.align) * self.align, self.size)


def _place_raw(
    plan: Plan, start: int, end: int, chunk: int, reuse: int, gap: int, edges: _Edges
) -> tuple[int, int]:
    """The fetch that will hold bytes [start, stop) and stop, growing or creating a fetch."""
    first_recent = max(0, len(plan.fetches) - max(1, reuse))
    for number in range(len(plan.fetches) - 1, first_recent - 1, -1):
        held = plan.fetches[number]
        if held.start <= start < held.end:
            return number, min(end, held.end)
    if plan.fetches:
        number = len(plan.fetches) - 1
        open_ = plan.fetches[number]
        if open_.start <= start <= open_.end + gap and start < open_.start + chunk:
            stop = min(end, open_.start + chunk)  # grow forward over a small hole
            open_.end = edges.up(stop)
            return number, stop
        if start < open_.start and open_.start - end <= gap and open_.end - start <= chunk:
            open_.start = edges.down(start)  # grow backward: the list is not sorted
            return number, min(end, open_.end)
    stop = min(end, start + chunk)
    return plan._new(Fetch(edges.down(start), edges.up(stop))), stop


def plan_frames(
    ranges: Sequence[tuple[int, int]],
    index: FrameIndex,
    chunk: int,
    reuse: int,
    gap: int = COALESCE_GAP,
) -> Plan:
    """Plan GETs of a compressed object: only the frames overlapping the ranges.

    A fetch is a run of frames in object order whose compressed plus decoded bytes stay
    within `chunk` (at least one frame); frames between them that nobody needs are read
    over when they are smaller than `gap`, never decoded.
    """
    plan = Plan()
    for start, end in ranges:
        for frame in index.covering(start, end):
            number = _place_frame(plan, frame, chunk, reuse, gap)
            frame_end = frame.raw_start + frame.raw_len
            plan._add(number, max(start, frame.raw_start), min(end, frame_end))
    return plan


def _place_frame(plan: Plan, frame: Frame, chunk: int, reuse: int, gap: int) -> int:
    first_recent = max(0, len(plan.fetches) - max(1, reuse))
    for number in range(len(plan.fetches) - 1, first_recent - 1, -1):
        if any(f.number == frame.number for f in plan.fetches[number].frames):
            return number
    if plan.fetches:
        open_ = plan.fetches[-1]
        if (
            frame.number > open_.frames[-1].number
            and frame.offset - open_.end <= gap
            and open_.cost + frame.raw_len + frame.offset + frame.length - open_.end <= chunk
        ):
            open_.frames.append(frame)
            open_.end = frame.offset + frame.length
            return len(plan.fetches) - 1
    return plan._new(Fetch(frame.offset, frame.offset + frame.length, [frame]))
