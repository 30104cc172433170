"""backup_data / backup_file: stdin -> part buffers -> (compression) -> concurrent part uploads.

    reader thread --fill--> part buffers (BufferPool, byte budget) --put_part--> storage
                   \\-> frame buffers -> compression workers -> copied into part buffers

Raw streams are read straight into part buffers (no copy) with the CRC32C of each block
computed on the reader thread (blocks.py); the block index goes into `<key>.asyncplug-idx`
once the object is stored. Compressed streams go through FrameCompressor; finished frames are
copied into part buffers in order. Part sizes follow PartPlan (parts.py), memory the
BufferPool budget. The first full part is held back until a second one has data: a
stream that fits in one part is stored with a single put(), an empty one as an empty
object, and only longer streams open a multipart upload.

Never a broken object: on any failure or cancellation every part task is cancelled and
awaited, then the upload is aborted (shielded: repeated cancellation waits for it), and
the error propagates. Nothing is visible under the key until complete() succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
from collections.abc import Awaitable, Coroutine
from typing import Any

from asyncplug import spool
from asyncplug.config import Config
from asyncplug.errors import PluginError, StorageError
from asyncplug.pipeline.blocks import META_INDEX, BlockRecorder, index_key
from asyncplug.pipeline.compress import FRAME_SIZE, FrameCompressor, frame_memory
from asyncplug.pipeline.frames import (
    FORMAT_FRAMED,
    FORMAT_RAW,
    META_CRC,
    META_FORMAT,
    META_SIZE,
    crc32c,
    crc32c_combine,
    sidecar_key,
)
from asyncplug.pipeline.parts import BufferPool, PartPlan, plan_parts
from asyncplug.pipeline.reader import StreamReader
from asyncplug.spool import STEP
from asyncplug.storage.base import Storage, Upload

log = logging.getLogger(__name__)


async def backup_path(storage: Storage, key: str, path: str, config: Config) -> int:
    """backup_file: store the local file at `path` under key; returns bytes read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise PluginError(f"cannot open {path}: {exc.strerror or exc}") from exc
    try:
        return await backup_stream(storage, key, fd, config)
    finally:
        os.close(fd)


async def backup_stream(storage: Storage, key: str, fd: int, config: Config) -> int:
    """backup_data: read fd to EOF, store it under key, return the bytes read."""
    return await run_backup(storage, key, fd, config)


async def run_backup(
    storage: Storage, key: str, fd: int, config: Config, frame_size: int = FRAME_SIZE
) -> int:
    """backup_stream with the frame size exposed (tests use small frames)."""
    plan = plan_parts(
        config.backup_multipart_chunksize,
        storage.min_part_size,
        storage.max_part_size,
        storage.max_parts,
    )
    framed = config.compression != "none"
    budget = plan.first * (config.backup_max_concurrent_requests + config.backup_queue_depth)
    if framed:  # frames in and out of the workers come out of the same budget
        budget -= frame_memory(frame_size, config.compression_workers)
    pool = BufferPool(max(budget, 2 * plan.first), config.spool_dir)
    blocks = None if framed else BlockRecorder()
    reader = StreamReader(fd, blocks)
    uploader = PartUploader(storage, key, plan, pool, config.backup_max_concurrent_requests)
    uploader.metadata = {META_FORMAT: FORMAT_FRAMED if framed else FORMAT_RAW}
    if blocks is not None:
        uploader.blocks = blocks
        uploader.metadata[META_INDEX] = "1"
    try:
        if framed:
            compressor = FrameCompressor(
                config.compression, config.compression_level, config.compression_workers,
                frame_size,
            )  # fmt: skip
            filler = PartFiller(uploader, pool, plan)
            await uploader.run(_compressed(compressor, reader, filler))
        else:
            await uploader.run(_raw(reader, uploader, pool, plan))
    finally:
        reader.close()
        pool.close()
    log.debug("backup of %s: %d bytes read, peak buffers %d, %d spooled",
              key, reader.bytes_read, pool.peak, pool.spooled)  # fmt: skip
    return reader.bytes_read


async def _raw(
    reader: StreamReader, uploader: PartUploader, pool: BufferPool, plan: PartPlan
) -> None:
    """Read straight into part buffers: the bytes go from the pipe to the socket uncopied."""
    number = 1
    while True:
        size = plan.size(number)
        buf = await pool.acquire(size)
        count, crc = await reader.fill(memoryview(buf)[:size])
        if count == 0:
            await pool.release(buf)
            return
        await uploader.submit(buf, count, crc)
        if count < size:
            return
        number += 1


