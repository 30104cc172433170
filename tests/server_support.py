"""A warm server for the tests, forked from the test process so that monkeypatches made
before its first request reach its workers, and a runner of commands through it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time

from asyncplug import client, server

WAIT = 30.0


def private_dir() -> str:
    """Short (a socket path has at most 107 bytes) and 0700, as the server wants it."""
    return tempfile.mkdtemp(prefix="ap-", dir="/tmp")


def wait_until(predicate: object, seconds: float = WAIT) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


class ForkedServer:
    """`run(argv)` runs argv through a server forked (at the first call) from this process."""

    def __init__(self, directory: str | None = None, idle: float = 60.0) -> None:
        self.owned = directory is None  # removed by stop()
        self.directory = directory or private_dir()
        self.path = os.path.join(self.directory, "test.sock")
        self.idle = idle
        self.pid = 0

    def start(self) -> int:
        if self.pid:
            return self.pid
        pid = os.fork()
        if pid == 0:
            try:
                server.run(self.path, self.idle, preload=lambda: None)
            finally:
                os._exit(0)
        self.pid = pid
        assert wait_until(lambda: client.control(client.PING, self.path) == pid), "no server"
        return pid

    def run(self, argv: list[str], stdin: bytes = b"") -> tuple[int, str, str]:
        """(exit code, stdout, stderr) of argv run by a worker; fails if not served."""
        self.start()
        with (
            tempfile.TemporaryFile() as source,
            tempfile.TemporaryFile() as out,
            tempfile.TemporaryFile() as err,
        ):
            source.write(stdin)
            source.seek(0)
            status = client.request(argv, self.path, (source.fileno(), out.fileno(), err.fileno()))
            assert status is not None, "the server did not take the command"
            out.seek(0)
            err.seek(0)
            return os.waitstatus_to_exitcode(status), out.read().decode(), err.read().decode()

    def stop(self) -> None:
        if not self.pid:
            if self.owned:
                shutil.rmtree(self.directory, ignore_errors=True)
            return
        client.control(client.STOP, self.path)
        if not wait_until(lambda: os.waitpid(self.pid, os.WNOHANG)[0] != 0, 20):
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
        self.pid = 0
        if self.owned:
            shutil.rmtree(self.directory, ignore_errors=True)
