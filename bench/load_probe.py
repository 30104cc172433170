"""Restores under load: N restores at once, where the machine's CPU goes, per setting.

Usage:
    .venv/bin/python -m bench.load_probe [--streams 8] [--size 512MiB] [--repeat 3]
        [--variant NAME:OPTION=VALUE,OPTION=VALUE ...] [--compare PATH]
        [--warm-server on|off] [--plugin .venv/bin/asyncplug]

Starts a private SeaweedFS on loopback (telemetry off), stores N random objects of
--size with asyncplug's backup_data (8 MiB parts, as a backup leaves them), then,
--repeat times in alternation, restores all N at once with: curl GET (SigV4), asyncplug
restore_data at its defaults, each --variant (asyncplug with those options, e.g.
`chunk24:restore_multipart_chunksize=24MiB`), and each --compare executable (64 MiB
chunks, like the issue's Go plugin figures). Every restore is hashed and checked.
With --warm-server on (the default), each asyncplug group runs as gpbackup deploys it:
setup_plugin_for_restore at segment_host scope first (the warm server starts), cleanup
after, and the server's and its workers' CPU during the group is the tool's too
(bench/warm.py); the server's start is printed apart.

Prints medians per tool: aggregate MB/s, and CPU-s per GiB of the tools (summed), of
the server (from /proc) and of the hashing readers (this process): when N streams
share two cores with the server, the total CPU per GiB sets the aggregate speed, and a
client that makes the server work harder per GiB loses even with less CPU of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from asyncplug.config import parse_size
from bench.datagen import write_dataset
from bench.runner import byte_compile
from bench.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedServer
from bench.streams import COMPARE_CHUNKS, Group, run_group
from bench.warm import Session, private_runtime_dir

BUCKET = "load-probe"
FOLDER = "probe"
STAMP = "20250101123456"
GiB = 2**30


def write_config(path: Path, options: dict[str, object]) -> str:
    path.write_text(yaml.safe_dump({"executablepath": "plugin", "options": options}))
    return str(path)


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, settings = text.partition(":")
    options = dict(s.split("=", 1) for s in settings.split(",") if "=" in s)
    if not name or not options:
        raise SystemExit(f"--variant {text}: give NAME:OPTION=VALUE[,OPTION=VALUE]")
    return name, options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--size", default="512MiB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--compare", action="append", default=[])
    parser.add_argument("--plugin", default=str(Path(sys.executable).parent / "asyncplug"))
    parser.add_argument("--warm-server", choices=("on", "off"), default="on")
    args = parser.parse_args()
    size, n = parse_size(args.size, "--size"), args.streams
    variants: list[tuple[str, dict[str, str]]] = [("asyncplug", {})]
    variants += [parse_variant(v) for v in args.variant]

    byte_compile()
    env = {**os.environ, "ASYNCPLUG_RUNTIME_DIR": private_runtime_dir()}
    starts: list[float] = []
    with tempfile.TemporaryDirectory(prefix="asyncplug-probe-") as tmp, SeaweedServer() as server:
        work = Path(tmp)
        server.create_bucket(BUCKET)
        base: dict[str, object] = dict(server.plugin_options(BUCKET, FOLDER))
        source = write_dataset("random", size, str(work / "source.bin"))
        keys = [str(work / "backups" / STAMP[:8] / STAMP / f"gpbackup_{i}_{STAMP}")
                for i in range(n)]  # fmt: skip
        config = write_config(work / "asyncplug.yaml", base)
        stored = run_group([[args.plugin, "backup_data", config, k] for k in keys],
                           stdin_file=source.path, env=env)  # fmt: skip
        if stored.failure():
            sys.exit(f"backup_data failed: {stored.failure()}")
        os.unlink(source.path)  # the page cache should hold the server's copy, not ours

        commands: dict[str, list[list[str]]] = {}
        configs: dict[str, str] = {}  # asyncplug's, by name: run through the warm server
        for name, options in variants:
            path = write_config(work / f"{name}.yaml", {**base, **options})
            commands[name] = [[args.plugin, "restore_data", path, k] for k in keys]
            configs[name] = path
        for exe in args.compare:
            path = write_config(work / "compare.yaml", {**base, **COMPARE_CHUNKS})
            commands[os.path.basename(exe)] = [[exe, "restore_data", path, k] for k in keys]
        url = f"{server.endpoint}/{BUCKET}/{FOLDER}/backups/{STAMP[:8]}/{STAMP}"
        curl = ["curl", "-sS", "--fail", "--aws-sigv4", "aws:amz:us-east-1:s3",
                "--user", f"{ACCESS_KEY}:{SECRET_KEY}"]  # fmt: skip
        commands["curl"] = [[*curl, f"{url}/gpbackup_{i}_{STAMP}"] for i in range(n)]

        groups: dict[str, list[tuple[Group, float]]] = {name: [] for name in commands}
        for _ in range(args.repeat):
            for name, argvs in commands.items():
                warm = args.warm_server == "on" and name in configs
                local_dir = str(work / "seg0" / "backups" / STAMP[:8] / STAMP)
                with (
                    Session(args.plugin, configs[name], env, local_dir, "restore")
                    if warm else contextlib.nullcontext(None) as session
                ):  # fmt: skip
                    if session is not None:
                        starts.append(session.start_cpu_s)
                    reader = time.process_time()
                    group = run_group(argvs, drain=True, env=env, server_cpu=server.cpu_seconds,
                                      session=session)  # fmt: skip
                    reader = time.process_time() - reader
                if group.failure():
                    sys.exit(f"{name} failed: {group.failure()}")
                if any(r.digest != source.digest or r.bytes_out != size for r in group.runs):
                    sys.exit(f"{name} restored different bytes")
                groups[name].append((group, reader))

    shutil.rmtree(env["ASYNCPLUG_RUNTIME_DIR"], ignore_errors=True)
    total = n * size / GiB
    print(f"{n} restores at once of {size / 2**20:,.0f} MiB each, median of {args.repeat}"
          f" (CPU-s per GiB restored)")  # fmt: skip
    if starts:
        print(f"asyncplug through the warm server (setup_plugin_for_restore at segment_host"
              f" scope), its and its workers' CPU in the tool's; its start, apart:"
              f" {statistics.median(starts):.3f} CPU-s")  # fmt: skip
    else:
        print("asyncplug without the warm server: every restore a whole process")
    curl_wall = statistics.median(g.wall_s for g, _ in groups["curl"])
    for name, runs in groups.items():
        wall = statistics.median(g.wall_s for g, _ in runs)
        tool = statistics.median(g.cpu_s for g, _ in runs) / total
        served = statistics.median(g.server_cpu_s or 0.0 for g, _ in runs) / total
        reader = statistics.median(r for _, r in runs) / total
        rss = max(g.rss_max_kib for g, _ in runs) / 1024
        first = statistics.median(g.first_byte_s or 0.0 for g, _ in runs)
        print(f"{name:16s} {n * size / 1e6 / wall:7.0f} MB/s  x{curl_wall / wall:4.2f} curl"
              f"  tool {tool:4.2f} + server {served:4.2f} + reader {reader:4.2f}"
              f" = {tool + served + reader:4.2f} CPU-s/GiB"
              f"  {(tool + served + reader) * total / wall:4.2f} cores busy"
              f"  first byte {first:4.2f} s  {rss:4.0f} MB RSS")  # fmt: skip


if __name__ == "__main__":
    main()
