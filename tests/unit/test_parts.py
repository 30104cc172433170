"""The part-size plan up to 5 TiB (nothing uploaded) and the buffer pool's memory bound."""

from __future__ import annotations

import asyncio
import mmap
import os
import random
import resource
from pathlib import Path

import pytest

from asyncplug.pipeline import parts
from asyncplug.pipeline.backup import run_backup
from asyncplug.pipeline.parts import BufferPool, PartPlan, memory_limit, plan_parts
from asyncplug.spool import SpoolMap
from asyncplug.storage.base import (
    S3_MAX_OBJECT_SIZE,
    S3_MAX_PART_SIZE,
    S3_MAX_PARTS,
    S3_MIN_PART_SIZE,
)
from tests.backup_support import pipe_feed
from tests.memory_storage import MemoryStorage
from tests.unit.test_backup_stream import KEY, PART, config_for

MiB = 1024 * 1024
GiB = 1024 * MiB
TiB = 1024 * GiB


def s3_plan(chunksize: int) -> PartPlan:
    return plan_parts(chunksize, S3_MIN_PART_SIZE, S3_MAX_PART_SIZE, S3_MAX_PARTS)


def walk(plan: PartPlan, length: int) -> list[int]:
    """The part sizes a stream of `length` bytes gets, by asking the plan part by part."""
    sizes: list[int] = []
    left = length
    while left:
        size = min(plan.size(len(sizes) + 1), left)
        sizes.append(size)
        left -= size
    return sizes


CHUNKS = [1, 5 * MiB, 8 * MiB, 16 * MiB, 64 * MiB, 500 * 10**6, 5 * GiB, 6 * GiB]


@pytest.mark.parametrize("chunksize", CHUNKS)
def test_a_5_tib_stream_fits_within_s3_limits(chunksize: int) -> None:
    plan = s3_plan(chunksize)
    assert plan.capacity() >= S3_MAX_OBJECT_SIZE
    count = plan.parts_for(S3_MAX_OBJECT_SIZE)
    assert count <= S3_MAX_PARTS
    sizes = [plan.size(n) for n in range(1, count + 1)]
    assert all(S3_MIN_PART_SIZE <= s <= S3_MAX_PART_SIZE for s in sizes)
    assert sizes == sorted(sizes)  # sizes only grow
    assert sum(sizes) >= S3_MAX_OBJECT_SIZE > sum(sizes[:-1])


def test_default_plan_keeps_8_mib_parts_as_long_as_it_can() -> None:
    plan = s3_plan(8 * MiB)
    assert plan.first == 8 * MiB
    # The largest tier still reaching 5 TiB: one part more per tier would fall short.
    assert PartPlan(plan.first, plan.tier + 1, S3_MAX_PART_SIZE, S3_MAX_PARTS).capacity() < (
        S3_MAX_OBJECT_SIZE
    )
    assert plan.size(plan.tier) == 8 * MiB and plan.size(plan.tier + 1) == 16 * MiB
    assert plan.parts_for(1 * GiB) == 128
    assert plan.parts_for(plan.tier * 8 * MiB) == plan.tier
    assert plan.parts_for(plan.tier * 8 * MiB + 1) == plan.tier + 1


def test_parts_for_agrees_with_walking_the_plan() -> None:
    rng = random.Random(3)
    plan = plan_parts(1024, 1024, 64 * 1024, 50, target=1024 * 1024)
    for length in [
        0,
        1,
        1023,
        1024,
        1025,
        *(rng.randrange(1, plan.capacity()) for _ in range(200)),
    ]:
        sizes = walk(plan, length)
        assert plan.parts_for(length) == len(sizes)
        assert all(s >= 1024 for s in sizes[:-1])


def test_small_chunksize_is_raised_to_the_minimum_and_huge_to_the_maximum() -> None:
    assert s3_plan(1).first == S3_MIN_PART_SIZE
    assert s3_plan(6 * GiB).first == S3_MAX_PART_SIZE


def test_limits_that_cannot_hold_the_target_double_every_part() -> None:
    plan = plan_parts(5, 5, 40, 4, target=10**6)
    assert [plan.size(n) for n in range(1, 5)] == [5, 10, 20, 40]
    assert plan.capacity() == 75


async def settle(pool: BufferPool, waiter: asyncio.Future[mmap.mmap]) -> None:
    """Until acquire() has its buffer (made on a thread after the first) or waits for
    one to be released."""
    for _ in range(5000):
        waits = pool._changed._waiters  # type: ignore[attr-defined]
        if waiter.done() or any(not notified.done() for notified in waits):
            return
        await asyncio.sleep(0.001)
    raise AssertionError("acquire() neither returned nor waited")


