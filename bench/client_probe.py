"""CPU of the client process alone: the compiled `asyncplug` executable against the Python
client, each handing a 10 KB backup_data and restore_data to the same warm server.

Usage:
    .venv/bin/python -m bench.client_probe [--repeat 30] [--plugin .venv/bin/asyncplug]

A directory store (the client's CPU does not depend on the storage) and a warm server
in a private runtime directory. The ways alternate run by run; CPU is user + system of
the client process from os.wait4 (the worker's share is not in it). Also: the same
command with no server (the compiled client then execs the Python client), and the
interpreter's own start (`python -I -S -c pass`, `python -c pass`) for the floor.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from asyncplug import client, server
from bench import runner

KEY = "/per_table/backups/20250101/20250101123456/gpbackup_0_20250101123456_16384.gz"
PYTHON_CLIENT = "import sys\nfrom asyncplug.client import main\nsys.exit(main())\n"


def cpu_ms(argv: Sequence[str], stdin: str, env: dict[str, str]) -> float:
    """User + system CPU of one run of argv (stdin from a file, stdout to /dev/null)."""
    # posix_spawn (vfork): nothing of this process's pages is copied into the count
    pid = os.posix_spawn(
        argv[0], list(argv), env,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, stdin, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        ],
    )  # fmt: skip
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit status {status}")
    return (usage.ru_utime + usage.ru_stime) * 1000


def line(name: str, values: list[float]) -> str:
    return f"{name:<44} {statistics.median(values):7.1f} {min(values):7.1f} {max(values):7.1f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.client_probe", description=__doc__)
    p.add_argument("--repeat", type=int, default=30, help="runs per way (default: 30)")
    p.add_argument("--plugin", default=runner.plugin_executable(), help="asyncplug executable")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    work = tempfile.mkdtemp(prefix="asyncplug-client-probe-")
    runtime = tempfile.mkdtemp(prefix="ap-", dir="/tmp")
    try:
        config = Path(work, "plugin.yaml")
        config.write_text(
            f"options:\n  storage: file\n  path: {work}\n  folder: per_table\n"
            f"  log_dir: {work}/logs\n  pgport: 5432\n"
        )
        table = Path(work, "table.dat")
        table.write_bytes(os.urandom(10_000))
        script = Path(work, "asyncplug-py")  # the Python client, as its console script was
        script.write_text(f"#!{sys.executable}\n{PYTHON_CLIENT}")
        script.chmod(0o755)
        served = {**os.environ, "ASYNCPLUG_RUNTIME_DIR": runtime}
        alone = {**os.environ, "ASYNCPLUG_RUNTIME_DIR": os.path.join(runtime, "none")}
        path = os.path.join(runtime, os.path.basename(client.socket_path()))
        if server.start(path=path) is None:
            raise RuntimeError("the warm server did not start")
        ways = {"compiled": args.plugin, "python": str(script)}
        results: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            for way, executable in ways.items():
                for command in ("backup_data", "restore_data"):
                    source = str(table) if command == "backup_data" else os.devnull
                    ms = cpu_ms([executable, command, str(config), KEY], source, served)
                    results.setdefault(f"{command}, {way} client, served", []).append(ms)
                ms = cpu_ms([executable, "--version"], os.devnull, alone)
                results.setdefault(f"--version, {way} client, no server", []).append(ms)
            for name, floor in (("-I -S", ["-I", "-S"]), ("", [])):
                ms = cpu_ms([sys.executable, *floor, "-c", "pass"], os.devnull, alone)
                results.setdefault(f"python {name} -c pass".replace("  ", " "), []).append(ms)
        server.stop(path)
        print(f"client_probe: client process CPU ms over {args.repeat} runs each")
        print(f"{'':<44} {'median':>7} {'min':>7} {'max':>7}")
        for name, values in sorted(results.items()):
            print(line(name, values))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(runtime, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
