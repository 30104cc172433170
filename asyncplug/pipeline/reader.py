"""Read the backup stream into caller-owned buffers on one daemon thread.

One thread hop per buffer (not per read): the thread loops os.readv into the buffer until
it is full or the stream ends, and computes the CRC32C of each chunk as it arrives (still
in cache; crc32c releases the GIL). The event loop only sees "buffer done". A raw
backup passes a BlockRecorder: the thread then hashes each block once, and the buffer's
CRC is combined from its blocks' (blocks.py).

Against loop.add_reader on a non-blocking pipe fed by `cat`, CPU was the same (0.45
CPU-s/GiB for read + CRC, most of it the kernel's pipe copy); the thread keeps the copy
and the CRC off the event loop, which it wakes once per buffer whatever size the
producer writes in, where add_reader wakes it for every pipe-full.
The thread is a daemon so that a cancelled backup exits even while the thread is still
blocked reading a pipe whose writer never closes (an executor thread would be joined at exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import queue
import stat
import threading
from collections.abc import Callable

from asyncplug import spool
from asyncplug.errors import PluginError
from asyncplug.pipeline.blocks import BlockRecorder
from asyncplug.pipeline.frames import crc32c
from asyncplug.pipeline.pipes import grow_pipe
from asyncplug.spool import STEP
from asyncplug.storage.base import Buffer

_Job = tuple[memoryview, asyncio.AbstractEventLoop, "asyncio.Future[tuple[int, int]]"]


class StreamReader:
    """`await reader.fill(buf)` -> (bytes read, their CRC32C); fewer than len(buf) means EOF."""

    def __init__(self, fd: int, blocks: BlockRecorder | None = None) -> None:
        self.fd = fd
        self.blocks = blocks  # fed by the thread only, read once fill() has returned
        self.bytes_read = 0
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        _prepare(fd)

    async def fill(self, buf: Buffer | mmap.mmap) -> tuple[int, int]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="asyncplug-reader", daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[int, int]] = loop.create_future()
        self._jobs.put((memoryview(buf).cast("B"), loop, done))
        count, crc = await done
        self.bytes_read += count
        return count, crc

    def close(self) -> None:
        """Let the thread finish after its current job (it may stay blocked in a read)."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            view, loop, done = job
            try:
                result: tuple[int, int] | BaseException = _read_full(self.fd, view, self.blocks)
            except OSError as exc:
                result = PluginError(f"cannot read the backup stream: {exc.strerror or exc}")
            finally:
                view.release()
            _settle(loop, done, result)


def _read_full(fd: int, view: memoryview, blocks: BlockRecorder | None) -> tuple[int, int]:
    got, crc, want = 0, 0, len(view)
    released = 0  # a spooled buffer's pages are released every STEP bytes
    while got < want:
        count = os.readv(fd, [view[got:]])
        if count == 0:
            break
        if blocks is None:
            crc = crc32c(view[got : got + count], crc)
        else:
            blocks.update(view[got : got + count])
        got += count
        if got - released >= STEP:
            released = spool.release(view.obj, released, got)
    spool.release(view.obj, released, got)
    return got, (crc if blocks is None else blocks.part_crc())


def _settle(
    loop: asyncio.AbstractEventLoop,
    done: asyncio.Future[tuple[int, int]],
    result: tuple[int, int] | BaseException,
) -> None:
    def settle() -> None:
        if done.done():  # the waiter was cancelled
            return
        if isinstance(result, BaseException):
            done.set_exception(result)
        else:
            done.set_result(result)

    call: Callable[[], None] = settle
    with contextlib.suppress(RuntimeError):  # the loop closed while we read: nobody waits
        loop.call_soon_threadsafe(call)


def _prepare(fd: int) -> None:
    """Blocking reads (the thread waits in the kernel), and a bigger pipe when stdin is one."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        raise PluginError(f"cannot read the backup stream: {exc.strerror or exc}") from exc
    with contextlib.suppress(OSError):
        os.set_blocking(fd, True)
    if stat.S_ISFIFO(mode):
        grow_pipe(fd)
    elif stat.S_ISREG(mode):
        with contextlib.suppress(OSError, AttributeError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
