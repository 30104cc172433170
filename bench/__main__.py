"""python -m bench: the asyncplug throughput benchmark (what `make bench` runs).

With no arguments it starts an embedded SeaweedFS on loopback, generates 1 GiB of
COPY-like text, runs the default scenarios and baselines, verifies every restore
byte for byte, prints a table and writes JSON + PNG to bench-results/. See
bench/README.md for the options, the JSON schema and how to read the chart.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

from asyncplug.config import parse_size
from asyncplug.errors import ConfigError
from bench import datagen, per_table, report, runner, streams, subset_scale, targets
from bench import scenarios as sc
from bench.chart import write_chart
from bench.progress import make_display

DEFAULT_SIZE = "1GiB"
QUICK_SIZE = "64MiB"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark asyncplug the way gpbackup drives it, against curl/awscli "
        "baselines on the same store. Default: embedded SeaweedFS on loopback, 1 GiB of text.",
    )
    add = p.add_argument
    add(
        "--quick",
        action="store_true",
        help=f"about a minute: {QUICK_SIZE} and the scenarios {','.join(sc.QUICK)}",
    )
    add(
        "--size",
        help=f"bytes per data set, e.g. 256MiB, 2GiB "
        f"(default: {DEFAULT_SIZE}, {QUICK_SIZE} with --quick)",
    )
    add(
        "--data",
        choices=("text", "random", "both"),
        default="text",
        help="COPY-like text rows, incompressible bytes, or both (default: text)",
    )
    add(
        "--scenarios",
        help="comma-separated, from: "
        + ",".join(sc.SCENARIOS)
        + " (default: all that fit the target; fewer with --quick)",
    )
    add(
        "--streams",
        type=int,
        default=streams.DEFAULT_STREAMS,
        help="streams scenario: processes at once (default: %(default)s)",
    )
    add(
        "--stream-size",
        help=f"streams scenario: bytes per stream "
        f"(default: {streams.STREAM_SIZE}, {streams.QUICK_STREAM_SIZE} with --quick)",
    )
    add(
        "--subset-sizes",
        help=f"subset_scale scenario: object sizes (default: "
        f"{subset_scale.DEFAULT_SIZES}, {subset_scale.QUICK_SIZES} with --quick)",
    )
    add(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another asyncplug option in every asyncplug config (repeatable), "
        "e.g. restore_multipart_chunksize=24MiB",
    )
    add(
        "--repeat",
        type=int,
        default=1,
        help="runs per scenario; the median is reported (default: 1)",
    )
    add(
        "--warm-server",
        choices=("on", "off"),
        default="on",
        help="on: asyncplug's commands run as gpbackup deploys it, through the warm server "
        "that setup_plugin_for_backup/_restore at segment_host scope starts (its CPU "
        "counted); off: every command a whole process (default: on)",
    )
    add("--config", help="a plugin config file (any S3, or storage: file): no embedded server")
    add(
        "--storage",
        choices=("s3", "file"),
        default="s3",
        help="file: the directory backend at --path (default: s3, embedded SeaweedFS)",
    )
    add("--path", help="directory for --storage file")
    add(
        "--compare",
        action="append",
        default=[],
        metavar="PATH",
        help="another plugin executable to run on the same scenarios (repeatable)",
    )
    add(
        "--plugin",
        default=runner.plugin_executable(),
        help="the asyncplug executable (default: the one beside this Python)",
    )
    add(
        "--output",
        default="bench-results",
        help="directory for the JSON and the PNG (default: bench-results)",
    )
    add(
        "--work-dir",
        help="where the data files and the embedded server's volumes go "
        "(default: the system temp directory)",
    )
    add(
        "--seed",
        type=int,
        default=datagen.DEFAULT_SEED,
        help="data generator seed (default: %(default)s)",
    )
    return p.parse_args(argv)  # fmt: skip


class Usage(Exception):
    """A bad option: one line on stderr, exit 2."""


def check_args(args: argparse.Namespace) -> tuple[int, list[str], list[runner.Executable]]:
    try:
        size = parse_size(args.size or (QUICK_SIZE if args.quick else DEFAULT_SIZE), "--size")
        quick = streams.QUICK_STREAM_SIZE if args.quick else streams.STREAM_SIZE
        args.stream_bytes = parse_size(args.stream_size or quick, "--stream-size")
    except ConfigError as exc:
        raise Usage(str(exc).replace("option --", "--")) from None
    try:
        quick = subset_scale.QUICK_SIZES if args.quick else subset_scale.DEFAULT_SIZES
        args.subset_bytes = subset_scale.parse_sizes(args.subset_sizes or quick)
    except ValueError as exc:
        raise Usage(str(exc)) from None
    if args.streams < 1:
        raise Usage("--streams must be at least 1")
    args.plugin_set = {}
    for setting in args.set:
        name, sep, value = setting.partition("=")
        if not sep or not name.strip():
            raise Usage(f"--set {setting}: give NAME=VALUE")
        args.plugin_set[name.strip()] = value
    if args.repeat < 1:
        raise Usage("--repeat must be at least 1")
    if args.config and (args.storage == "file" or args.path):
        raise Usage("--config and --storage file/--path are alternatives: give one")
    if args.storage == "file" and not args.path:
        raise Usage("--storage file needs --path DIR")
    if args.config and not os.path.isfile(args.config):
        raise Usage(f"--config {args.config}: no such file")
    if not args.plugin or not os.access(args.plugin, os.X_OK):
        raise Usage(
            f"asyncplug executable not found ({args.plugin or 'not on PATH'}): use --plugin"
        )
    try:
        names = sc.parse_scenarios(args.scenarios) if args.scenarios else []
    except ValueError as exc:
        raise Usage(str(exc)) from None
    compared: list[runner.Executable] = []
    taken = {"asyncplug", "curl", "awscli", "cat"}
    for path in args.compare:
        if not os.path.isfile(path) or not os.access(path, os.X_OK):
            raise Usage(f"--compare {path}: not an executable file")
        name, n = os.path.basename(path), 1
        while name in taken:
            n += 1
            name = f"{os.path.basename(path)}-{n}"
        taken.add(name)
        compared.append(runner.Executable(name, os.path.abspath(path), compared=True))
    return size, names, compared


def make_target(args: argparse.Namespace, work_dir: str) -> targets.Target:
    if args.config:
        return targets.from_config(args.config)
    if args.storage == "file":
        return targets.directory(args.path)
    return targets.embedded(work_dir)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if per_table.NAME in (args.scenarios or "").split(","):  # small tables: bench/per_table.py
        return per_table.from_bench(args)
    try:
        size, names, compared = check_args(args)
    except Usage as exc:
        print(f"python -m bench: {exc}", file=sys.stderr)
        return 2
    started, clock = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.perf_counter()
    runner.byte_compile()
    work_dir = tempfile.mkdtemp(prefix="asyncplug-bench-", dir=args.work_dir)
    display = make_display()
    target: targets.Target | None = None
    run: runner.Runner | None = None
    try:
        target = make_target(args, work_dir)
        names = names or sc.default_scenarios(target.storage, args.quick)
        kinds = list(datagen.KINDS) if args.data == "both" else [args.data]
        datasets, harness = [], []
        for kind in kinds:
            display.note(f"generating {size / 2**20:,.0f} MiB of {kind} data ...")
            dataset = datagen.write_dataset(
                kind, size, os.path.join(work_dir, f"{kind}.dat"), args.seed
            )
            speeds = runner.harness_speed(dataset)
            display.note(f"  {kind}: generator {speeds['generate_mb_per_s']:,.0f} MB/s, producer "
                         f"{speeds['producer_mb_per_s']:,.0f} MB/s, verifying reader "
                         f"{speeds['consumer_mb_per_s']:,.0f} MB/s")  # fmt: skip
            datasets.append(dataset)
            harness.append({"kind": kind, "size": size, "digest": dataset.digest, **speeds})
        plugin = runner.Executable("asyncplug", os.path.abspath(args.plugin))
        run = runner.Runner(target, plugin, compared, datasets, sc.variants_for(names),
                            work_dir, display, repeat=args.repeat, seed=args.seed,
                            plugin_set=args.plugin_set,
                            warm_server=args.warm_server == "on")  # fmt: skip
        rows = run.run()
        if streams.SCENARIO in names:
            for dataset in datasets:
                rows += streams.run_streams(run, stream_dataset(args, dataset, work_dir, display),
                                            args.streams)  # fmt: skip
        if subset_scale.SCENARIO in names:
            rows += subset_scale.run_scale(run, args.subset_bytes)
        report.derive(rows, target.storage)
        for warning in harness_warnings(rows, harness):
            display.note(f"warning: {warning}")
        bad = report.failures(rows)
        doc = {
            "schema_version": report.SCHEMA_VERSION,
            "started_at": started,
            "duration_s": round(time.perf_counter() - clock, 1),
            "asyncplug_version": runner.version_of(plugin.path),
            "host": host_info(),
            "target": target.describe(),
            "settings": {"size": size, "repeat": args.repeat, "data": kinds, "scenarios": names,
                         "quick": args.quick, "seed": args.seed, "verify_hash": "xxh3_128",
                         "streams": args.streams, "stream_size": args.stream_bytes,
                         "subset_sizes": args.subset_bytes, "plugin_set": args.plugin_set,
                         "warm_server": args.warm_server},
            "warm_server_start_cpu_s": warm_start(run),
            "data": harness,
            "compared": [{"name": e.name, "path": e.path, "version": runner.version_of(e.path)}
                         for e in compared],
            "skipped": run.skipped,
            "ok": not bad,
            "results": rows,
        }  # fmt: skip
        paths = write_outputs(doc, args.output)
    except (targets.TargetError, OSError, RuntimeError) as exc:
        display.close()
        print(f"python -m bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        display.close()
        print("python -m bench: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bench bug: one line here, the traceback in a file
        display.close()
        trace = write_traceback(args.output)
        print(
            f"python -m bench: unexpected {type(exc).__name__}: {exc} (see {trace})",
            file=sys.stderr,
        )
        return 1
    finally:
        display.close()
        if run is not None and target is not None and target.kind != "seaweedfs":
            run.cleanup()
        if run is not None:
            run.close()
        if target is not None:
            target.close()
        remove_tree(work_dir)
    print()
    print(report.summary(rows, [e.name for e in compared]))
    print()
    print(warm_line(args.warm_server, warm_start(run), len(run.warm_starts)))
    for skip in run.skipped:
        print(f"skipped {skip['scenario']}: {skip['reason']}")
    print(f"results: {paths[0]}\nchart:   {paths[1]}")
    if bad:
        print("\nBENCHMARK FAILED:", file=sys.stderr)
        for line in bad:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def warm_start(run: runner.Runner) -> float | None:
    """Median CPU seconds of the warm server's start (setup), kept apart from the commands."""
    return round(statistics.median(run.warm_starts), 3) if run.warm_starts else None


