"""A/B probe: two plugin executables, run in alternation on one SeaweedFS, CPU per GiB.

Usage:
    .venv/bin/python -m bench.ab_probe A_PLUGIN B_PLUGIN [--size 1GiB] [--pairs 5]
        [--backup/--no-backup] [--restore/--no-restore]

Each pair runs A then B (B then A every other pair, so that a drift of the machine's
load falls on both) for: backup_data of --size random bytes, restore_data of one stored
object (the splice path) and restore_data with restore_splice off. Prints each
command's runs, its median CPU-s/GiB per build and the median of the paired
differences B - A: on a shared machine single runs vary by +-0.1 CPU-s/GiB, pairs much
less. A build can be an older checkout run through a wrapper such as
`#!/bin/sh` + `PYTHONPATH=/tmp/old exec .venv/bin/asyncplug "$@"`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import yaml

from asyncplug.config import parse_size
from bench.procs import ChildRun, run_child
from bench.restore_probe import make_source
from bench.seaweed import SeaweedServer

BUCKET = "ab-probe"
STAMP = "20250101123456"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--backup", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--restore", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    size = parse_size(args.size, "--size")
    builds = {"A": args.a, "B": args.b}

    with tempfile.TemporaryDirectory(prefix="asyncplug-ab-") as tmp, SeaweedServer() as server:
        work = Path(tmp)
        server.create_bucket(BUCKET)

        def config(name: str, **extra: str) -> str:
            options = {**server.plugin_options(BUCKET, "probe"), "log_dir": str(work / "log")}
            path = work / name
            path.write_text(
                yaml.safe_dump({"executablepath": "x", "options": {**options, **extra}})
            )
            return str(path)

        plain, no_splice = config("plugin.yaml"), config("off.yaml", restore_splice="off")
        source = work / "source.bin"
        make_source(source, size)

        def key(name: str) -> str:
            return str(work / "backups" / STAMP[:8] / STAMP / f"gpbackup_{name}_{STAMP}")

        def check(run: ChildRun, what: str) -> float:
            if not run.ok:
                raise SystemExit(f"{what} failed: {run.failure()}")
            return run.cpu_s * 2**30 / size

        stored = run_child([args.a, "backup_data", plain, key("0")], stdin_file=str(source))
        check(stored, "backup_data")
        runs: dict[str, dict[str, list[float]]] = {}
        for pair in range(args.pairs):
            for build in ("A", "B") if pair % 2 == 0 else ("B", "A"):
                plugin = builds[build]
                if args.backup:
                    argv = [plugin, "backup_data", plain, key(f"{build}{pair}")]
                    cpu = check(run_child(argv, stdin_file=str(source)), "backup_data")
                    runs.setdefault("backup_data", {}).setdefault(build, []).append(cpu)
                for name, path in (
                    ("restore_data", plain),
                    ("restore_data (no splice)", no_splice),
                ):
                    if args.restore:
                        argv = [plugin, "restore_data", path, key("0")]
                        cpu = check(run_child(argv, drain_stdout=True), name)
                        runs.setdefault(name, {}).setdefault(build, []).append(cpu)
        for name, by_build in runs.items():
            a, b = by_build["A"], by_build["B"]
            diffs = [y - x for x, y in zip(a, b, strict=True)]
            print(
                f"{name:25} A {statistics.median(a):.3f}  B {statistics.median(b):.3f} CPU-s/GiB"
                f"  B - A (median of {len(diffs)} pairs) {statistics.median(diffs):+.3f}"
            )
            print(f"{'':25} A runs {' '.join(f'{x:.2f}' for x in a)}")
            print(f"{'':25} B runs {' '.join(f'{x:.2f}' for x in b)}")


if __name__ == "__main__":
    main()
