"""Fixed costs probe: what a stream costs beyond its bytes (start-up, buffers, first part).

Usage:
    .venv/bin/python -m bench.fixed_probe [--sizes 10KB,128MiB,1GiB] [--repeat 5]
        [--warm-server on|off] [--session once|each]
        [--plugin .venv/bin/asyncplug] [--set NAME=VALUE ...]

Starts a private SeaweedFS on loopback (telemetry off), then for each size, --repeat
times in alternation: backup_data of that many random bytes (stdin a pipe), then
restore_data of it into a hashing reader (checked against the source). Prints medians
of CPU seconds (user + system, os.wait4), CPU-s/GiB, minor page faults and peak RSS per
size, and for every size against the largest: the extra CPU-s/GiB (the issue's target:
128 MiB at most 0.15 above 1 GiB) and the fixed cost it implies, CPU-s per process
beyond a linear cost per byte. The smallest size is mostly start-up.
CPU-s are robust on a shared machine; walls are printed but are not the point.

With --warm-server on (the default) the commands run as gpbackup deploys asyncplug:
setup_plugin_for_backup at segment_host scope starts the warm server first, and each
command's CPU is its client's plus what the server and its workers used meanwhile,
its peak RSS the client's plus its worker's (bench/warm.py). --session once (default):
one setup for the whole probe, so the commands follow one another in the server's
first worker, as a host's tables do in multi-file mode; --session each: a setup and
cleanup around every command, so each runs in a freshly forked worker, as a
segment's single data file does. The server's start is printed apart.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml

from asyncplug.config import parse_size
from bench.datagen import write_dataset
from bench.procs import ChildRun
from bench.runner import byte_compile
from bench.seaweed import SeaweedServer
from bench.warm import Session, private_runtime_dir, run_served

BUCKET = "fixed-probe"
FOLDER = "probe"
STAMP = "20250101123456"
GiB = 2**30


def median(runs: list[ChildRun], what: str) -> float:
    return statistics.median(float(getattr(r, what)) for r in runs)


class Probe:
    """Runs the commands, through the warm server or not, and keeps the server's starts."""

    def __init__(self, args: argparse.Namespace, config: str, work: Path) -> None:
        self.plugin = args.plugin
        self.config = config
        self.warm = args.warm_server == "on"
        self.each = args.session == "each"
        self.env = {**os.environ, "ASYNCPLUG_RUNTIME_DIR": private_runtime_dir()}
        self.local_dir = str(work / "seg0" / "backups" / STAMP[:8] / STAMP)
        self.session: Session | None = None
        self.starts: list[float] = []

    @contextlib.contextmanager
    def host(self, each: bool) -> Iterator[None]:
        """A setup and cleanup at segment_host scope (a no-op unless warm and `each`
        is this session's kind)."""
        if not self.warm or each != self.each:
            yield
            return
        with Session(self.plugin, self.config, self.env, self.local_dir) as session:
            self.session = session
            self.starts.append(session.start_cpu_s)
            try:
                yield
            finally:
                self.session = None

    def run(self, command: str, key: str, stdin: str | None) -> ChildRun:
        argv = [self.plugin, command, self.config, key]
        with self.host(each=True):
            return run_served(
                self.session, argv, stdin_file=stdin, drain_stdout=not stdin, env=self.env
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10KB,128MiB,1GiB")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--plugin", default=str(Path(sys.executable).parent / "asyncplug"))
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--warm-server", choices=("on", "off"), default="on")
    parser.add_argument("--session", choices=("once", "each"), default="once")
    args = parser.parse_args()
    sizes = sorted(parse_size(s.strip(), "--sizes") for s in args.sizes.split(","))

    byte_compile()  # as installed: no module compiled again by every process
    with tempfile.TemporaryDirectory(prefix="asyncplug-probe-") as tmp, SeaweedServer() as server:
        work = Path(tmp)
        server.create_bucket(BUCKET)
        options: dict[str, object] = {**server.plugin_options(BUCKET, FOLDER)}
        for setting in args.set:
            name, _, value = setting.partition("=")
            options[name] = value
        config = work / "plugin.yaml"
        config.write_text(yaml.safe_dump({"executablepath": "asyncplug", "options": options}))
        data = {size: write_dataset("random", size, str(work / f"{size}.bin")) for size in sizes}
        runs: dict[tuple[str, int], list[ChildRun]] = {}
        probe = Probe(args, str(config), work)
        with probe.host(each=False):
            for _ in range(args.repeat):
                for size in sizes:
                    key = str(work / "backups" / STAMP[:8] / STAMP / f"gpbackup_{size}_{STAMP}")
                    backup = probe.run("backup_data", key, data[size].path)
                    restore = probe.run("restore_data", key, None)
                    for run, what in ((backup, "backup_data"), (restore, "restore_data")):
                        if not run.ok:
                            sys.exit(f"{what} of {size} bytes failed: {run.failure()}")
                        runs.setdefault((what, size), []).append(run)
                    if restore.digest != data[size].digest:
                        sys.exit(f"restore_data of {size} bytes returned different bytes")
        shutil.rmtree(probe.env["ASYNCPLUG_RUNTIME_DIR"], ignore_errors=True)

    if probe.warm:
        print(f"median of {args.repeat}; through the warm server (--session {args.session}):"
              " CPU = the client's user + system and the server's and its workers' meanwhile"
              f" (of which 'server'); its start, apart: {statistics.median(probe.starts):.3f}"
              " CPU-s")  # fmt: skip
    else:
        print(f"median of {args.repeat}; CPU = user + system of the plugin process")
    for what in ("backup_data", "restore_data"):
        big = sizes[-1]
        big_cpu = median(runs[(what, big)], "cpu_s")
        for size in sizes:
            these = runs[(what, size)]
            cpu, wall = median(these, "cpu_s"), median(these, "wall_s")
            faults = median(these, "minflt")
            rss = max(r.maxrss_kib for r in these) / 1024
            served = f" (server {median(these, 'warm_cpu_s'):5.3f})" if probe.warm else ""
            line = (f"{what:13s} {size / 2**20:9.2f} MiB  {cpu:6.3f} CPU-s{served}"
                    f"  {cpu / (size / GiB):8.3f} CPU-s/GiB  {faults:8.0f} minflt"
                    f"  {rss:5.0f} MB RSS  {wall:6.2f} s")  # fmt: skip
            if size != big:
                extra = cpu / (size / GiB) - big_cpu / (big / GiB)
                # cpu = fixed + rate * size, from this size and the largest
                rate = (big_cpu - cpu) / ((big - size) / GiB)
                fixed = cpu - rate * size / GiB
                line += f"  +{extra:.3f} CPU-s/GiB vs largest, fixed {fixed:.3f} s"
            print(line)


if __name__ == "__main__":
    main()
