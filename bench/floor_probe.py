"""Floor probe: the least CPU a backup can cost here when it copies its bytes twice.

Usage:
    .venv/bin/python -m bench.floor_probe [--size 1GiB] [--repeat 5]
        [--producer sendfile|write]

A backup that keeps every part in memory until it is acknowledged (a retry resends it;
stdin cannot be read twice) copies each byte twice in the kernel: from the stdin pipe
into a part buffer, and from the buffer into the socket. This probe runs that loop and
nothing else, in this interpreter: a producer process writes --size bytes into a pipe
(`sendfile`: from a file, as the bench feeds the plugin; `write`: `cat`, whose pages
the reader then frees, as with gpbackup_helper's writes), the probe reads it into two 8 MiB
buffers in turn and sends each whole over loopback TCP to a process that drains it.
Per round it measures the probe's own CPU (user + system) per GiB for:
- copies: read + send;
- copies + crc: the same with the CRC32C of every byte (as backup computes it).
Prints medians. The plugin's backup CPU beyond `copies + crc` is its own overhead
(HTTP, signing, asyncio, the worker's start); curl's PUT has the copies without the CRC.
"""

from __future__ import annotations

import argparse
import mmap
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from asyncplug.config import parse_size
from asyncplug.crc import crc32c
from asyncplug.pipeline.pipes import grow_pipe
from bench.restore_probe import make_source

PART = 8 * 1024 * 1024
DRAIN = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
view = memoryview(bytearray(1 << 20))
while s.recv_into(view):
    pass
"""


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one_round(source: str, crc: bool, producer: str = "sendfile") -> tuple[float, int]:
    """(CPU seconds of the loop, bytes moved)."""
    listener = socket.create_server(("127.0.0.1", 0))
    drain = subprocess.Popen([sys.executable, "-c", DRAIN, str(listener.getsockname()[1])])
    conn = listener.accept()[0]
    listener.close()
    read_end, write_end = os.pipe()
    grow_pipe(read_end)
    feed = ["cat", source] if producer == "write" else [sys.executable, "-c", FEED, source]
    feeder = subprocess.Popen(feed, stdout=write_end, close_fds=True)
    os.close(write_end)
    bufs = [mmap.mmap(-1, PART, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) for _ in range(2)]
    total, turn = 0, 0
    start = _cpu()
    while True:
        view = memoryview(bufs[turn % 2])
        turn += 1
        got = 0
        while got < PART:
            count = os.readv(read_end, [view[got:]])
            if not count:
                break
            if crc:
                crc32c(view[got : got + count])
            got += count
        if got:
            conn.sendall(view[:got])
        total += got
        view.release()
        if got < PART:
            break
    spent = _cpu() - start
    conn.close()
    os.close(read_end)
    feeder.wait()
    drain.wait()
    return spent, total


FEED = """
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size, offset = os.fstat(fd).st_size, 0
while offset < size:
    offset += os.sendfile(1, fd, offset, size - offset)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--producer", choices=("sendfile", "write"), default="sendfile")
    args = parser.parse_args()
    size = parse_size(args.size, "--size")
    results: dict[str, list[float]] = {"copies": [], "copies + crc": []}
    with tempfile.TemporaryDirectory(prefix="asyncplug-floor-") as tmp:
        source = Path(tmp) / "source.bin"
        make_source(source, size)
        for _ in range(args.repeat):
            for name in results:  # alternated, so that a drift of the load falls on both
                spent, moved = one_round(str(source), name != "copies", args.producer)
                results[name].append(spent * 2**30 / moved)
    where = f"a pipe ({args.producer}) and loopback TCP"
    print(f"{args.size} through {where}, medians of {args.repeat}:")
    for name, runs in results.items():
        runs_text = " ".join(f"{x:.2f}" for x in runs)
        print(f"  {name:13} {statistics.median(runs):.3f} CPU-s/GiB   (runs {runs_text})")


if __name__ == "__main__":
    main()
