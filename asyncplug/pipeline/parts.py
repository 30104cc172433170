"""Part sizes of a multipart upload of unknown length, and the memory budget of its buffers.

S3 takes at most 10,000 parts of 5 MiB..5 GiB (the last may be smaller) and objects up to
5 TiB. A stream's length is unknown until EOF, so part sizes must grow as the part count
rises. The plan keeps the first size (backup_multipart_chunksize, raised to the backend's
minimum) for `tier` parts, then doubles it every `tier` parts up to the maximum part size.
`tier` is the largest count for which all parts together still hold the largest object
(5 TiB): parts, and so memory, stay small for as long as the limits allow.

At the defaults (8 MiB, tier 1089), parts are 8 MiB up to 8.5 GiB of stream, 16 MiB up to
25.5 GiB, 32 MiB up to 59.6 GiB, 64 MiB up to 127.6 GiB, ..., 4 GiB parts after 4.2 TiB.

Memory. Every part is buffered whole until its upload is acknowledged (a retry resends it;
stdin cannot be read twice). The pool lets buffers be held while
    held bytes + next part <= max(budget, 2 * next part),
    budget = first part size * (backup_max_concurrent_requests + backup_queue_depth).
While parts are small this is the budget: all upload slots busy plus `queue_depth` parts
read ahead. When parts grow, fewer of them are in flight (budget // part size), and once
a part exceeds half the budget, two are (one uploading, one being read). Those parts
would need 2 * part size of memory (10,000 parts of a 5 TiB stream average 524 MiB), so
they are spooled instead (spool.py): buffers on an unlinked file in spool_dir, whose
pages are released as they are filled and sent. Memory stays within the budget.

In a worker of the warm server (server.py), which serves commands one after another,
the free buffers of a backup are kept for the next one instead of being unmapped
(keep_between_commands): mapping and faulting in fresh pages is a fixed cost of every
backup. What is kept is bounded by the last backup's budget and goes when the worker
leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
from dataclasses import dataclass

from asyncplug.spool import spool_map
from asyncplug.storage.base import S3_MAX_OBJECT_SIZE


@dataclass(frozen=True)
class PartPlan:
    first: int  # size of the first `tier` parts
    tier: int  # parts per size step; the size doubles after each tier
    max_part: int
    max_parts: int

    def size(self, number: int) -> int:
        """Planned size of part `number` (1-based); only the stream's last part is shorter."""
        doublings = min((number - 1) // self.tier, 62)
        return min(self.max_part, self.first << doublings)

    def capacity(self, parts: int | None = None) -> int:
        """Bytes held by the first `parts` parts (all max_parts by default)."""
        parts = self.max_parts if parts is None else min(parts, self.max_parts)
        total, number = 0, 1
        while number <= parts:
            size = self.size(number)
            run = parts - number + 1
            if size < self.max_part:
                run = min(run, self.tier)
            total += size * run
            number += run
        return total

    def parts_for(self, length: int) -> int:
        """How many parts a stream of `length` bytes takes (0 for an empty stream)."""
        count, held = 0, 0
        while held < length:
            size = self.size(count + 1)
            run = -(-(length - held) // size)  # ceil: parts of this size still needed
            if size < self.max_part:
                run = min(run, self.tier)  # count sits on a tier boundary here
            held += size * run
            count += run
        return count


def plan_parts(
    chunksize: int, min_part: int, max_part: int, max_parts: int, target: int = S3_MAX_OBJECT_SIZE
) -> PartPlan:
    """The plan for a backend's limits: the largest tier whose capacity reaches `target`
    (or the largest capacity the limits allow, when no tier reaches it)."""
    first = min(max(chunksize, min_part), max_part)
    target = min(target, max_parts * max_part)
    low, high = 1, max_parts
    if PartPlan(first, low, max_part, max_parts).capacity() < target:
        return PartPlan(first, 1, max_part, max_parts)
    while low < high:  # capacity falls as tier rises: find the largest tier reaching target
        mid = (low + high + 1) // 2
        if PartPlan(first, mid, max_part, max_parts).capacity() >= target:
            low = mid
        else:
            high = mid - 1
    return PartPlan(first, low, max_part, max_parts)


# Buffers a finished backup left for the next command of the same process (see above).
_kept: list[mmap.mmap] = []
_keeping = False


def keep_between_commands() -> None:
    """Keep a backup's free part buffers for the next backup of this process (a worker
    of the warm server calls it once)."""
    global _keeping
    _keeping = True


_PRIVATE = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


def new_buffer(size: int, populate: bool = False) -> mmap.mmap:
    """An anonymous private mapping of `size` bytes; `populate`: its pages faulted in at
    once, for a buffer that will be filled whole. Both cost a fresh worker fewer page
    faults than Python's default shared mapping (bench/buffer_probe.py)."""
    return mmap.mmap(-1, size, _PRIVATE | (_POPULATE if populate else 0))


def memory_limit(budget: int, size: int) -> int:
    """Most bytes the pool holds while handing out buffers of `size` (see module doc)."""
    return max(budget, 2 * size)


class BufferPool:
    """Reusable part buffers under a byte budget: acquire() waits while it is spent.

    Buffers are anonymous mmaps, not bytearrays: unmapping returns memory to the system
    at once, whatever malloc's thresholds, so RSS follows the budget when part sizes change.
    The first is mapped lazily (a small table touches a few of its pages), the others
    populated on a thread (new_buffer).
    Buffers of parts over half the budget are spooled to a file in `spool_dir` (spool.py).
    """

    def __init__(self, budget: int, spool_dir: str = "") -> None:
        self.budget = budget
        self.spool_dir = spool_dir
        self.spooled = 0  # spooled buffers made (tests and the log read it)
        self.mapped = 0  # anonymous buffers mapped
        self.held = 0  # bytes of buffers handed out or kept for reuse
        self.peak = 0
        self._free: list[mmap.mmap] = []
        self._size = 0  # the size last asked for; other sizes are unmapped when returned
        self._changed = asyncio.Condition()

    async def acquire(self, size: int) -> mmap.mmap:
        async with self._changed:
            limit = memory_limit(self.budget, size)
            if size != self._size:
                self._size = size
                self._drop_free()
                self._adopt(size, limit)
            while not self._free and self.held and self.held + size > limit:
                await self._changed.wait()
            if self._free:
                return self._free.pop()
            self.held += size
            self.peak = max(self.peak, self.held)
            anonymous = self._anonymous(size)
            self.mapped += anonymous
            if anonymous and self.mapped == 1:  # a small table may need no more than this
                return new_buffer(size)
        try:  # outside the lock: faulting in or allocating the blocks takes a moment
            if anonymous:  # the stream is past its first part: this one is filled whole
                buf = await asyncio.to_thread(new_buffer, size, True)
            else:
                buf = await asyncio.to_thread(spool_map, size, self.spool_dir)
        except BaseException:
            async with self._changed:
                self.held -= size
                self._changed.notify_all()
            raise
        self.spooled += not anonymous
        return buf

    async def release(self, buf: mmap.mmap) -> None:
        async with self._changed:
            if len(buf) == self._size:
                self._free.append(buf)
            else:
                self._unmap(buf)
            self._changed.notify_all()

    def close(self) -> None:
        """Unmap the free buffers, or keep them for the next backup (keep_between_commands);
        buffers still out are unmapped when garbage collected."""
        if _keeping and self._anonymous(self._size):  # not spooled files
            while _kept:
                _kept.pop().close()
            self.held -= len(self._free) * self._size
            _kept.extend(self._free)
            self._free.clear()
        self._drop_free()

    def _anonymous(self, size: int) -> bool:
        """Whether buffers of `size` are anonymous maps (else spooled: over half the budget)."""
        return 2 * size <= self.budget

    def _adopt(self, size: int, limit: int) -> None:
        """Take the buffers the previous backup kept, as many of `size` as the limit allows."""
        while _kept:
            buf = _kept.pop()
            if len(buf) == size and self._anonymous(size) and self.held + size <= limit:
                self._free.append(buf)
                self.held += size
                self.peak = max(self.peak, self.held)
            else:
                buf.close()

    def _drop_free(self) -> None:
        while self._free:
            self._unmap(self._free.pop())

    def _unmap(self, buf: mmap.mmap) -> None:
        self.held -= len(buf)
        with contextlib.suppress(BufferError):  # a view is still alive: unmapped when it dies
            buf.close()
