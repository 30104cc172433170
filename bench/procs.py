"""Run one child the way gpbackup does: stream on a pipe, rusage from os.wait4.

The command is started through bench/launch.py, a small process that wait4s it and
records its rusage: see there why the bench process cannot do it itself.

The producer copies a pre-generated file into the child's stdin with sendfile, so it
costs almost no CPU; the consumer drains the child's stdout through the verify hash.
CPU seconds and peak RSS are the child's own, from wait4's rusage, not the bench's.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from asyncplug.config import GiB
from bench.verify import Digest, new_digest

LAUNCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launch.py")
CHUNK = 1024 * 1024
STDERR_TAIL = 2000

Tick = Callable[[int], None]


@dataclass(frozen=True)
class ChildRun:
    """What one child did. `digest`/`bytes_out` describe its stdout when it was drained."""

    argv: tuple[str, ...]
    returncode: int
    wall_s: float
    cpu_s: float  # user + system of the command (and of any children it reaped)
    maxrss_kib: int
    bytes_in: int
    bytes_out: int
    digest: str
    stderr: str
    minflt: int = 0  # minor page faults of the command
    first_byte_s: float | None = None  # start to the first byte on stdout (when drained)
    warm_cpu_s: float = 0.0  # of cpu_s, what the warm server and its worker used (warm.py)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def failure(self) -> str:
        last = self.stderr.strip().splitlines()[-1:] or ["(no stderr)"]
        return f"{os.path.basename(self.argv[0])} exited {self.returncode}: {last[0]}"


def _feed(source: str, pipe_fd: int, moved: list[int], tick: Tick) -> None:
    """Copy the file into the pipe; stop quietly if the child closes it."""
    try:
        with open(source, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            offset = 0
            while offset < size:
                sent = os.sendfile(pipe_fd, f.fileno(), offset, min(CHUNK, size - offset))
                if sent == 0:
                    break
                offset += sent
                moved[0] = offset
                tick(sent)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the child exited early; its exit status tells why
    finally:
        os.close(pipe_fd)


def _drain(pipe_fd: int, digest: Digest, moved: list[int], tick: Tick, first: list[float]) -> None:
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    try:
        while True:
            n = os.readv(pipe_fd, [buffer])
            if n == 0:
                break
            if not first:
                first.append(time.perf_counter())
            digest.update(view[:n])
            moved[0] += n
            tick(n)
    finally:
        os.close(pipe_fd)


def run_child(
    argv: Sequence[str],
    *,
    stdin_file: str | None = None,
    drain_stdout: bool = False,
    env: dict[str, str] | None = None,
    tick: Tick | None = None,
) -> ChildRun:
    """Start `argv`, feed `stdin_file` through a pipe and/or hash its stdout, wait4 it."""
    tick = tick or (lambda n: None)
    digest = new_digest()
    fed, drained = [0], [0]
    first: list[float] = []
    threads: list[threading.Thread] = []
    with (
        open(os.devnull, "rb") as null_in,
        tempfile.TemporaryFile(prefix="asyncplug-bench-") as err,
        tempfile.NamedTemporaryFile(prefix="asyncplug-bench-", suffix=".json") as result,
    ):
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", LAUNCH, result.name, "--", *argv],
            stdin=subprocess.PIPE if stdin_file else null_in,
            stdout=subprocess.PIPE if drain_stdout else subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
        if stdin_file:
            assert proc.stdin is not None
            fd = os.dup(proc.stdin.fileno())
            proc.stdin.close()
            threads.append(threading.Thread(target=_feed, args=(stdin_file, fd, fed, tick)))
        if drain_stdout:
            assert proc.stdout is not None
            fd = os.dup(proc.stdout.fileno())
            proc.stdout.close()
            threads.append(threading.Thread(target=_drain, args=(fd, digest, drained, tick, first)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        proc.wait()
        wall = time.perf_counter() - start
        err.seek(0)
        stderr = err.read().decode(errors="replace")[-STDERR_TAIL:]
        report = json.loads(result.read() or b"{}")
    if not report:  # the launcher could not start the command
        report = {"returncode": proc.returncode, "wall_s": wall}
    return ChildRun(
        argv=tuple(argv),
        returncode=int(report["returncode"]),
        wall_s=float(report["wall_s"]),
        cpu_s=float(report.get("utime_s", 0.0)) + float(report.get("stime_s", 0.0)),
        maxrss_kib=int(report.get("maxrss_kib", 0)),
        bytes_in=fed[0],
        bytes_out=drained[0],
        digest=digest.hexdigest(),
        stderr=stderr,
        minflt=int(report.get("minflt", 0)),
        first_byte_s=first[0] - start if first else None,
    )


def probe_line(name: str, runs: Sequence[ChildRun], size: int, curl_wall: float, width: int) -> str:
    """One row of a probe's table: median wall, MB/s, ratio to curl, CPU-s/GiB, peak RSS."""
    wall = statistics.median(r.wall_s for r in runs)
    cpu = statistics.median(r.cpu_s for r in runs) / (size / GiB)
    rss = max(r.maxrss_kib for r in runs) / 1024
    return (
        f"{name:<{width}} {wall:7.2f} s {size / wall / 1e6:8.0f} MB/s"
        f"  x{curl_wall / wall:5.2f} curl  {cpu:5.2f} CPU-s/GiB  {rss:6.0f} MB RSS"
    )
