"""Buffer probe: what a fresh part buffer costs to fill, by kind of anonymous mapping.

Usage:
    .venv/bin/python -m bench.buffer_probe [--size 8MiB] [--count 8] [--repeat 9]

Each round runs in a fresh child process (as each of a host's streams runs in a freshly
forked worker): it maps --count buffers of --size, fills them once (first touch: every
page faulted in and zeroed by the kernel, then written) and once more (the pages are
there: the copy alone). Prints the median CPU milliseconds of each fill per kind:
- shared: mmap.mmap(-1, size), Python's default (MAP_SHARED, shmem pages);
- private: MAP_PRIVATE | MAP_ANONYMOUS, what parts.new_buffer maps for a first part;
- populate: the same with MAP_POPULATE (all pages faulted in by mmap itself), what it
  maps for the parts after the first;
- hugepage: private with madvise(MADV_HUGEPAGE) (transparent huge pages; not used: see
  bench/README.md).
The differences of the first fills are what a fresh worker's backup saves per budget.
"""

from __future__ import annotations

import argparse
import mmap
import multiprocessing
import resource
import statistics

from asyncplug.config import parse_size

KINDS = ("shared", "private", "populate", "hugepage")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _fill(bufs: list[mmap.mmap], chunk: bytes) -> None:
    for buf in bufs:
        for offset in range(0, len(buf), len(chunk)):
            buf[offset : offset + len(chunk)] = chunk


def _round(kind: str, size: int, count: int, out: multiprocessing.SimpleQueue[object]) -> None:
    chunk = bytes(range(256)) * 4096  # 1 MiB
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    if kind == "populate":
        flags |= mmap.MAP_POPULATE
    start = _cpu()
    bufs = [
        mmap.mmap(-1, size) if kind == "shared" else mmap.mmap(-1, size, flags)
        for _ in range(count)
    ]
    if kind == "hugepage":
        for buf in bufs:
            buf.madvise(mmap.MADV_HUGEPAGE)
    _fill(bufs, chunk)
    first = _cpu()
    _fill(bufs, chunk)
    out.put((first - start, _cpu() - first))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="8MiB")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    size = parse_size(args.size, "--size")
    context = multiprocessing.get_context("fork")
    results: dict[str, list[tuple[float, float]]] = {kind: [] for kind in KINDS}
    for _ in range(args.repeat):
        for kind in KINDS:  # alternated, so that a drift of the load falls on both
            out: multiprocessing.SimpleQueue[object] = context.SimpleQueue()
            child = context.Process(target=_round, args=(kind, size, args.count, out))
            child.start()
            child.join()
            fills = out.get()
            assert isinstance(fills, tuple)
            results[kind].append((float(fills[0]), float(fills[1])))
    total = size * args.count / 2**20
    print(f"{args.count} buffers of {args.size} ({total:.0f} MiB), medians of {args.repeat}:")
    slowest = {kind: max(r[0] for r in runs) * 1000 for kind, runs in results.items()}
    for kind, runs in results.items():
        fill = statistics.median(r[0] for r in runs) * 1000
        refill = statistics.median(r[1] for r in runs) * 1000
        print(
            f"  {kind:8} first fill {fill:6.1f} ms   refill {refill:6.1f} ms"
            f"   faulting {fill - refill:6.1f} ms   slowest first fill {slowest[kind]:6.1f} ms"
        )


if __name__ == "__main__":
    main()
