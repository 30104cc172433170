"""Scenario per_table: many small tables in sequence, as gpbackup's multi-file mode runs them.

Usage:
    .venv/bin/python -m bench --scenarios per_table [--compare PATH] [--repeat 5] [--size 10KB]
    .venv/bin/python -m bench.per_table [--tables 50] [--size 10KB] [--repeat 5]
        [--compare ../shared/tools/gpbackup_s3_plugin] [--plugin .venv/bin/asyncplug]

Starts a private SeaweedFS on loopback (telemetry off) and, --repeat rounds in
alternation for each way of running, runs --tables `backup_data` commands of --size
bytes each (stdin from a file, as `gzip -c -1 | plugin backup_data CFG KEY` gives it),
then --tables `restore_data` of the same keys (stdout drained and checked). The ways:
- `asyncplug`: the warm server, started by setup_plugin_for_backup at segment_host
  scope and stopped by cleanup, as gpbackup does;
- `asyncplug (no server)`: `warm_server: off`, every command a whole Python process;
- each --compare executable (the reference Go plugin reads the same config file).
Each round is one backup: setup_plugin_for_backup at segment_host scope, the tables,
cleanup. CPU is whole-process user + system from os.wait4 of each command
(bench.procs). With the warm server a command's work runs in a worker of the server,
so the CPU the server and its workers used during the round's commands (from /proc:
theirs and that of the workers they reaped) is divided among them and added: nothing
is left out. The server's start (its imports and warm-up, once per backup and host)
is printed apart. Wall is each
command's, from start to exit. Prints, per command and way, the medians over rounds
of the per-table CPU and wall.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from asyncplug.config import parse_size
from bench import runner
from bench.procs import ChildRun, run_child
from bench.seaweed import SeaweedServer
from bench.targets import COMMON_OPTIONS, write_plugin_config
from bench.verify import digest_file
from bench.warm import private_runtime_dir, server_cpu, server_pid

NAME = "per_table"  # as `python -m bench --scenarios per_table` names it
BUCKET = "per-table"
FOLDER = "per_table"
STAMP = "20250101123456"
COMMANDS = ("backup_data", "restore_data")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.per_table", description=__doc__.split("\n")[0]
    )
    p.add_argument("--tables", type=int, default=50, help="commands per round (default: 50)")
    p.add_argument("--size", default="10KB", help="bytes per table (default: 10KB)")
    p.add_argument("--repeat", type=int, default=5, help="rounds per way (default: 5)")
    p.add_argument("--compare", action="append", default=[], metavar="PATH",
                   help="another plugin executable (repeatable)")  # fmt: skip
    p.add_argument("--plugin", default=runner.plugin_executable(), help="asyncplug executable")
    p.add_argument("--no-cold", action="store_true", help="skip asyncplug without the server")
    return p.parse_args(argv)


class Way:
    def __init__(self, name: str, executable: str, config: str, env: dict[str, str]) -> None:
        self.name = name
        self.executable = executable
        self.config = config
        self.env = env
        self.runtime_dir = env.get("ASYNCPLUG_RUNTIME_DIR", "")
        self.cpu: dict[str, list[float]] = {c: [] for c in COMMANDS}
        self.wall: dict[str, list[float]] = {c: [] for c in COMMANDS}
        self.start_cpu: list[float] = []  # the warm server's start, once per backup and host

    def hook(self, name: str, local_dir: str) -> None:
        run = run_child(
            [self.executable, name, self.config, local_dir, "segment_host"], env=self.env
        )
        if not run.ok:
            raise RuntimeError(f"{self.name}: {run.failure()}")

    def round(self, keys: list[str], source: str, digest: str, local_dir: str) -> None:
        """One backup: setup at segment_host scope, the tables, cleanup."""
        self.hook("setup_plugin_for_backup", local_dir)
        try:
            self.tables(keys, source, digest)
        finally:
            self.hook("cleanup_plugin_for_backup", local_dir)

    def tables(self, keys: list[str], source: str, digest: str) -> None:
        pid = server_pid(self.runtime_dir) if self.runtime_dir else 0
        if pid:
            self.start_cpu.append(server_cpu(pid))
        for command in COMMANDS:
            before = server_cpu(pid) if pid else 0.0
            runs: list[ChildRun] = []
            for key in keys:
                argv = [self.executable, command, self.config, key]
                if command == "backup_data":
                    run = run_child(argv, stdin_file=source, env=self.env)
                else:
                    run = run_child(argv, drain_stdout=True, env=self.env)
                    if run.ok and run.digest != digest:
                        raise RuntimeError(f"{self.name}: restore_data of {key} differs")
                if not run.ok:
                    raise RuntimeError(f"{self.name}: {run.failure()}")
                runs.append(run)
            time.sleep(0.2)  # the worker reports its last request to the server
            try:
                shared = (server_cpu(pid) - before) if pid else 0.0
            except OSError:
                raise RuntimeError(f"{self.name}: the warm server stopped during a round") from None
            self.cpu[command].append((sum(r.cpu_s for r in runs) + shared) / len(runs))
            self.wall[command].append(statistics.median(r.wall_s for r in runs))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    size = parse_size(args.size, "--size")
    with (
        tempfile.TemporaryDirectory(prefix="asyncplug-per-table-") as work,
        SeaweedServer(data_dir=tempfile.mkdtemp(prefix="seaweedfs-", dir=work)) as server,
    ):
        server.create_bucket(BUCKET)
        options = server.plugin_options(BUCKET, FOLDER)
        source = os.path.join(work, "table.dat")
        Path(source).write_bytes(os.urandom(size))
        digest = digest_file(source)[0]
        runtime = private_runtime_dir()
        env = {**os.environ, "ASYNCPLUG_RUNTIME_DIR": runtime}
        ways = [Way("asyncplug", args.plugin, gp_config(work, "warm", {**options,
                    "log_dir": os.path.join(work, "log")}), env)]  # fmt: skip
        if not args.no_cold:
            cold = {**options, "log_dir": os.path.join(work, "log"), "warm_server": "off"}
            ways.append(Way("asyncplug (no server)", args.plugin, gp_config(work, "cold", cold),
                            dict(os.environ)))  # fmt: skip
        common = {k: v for k, v in options.items() if k in COMMON_OPTIONS}
        for n, path in enumerate(args.compare):
            ways.append(Way(os.path.basename(path), os.path.abspath(path),
                            gp_config(work, f"cmp{n}", common), dict(os.environ)))  # fmt: skip
        local_dir = f"/data/gpseg0/backups/{STAMP[:8]}/{STAMP}"
        for r in range(args.repeat):
            for way in ways:
                keys = [f"{local_dir}/gpbackup_0_{STAMP}_{r}{t:05d}.gz" for t in range(args.tables)]
                way.round(keys, source, digest, local_dir)
                done = ", ".join(f"{c} {way.cpu[c][-1] * 1000:.1f} ms CPU" for c in COMMANDS)
                print(f"round {r + 1}/{args.repeat} {way.name}: {done}", file=sys.stderr)
        shutil.rmtree(runtime, ignore_errors=True)
    print(table(ways, args.tables, size, args.repeat))
    return 0


def from_bench(args: argparse.Namespace) -> int:
    """`python -m bench --scenarios per_table [--size S] [--repeat N] [--compare PATH]`."""
    if args.scenarios.split(",") != [NAME]:
        print(f"python -m bench: {NAME} runs alone (--scenarios {NAME})", file=sys.stderr)
        return 2
    argv = ["--repeat", str(5 if args.repeat == 1 else args.repeat)]  # the bench default is 1
    argv += ["--plugin", args.plugin, "--size", args.size or "10KB"]
    for path in args.compare:
        argv += ["--compare", path]
    return main(argv)


def gp_config(work: str, name: str, options: dict[str, object]) -> str:
    """Where gpbackup puts a host's copy of the config: /tmp/<name>_<nanotime>_<content>."""
    directory = os.path.join(work, "tmp")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{name}_{time.time_ns()}_0")
    return write_plugin_config(path, "asyncplug", options)


def table(ways: list[Way], tables: int, size: int, repeat: int) -> str:
    median: Callable[[list[float]], float] = statistics.median
    lines = [f"per_table: {tables} tables of {size} bytes per round, medians of {repeat} rounds",
             f"{'command':<14} {'way':<24} {'CPU ms':>8} {'wall ms':>8}"]  # fmt: skip
    for command in COMMANDS:
        for way in ways:
            cpu, wall = median(way.cpu[command]) * 1000, median(way.wall[command]) * 1000
            lines.append(f"{command:<14} {way.name:<24} {cpu:8.1f} {wall:8.1f}")
    for way in ways:
        if way.start_cpu:
            start = median(way.start_cpu)
            lines.append(f"warm server start (setup, once per backup and host): {start:.2f} CPU s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
