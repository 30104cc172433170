"""Bigger pipes for stdin and stdout (Linux)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import stat

PIPE_SIZE = 1024 * 1024  # 16x fewer reads/writes and wake-ups than the default 64 KiB


def grow_pipe(fd: int) -> None:
    """Make fd's pipe PIPE_SIZE when it is a pipe; anything else is left as it is."""
    with contextlib.suppress(OSError):  # EPERM above /proc/sys/fs/pipe-max-size: keep it
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


def wait_writable(fd: int) -> None:
    """Block until fd takes a write: for an inherited non-blocking stdout that is full,
    which must be waited for, not failed on (gprestore's end shares the O_NONBLOCK flag)."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    poller.poll()


def reader_gone(fd: int) -> bool:
    """True when fd is a pipe (or socket) whose other end has closed: POLLERR on the
    writing end. Tells a closed stdout from an EPIPE of some other file."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))
