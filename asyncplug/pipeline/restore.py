"""restore_data, restore_data_subset and restore_file: concurrent ranged GETs, written in order.

    stat ─┬─ tail GET (trailer + index: raw or compressed?) ─┐
          ├─ first data GETs, assuming raw (speculative) ────┼─► plan (ranges.py)
          └─ checksum record (raw whole restores) ───────────┘
    plan ─► fetches within a byte budget (chunk × (concurrency + 1)) ─► decode pool (compressed)
         ─► FdWriter thread: writev to stdout, or pwritev into a temp file

A whole restore of a raw object into a pipe over plain http first takes splice.py's
fast path (socket -> stdout without copies); whatever that leaves, it hands over to the
regular path above at the first byte it did not write.

Memory: the fetches held (compressed: their compressed plus decoded bytes) stay within
`restore_multipart_chunksize * (restore_max_concurrent_requests + 1)`, give or take one
frame larger than the chunk size; at most `restore_max_concurrent_requests` GETs run.

Integrity: a raw object written by asyncplug has a block index, `<key>.asyncplug-idx`
(blocks.py), found from the key: raw fetches then cover whole blocks, each fetch's blocks
are checked as it arrives, and nothing from a bad block on is written. Objects of the
0.1 format have only a whole-stream CRC32C (user metadata, or `<key>.asyncplug-crc`),
checked by whole restores after the last byte; objects of the Go plugin have no record
and restore unverified. A compressed object's index CRC and per-frame CRCs cover every
byte a restore writes, checked before it is written.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asyncplug.config import Config
from asyncplug.errors import (
    IntegrityError,
    PluginError,
    ReaderGone,
)
from asyncplug.offsets import Range, check_ranges
from asyncplug.pipeline import blocks, frames
from asyncplug.pipeline.pipes import reader_gone
from asyncplug.pipeline.ranges import Fetch, Plan, plan_frames, plan_raw
from asyncplug.pipeline.writer import IOV_MAX, FdWriter
from asyncplug.storage.base import Buffer, ObjectInfo, Storage, fsync_dir

log = logging.getLogger(__name__)

# The tail GET reads this much, so the index of a compressed object (12 bytes a frame:
# ~5000 frames) usually comes with its trailer, saving a round trip.
TAIL_PROBE = 64 * 1024
MIN_COMPRESSED = frames.HEADER_SIZE + frames.TRAILER_SIZE
# Smaller objects (a small table's) skip the splice path: its thread, pipes and own
# connection cost more than copying them, and the regular path's first GET goes
# out beside the index's instead of after it.
SPLICE_MIN = 1024 * 1024
# Most fetches started ahead of the writer: many tiny ranges must not become thousands of
# tasks queued on the request semaphore.
MAX_AHEAD = 64
# A long range (a whole restore) is planned this many chunks at a time: a plan costs a few
# hundred bytes per GET, and 5 TiB in 12 MiB GETs is 437k of them (measured: 156 MiB and
# 11 CPU-s before the first byte).
WINDOW_GETS = 1024


class _Data:
    """The bytes of one fetch: buffers at raw stream offsets, sliced without copying."""

    def __init__(
        self, starts: list[int], bufs: list[memoryview], chunks: Sequence[Buffer] = ()
    ) -> None:
        self.starts = starts
        self.bufs = bufs
        self.chunks = chunks  # what get_range returned, recycled after the last use
        self.bad: list[int] = []  # blocks that do not match the index, by first byte
        self.index: blocks.BlockIndex | None = None

    @classmethod
    def of_chunks(cls, start: int, chunks: Sequence[Buffer]) -> _Data:
        starts, bufs, at = [], [], start
        for chunk in chunks:
            starts.append(at)
            bufs.append(memoryview(chunk))
            at += len(chunk)
        return cls(starts, bufs, chunks)

    def first_bad(self, start: int, end: int) -> int | None:
        """The first byte of the first corrupt block overlapping bytes [start, end)."""
        size = self.index.block_size if self.index is not None else 0
        return next((at for at in self.bad if at < end and start < at + size), None)

    def view(self, start: int, end: int) -> list[memoryview]:
        out = []
        i = max(bisect.bisect_right(self.starts, start) - 1, 0)
        while start < end:
            at, buf = self.starts[i], self.bufs[i]
            piece = buf[start - at : end - at]
            if piece:
                out.append(piece)
                start += len(piece)
            i += 1
        return out


Fetcher = Callable[[Fetch], Coroutine[Any, Any, _Data]]


async def restore_stream(
    storage: Storage, key: str, fd: int, config: Config, ranges: list[Range] | None = None
) -> int:
    """Write the whole stream (ranges None) or the listed ranges, in order, to fd.

    Every range is checked against the stream's (uncompressed) size before a byte is
    written (InputError). Returns the number of bytes written.
    """
    writer = FdWriter(fd)
    try:
        started = time.monotonic()
        written = await _restore(storage, await storage.stat(key), writer, config, ranges)
        log.debug("restore of %s: %d bytes in %.3f s from stat to the last byte",
                  key, written, time.monotonic() - started)  # fmt: skip
        return written
    except BrokenPipeError:
        if not reader_gone(fd):
            raise
        raise ReaderGone(
            f"stdout closed by the reader after {writer.written} bytes; restore of {key} stopped"
        ) from None
    finally:
        writer.close()


async def restore_path(storage: Storage, key: str, path: str, config: Config) -> int:
    """restore_file: the object into `path` via a temp file in the same directory.

    The temp file is fsynced and renamed over `path`; on any failure it is removed, so
    there is never a partial file. A missing object raises ObjectNotFound before anything
    is created.
    """
    info = await storage.stat(key)  # ObjectNotFound before any directory or file exists
    target = os.path.abspath(path)
    parent = os.path.dirname(target)
    temp = os.path.join(parent, f".{os.path.basename(target)}.{os.urandom(4).hex()}.tmp")
    try:
        os.makedirs(parent, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise PluginError(f"cannot create {path}: {exc.strerror or exc}") from exc
    writer = FdWriter(fd, positional=True)
    renamed = False
    try:
        written = await _restore(storage, info, writer, config, None)
        await writer.drain()
        await asyncio.to_thread(os.fsync, fd)
        os.close(fd)
        fd = -1
        os.replace(temp, target)
        renamed = True
        await asyncio.to_thread(fsync_dir, parent)
        return written
    except OSError as exc:
        raise PluginError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if fd >= 0:
            await asyncio.shield(writer.drain())  # no write may land in a reused fd
            os.close(fd)
        writer.close()
        if not renamed:
            with contextlib.suppress(OSError):
                os.unlink(temp)


async def _restore(
    storage: Storage, info: ObjectInfo, writer: FdWriter, config: Config, ranges: list[Range] | None
) -> int:
    job = _Restore(storage, info, writer, config)
    try:
        return await job.run(ranges)
    finally:
        await _reap(job.running)


async def verify_object(storage: Storage, info: ObjectInfo, config: Config) -> str:
    """Read the object as a whole restore would, checking every block or frame, into
    /dev/null; returns what was checked. Raises IntegrityError (BlockMismatch with the
    byte offset) at the first corrupt byte."""
    fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    writer = FdWriter(fd)
    job = _Restore(storage, info, writer, config)
    try:
        await job.run(None)
        return job.checked
    finally:
        await _reap(job.running)
        await asyncio.shield(writer.drain())  # no write may land in a reused fd
        writer.close()
        os.close(fd)


class _Restore:
    """One restore of one object: detect the format, plan, fetch, write."""

    def __init__(self, storage: Storage, info: ObjectInfo, writer: FdWriter, config: Config):
        self.marked_raw = False  # backup_data wrote it raw (set by run)
        self.storage, self.info, self.writer = storage, info, writer
        self.key, self.size = info.key, info.size
        self.chunk = config.restore_multipart_chunksize
        self.concurrency = config.restore_max_concurrent_requests
        self.workers = config.compression_workers
        self.timeout = config.request_timeout
        self.use_splice = config.restore_splice
        self.requests = asyncio.Semaphore(self.concurrency)
        self.budget = self.chunk * (self.concurrency + 1)  # the formula in Config's docstring
        self.running: list[asyncio.Future[Any]] = []  # reaped when the restore ends
        self.record: asyncio.Task[blocks.Record] | None = None  # raw objects: blocks.lookup
        self.whole = True  # a whole restore, not a subset (set by run)
        self.align = 1  # the block size raw fetches are planned to cover whole
        self.checked = "nothing: empty"  # what the restore checked, for verify

    async def run(self, ranges: list[Range] | None) -> int:
        whole = self.whole = ranges is None
        wanted = [(0, self.size)] if ranges is None else list(ranges)
        # Guess raw and start the first data GETs now, beside the tail GET: a raw restore
        # then pays no extra round trip. A compressed object cancels them (backup_data marks
        # its compressed objects, so only objects of other writers are guessed at).
        marked = self.info.metadata.get(frames.META_FORMAT)
        framed = marked == frames.FORMAT_FRAMED
        self.marked_raw = marked == frames.FORMAT_RAW
        windows = _windows(wanted, self.chunk)
        fits = _fits(wanted, self.size)
        record, spliced = None, 0
        if self.size and not framed:  # what was recorded for a raw object, from its key
            first = windows[0] if fits else []
            record = asyncio.create_task(blocks.lookup(self.storage, self.info, first))
            self.record = record
            self.running = [record]
        if whole and record is not None and self.marked_raw and self.size >= SPLICE_MIN:
            spliced = await self.splice(record)  # the fast path, when it applies
            if spliced == self.size:
                _check_crc(self.key, await record, self.writer)
                return spliced
            wanted = [(spliced, self.size)]  # the regular path carries on from there
            windows = _windows(wanted, self.chunk)
        # Fetches cover whole blocks when backup marked an index, before it is read:
        # raw() plans again if the index (found from the key) says otherwise.
        self.align = blocks.BLOCK_SIZE if self.info.metadata.get(blocks.META_INDEX) else 1
        plan = self.plan(windows[0], self.align) if fits else None
        tasks: dict[int, asyncio.Task[_Data]] = {}
        if plan is not None and not framed:
            for number, fetch in enumerate(plan.fetches[: self.concurrency]):
                tasks[number] = asyncio.create_task(self.fetch_raw(fetch))
        self.running = [*tasks.values(), *([record] if record else [])]

        # backup_data marked it raw: no tail to probe (a GET, and a request slot, saved).
        tail_start, tail = (0, b"") if self.marked_raw else await self.read_tail(plan, tasks)
        trailer = frames.parse_trailer(tail[-frames.TRAILER_SIZE :], self.size) if tail else None
        if trailer is None and framed:
            raise IntegrityError(f"{self.key} is a compressed object but its trailer is damaged")
        if trailer is None:
            check_ranges(wanted, self.size)
            assert plan is not None  # _fits held, since check_ranges passed
            return spliced + await self.raw(windows, plan, tasks, record)
        await _reap(self.running)
        index = await self.read_index(trailer, tail, tail_start)
        wanted = [(0, index.raw_size)] if whole else wanted
        check_ranges(wanted, index.raw_size)
        return await self.framed(_windows(wanted, self.chunk), index)

    def plan(self, window: list[Range], align: int) -> Plan:
        return plan_raw(window, self.chunk, self.concurrency, align=align, size=self.size)

    async def splice(self, record: asyncio.Task[blocks.Record]) -> int:
        """Write what splice.py's fast path can of a whole raw restore; returns the bytes
        written (0 when it does not apply: restore_splice off, not a pipe, not plain http)."""
        source = self.storage.http_source(self.key) if self.use_splice else None
        if source is None:
            return 0
        from asyncplug.pipeline import splice  # only here: ctypes and libc cost ~7 ms to load

        if not splice.usable(self.writer.fd):
            return 0
        recorded = await record
        _check_size(self.key, recorded, self.size)  # before a byte is written
        index = recorded if isinstance(recorded, blocks.BlockIndex) else None
        if index is not None:  # the splice thread cannot await pages: all of them now
            await index.ensure(self.storage, [(0, self.size)])
        splicer = splice.Splicer(
            source, self.writer.fd, self.chunk, self.concurrency, self.timeout,
            recorded is not None, index,
        )  # fmt: skip
        try:
            return await splice.in_thread(lambda: splicer.run(0, self.size))
        finally:
            splicer.stopped.set()
            self.writer.crc, self.writer.written = splicer.crc, splicer.position

    async def read_tail(
        self, plan: Plan | None, tasks: dict[int, asyncio.Task[_Data]]
    ) -> tuple[int, bytes]:
        """(offset, bytes) of the object's last TAIL_PROBE bytes; b"" when too small."""
        tail_start = max(0, self.size - TAIL_PROBE)
        if self.size < MIN_COMPRESSED:
            return tail_start, b""
        first = plan.fetches[0] if plan and plan.fetches else None
        if 0 in tasks and first and first.start <= tail_start and first.end == self.size:
            return tail_start, b"".join((await tasks[0]).view(tail_start, self.size))
        async with self.requests:
            chunks = await self.storage.get_range(self.key, tail_start, self.size)
        return tail_start, b"".join(chunks)

    async def read_index(
        self, trailer: frames.Trailer, tail: bytes, tail_start: int
    ) -> frames.FrameIndex:
        start, end = trailer.index_offset, trailer.index_offset + trailer.index_len
        if start >= tail_start:
            raw = tail[start - tail_start : end - tail_start]
        else:
            raw = b"".join(await self.storage.get_range(self.key, start, end))
        return frames.FrameIndex(trailer, raw)

    async def raw(
        self,
        windows: list[list[Range]],
        plan: Plan,
        tasks: dict[int, asyncio.Task[_Data]],
        record: asyncio.Task[blocks.Record] | None,
    ) -> int:
        # The record costs a round trip or two, overlapped with the first data GETs;
        # knowing it first spares the CRC work when there is nothing to check.
        recorded = await record if record is not None else None
        _check_size(self.key, recorded, self.size)
        index = recorded if isinstance(recorded, blocks.BlockIndex) else None
        whole_crc = isinstance(recorded, blocks.WholeCrc) and self.whole
        self.writer.checksum = whole_crc
        if index is not None:
            self.checked = f"{index.count} blocks of {index.block_size} bytes"
        elif whole_crc:
            self.checked = "the whole-stream CRC32C"
        elif self.size:
            self.checked = "nothing: no checksum record"
            log.debug("restore of %s is not verified: %s", self.key,
                      "a subset of a 0.1 object" if recorded else "no checksum record")  # fmt: skip
        align = index.block_size if index is not None else 1
        if align != self.align:  # the speculative GETs assumed other blocks (metadata lost)
            await _reap(tasks.values())
            plan, tasks = self.plan(windows[0], align), {}
        guessed = not self.marked_raw  # a raw guess: a damaged compressed object may hide
        if guessed and 0 in tasks and plan.fetches[0].start == 0 and self.size >= MIN_COMPRESSED:
            tasks[0] = asyncio.create_task(self.not_compressed(tasks[0], plan.fetches[0].end))
        written = 0
        for number, window in enumerate(windows):
            if index is not None:  # the checksums of this window's blocks, not more
                index.forget_before(window[0][0] if len(window) == 1 else 0)
                await index.ensure(self.storage, window)
            if number:  # the first window's plan came with the speculative GETs
                plan, tasks = self.plan(window, align), {}
            self.running = []  # from here _run owns the tasks, and frees each after its use
            _log_plan(self.key, "raw", window, plan)
            try:
                written += await self.write(plan, self.fetch_raw, tasks, written)
            finally:
                self.running = list(tasks.values())
        if whole_crc:
            _check_crc(self.key, recorded, self.writer)
        return written

    async def framed(self, windows: list[list[Range]], index: frames.FrameIndex) -> int:
        self.checked = f"{len(index.frames)} {index.codec.name} frames"
        written = 0
        with ThreadPoolExecutor(self.workers, "asyncplug-decode") as pool:

            async def fetch_frames(fetch: Fetch) -> _Data:
                chunks = await self.get(fetch)
                loop = asyncio.get_running_loop()
                data = await loop.run_in_executor(pool, _decode, index, fetch, chunks)
                self.storage.recycle(chunks)  # decoded: the compressed bytes are done
                return data

            for window in windows:
                plan = plan_frames(window, index, self.chunk, self.concurrency)
                _log_plan(self.key, f"{index.codec.name} compressed", window, plan)
                tasks: dict[int, asyncio.Task[_Data]] = {}
                try:
                    written += await self.write(plan, fetch_frames, tasks, written)
                finally:
                    await _reap(tasks.values())  # before the pool shuts down
        return written

    async def write(
        self, plan: Plan, fetch: Fetcher, tasks: dict[int, asyncio.Task[_Data]], start: int
    ) -> int:
        """One window's plan, fetched and written from output offset `start` (_run)."""
        storage = self.storage
        return await _run(plan, fetch, self.writer, self.budget, self.chunk, tasks, storage, start)

    async def get(self, fetch: Fetch) -> list[Buffer]:
        async with self.requests:
            chunks = await self.storage.get_range(self.key, fetch.start, fetch.end)
        _check_length(self.key, fetch, chunks)
        return chunks

    async def fetch_raw(self, fetch: Fetch) -> _Data:
        data = _Data.of_chunks(fetch.start, await self.get(fetch))
        index = await self.record if self.record is not None else None
        if isinstance(index, blocks.BlockIndex):
            await index.ensure(self.storage, [(fetch.start, fetch.end)])
            data.bad = await asyncio.to_thread(index.bad_blocks, data.view, fetch.start, fetch.end)
            data.index = index
        return data

    async def not_compressed(self, first: asyncio.Task[_Data], end: int) -> _Data:
        data = await first
        if b"".join(data.view(0, min(end, 8))) == frames.MAGIC_HEAD:
            raise IntegrityError(
                f"{self.key} starts like a compressed object but its trailer is damaged"
            )
        return data