async def test_pool_holds_at_most_the_budget_while_parts_grow() -> None:
    budget = 8 * 1000
    pool = BufferPool(budget)
    rng = random.Random(5)
    out: list[mmap.mmap] = []
    for size in [1000] * 30 + [2000] * 30 + [4000] * 20 + [8000] * 10 + [16000] * 5:
        waiter = asyncio.ensure_future(pool.acquire(size))
        await settle(pool, waiter)
        while not waiter.done():  # blocked: the budget is spent, free the oldest part
            assert out, "the pool blocked with nothing to wait for"
            await pool.release(out.pop(0))
            await settle(pool, waiter)
        buf = waiter.result()
        assert len(buf) == size
        out.append(buf)
        assert pool.held <= memory_limit(budget, size)
        if rng.random() < 0.3:
            await pool.release(out.pop(rng.randrange(len(out))))
    assert pool.peak <= memory_limit(budget, 16000) == 32000
    assert pool.spooled and all(isinstance(b, SpoolMap) == (len(b) > budget // 2) for b in out)
    for buf in out:
        await pool.release(buf)
    pool.close()
    assert pool.held == 0


async def test_pool_reuses_buffers_of_the_current_size() -> None:
    pool = BufferPool(4096)
    first = await pool.acquire(1024)
    await pool.release(first)
    assert await pool.acquire(1024) is first
    assert pool.held == 1024


@pytest.fixture
def keeping(monkeypatch: pytest.MonkeyPatch) -> list[mmap.mmap]:
    """The pool as in a worker of the warm server: free buffers outlive the backup."""
    kept: list[mmap.mmap] = []
    monkeypatch.setattr(parts, "_kept", kept)
    monkeypatch.setattr(parts, "_keeping", False)
    parts.keep_between_commands()
    return kept


async def test_a_worker_keeps_the_last_backups_buffers_for_the_next(
    keeping: list[mmap.mmap],
) -> None:
    first = BufferPool(4 * 1024)
    bufs = [await first.acquire(1024) for _ in range(4)]
    for buf in bufs:
        await first.release(buf)
    first.close()
    assert first.held == 0 and len(keeping) == 4 and not any(b.closed for b in bufs)
    second = BufferPool(4 * 1024)  # the next backup takes them, counted in its budget
    again = [await second.acquire(1024) for _ in range(4)]
    assert {id(b) for b in again} == {id(b) for b in bufs} and not keeping
    assert second.held == second.peak == 4 * 1024
    for buf in again:
        await second.release(buf)
    second.close()
    smaller = BufferPool(2 * 1024)  # bounded by this backup's budget: the rest is unmapped
    taken = await smaller.acquire(1024)
    assert taken in bufs and smaller.held == 2 * 1024
    assert sum(b.closed for b in bufs) == 2 and not keeping


async def test_kept_buffers_of_another_size_are_unmapped_and_spooled_ones_never_kept(
    keeping: list[mmap.mmap], tmp_path: Path
) -> None:
    pool = BufferPool(4 * 1024)
    buf = await pool.acquire(1024)
    await pool.release(buf)
    pool.close()
    other = BufferPool(4 * 1024)
    assert len(await other.acquire(2048)) == 2048 and buf.closed and not keeping
    spooling = BufferPool(4 * 1024, str(tmp_path))
    big = await spooling.acquire(3 * 1024)  # over half the budget: a spool file's map
    assert isinstance(big, SpoolMap)
    await spooling.release(big)
    spooling.close()
    assert not keeping and spooling.held == 0


async def test_outside_a_worker_a_finished_backup_unmaps_its_buffers() -> None:
    pool = BufferPool(4 * 1024)
    buf = await pool.acquire(1024)
    await pool.release(buf)
    pool.close()
    assert buf.closed and not parts._kept and pool.held == 0


async def test_a_small_tables_buffer_goes_back_to_the_pool(keeping: list[mmap.mmap]) -> None:
    """A stream of one part is stored by one PUT; its buffer is then free for the next
    backup of the worker, not left to the garbage collector."""
    storage = MemoryStorage(min_part_size=PART)
    with pipe_feed(b"a small table") as fd:
        await run_backup(storage, KEY, fd, config_for())
    assert storage.calls.count("put") == 2  # the object and its block index
    assert len(keeping) == 1 and not keeping[0].closed


def _touch_faults(buf: mmap.mmap) -> int:
    """Minor page faults taken while writing one byte into every page of buf."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for offset in range(0, len(buf), mmap.PAGESIZE):
        buf[offset] = 1
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_new_buffers_are_private_and_populated_on_request() -> None:
    pages = 256
    lazy, ready = (
        parts.new_buffer(pages * mmap.PAGESIZE),
        parts.new_buffer(pages * mmap.PAGESIZE, True),
    )
    assert _touch_faults(lazy) >= pages // 2  # faulted in as it is written
    assert _touch_faults(ready) < pages // 8  # faulted in by mmap itself
    pid = os.fork()
    if pid == 0:  # a private map: a forked process writes its own copy
        lazy[0] = 7
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    assert lazy[0] == 1