async def _compressed(
    compressor: FrameCompressor, reader: StreamReader, filler: PartFiller
) -> None:
    await compressor.run(reader, filler.write)
    await filler.flush()


class PartFiller:
    """Copies compressed output into part buffers of the planned sizes and submits them.

    The part's CRC32C is computed on a thread every STEP bytes, where a spooled buffer's
    pages are also released (spool.py): a big part is never wholly in memory.
    """

    def __init__(self, uploader: PartUploader, pool: BufferPool, plan: PartPlan) -> None:
        self.uploader = uploader
        self.pool = pool
        self.plan = plan
        self._buf: mmap.mmap | None = None
        self._size = 0
        self._used = 0
        self._checked = 0  # bytes of the part whose CRC is in _crc
        self._crc = 0

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            if self._buf is None:  # only now: a stream ending on a boundary adds no part
                self._size = self.plan.size(self.uploader.submitted + 1)
                self._buf = await self.pool.acquire(self._size)
                self._used = self._checked = self._crc = 0
            take = min(len(view), self._size - self._used)
            self._buf[self._used : self._used + take] = view[:take]
            self._used += take
            view = view[take:]
            if self._used == self._size:
                await self._submit()
            elif self._used - self._checked >= STEP:
                await self._check()

    async def flush(self) -> None:
        if self._buf is not None and self._used:
            await self._submit()

    async def _check(self) -> None:
        """CRC what was copied since the last check, then release it if spooled."""
        buf, start, end = self._buf, self._checked, self._used
        assert buf is not None
        self._crc = await asyncio.to_thread(_crc_and_release, buf, start, end, self._crc)
        self._checked = end

    async def _submit(self) -> None:
        await self._check()
        buf, used, crc = self._buf, self._used, self._crc
        assert buf is not None
        self._buf = None
        await self.uploader.submit(buf, used, crc)