async def _reap(futures: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel what is still running and wait for it, so no task outlives the restore."""
    pending = list(futures)
    for future in pending:
        future.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def _run(
    plan: Plan,
    fetch: Fetcher,
    writer: FdWriter,
    budget: int,
    chunk: int,
    tasks: dict[int, asyncio.Task[_Data]],
    storage: Storage,
    start: int = 0,
) -> int:
    """Fetch ahead within the budget and write the slices in order, from output offset
    `start` (where an earlier window ended); returns the bytes written.

    Fetches start in order of first use while the bytes they may hold (Fetch.cost) fit in
    `budget`, and at most MAX_AHEAD of them; one is dropped as soon as its last slice is
    written. The fetch the writer waits for always starts, so an oversized frame or the
    fetches held back for reuse (ranges.py) cannot stall it. Counting bytes, not fetches,
    lets small subset GETs run ahead of a slow one instead of queueing behind it. `tasks`
    may hold fetches already started (the speculative first GETs), numbered from 0.
    """
    launched = len(tasks)
    held = sum(plan.fetches[number].cost for number in tasks)
    out = start
    k = 0
    while k < len(plan.slices):
        while launched < len(plan.fetches):
            cost = plan.fetches[launched].cost
            needed = plan.slices[k].fetch >= launched
            if not needed and (held + cost > budget or len(tasks) >= MAX_AHEAD):
                break
            tasks[launched] = asyncio.create_task(fetch(plan.fetches[launched]))
            launched += 1
            held += cost
        await tasks[plan.slices[k].fetch]
        # Write every slice whose fetch is ready in one writev (many small ranges would
        # otherwise cost one thread hop each), up to about one chunk.
        views: list[memoryview] = []
        part: list[memoryview] = []
        size = 0
        end = k
        failed: IntegrityError | None = None
        while end < len(plan.slices) and size < chunk and len(views) < IOV_MAX:
            piece = plan.slices[end]
            task = tasks.get(piece.fetch)
            if task is None or not task.done():
                break
            data = task.result()
            bad = data.first_bad(piece.start, piece.end) if data.bad else None
            if bad is not None:  # a corrupt block: write up to it, then stop
                stop = max(piece.start, bad)
                views.extend(data.view(piece.start, stop))
                size += stop - piece.start
                assert data.index is not None
                failed = data.index.mismatch(bad // data.index.block_size)
                break
            part = data.view(piece.start, piece.end)
            views.extend(part)
            size += piece.end - piece.start
            end += 1
        await writer.write(views, out)
        del views, part  # hold no buffer past its last use: the window is the budget
        out += size
        if failed is not None:
            raise failed
        for number in range(k, end):
            fetch_number = plan.slices[number].fetch
            if plan.last_use[fetch_number] == number:
                # Written (the writer has returned): its buffers may take the next GETs.
                storage.recycle(tasks.pop(fetch_number).result().chunks)
                held -= plan.fetches[fetch_number].cost
        k = end
    return out - start


def _log_plan(key: str, kind: str, wanted: list[Range], plan: Plan) -> None:
    fetched = sum(f.end - f.start for f in plan.fetches)
    log.debug("restore of %s (%s): %d ranges, %d bytes, in %d GETs of %d bytes",
              key, kind, len(wanted), plan.output_size, len(plan.fetches), fetched)  # fmt: skip


def _windows(wanted: list[Range], chunk: int) -> list[list[Range]]:
    """One long range in pieces of WINDOW_GETS chunks (the last may be shorter); a list of
    ranges (a subset: as many as gprestore asked for) as it is."""
    span = WINDOW_GETS * chunk
    if len(wanted) != 1 or wanted[0][1] - wanted[0][0] <= span:
        return [wanted]
    start, end = wanted[0]
    return [[(at, min(at + span, end))] for at in range(start, end, span)]


def _fits(wanted: list[Range], size: int) -> bool:
    return all(end <= size for _, end in wanted)


def _check_length(key: str, fetch: Fetch, chunks: Sequence[Buffer]) -> None:
    got = sum(map(len, chunks))
    if got != fetch.end - fetch.start:
        raise IntegrityError(
            f"{key}: bytes {fetch.start}-{fetch.end} came back with {got} bytes "
            f"instead of {fetch.end - fetch.start}"
        )


def _decode(index: frames.FrameIndex, fetch: Fetch, chunks: Sequence[Buffer]) -> _Data:
    """Decompress the wanted frames of one fetch (runs in the decode pool)."""
    data = _Data.of_chunks(fetch.start, chunks)
    starts, bufs = [], []
    for frame in fetch.frames:
        parts = data.view(frame.offset, frame.offset + frame.length)
        packed: bytes | memoryview = parts[0] if len(parts) == 1 else b"".join(parts)
        starts.append(frame.raw_start)
        bufs.append(memoryview(index.decode(frame, packed)))
    return _Data(starts, bufs)


def _check_size(key: str, record: blocks.Record, size: int) -> None:
    if isinstance(record, blocks.WholeCrc) and record.size != size:
        raise IntegrityError(
            f"{key} holds {size} bytes but backup recorded {record.size}: the object is corrupt"
        )


def _check_crc(key: str, record: blocks.Record, writer: FdWriter) -> None:
    """The 0.1 whole-stream check, after the last byte (a block index was checked on the way)."""
    if isinstance(record, blocks.WholeCrc) and writer.crc != record.crc:
        raise IntegrityError(
            f"{key}: restored stream CRC32C {writer.crc:08x} does not match the recorded "
            f"{record.crc:08x}: the stored object is corrupt"
        )
