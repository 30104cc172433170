"""Subset restores shown honestly: wall time, bytes fetched, and the physical limit.

A subset moves a small part of the object, so MB/s says little. What matters is how
long it takes against the fastest way to fetch the same ranges from the same store
(`curl --parallel`, one connection per range, straight into files), and how many
bytes it really fetched (counted on the wire by bench/wire.py, so whatever the
restore reads beyond the ranges, verification blocks included, is counted once).

The `subset_scale` scenario stores random objects of several sizes (`--subset-sizes`,
default 1GiB,4GiB) and restores 1% of each in 20 ranges: the time of a subset must
follow the bytes it asks for, not the size of the object.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from bench.procs import ChildRun, run_child
from bench.verify import new_digest
from bench.wire import Relay

Range = tuple[int, int]
SCALE_SIZES = "1GiB,4GiB"
SCALE_FRACTION = 0.01


def curl_ranges_argv(base: Sequence[str], url: str, ranges: Sequence[Range], out: str) -> list[str]:
    """One curl fetching every range at once on its own connection, range i into out/i.

    `base` is the curl command with its signing options; they are repeated after each
    --next because curl resets per-transfer options there."""
    per = [*base[1:]]
    argv = [base[0], "--parallel", "--parallel-immediate", "--parallel-max", str(len(ranges))]
    for i, (start, end) in enumerate(ranges):
        if i:
            argv.append("--next")
        argv += [*per, "-r", f"{start}-{end - 1}", "-o", os.path.join(out, str(i)), url]
    return argv


def ranges_digest(directory: str, count: int) -> tuple[str, int]:
    """Digest and size of the files 0..count-1 in `directory`, concatenated."""
    digest, total = new_digest(), 0
    for i in range(count):
        data = Path(directory, str(i)).read_bytes()
        digest.update(data)
        total += len(data)
    return digest.hexdigest(), total


def curl_limit(
    base: Sequence[str],
    url: str,
    ranges: Sequence[Range],
    want: str,
    repeat: int,
    work_dir: str,
    env: dict[str, str] | None = None,
) -> tuple[float | None, str | None]:
    """(median wall seconds of `curl --parallel` fetching `ranges`, error or None).
    Every run is checked against `want`, the digest of the ranges in order."""
    walls = []
    for _ in range(repeat):
        out = tempfile.mkdtemp(prefix="curl-ranges-", dir=work_dir)
        try:
            run = run_child(curl_ranges_argv(base, url, ranges, out), env=env)
            if not run.ok:
                return None, run.failure()
            if ranges_digest(out, len(ranges))[0] != want:
                return None, "curl --parallel fetched different bytes"
            walls.append(run.wall_s)
        finally:
            shutil.rmtree(out, ignore_errors=True)
    return statistics.median(walls), None


def relay_address(endpoint_url: str) -> tuple[str, int] | None:
    """(host, port) a Relay can forward to: plain http endpoints only (a TLS client would
    check the relay's address against the server's certificate)."""
    parts = urllib.parse.urlsplit(endpoint_url)
    if parts.scheme != "http" or not parts.hostname:
        return None
    return parts.hostname, parts.port or 80


def relayed_config(config: str, port: int, path: str) -> str:
    """A copy of the plugin config whose endpoint is the relay on 127.0.0.1:port."""
    with open(config, encoding="utf-8") as f:
        document = yaml.safe_load(f)
    document["options"]["endpoint"] = f"http://127.0.0.1:{port}"
    document["options"]["encryption"] = "off"
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(document, f, sort_keys=False)
    return path


def fetched_bytes(
    endpoint_url: str,
    config: str,
    argv_for: Any,
    want: str,
    env: dict[str, str] | None = None,
) -> tuple[int | None, str | None]:
    """Bytes the command `argv_for(relayed config)` receives from the store, counted by a
    Relay; (None, why) when the endpoint cannot be relayed or the run fails or mismatches."""
    address = relay_address(endpoint_url)
    if address is None:
        return None, "bytes fetched are counted on plain http endpoints only"
    with Relay(*address) as relay:
        path = relayed_config(config, relay.port, f"{config}.relayed.yaml")
        run: ChildRun = run_child(argv_for(path), drain_stdout=True, env=env)
        counted = relay.downstream
    if not run.ok:
        return None, f"counting run: {run.failure()}"
    if run.digest != want:
        return None, "counting run: restored bytes mismatch"
    return counted, None


def ratio(wall: float | None, limit: float | None) -> float | None:
    return round(wall / limit, 3) if wall and limit else None


def summary(rows: Sequence[dict[str, Any]]) -> str:
    """The subset table: by wall time against curl --parallel, and bytes fetched."""
    shown = [r for r in rows if r.get("operation") == "restore_data_subset" and r.get("wall_s")]
    if not shown:
        return ""
    head = ["subset", "tool", "object MiB", "ranges", "subset MiB", "fetched MiB",
            "wall s", "curl --parallel s", "x limit", "verified"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in shown:
        fetched = r.get("bytes_fetched")
        cells = [
            f"{r['label']} ({r['data']})", r["executable"],
            f"{r.get('object_bytes', 0) / 2**20:,.0f}",
            str(r.get("ranges", "")), f"{r['bytes_logical'] / 2**20:,.2f}",
            "" if fetched is None else f"{fetched / 2**20:,.2f}", f"{r['wall_s']:.3f}",
            "" if r.get("limit_wall_s") is None else f"{r['limit_wall_s']:.3f}",
            "" if r.get("ratio_to_limit") is None else f"{r['ratio_to_limit']:.2f}",
            {True: "yes", False: "**NO**", None: "-"}[r["verified"]],
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
