"""Restore probe: the plugin's restore_data against one curl GET, and subset vs whole.

Usage:
    .venv/bin/python -m bench.restore_probe [--size 1GiB] [--repeat 3]
        [--chunk 12MiB] [--concurrency 4] [--plugin .venv/bin/asyncplug]
        [--set NAME=VALUE ...]

Starts a private SeaweedFS on loopback (telemetry off), stores a random object of
--size with the plugin's own backup_data, then, --repeat times in alternation:
- `curl` GET of the object (SigV4), stdout drained by a hashing reader;
- `asyncplug restore_data`, drained the same way (must hash like the source);
- `asyncplug restore_data_subset` of 1% of the object in 20 spread ranges.
Prints medians: MB/s, ratio to curl, plugin CPU-s/GiB and peak RSS (from os.wait4 of
the child, via bench.procs), how much faster the subset is than the whole, and where
the machine's CPU went during curl and restore_data (server, client, hashing reader):
on a small machine the server's share decides how fast any client can go.
--chunk/--concurrency set restore_multipart_chunksize/restore_max_concurrent_requests.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from asyncplug.config import Config, MiB, parse_size
from bench.procs import ChildRun, probe_line, run_child
from bench.runner import byte_compile
from bench.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedServer
from bench.verify import digest_file

BUCKET = "restore-probe"
FOLDER = "probe"
STAMP = "20250101123456"
SUBSET_RANGES = 20
SUBSET_FRACTION = 0.01


def make_source(path: Path, size: int) -> None:
    with open(path, "wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, 64 * MiB))
            out.write(block)
            left -= len(block)


def spread_ranges(size: int) -> list[tuple[int, int]]:
    """SUBSET_RANGES ranges holding SUBSET_FRACTION of the object, evenly spread."""
    length = int(size * SUBSET_FRACTION) // SUBSET_RANGES
    step = size // SUBSET_RANGES
    return [(i * step + step // 3, i * step + step // 3 + length) for i in range(SUBSET_RANGES)]


def write_config(
    path: Path, server: SeaweedServer, chunk: int, concurrency: int, extra: list[str]
) -> None:
    options: dict[str, object] = {
        **server.plugin_options(BUCKET, FOLDER),
        "restore_multipart_chunksize": chunk,
        "restore_max_concurrent_requests": concurrency,
        "log_dir": str(path.parent / "log"),
        "log_level": "debug",  # restore.py logs its own time from stat to the last byte
    }
    for setting in extra:  # --set NAME=VALUE
        name, _, value = setting.partition("=")
        options[name] = value
    path.write_text(yaml.safe_dump({"executablepath": "asyncplug", "options": options}))


def command_seconds(log_dir: Path) -> dict[str, list[float]]:
    """Durations the plugin logged per command ("NAME ...: ok, N bytes in S s")."""
    found: dict[str, list[float]] = {}
    for path in log_dir.glob("*.log"):
        for match in re.finditer(r"-(\w+) \S+ .*?: ok, \d+ bytes in ([\d.]+) s", path.read_text()):
            found.setdefault(match.group(1), []).append(float(match.group(2)))
    return found


def data_path_seconds(log_dir: Path) -> dict[int, list[float]]:
    """restore.py's own times ("N bytes in S s from stat to the last byte"), by N."""
    found: dict[int, list[float]] = {}
    for path in log_dir.glob("*.log"):
        for match in re.finditer(r": (\d+) bytes in ([\d.]+) s from stat", path.read_text()):
            found.setdefault(int(match.group(1)), []).append(float(match.group(2)))
    return found


def check(run: ChildRun, digest: str, what: str) -> ChildRun:
    if not run.ok:
        sys.exit(f"{what} failed: {run.failure()}")
    if run.digest != digest:
        sys.exit(f"{what} wrote different bytes ({run.bytes_out} bytes)")
    return run


def line(name: str, runs: list[ChildRun], size: int, curl_wall: float) -> str:
    return probe_line(name, runs, size, curl_wall, width=22)


