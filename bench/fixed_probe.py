"""Fixed costs probe: what a stream costs beyond its bytes (start-up, buffers, first part).

Usage:
    .venv/bin/python -m bench.fixed_probe [--sizes 10KB,128MiB,1GiB] [--repeat 5]
        [--plugin .venv/bin/asyncplug] [--set NAME=VALUE ...]

Starts a private SeaweedFS on loopback (telemetry off), then for each size, --repeat
times in alternation: backup_data of that many random bytes (stdin a pipe), then
restore_data of it into a hashing reader (checked against the source). Prints medians
of CPU seconds (user + system, os.wait4), CPU-s/GiB, minor page faults and peak RSS per
size, and for every size against the largest: the extra CPU-s/GiB (the issue's target:
128 MiB at most 0.15 above 1 GiB) and the fixed cost it implies, CPU-s per process
beyond a linear cost per byte. The smallest size is mostly start-up.
CPU-s are robust on a shared machine; walls are printed but are not the point.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

from asyncplug.config import parse_size
from bench.datagen import write_dataset
from bench.procs import ChildRun, run_child
from bench.runner import byte_compile
from bench.seaweed import SeaweedServer

BUCKET = "fixed-probe"
FOLDER = "probe"
STAMP = "20250101123456"
GiB = 2**30


def median(runs: list[ChildRun], what: str) -> float:
    return statistics.median(float(getattr(r, what)) for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10KB,128MiB,1GiB")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--plugin", default=str(Path(sys.executable).parent / "asyncplug"))
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
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
        for _ in range(args.repeat):
            for size in sizes:
                key = str(work / "backups" / STAMP[:8] / STAMP / f"gpbackup_{size}_{STAMP}")
                backup = run_child([args.plugin, "backup_data", str(config), key],
                                   stdin_file=data[size].path)  # fmt: skip
                restore = run_child([args.plugin, "restore_data", str(config), key],
                                    drain_stdout=True)  # fmt: skip
                for run, what in ((backup, "backup_data"), (restore, "restore_data")):
                    if not run.ok:
                        sys.exit(f"{what} of {size} bytes failed: {run.failure()}")
                    runs.setdefault((what, size), []).append(run)
                if restore.digest != data[size].digest:
                    sys.exit(f"restore_data of {size} bytes returned different bytes")

    print(f"median of {args.repeat}; CPU = user + system of the plugin process")
    for what in ("backup_data", "restore_data"):
        big = sizes[-1]
        big_cpu = median(runs[(what, big)], "cpu_s")
        for size in sizes:
            these = runs[(what, size)]
            cpu, wall = median(these, "cpu_s"), median(these, "wall_s")
            faults = median(these, "minflt")
            rss = max(r.maxrss_kib for r in these) / 1024
            line = (f"{what:13s} {size / 2**20:9.2f} MiB  {cpu:6.3f} CPU-s"
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