class PartUploader:
    """Uploads parts concurrently; a one-part stream is a single put(); aborts on failure."""

    def __init__(
        self, storage: Storage, key: str, plan: PartPlan, pool: BufferPool, concurrency: int
    ) -> None:
        self.storage = storage
        self.key = key
        self.plan = plan
        self.pool = pool
        self.metadata: dict[str, str] = {}
        self.blocks: BlockRecorder | None = None  # raw: the block CRCs, an index at the end
        self.submitted = 0  # parts handed to submit()
        self.size = 0  # bytes handed to submit()
        self.crc = 0  # CRC32C of those bytes, combined from the part CRCs
        self._slots = asyncio.Semaphore(concurrency)
        self._held: tuple[mmap.mmap, int, int] | None = None  # part 1 until part 2 shows up
        self._starting: asyncio.Future[Upload] | None = None  # start_upload() in flight or done
        self._completed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._failed: asyncio.Future[None] | None = None
        self._stored = False  # a put() or complete() was sent: the key may hold an object

    async def run(self, produce: Coroutine[Any, Any, None]) -> None:
        """Run the producer (which calls submit), then store the object; abort on any failure."""
        self._failed = asyncio.get_running_loop().create_future()
        producer = asyncio.ensure_future(produce)
        try:
            done, _ = await asyncio.wait(
                {producer, self._failed}, return_when=asyncio.FIRST_COMPLETED
            )
            if self._failed in done:
                self._failed.result()  # raises the part's error
            producer.result()
            await self._finish()
        except BaseException:
            await _uncancellable(self._cleanup(producer))
            raise

    async def submit(self, buf: mmap.mmap, count: int, crc: int) -> None:
        """Hand over a filled part buffer (returned to the pool once its part is stored)."""
        number = self.submitted + 1
        if number > self.plan.max_parts:
            await self.pool.release(buf)
            raise StorageError(
                f"the stream is larger than {self.plan.capacity()} bytes, the most "
                f"{self.plan.max_parts} parts can hold: raise backup_multipart_chunksize"
            )
        self.submitted = number
        self.crc = crc32c_combine(self.crc, crc, count)
        self.size += count
        if number == 1:
            self._held = (buf, count, crc)
            return
        if self._starting is None:
            # In the background: reading goes on while the client is created and
            # CreateMultipartUpload makes its round trip; the part tasks wait for it.
            self._starting = asyncio.ensure_future(
                self.storage.start_upload(self.key, self.metadata)
            )
            assert self._held is not None
            held, self._held = self._held, None
            self._spawn(1, 0, *held)
        self._spawn(number, self.size - count, buf, count, crc)

    def _spawn(self, number: int, offset: int, buf: mmap.mmap, count: int, crc: int) -> None:
        task = asyncio.ensure_future(self._put_part(number, offset, buf, count, crc))
        self._tasks.add(task)
        task.add_done_callback(self._part_done)

    async def _put_part(
        self, number: int, offset: int, buf: mmap.mmap, count: int, crc: int
    ) -> None:
        assert self._starting is not None
        try:
            upload = await asyncio.shield(self._starting)  # a cancelled part must not cancel it
            async with self._slots:
                with memoryview(buf) as view:
                    await upload.put_part(number, offset, view[:count], crc)
        finally:
            await self.pool.release(buf)

    def _part_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self._failed is not None and not self._failed.done():
            self._failed.set_exception(exc)

    async def _finish(self) -> None:
        if self._starting is None:  # zero or one part: one request, atomic
            buf, count, crc = self._held if self._held else (None, 0, 0)
            metadata = dict(self.metadata)
            if metadata[META_FORMAT] == FORMAT_RAW:
                metadata.update({META_CRC: f"{self.crc:08x}", META_SIZE: str(self.size)})
            self._stored = True
            if buf is None:
                await _uncancellable(self.storage.put(self.key, b"", 0, metadata))
            else:
                with memoryview(buf) as view:
                    await _uncancellable(self.storage.put(self.key, view[:count], crc, metadata))
                self._held = None  # stored: back to the pool (a worker keeps it for the next)
                await self.pool.release(buf)
            await self._put_index()
            return
        await self._wait_parts()
        upload = self._starting.result()  # done: every part waited for it
        self._stored = True
        # Let complete() finish even when cancelled: cut short, it could still land after
        # our clean-up had deleted the key. If it fails, clean-up aborts (harmless).
        await _uncancellable(upload.complete())
        self._completed = True
        await self._put_index()

    async def _put_index(self) -> None:
        """A raw object's block index, in its own object: the object must stay
        byte-identical to the stream (as the Go plugin stores it), and the metadata of a
        multipart object is fixed before the stream is read. If this fails, the object
        goes too (clean-up)."""
        if self.blocks is not None:
            body = self.blocks.finish()
            await _uncancellable(self.storage.put(index_key(self.key), body, crc32c(body)))

    async def _wait_parts(self) -> None:
        while self._tasks:
            assert self._failed is not None
            await asyncio.wait({*self._tasks, self._failed}, return_when=asyncio.FIRST_COMPLETED)
            if self._failed.done():
                self._failed.result()

    async def _cleanup(self, producer: asyncio.Future[None]) -> None:
        producer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(producer, *self._tasks, return_exceptions=True)
        if self._failed is not None and self._failed.done():
            self._failed.exception()  # retrieved: it is the error being raised, or follows it
        if self._held is not None:
            await self.pool.release(self._held[0])
            self._held = None
        starting, self._starting = self._starting, None
        if starting is not None and not self._completed:
            try:
                upload = await starting  # even if still in flight: it may create an upload
            except Exception:
                log.debug("start of the upload of %s failed: nothing to abort", self.key)
            else:
                try:
                    await upload.abort()
                except Exception:
                    log.exception("could not abort the upload of %s", self.key)
        try:
            if self._stored:  # put()/complete() may have landed before the failure
                await self.storage.delete([self.key, index_key(self.key)])
        except Exception:
            log.exception("clean-up of the failed backup of %s failed", self.key)


def _crc_and_release(buf: mmap.mmap, start: int, end: int, crc: int) -> int:
    with memoryview(buf) as view:
        crc = crc32c(view[start:end], crc)
    spool.release(buf, start, end)
    return crc


async def _uncancellable(cleanup: Awaitable[None]) -> None:
    """Await cleanup to the end even if we are cancelled (again) meanwhile; then re-raise."""
    task = asyncio.ensure_future(cleanup)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = cancelled or not task.done()
    if cancelled:
        raise asyncio.CancelledError
    task.result()


__all__ = ["backup_path", "backup_stream", "run_backup", "sidecar_key"]
