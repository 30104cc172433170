"""Ordered output for restores: writev/pwritev of buffer lists from one writer thread.

The event loop never blocks on the output: gprestore's COPY may read slowly, and a
blocking write on the loop would stall every ranged GET. stdout is not made
non-blocking either, because O_NONBLOCK is a property of the shared file description
and would leak into gprestore's end of the pipe. The thread is a daemon so that an
output nobody reads can never keep the process from exiting after an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections.abc import Sequence

from asyncplug.pipeline.frames import crc32c
from asyncplug.pipeline.pipes import grow_pipe, wait_writable

IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024

_Job = tuple[Sequence[memoryview], int, "asyncio.Future[None]", asyncio.AbstractEventLoop]


class FdWriter:
    """Writes buffer lists to `fd` in submission order, zero copy.

    positional=True writes each list at its output offset with pwritev (a file);
    otherwise writev appends (a pipe). checksum=True keeps a running CRC32C of the
    output in `crc`, computed in the writer thread (crc32c releases the GIL).
    """

    def __init__(self, fd: int, positional: bool = False, checksum: bool = False) -> None:
        self.fd = fd
        self.positional = positional
        self.checksum = checksum
        self.crc = 0
        self.written = 0
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        if not positional:
            grow_pipe(fd)

    async def write(self, views: Sequence[memoryview], offset: int) -> None:
        """Write `views` (at output `offset` when positional); raises what the write raised."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="asyncplug-writer", daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._jobs.put((views, offset, done, loop))
        await done

    async def drain(self) -> None:
        """Return once every write submitted so far has finished (successfully or not)."""
        if self._thread is not None:
            with contextlib.suppress(OSError):
                await self.write([], 0)

    def close(self) -> None:
        """Stop the thread once it has finished the writes already submitted."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            views, offset, done, loop = job
            error: BaseException | None = None
            try:
                self._write_all(views, offset)
                if self.checksum:
                    for view in views:
                        self.crc = crc32c(view, self.crc)
            except BaseException as exc:
                error = exc
            del job, views  # the buffers may be freed as soon as the loop drops them
            try:
                loop.call_soon_threadsafe(_settle, done, error)
            except RuntimeError:  # the loop is gone (the restore was abandoned)
                return

    def _write_all(self, views: Sequence[memoryview], offset: int) -> None:
        pending = list(views)
        while pending:
            batch = pending[:IOV_MAX]
            try:
                if self.positional:
                    count = os.pwritev(self.fd, batch, offset)
                    offset += count
                else:
                    count = os.writev(self.fd, batch)
            except BlockingIOError:  # an inherited non-blocking stdout: wait, do not fail
                wait_writable(self.fd)
                continue
            self.written += count
            # Drop what was written; a partial write leaves the tail of one buffer.
            done = 0
            while done < len(batch) and count >= len(batch[done]):
                count -= len(batch[done])
                done += 1
            if done < len(batch) and count:
                batch[done] = batch[done][count:]
            pending = batch[done:] + pending[len(batch) :]


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.cancelled():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