@dataclass
class Load:
    """Where the machine's CPU went during runs: server, reader, and the runs themselves."""

    runs: list[ChildRun] = field(default_factory=list)
    server_s: list[float] = field(default_factory=list)
    reader_s: list[float] = field(default_factory=list)

    def run(self, server: SeaweedServer, argv: list[str], digest: str, what: str) -> ChildRun:
        server_before, reader_before = server.cpu_seconds(), time.process_time()
        run = check(run_child(argv, drain_stdout=True), digest, what)
        self.server_s.append(server.cpu_seconds() - server_before)
        self.reader_s.append(time.process_time() - reader_before)  # the hashing drain thread
        self.runs.append(run)
        return run

    def summary(self, name: str) -> str:
        client = statistics.median(r.cpu_s for r in self.runs)
        server, reader = statistics.median(self.server_s), statistics.median(self.reader_s)
        wall = statistics.median(r.wall_s for r in self.runs)
        total = client + server + reader
        return (f"{name:22s} server {server:.2f} + client {client:.2f} + reader {reader:.2f}"
                f" = {total:.2f} CPU-s in {wall:.2f} s: {total / wall:.2f} of"
                f" {os.cpu_count()} cores busy")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunk", default=None, help="default: the plugin's default")
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--plugin", default=str(Path(sys.executable).parent / "asyncplug"))
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="another plugin option, e.g. restore_splice=off")  # fmt: skip
    args = parser.parse_args()
    size = parse_size(args.size, "--size")
    chunk = parse_size(args.chunk, "--chunk") if args.chunk else Config.restore_multipart_chunksize
    concurrency = args.concurrency or Config.restore_max_concurrent_requests

    byte_compile()  # as installed: no module compiled again by every process
    with tempfile.TemporaryDirectory(prefix="asyncplug-probe-") as tmp, SeaweedServer() as server:
        work = Path(tmp)
        server.create_bucket(BUCKET)
        config = work / "plugin.yaml"
        write_config(config, server, chunk, concurrency, args.set)
        source = work / "source.bin"
        make_source(source, size)
        digest, _ = digest_file(str(source))
        ranges = spread_ranges(size)
        subset_digest, subset_size = digest_file(str(source), ranges)
        offsets = work / "offsets"
        offsets.write_text(f"{len(ranges)} " + " ".join(f"{a} {b}" for a, b in ranges))
        data_key = str(work / "backups" / STAMP[:8] / STAMP / f"gpbackup_0_{STAMP}")
        key = f"{FOLDER}/backups/{STAMP[:8]}/{STAMP}/gpbackup_0_{STAMP}"

        stored = run_child(
            [args.plugin, "backup_data", str(config), data_key], stdin_file=str(source)
        )
        if not stored.ok:
            sys.exit(f"backup_data failed: {stored.failure()}")
        source.unlink()  # the page cache should hold the server's copy, not ours

        curl = shutil.which("curl") or sys.exit("curl not found")
        get = [
            curl, "-sS", "--fail", "--aws-sigv4", "aws:amz:us-east-1:s3",
            "--user", f"{ACCESS_KEY}:{SECRET_KEY}", f"{server.endpoint}/{BUCKET}/{key}",
        ]  # fmt: skip
        curl_load, whole_load, subsets = Load(), Load(), []
        for _ in range(args.repeat):
            curl_load.run(server, get, digest, "curl")
            restore = [args.plugin, "restore_data", str(config), data_key]
            whole_load.run(server, restore, digest, "restore_data")
            subset = [args.plugin, "restore_data_subset", str(config), data_key, str(offsets)]
            subsets.append(check(run_child(subset, drain_stdout=True), subset_digest, "subset"))
        curls, wholes = curl_load.runs, whole_load.runs

        inside = command_seconds(work / "log")
        curl_wall = statistics.median(r.wall_s for r in curls)
        whole_wall = statistics.median(r.wall_s for r in wholes)
        subset_wall = statistics.median(r.wall_s for r in subsets)
        print(f"object {size / MiB:.0f} MiB, chunk {chunk / MiB:g} MiB x {concurrency},"
              f" median of {args.repeat}")  # fmt: skip
        print(line("curl GET", curls, size, curl_wall))
        print(line("restore_data", wholes, size, curl_wall))
        print(line("restore_data_subset", subsets, size, curl_wall).split("  x")[0]
              + f"  ({subset_size / MiB:.1f} MiB in {len(ranges)} ranges)")  # fmt: skip
        print(f"subset vs whole: {whole_wall / subset_wall:.1f}x faster (process wall time)")
        if inside.get("restore_data") and inside.get("restore_data_subset"):
            whole_in = statistics.median(inside["restore_data"])
            subset_in = statistics.median(inside["restore_data_subset"])
            print(f"inside the command (plugin log, after start-up): whole {whole_in:.3f} s,"
                  f" subset {subset_in:.3f} s: {whole_in / subset_in:.1f}x faster")  # fmt: skip
        path = data_path_seconds(work / "log")
        if path.get(size) and path.get(subset_size):
            whole_p, subset_p = statistics.median(path[size]), statistics.median(path[subset_size])
            print(f"restore pipeline alone (stat to last byte): whole {whole_p:.3f} s,"
                  f" subset {subset_p:.3f} s: {whole_p / subset_p:.1f}x faster")  # fmt: skip
        start = statistics.median(r.wall_s for r in subsets) - statistics.median(
            inside.get("restore_data_subset") or [0.0]
        )
        print(f"process start-up (imports, S3 client) of a subset run: about {start:.2f} s")
        print("CPU of the machine, medians (the server's from /proc; the reader is this process):")
        print(curl_load.summary("  during curl GET"))
        print(whole_load.summary("  during restore_data"))


if __name__ == "__main__":
    main()
