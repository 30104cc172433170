"""The `subset_scale` scenario: 1% of objects of several sizes, in 20 ranges each.

For each size of --subset-sizes (default 1GiB,4GiB; 8GiB is the issue's case but takes
minutes to store on a small machine): random bytes are stored once with asyncplug's
backup_data (unmeasured), then restore_data_subset of 1% of the object in 20 spread
ranges is measured (--repeat times, asyncplug only), with the bytes it fetched (counted on the wire)
and `curl --parallel` fetching the same ranges: the physical limit. If a subset's ratio
to that limit stays the same from the small object to the large one, its time follows
the bytes asked for, not the object. The data file is deleted once its object is
measured, so the disk holds one size at a time (plus the server's copies).
"""

from __future__ import annotations

import contextlib
import os
import statistics
from typing import Any

from asyncplug.config import parse_size
from bench import datagen
from bench import scenarios as sc
from bench.runner import Measure, RunFailed, Runner, measure
from bench.verify import digest_file

SCENARIO = "subset_scale"
DEFAULT_SIZES = "1GiB,4GiB"
QUICK_SIZES = "16MiB,64MiB"
FRACTION = 0.01


def parse_sizes(text: str) -> list[int]:
    """`1GiB,8GiB` -> sizes in bytes (ValueError naming the bad one)."""
    sizes = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        try:
            sizes.append(parse_size(item, "--subset-sizes"))
        except Exception as exc:
            raise ValueError(f"--subset-sizes: {item!r} is not a size") from exc
    if not sizes or min(sizes) < sc.SUBSET_RANGES * 100:
        raise ValueError("--subset-sizes needs sizes of at least 2000 bytes")
    return sizes


def label_of(size: int) -> str:
    for unit, name in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if size % unit == 0:
            return f"{size // unit}{name}"
    return f"{size}B"


def run_scale(runner: Runner, sizes: list[int]) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        path = os.path.join(runner.work_dir, f"{SCENARIO}-{size}.dat")
        runner.display.note(f"{SCENARIO}: storing {size / 2**20:,.0f} MiB of random bytes ...")
        dataset = datagen.write_dataset("random", size, path, runner.seed)
        try:
            rows += measure_size(runner, dataset)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return rows


def measure_size(runner: Runner, dataset: datagen.Dataset) -> list[dict[str, Any]]:
    variant = sc.Variant(SCENARIO, sc.RESTORE_SUBSET, label_of(dataset.size), fraction=FRACTION)
    ranges = runner.subset(variant, dataset)
    want = digest_file(dataset.path, ranges)[0]
    offsets = runner.offsets_file(variant, dataset, ranges)
    rows = []
    for exe in [runner.plugin]:  # compared plugins: see the restore_subset scenarios
        row = runner.new_row(variant, dataset, exe)
        row["scenario"] = SCENARIO
        try:
            obj = runner.stored(exe, dataset, f"{SCENARIO}-{dataset.size}")
            config = runner.config(exe, variant)
            if not obj.exists:
                argv = [exe.path, sc.BACKUP_DATA, config, obj.local]
                runner.prepare(f"backup_data of {variant.label}", argv, dataset.path)
                obj.exists = True
            measures: list[Measure] = []
            for _ in range(runner.repeat):
                argv = [exe.path, sc.RESTORE_SUBSET, config, obj.local, offsets]
                run = runner.plugin_run(row, argv, drain=True)
                ok = run.digest == want and run.bytes_out == row["bytes_logical"]
                measures.append(measure(run, runner.checked(None, ok, row)))
        except RunFailed as exc:
            row["error"] = str(exc)
            row["verified"] = False if "mismatch" in str(exc) else None
            runner.display.note(f"{row['label']} ({exe.name}): FAILED: {exc}")
            rows.append(row)
            continue
        wall = statistics.median(m.wall_s for m in measures)
        cpu = statistics.median(m.cpu_s for m in measures)
        row.update(
            wall_s=round(wall, 3),
            walls_s=[round(m.wall_s, 3) for m in measures],
            mb_per_s=round(row["bytes_logical"] / 1e6 / wall, 3),
            cpu_s=round(cpu, 3),
            cpu_s_per_gib=round(cpu / (row["bytes_logical"] / 2**30), 2),
            peak_rss_mb=round(max(m.maxrss_kib for m in measures) / 1024, 1),
            verified=True,
        )
        slot = (dataset.kind, variant.label)
        runner.limits(row, exe, obj, offsets, config, ranges, want, slot)
        runner.display.note(
            f"{row['label']} ({exe.name}): {wall:.3f} s, "
            f"curl --parallel {row['limit_wall_s'] or 0:.3f} s, "
            f"fetched {(row['bytes_fetched'] or 0) / 2**20:,.2f} MiB"
        )
        rows.append(row)
    return rows
