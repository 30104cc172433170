"""Backup probe: the plugin's backup_data against a `curl -T` PUT of the same bytes.

Usage:
    .venv/bin/python -m bench.backup_probe [--size 1GiB] [--repeat 3]
        [--chunk 8MiB] [--concurrency 6] [--queue 2] [--level 1] [--workers 2]
        [--plugin .venv/bin/asyncplug] [--verify]

Starts a private SeaweedFS on loopback (telemetry off), generates --size of random
bytes and --size of COPY-like text (bench.datagen), then, --repeat times in alternation:
- `curl -T FILE` (SigV4, one PUT) of the random bytes: the practical ceiling;
- `asyncplug backup_data` of the random bytes, uncompressed, stdin fed through a pipe;
- `asyncplug backup_data` of the text, uncompressed and with zstd.
Prints medians: MB/s of input, ratio to curl, plugin CPU-s/GiB and peak RSS (from
os.wait4 of the child, via bench.procs). --verify restores each object once with
restore_data and checks it hashes like its source.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from asyncplug.config import MiB, parse_size
from bench.datagen import write_dataset
from bench.procs import ChildRun, probe_line, run_child
from bench.runner import byte_compile
from bench.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedServer

BUCKET = "backup-probe"
FOLDER = "probe"
STAMP = "20250101123456"


def write_config(path: Path, server: SeaweedServer, args: argparse.Namespace, **extra: Any) -> None:
    options = {
        **server.plugin_options(BUCKET, FOLDER),
        "backup_multipart_chunksize": args.chunk,
        "backup_max_concurrent_requests": args.concurrency,
        "backup_queue_depth": args.queue,
        "compression_workers": args.workers,
        "log_dir": str(path.parent / "log"),
        **extra,
    }
    path.write_text(yaml.safe_dump({"executablepath": "asyncplug", "options": options}))


def line(name: str, runs: list[ChildRun], size: int, curl_wall: float) -> str:
    return probe_line(name, runs, size, curl_wall, width=24)


def ok(run: ChildRun, what: str) -> ChildRun:
    if not run.ok:
        sys.exit(f"{what} failed: {run.failure()}")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunk", default="8MiB")
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--queue", type=int, default=2)
    parser.add_argument("--level", type=int, default=None, help="zstd level (default: codec's)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--plugin", default=str(Path(sys.executable).parent / "asyncplug"))
    parser.add_argument("--verify", action="store_true")
    args = parser.parse_args()
    size = parse_size(args.size, "--size")

    byte_compile()  # as installed: no module compiled again by every process
    with tempfile.TemporaryDirectory(prefix="asyncplug-probe-") as tmp, SeaweedServer() as server:
        work = Path(tmp)
        server.create_bucket(BUCKET)
        raw_config, zstd_config = work / "raw.yaml", work / "zstd.yaml"
        write_config(raw_config, server, args)
        zstd = {"compression": "zstd"}
        if args.level is not None:
            zstd["compression_level"] = args.level
        write_config(zstd_config, server, args, **zstd)
        random_data = write_dataset("random", size, str(work / "random.bin"))
        text_data = write_dataset("text", size, str(work / "text.bin"))

        def data_key(name: str) -> str:
            return str(work / "backups" / STAMP[:8] / STAMP / name)

        curl = shutil.which("curl") or sys.exit("curl not found")
        url = f"{server.endpoint}/{BUCKET}/{FOLDER}/curl-put"
        put = [
            curl, "-sS", "--fail", "-o", "/dev/null", "--aws-sigv4", "aws:amz:us-east-1:s3",
            "--user", f"{ACCESS_KEY}:{SECRET_KEY}", "-T", random_data.path, url,
        ]  # fmt: skip
        runs: dict[str, list[ChildRun]] = {"curl": [], "random": [], "text": [], "zstd": []}
        jobs = [
            ("random", raw_config, random_data.path),
            ("text", raw_config, text_data.path),
            ("zstd", zstd_config, text_data.path),
        ]
        for _ in range(args.repeat):
            runs["curl"].append(ok(run_child(put), "curl PUT"))
            for name, config, source in jobs:
                argv = [args.plugin, "backup_data", str(config), data_key(name)]
                runs[name].append(ok(run_child(argv, stdin_file=source), f"backup_data {name}"))

        if args.verify:
            for name, config, source in jobs:
                digest = random_data.digest if source == random_data.path else text_data.digest
                argv = [args.plugin, "restore_data", str(config), data_key(name)]
                back = ok(run_child(argv, drain_stdout=True), f"restore_data {name}")
                if back.digest != digest:
                    sys.exit(f"restore of {name} differs from its source")
            print("verified: every object restores to its source")

        curl_wall = statistics.median(r.wall_s for r in runs["curl"])
        print(
            f"stream {size / MiB:.0f} MiB, chunk {args.chunk} x {args.concurrency} + queue "
            f"{args.queue}, zstd level {args.level or 'default'} x {args.workers} workers,"
            f" median of {args.repeat}"
        )
        print(line("curl -T (random)", runs["curl"], size, curl_wall))
        print(line("backup_data random", runs["random"], size, curl_wall))
        print(line("backup_data text", runs["text"], size, curl_wall))
        print(line("backup_data text zstd", runs["zstd"], size, curl_wall))
        text_wall = statistics.median(r.wall_s for r in runs["text"])
        zstd_wall = statistics.median(r.wall_s for r in runs["zstd"])
        print(f"zstd vs uncompressed on text: {text_wall / zstd_wall:.2f}x input throughput")


if __name__ == "__main__":
    main()
