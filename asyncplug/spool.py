"""Part buffers backed by an unlinked file, for parts too big to hold in memory.

Why: a part stays buffered until S3 acknowledges it (a retry sends it again and stdin
cannot be read twice), and 10,000 parts of a 5 TiB stream average 524 MiB. Parts
bigger than half the memory budget go to a shared mapping of an unlinked file in
spool_dir instead. The pipeline fills and sends such a buffer STEP bytes at a time and
calls release() on each finished step: MADV_DONTNEED unmaps those pages from the
process (RSS stays a few steps), while the data stays in the page cache (or on disk,
written back by the kernel) for the send or a retry. The file has no name, so nothing
is left behind whatever ends the process.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os

from asyncplug.errors import PluginError

STEP = 8 * 1024 * 1024  # pages are released every STEP bytes filled or sent
_PAGE = mmap.PAGESIZE


class SpoolMap(mmap.mmap):
    """A MAP_SHARED mapping of an unlinked file (only its type marks it)."""


def spool_map(size: int, directory: str) -> SpoolMap:
    """A `size`-byte buffer on disk in `directory` ("" = the system temp directory),
    with its blocks allocated now: running out of room is an error here, not a SIGBUS
    when a page is first written."""
    import tempfile  # only here: it imports shutil, bz2 and lzma, a cost every process paid

    directory = directory or tempfile.gettempdir()
    try:
        fd = _unnamed_file(directory)
    except OSError as exc:
        raise PluginError(
            f"cannot spool a {size}-byte part in {directory}: {exc.strerror or exc} (set spool_dir)"
        ) from exc
    try:
        os.posix_fallocate(fd, 0, size)
        return SpoolMap(fd, size)
    except OSError as exc:
        room = "no room" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise PluginError(
            f"cannot spool a {size}-byte part in {directory}: {room} (set spool_dir)"
        ) from exc
    finally:
        os.close(fd)  # the mapping keeps the file


def _unnamed_file(directory: str) -> int:
    flags = os.O_RDWR | os.O_CLOEXEC
    if hasattr(os, "O_TMPFILE"):
        with contextlib.suppress(OSError):  # not every filesystem has O_TMPFILE
            return os.open(directory, flags | os.O_TMPFILE, 0o600)
    import tempfile

    fd, path = tempfile.mkstemp(dir=directory, prefix=".asyncplug-spool-")
    os.unlink(path)
    return fd


def release(buf: object, start: int, end: int) -> int:
    """Unmap the whole pages of [start, end) of a SpoolMap from this process (their data
    stays in the file). Anything else is left alone: on anonymous memory it would
    zero the data. Returns where the next release of a growing range should start."""
    first = -(-start // _PAGE) * _PAGE
    last = end // _PAGE * _PAGE
    if isinstance(buf, SpoolMap):
        last = len(buf) if end >= len(buf) else last
        if last > first:
            buf.madvise(mmap.MADV_DONTNEED, first, last - first)
    return max(start, last)