def warm_line(setting: str, start: float | None, sessions: int) -> str:
    if setting == "off":
        return "asyncplug: warm server off (--warm-server off): every command a whole process"
    told = "" if start is None else f"; the server's start, apart: {start:.2f} CPU s (median)"
    return (f"asyncplug: warm server on: {sessions} setup/cleanup at segment_host scope"
            f" around its measured runs, the server's and workers' CPU counted{told}")  # fmt: skip


def stream_dataset(
    args: argparse.Namespace, dataset: datagen.Dataset, work_dir: str, display: Any
) -> datagen.Dataset:
    """The streams scenario's source: the data set itself when --stream-size is --size."""
    if args.stream_bytes == dataset.size:
        return dataset
    display.note(f"generating {args.stream_bytes / 2**20:,.0f} MiB of {dataset.kind} data "
                 "for the streams ...")  # fmt: skip
    path = os.path.join(work_dir, f"streams-{dataset.kind}.dat")
    return datagen.write_dataset(dataset.kind, args.stream_bytes, path, args.seed)


def write_outputs(doc: dict[str, Any], output: str) -> tuple[str, str]:
    os.makedirs(output, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = os.path.join(output, f"bench-{stamp}.json")
    png_path = os.path.join(output, f"bench-{stamp}.png")
    report.write_json(doc, json_path)
    target = doc["target"]
    title = (f"asyncplug {doc['asyncplug_version'].split()[-1] if doc['asyncplug_version'] else ''}"
             f" · {target['kind']} · {doc['settings']['size'] / 2**20:,.0f} MiB per data set"
             f" · {doc['host']['cpus']} CPUs · {doc['started_at']}")  # fmt: skip
    write_chart(doc["results"], png_path, title)
    for src, name in ((json_path, "latest.json"), (png_path, "latest.png")):
        shutil.copyfile(src, os.path.join(output, name))
    return json_path, png_path


def harness_warnings(rows: list[dict[str, Any]], harness: list[dict[str, Any]]) -> list[str]:
    """The bench's own feed and drain must be far faster than what they measure."""
    out = []
    for data in harness:
        for direction, side in (("backup", "producer"), ("restore", "consumer")):
            speeds = [r["mb_per_s"] or 0 for r in rows if r["kind"] == "plugin"
                      and r["data"] == data["kind"] and r["direction"] == direction]  # fmt: skip
            own, top = data[f"{side}_mb_per_s"], max(speeds, default=0)
            if own < 3 * top:
                out.append(f"the {side} ({own:,.0f} MB/s) is not 3x the fastest asyncplug "
                           f"{direction} ({top:,.0f} MB/s) on {data['kind']} data")  # fmt: skip
    return out


def remove_tree(path: str) -> None:
    """Remove the work directory; a stopping server may still write a file or two."""
    for _ in range(10):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            return
        time.sleep(0.5)


def write_traceback(output: str) -> str:
    import traceback

    os.makedirs(output, exist_ok=True)
    path = os.path.join(output, "bench-error.log")
    with open(path, "w", encoding="utf-8") as f:
        traceback.print_exc(file=f)
    return path


def host_info() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count() or 0,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


if __name__ == "__main__":
    sys.exit(main())
