"""restore_data's fast path on Linux: response bodies spliced from the socket to stdout.

The regular path receives each body into buffers (one copy) and writev copies them into
the stdout pipe (a second copy). Here a body goes from the socket into a private pipe
with splice(2) (page references, no copy), tee(2) puts the same pages into a second
private pipe (no copy), and one read into a small buffer, still in cache, feeds the
CRC32C of each block; a block's pages are spliced on from the second pipe into stdout
only once the block matches its CRC in the block index (blocks.py), so no unchecked
byte reaches the reader. A 0.1 object (only a whole-stream CRC32C, checked after the last
byte) is teed straight into stdout instead. On the 2-core bench machine that halves the
plugin's CPU per GiB, and the server, which shares the cores, gets faster with it
(README, Benchmarks).

When: a whole restore_data of an object backup_data wrote raw, stdout a pipe, and the
lean S3 path over plain http (`encryption: off`); a TLS body is decrypted in user space,
so it cannot be spliced. How: GETs of restore_multipart_chunksize bytes in object order
over restore_max_concurrent_requests keep-alive connections, one request in flight on
each: while one body is spliced, the next ones wait in the kernel's socket buffers.

Anything unexpected on the network side (an error status, a cut body, a timeout, a
response this code does not parse) stops the fast path at the first byte not yet
written: restore.py's regular path carries on from there with its retries and errors.
Errors on stdout (EPIPE: the reader went away) are raised as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
import select
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from asyncplug.crc import crc32c
from asyncplug.errors import PluginError
from asyncplug.pipeline.blocks import BlockIndex
from asyncplug.pipeline.pipes import PIPE_SIZE, grow_pipe, wait_writable
from asyncplug.storage.base import HttpSource
from asyncplug.storage.httphead import parse_head

log = logging.getLogger(__name__)

HEAD_LIMIT = 64 * 1024  # status line and headers of one response
MIN_PIPE = 64 * 1024  # the default pipe size: below it, the regular path is cheaper
POLL_SLICE = 1.0  # seconds: how often a wait looks at the stop flag
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)
_tee = _libc.tee
_tee.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint]
_tee.restype = ctypes.c_ssize_t


class Stop(Exception):
    """The network side did something the fast path does not handle: hand over."""


def usable(fd: int) -> bool:
    """Linux, and fd is a pipe (tee and splice need one on each side)."""
    if sys.platform != "linux" or not hasattr(os, "splice"):
        return False
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


class Splicer:
    """Object bytes [start, end) to `out` in order; `position` and `crc` say how far it got."""

    def __init__(
        self,
        source: HttpSource,
        out: int,
        chunk: int,
        connections: int,
        timeout: float,
        checksum: bool,
        index: BlockIndex | None = None,
    ) -> None:
        self.source = source
        self.out = out
        self.chunk = chunk
        self.connections = max(1, connections)
        self.timeout = timeout
        self.checksum = checksum
        self.position = 0  # next object byte to write; everything before it is in `out`
        self.crc = 0  # CRC32C of what was written (when checksum)
        self.stopped = threading.Event()  # set by the restore when it gives up
        self.index = index  # every block checked before it enters `out` (all pages loaded)
        self._scratch = memoryview(bytearray(PIPE_SIZE))
        self._etag: str | None = None
        self._pipe = (-1, -1)  # (read end, write end), made by run()
        # With an index: the second pipe, holding bytes [position, _fed) of the object,
        # of which the first _verified are checked and the rest are the current block's.
        self._hold = (-1, -1)
        self._cap = 0
        self._held = 0
        self._verified = 0
        self._fed = 0
        self._block_end = 0  # where the block being read ends
        self._block_crc = 0

    def run(self, start: int, end: int) -> int:
        """Write [start, end); returns the position reached (== end unless it stopped)."""
        self.position = self._fed = start
        if self.index is not None:
            self._block_end = self.index.block_end(start // self.index.block_size)
        pipes: list[int] = []
        try:
            self._pipe = _own_pipe()
            pipes.extend(self._pipe)
            if self.index is not None:
                self._hold = _own_pipe()
                pipes.extend(self._hold)
                self._cap = fcntl.fcntl(self._hold[1], fcntl.F_GETPIPE_SZ)
                if self._cap < self.index.block_size:
                    raise Stop(f"a pipe of {self._cap} bytes cannot hold a block")
        except Stop as exc:
            log.debug("splice path not taken: %s", exc)
            for fd in pipes:
                os.close(fd)
            return start
        try:
            return self._run(start, end)
        finally:
            for fd in pipes:
                os.close(fd)

    def _run(self, start: int, end: int) -> int:
        count = -(-(end - start) // self.chunk)  # GETs; computed, not listed (5 TiB: 440k)

        def fetch(number: int) -> tuple[int, int]:
            at = start + number * self.chunk
            return at, min(at + self.chunk, end)

        slots: list[_Connection | None] = [None] * min(self.connections, count)
        try:
            for number in range(len(slots)):
                slots[number] = self._send(None, fetch(number))
            for number in range(count):
                slot = number % len(slots)
                conn = slots[slot]
                assert conn is not None
                self._body(conn, fetch(number))
                ahead = number + len(slots)
                if ahead < count:
                    slots[slot] = self._send(conn, fetch(ahead))
            self._flush()
            log.debug("spliced %d bytes in %d GETs", end - start, count)
        except Stop as exc:  # errors on stdout (EPIPE: the reader went away) go up as they are
            self._flush()  # the checked blocks; the regular path starts after them
            log.debug("splice path stopped at byte %d of [%d, %d): %s",
                      self.position, start, end, exc)  # fmt: skip
        finally:
            for conn in slots:
                if conn is not None:
                    conn.close()
        return self.position

    # --- one response ----------------------------------------------------------------

    def _send(self, conn: _Connection | None, fetch: tuple[int, int]) -> _Connection:
        """Send the GET for `fetch`, on `conn` when it may be reused, else on a new one."""
        if conn is None or not conn.reusable:
            if conn is not None:
                conn.close()
            conn = _Connection(self.source, self.timeout)
        try:
            conn.sock.settimeout(self.timeout)
            conn.sock.sendall(self.source.request(fetch[0], fetch[1], self._etag))
            conn.sock.setblocking(False)  # reads wait in _wait, which watches the stop flag
        except OSError as exc:
            conn.close()
            raise Stop(f"sending the GET of {fetch}: {exc}") from exc
        return conn

    def _body(self, conn: _Connection, fetch: tuple[int, int]) -> None:
        start, end = fetch
        body = conn.read_head(self.stopped)
        headers = conn.headers
        if conn.status != 206:
            raise Stop(f"status {conn.status}")
        if "transfer-encoding" in headers or headers.get("content-length") != str(end - start):
            raise Stop(f"unexpected body length {headers.get('content-length')}")
        got = headers.get("content-range", "")
        if not got.startswith(f"bytes {start}-{end - 1}/"):
            raise Stop(f"Content-Range {got!r} for bytes {start}-{end - 1}")
        self._etag = self._etag or headers.get("etag")
        left = end - start
        if len(body) > left:
            raise Stop("more bytes than Content-Length")
        if body:  # body bytes that came with the head
            self._write(body)
            left -= len(body)
        while left:
            want = min(left, PIPE_SIZE)
            if self.index is not None:
                if self._held == self._cap:
                    self._flush()
                want = min(want, self._cap - self._held)
            moved = conn.splice(self._pipe[1], want, self.stopped)
            self._drain(self._pipe[0], moved)
            left -= moved

    def _write(self, data: memoryview) -> None:
        if self.index is not None:
            self._hold_bytes(data)
            return
        while data:
            written = _to_out(self.out, os.write, self.out, data)
            self.position += written
            if self.checksum:
                self.crc = crc32c(data[:written], self.crc)
            data = data[written:]

    def _drain(self, pipe: int, count: int) -> None:
        """Move `count` bytes from the private pipe to `out`: tee, then read for the CRC."""
        if self.index is not None:
            self._drain_checked(pipe, count)
            return
        while count:
            teed = _to_out(self.out, _tee_once, pipe, self.out, count)
            self.position += teed  # in stdout now, whatever happens next
            view = self._scratch[:teed]
            if os.readv(pipe, [view]) != teed:  # they are in the pipe: it cannot be short
                # Not a Stop: the CRC could not go on, and those bytes are out already.
                raise PluginError("restore: short read from the splice path's own pipe")
            if self.checksum:
                self.crc = crc32c(view, self.crc)
            count -= teed

    # --- with a block index: nothing enters `out` before its block is checked --------

    def _drain_checked(self, pipe: int, count: int) -> None:
        """Move `count` bytes from the private pipe to the holding pipe (tee), reading
        them once for the CRC of their blocks."""
        while count:
            teed = _tee_once(pipe, self._hold[1], count)  # it has room: see _body
            view = self._scratch[:teed]
            if os.readv(pipe, [view]) != teed:  # they are in the pipe: it cannot be short
                raise PluginError("restore: short read from the splice path's own pipe")
            self._held += teed
            self._check(view)
            count -= teed

    def _hold_bytes(self, data: memoryview) -> None:
        """Body bytes that came with the head, into the holding pipe."""
        while data:
            if self._held == self._cap:
                self._flush()
            written = os.write(self._hold[1], data[: self._cap - self._held])
            self._held += written
            self._check(data[:written])
            data = data[written:]

    def _check(self, data: memoryview) -> None:
        """CRC the bytes just held; a block that ends here must match, or nothing of it
        goes out: the checked blocks before it are flushed and BlockMismatch raised."""
        index = self.index
        assert index is not None
        at, end = 0, len(data)
        while at < end:
            take = min(end - at, self._block_end - self._fed)
            if take <= 0:  # the body lengths were checked: it cannot pass the object's end
                raise PluginError("restore: the splice path read past the end of the object")
            self._block_crc = crc32c(data[at : at + take], self._block_crc)
            self._fed += take
            at += take
            if self._fed == self._block_end:
                block = (self._fed - 1) // index.block_size
                if self._block_crc != index.crc(block):
                    self._flush()
                    raise index.mismatch(block)
                self._block_crc = 0
                self._verified = self._fed - self.position
                self._block_end = index.block_end(block + 1)

    def _flush(self) -> None:
        """The checked bytes at the head of the holding pipe, into `out` (page moves)."""
        while self._verified:
            moved = _to_out(self.out, os.splice, self._hold[0], self.out, self._verified)
            self.position += moved
            self._verified -= moved
            self._held -= moved


class _Connection:
    """One keep-alive connection (the bodies go through the Splicer's one private pipe)."""

    def __init__(self, source: HttpSource, timeout: float) -> None:
        self.timeout = timeout
        try:
            self.sock = socket.create_connection((source.host, source.port), source.connect_timeout)
        except OSError as exc:
            raise Stop(f"connecting to {source.host}:{source.port}: {exc}") from exc
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.status = 0
        self.headers: dict[str, str] = {}
        self.reusable = False
        self._head = bytearray(HEAD_LIMIT)

    def close(self) -> None:
        self.sock.close()  # a second close does nothing

    def read_head(self, stopped: threading.Event) -> memoryview:
        """Parse the status line and headers; returns body bytes received with them."""
        view = memoryview(self._head)
        filled = 0
        deadline = time.monotonic() + self.timeout  # a head sent a byte at a time ends too
        while True:
            if time.monotonic() > deadline:
                raise Stop(f"no whole response head in {self.timeout:g} s")
            self._wait(stopped)
            try:
                got = self.sock.recv_into(view[filled:])
            except BlockingIOError:
                continue
            except OSError as exc:
                raise Stop(f"reading the response: {exc}") from exc
            if not got:
                raise Stop("connection closed before the response")
            filled += got
            end = self._head.find(b"\r\n\r\n", 0, filled)
            if end >= 0:
                break
            if filled == HEAD_LIMIT:
                raise Stop("response head too large")
        try:
            self.status, self.headers, self.reusable = parse_head(bytes(view[:end]))
        except ValueError as exc:
            raise Stop(f"bad response head: {exc}") from exc
        return view[end + 4 : filled]

    def splice(self, pipe: int, count: int, stopped: threading.Event) -> int:
        """Up to `count` body bytes from the socket into the (empty) private `pipe`."""
        flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
        while True:
            try:
                moved = os.splice(self.sock.fileno(), pipe, count, flags=flags)
            except BlockingIOError:
                self._wait(stopped)
                continue
            except OSError as exc:
                raise Stop(f"reading the body: {exc}") from exc
            if not moved:
                self.reusable = False
                raise Stop("connection closed in the body")
            return moved

    def _wait(self, stopped: threading.Event) -> None:
        """Until the socket is readable; Stop after `timeout` seconds without data."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        waited = 0.0
        while not poller.poll(POLL_SLICE * 1000):
            waited += POLL_SLICE
            if stopped.is_set():
                raise Stop("the restore stopped")
            if waited >= self.timeout:
                raise Stop(f"no data for {self.timeout:g} s")


def _own_pipe() -> tuple[int, int]:
    """The private pipe, PIPE_SIZE when the kernel allows. Refused (Stop) below MIN_PIPE:
    past the user's pipe quota (pipe-user-pages-soft: 64 MiB for all of a user's pipes,
    shared by every segment's process) a new pipe holds 8 KiB, and splicing 8 KiB at a
    time costs more CPU than the regular path."""
    try:
        pipe = os.pipe2(os.O_CLOEXEC)
    except OSError as exc:  # e.g. out of file descriptors
        raise Stop(f"no pipe: {exc}") from exc
    grow_pipe(pipe[1])
    size = fcntl.fcntl(pipe[1], fcntl.F_GETPIPE_SZ)
    if size < MIN_PIPE:
        for fd in pipe:
            os.close(fd)
        raise Stop(f"a new pipe holds only {size} bytes (the user's pipe quota is used up)")
    return pipe


def _tee_once(pipe: int, out: int, count: int) -> int:
    teed = _tee(pipe, out, count, 0)
    if teed < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return int(teed)


def _to_out(out: int, call: Callable[..., int], *args: Any) -> int:
    """call(*args), a write into `out`, waiting while `out` is non-blocking (inherited) and
    full."""
    while True:
        try:
            return call(*args)
        except BlockingIOError:
            wait_writable(out)


async def in_thread(call: Callable[[], T]) -> T:
    """Run `call` in a daemon thread: a stdout nobody reads must not keep the process alive
    (asyncio.to_thread's threads are joined at exit)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        try:
            result, error = call(), None
        except BaseException as exc:
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=target, name="asyncplug-splice", daemon=True).start()
    return await done
