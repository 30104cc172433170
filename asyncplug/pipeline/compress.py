"""Compress the stream into v1 frames (frames.py) on a worker pool, keeping their order.

The reader fills fixed-size raw frame buffers (their CRC32C comes with them); each frame
is compressed on a worker thread (zstandard, zlib and lz4 release the GIL), and finished
frames are handed on strictly in stream order. At most `workers + 1` frames are being
compressed or waiting, so frames hold at most frame_memory() bytes: raw frames
(workers + 2, with the one the reader fills) and compressed ones waiting to be written.

The index grows by 12 bytes per frame (3 MiB per TiB of stream at 4 MiB frames) and is
written after the last frame; it is kept packed, not as Python objects.
"""

from __future__ import annotations

import asyncio
import mmap
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from asyncplug.pipeline import frames
from asyncplug.pipeline.codecs import CODECS, Codec
from asyncplug.pipeline.parts import new_buffer
from asyncplug.pipeline.reader import StreamReader

FRAME_SIZE = 4 * 1024 * 1024  # raw bytes per frame: fine-grained ranged restore, good ratio

Sink = Callable[[bytes | bytearray | memoryview], Awaitable[None]]


def frame_memory(frame_size: int, workers: int) -> int:
    """Most bytes of frames held at once: raw frames being read, compressed or waiting
    (workers + 2) and compressed frames waiting to be written (workers + 1)."""
    return frame_size * (2 * workers + 3)


class FrameCompressor:
    """Turns a stream into header + frames + index + trailer, written through `sink`."""

    def __init__(self, codec_name: str, level: int | None, workers: int, frame_size: int) -> None:
        self.codec: Codec = CODECS[codec_name]
        self.level = self.codec.default_level if level is None else level
        self.workers = workers
        self.frame_size = frame_size
        self.raw_size = 0
        self.written = 0  # compressed bytes handed to the sink
        self._index = bytearray()
        self._free: list[mmap.mmap] = []

    async def run(self, reader: StreamReader, sink: Sink) -> None:
        """Read to EOF, compress, and write everything (the trailer last) through sink."""
        loop = asyncio.get_running_loop()
        pending: deque[tuple[asyncio.Future[bytes], int, int, mmap.mmap]] = deque()
        executor = ThreadPoolExecutor(self.workers, thread_name_prefix="asyncplug-compress")
        try:
            await self._write(sink, frames.pack_header(self.codec))
            while True:
                buf = self._free.pop() if self._free else new_buffer(self.frame_size)
                count, crc = await reader.fill(buf)
                if count == 0:
                    self._free.append(buf)
                    break
                job = loop.run_in_executor(
                    executor, self.codec.compress, memoryview(buf)[:count], self.level
                )
                pending.append((job, count, crc, buf))
                if len(pending) > self.workers:
                    await self._drain_one(pending, sink)
                if count < self.frame_size:
                    break
            while pending:
                await self._drain_one(pending, sink)
            index_offset = self.written
            await self._write(sink, self._index)
            await self._write(
                sink, frames.pack_trailer(index_offset, self._index, self.raw_size, self.codec)
            )
        finally:
            for job, *_ in pending:
                job.cancel()
            executor.shutdown(wait=False, cancel_futures=True)
            self._free.clear()  # buffers still in a worker are unmapped when it is done

    async def _drain_one(
        self, pending: deque[tuple[asyncio.Future[bytes], int, int, mmap.mmap]], sink: Sink
    ) -> None:
        job, count, crc, buf = pending[0]
        packed = await job
        pending.popleft()
        self._free.append(buf)
        self._index += frames.ENTRY.pack(len(packed), count, crc)
        self.raw_size += count
        await self._write(sink, packed)

    async def _write(self, sink: Sink, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)
        await sink(data)
