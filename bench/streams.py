"""The `streams` scenario: N segments' backup_data, then N restore_data, all at once.

A segment host runs one plugin process per segment at the same time (8-16 per host is
common), so what counts there is the aggregate: N streams started together against
the same store, next to N `curl` transfers of the same bytes (the ceiling) and N
processes of any --compare executable. Each round runs, in turn: N asyncplug
backup_data, N curl PUTs, N of each compared executable's backup_data; then the N
restores of each (asyncplug restore_data, curl GET, compared restore_data), every
restored stream hashed and checked against the source. Rounds alternate the tools,
so a change of load on a shared machine falls on all of them.

A group's wall time runs from its first start to its last exit; its CPU is the sum of
the processes' user + system seconds (os.wait4 through bench/launch.py), its memory the
largest and the sum of their peak RSS. On the embedded server the server's own CPU
during the group is recorded too: with the server on the same cores, every CPU second
a client spends is one the server does not get.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bench import scenarios as sc
from bench.datagen import Dataset
from bench.procs import ChildRun, run_child
from bench.runner import Executable, Runner
from bench.targets import write_plugin_config
from bench.warm import Session, Usage

SCENARIO = "streams"
DEFAULT_STREAMS = 8
STREAM_SIZE = "512MiB"
QUICK_STREAM_SIZE = "16MiB"
# Chunk sizes of a compared executable (the reference Go plugin defaults to 500 MB):
# plain bytes with a B, which the Go plugin's parser and asyncplug read alike.
COMPARE_CHUNKS = {
    "backup_multipart_chunksize": "67108864B",
    "restore_multipart_chunksize": "67108864B",
}
GiB = 2**30
MB = 1e6


@dataclass
class Group:
    """N processes started together."""

    runs: list[ChildRun]
    wall_s: float  # first start to last exit
    server_cpu_s: float | None = None
    warm: Usage | None = None  # the warm server's and its workers' (bench/warm.py)

    @property
    def cpu_s(self) -> float:
        return sum(r.cpu_s for r in self.runs) + (self.warm.cpu_s if self.warm else 0.0)

    @property
    def worker_peaks_kib(self) -> list[int]:
        return self.warm.worker_peaks_kib if self.warm else []

    @property
    def first_byte_s(self) -> float | None:
        """Median time from a restore's start to its first byte out (None for backups)."""
        firsts = [r.first_byte_s for r in self.runs if r.first_byte_s is not None]
        return statistics.median(firsts) if firsts else None

    @property
    def rss_max_kib(self) -> int:
        """The largest process; through the warm server, the largest client plus the
        largest worker (which client a worker served is not known)."""
        client = max((r.maxrss_kib for r in self.runs), default=0)
        return client + max(self.worker_peaks_kib, default=0)

    @property
    def rss_sum_kib(self) -> int:
        return sum(r.maxrss_kib for r in self.runs) + sum(self.worker_peaks_kib)

    def failure(self) -> str | None:
        for run in self.runs:
            if not run.ok:
                return run.failure()
        return None


def run_group(
    argvs: Sequence[Sequence[str]],
    *,
    stdin_file: str | None = None,
    drain: bool = False,
    env: dict[str, str] | None = None,
    tick: Callable[[int], None] | None = None,
    server_cpu: Callable[[], float] | None = None,
    session: Session | None = None,
) -> Group:
    """Start every argv at once (one thread each feeds and drains its own), wait for all.
    With a warm server `session`, its and its workers' CPU and memory are the group's too."""
    measured = session.usage() if session else contextlib.nullcontext(None)
    with (
        measured as usage,
        ThreadPoolExecutor(max_workers=len(argvs), thread_name_prefix="stream") as pool,
    ):
        before = server_cpu() if server_cpu else None
        start = time.perf_counter()
        futures = [
            pool.submit(
                run_child, argv, stdin_file=stdin_file, drain_stdout=drain, env=env, tick=tick
            )
            for argv in argvs
        ]
        runs = [f.result() for f in futures]
        wall = time.perf_counter() - start
        server = server_cpu() - before if server_cpu and before is not None else None
    return Group(runs, wall, server, usage)


@dataclass
class Tool:
    """One of the tools run N at once: asyncplug, curl, or a compared executable."""

    name: str
    kind: str  # plugin, baseline, compared
    backup: Callable[[int], tuple[list[str], str | None]]  # stream i -> argv, stdin file
    restore: Callable[[int], list[str]]
    groups: dict[str, list[Group]] = field(default_factory=dict)  # by direction
    error: dict[str, str] = field(default_factory=dict)
    verified: bool | None = None


@dataclass
class Streams:
    """The scenario against the runner's target, with its executables and settings."""

    runner: Runner
    dataset: Dataset
    count: int = DEFAULT_STREAMS

    def tools(self) -> list[Tool]:
        run = self.runner
        plugin = run.plugin
        config = run.config(plugin, sc.for_codec(SCENARIO, sc.BACKUP_DATA, "none"))
        tools = [self.plugin_tool(plugin, "plugin", config)]
        curl = Executable("curl", "curl")
        reason = run.unavailable(sc.Variant(SCENARIO, sc.PUT, tool="curl"))
        if reason:
            run.skipped.append({"scenario": f"{SCENARIO} (curl)", "reason": reason})
            run.display.note(f"{SCENARIO}: curl skipped ({reason})")
        else:

            def put(i: int) -> tuple[list[str], str | None]:
                return run.put_command("curl", self.key(curl, i), self.dataset.path)

            tools.append(
                Tool("curl", "baseline", put, lambda i: run.get_command("curl", self.key(curl, i)))
            )
        for exe in run.compared:
            tools.append(self.plugin_tool(exe, "compared", self.compare_config(exe)))
        return tools

    def plugin_tool(self, exe: Executable, kind: str, config: str) -> Tool:
        def backup(i: int) -> tuple[list[str], str | None]:
            return [exe.path, sc.BACKUP_DATA, config, self.local(exe, i)], self.dataset.path

        def restore(i: int) -> list[str]:
            return [exe.path, sc.RESTORE_DATA, config, self.local(exe, i)]

        return Tool(exe.name, kind, backup, restore)

    def compare_config(self, exe: Executable) -> str:
        """Options both plugins understand, uncompressed, with chunk sizes both read alike
        (unless the target's config sets them)."""
        options = {**COMPARE_CHUNKS, **self.runner.target.compare_options()}
        safe = exe.name.replace("/", "_")
        path = os.path.join(self.runner.work_dir, f"plugin-{safe}-{SCENARIO}.yaml")
        return write_plugin_config(path, exe.path, options)

    def local(self, exe: Executable, i: int) -> str:
        """Stream i's DATA_KEY: the single data file of segment i of this run's backup."""
        return self.runner.stored(exe, self.dataset, f"{SCENARIO}-{i}").local

    def key(self, exe: Executable, i: int) -> str:
        return self.runner.key(self.local(exe, i))

    # --- the run ------------------------------------------------------------------------
    def run(self, repeat: int) -> list[dict[str, Any]]:
        tools = self.tools()
        for _ in range(repeat):
            for direction in ("backup", "restore"):
                for tool in tools:
                    if not tool.error:
                        self.measure(tool, direction)
        return [self.row(tool, d, tools) for d in ("backup", "restore") for tool in tools]

    def measure(self, tool: Tool, direction: str) -> None:
        run, n = self.runner, self.count
        server = run.target.server
        server_cpu = server.cpu_seconds if server is not None else None
        title = f"{SCENARIO}: {n} x {tool.name} {direction} ({self.dataset.kind})"
        try:
            error = self.measure_group(tool, direction, title, server_cpu)
        except RuntimeError as exc:  # the warm server did not start or did not serve
            error = str(exc)
        if error:
            tool.error[direction] = error
            run.display.note(f"{title}: FAILED: {error}")

    def measure_group(
        self, tool: Tool, direction: str, title: str, server_cpu: Callable[[], float] | None
    ) -> str | None:
        run, n, size = self.runner, self.count, self.dataset.size
        with (
            run.session(direction if tool.kind == "plugin" else "") as session,
            run.display.task(title, n * size) as tick,
        ):
            if direction == "backup":
                commands = [tool.backup(i) for i in range(n)]
                group = run_group([c[0] for c in commands], stdin_file=commands[0][1],
                                  env=run.env(), tick=tick, server_cpu=server_cpu,
                                  session=session)  # fmt: skip
                fed = commands[0][1] is not None  # curl -T reads the file itself
                short = [r for r in group.runs if fed and r.ok and r.bytes_in != size]
                error = group.failure() or (f"fed {short[0].bytes_in} of {size} bytes"
                                            if short else None)  # fmt: skip
            else:
                argvs = [tool.restore(i) for i in range(n)]
                group = run_group(argvs, drain=True, env=run.env(), tick=tick,
                                  server_cpu=server_cpu, session=session)  # fmt: skip
                error = group.failure()
                if error is None:
                    good = all(r.digest == self.dataset.digest and r.bytes_out == size
                               for r in group.runs)  # fmt: skip
                    tool.verified = good and tool.verified is not False
                    if not good:
                        error = f"restored bytes mismatch the data backed up ({tool.name})"
        if error:
            return error
        tool.groups.setdefault(direction, []).append(group)
        served = f" (warm server {group.warm.cpu_s:.2f} s of it)" if group.warm else ""
        run.display.note(
            f"{title}: {n * size / MB / group.wall_s:,.1f} MB/s, "
            f"{group.cpu_s / (n * size / GiB):.2f} CPU s/GiB summed{served}"
        )
        return None

    # --- results ------------------------------------------------------------------------
    def row(self, tool: Tool, direction: str, tools: Sequence[Tool]) -> dict[str, Any]:
        n, size = self.count, self.dataset.size
        groups = tool.groups.get(direction, [])
        op = {("plugin", "backup"): sc.BACKUP_DATA, ("plugin", "restore"): sc.RESTORE_DATA,
              ("baseline", "backup"): sc.PUT, ("baseline", "restore"): sc.GET}[
                  ("baseline" if tool.kind == "baseline" else "plugin", direction)]  # fmt: skip
        variant = f"{tool.name} {op} x{n}" if tool.kind == "baseline" else f"{op} x{n}"
        logical = n * size
        row: dict[str, Any] = {
            "scenario": SCENARIO, "variant": variant, "label": f"{SCENARIO}[{variant}]",
            "data": self.dataset.kind, "executable": tool.name, "kind": tool.kind,
            "direction": direction, "operation": op, "compression": "none",
            "bytes_logical": logical, "bytes_stored": None, "compression_ratio": None,
            "wall_s": None, "mb_per_s": None, "cpu_s": None, "cpu_s_per_gib": None,
            "peak_rss_mb": None, "ratio_to_ceiling": None, "ratios_to_compared": {},
            "verified": tool.verified, "error": tool.error.get(direction),
            "streams": n, "stream_bytes": size, "rss_sum_mb": None,
            "server_cpu_s_per_gib": None, "walls_s": [], "first_byte_s": None,
            "warm_server": self.runner.warm_server if tool.kind == "plugin" else None,
            "warm_cpu_s_per_gib": None,
        }  # fmt: skip
        if not groups:
            row["error"] = row["error"] or tool.error.get("backup") or "not run"
            return row
        wall = statistics.median(g.wall_s for g in groups)
        cpu = statistics.median(g.cpu_s for g in groups)
        servers = [g.server_cpu_s for g in groups if g.server_cpu_s is not None]
        row.update(
            wall_s=round(wall, 3),
            walls_s=[round(g.wall_s, 3) for g in groups],
            mb_per_s=round(logical / MB / wall, 3),
            cpu_s=round(cpu, 3),
            cpu_s_per_gib=round(cpu / (logical / GiB), 3),
            peak_rss_mb=round(max(g.rss_max_kib for g in groups) / 1024, 1),
            rss_sum_mb=round(max(g.rss_sum_kib for g in groups) / 1024, 1),
        )
        warms = [g.warm.cpu_s for g in groups if g.warm is not None]
        if warms:  # of the tool's CPU, what the server and its workers used
            row["warm_cpu_s_per_gib"] = round(statistics.median(warms) / (logical / GiB), 3)
        firsts = [g.first_byte_s for g in groups if g.first_byte_s is not None]
        if firsts:
            row["first_byte_s"] = round(statistics.median(firsts), 3)
        if tool.kind == "baseline":
            row["ratio_to_ceiling"] = 1.0
        if servers:
            row["server_cpu_s_per_gib"] = round(statistics.median(servers) / (logical / GiB), 3)
        for other in tools:
            theirs = other.groups.get(direction)
            if other is tool or not theirs or other.kind == "plugin":
                continue
            ratio = round(statistics.median(g.wall_s for g in theirs) / wall, 3)
            if other.kind == "baseline":
                row["ratio_to_ceiling"] = ratio
            elif tool.kind == "plugin":
                row["ratios_to_compared"][other.name] = ratio
        return row


def run_streams(runner: Runner, dataset: Dataset, count: int) -> list[dict[str, Any]]:
    """The scenario's rows (one per tool and direction), measured runner.repeat times."""
    return Streams(runner, dataset, count).run(runner.repeat)


def summary(rows: Sequence[dict[str, Any]]) -> str:
    """The host-level table: aggregate MB/s, ratios, summed CPU, memory of N processes."""
    shown = [r for r in rows if r.get("scenario") == SCENARIO]
    if not shown:
        return ""
    compared = sorted({name for r in shown for name in r["ratios_to_compared"]})
    head = ["N streams at once", "data", "MB/s (aggregate)", "vs curl xN",
            *(f"vs {c} xN" for c in compared), "tool CPU s/GiB (summed)",
            "server CPU s/GiB", "first byte s", "peak RSS MiB (max / sum)",
            "verified"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def num(value: Any, digits: int) -> str:
        return "" if value is None else f"{value:,.{digits}f}"

    for r in shown:
        name = r["label"] if r["kind"] != "compared" else f"{r['label']} {r['executable']}"
        verified = {True: "yes", False: "**NO**", None: "-"}[r["verified"]]
        if r["error"]:
            verified = f"failed: {r['error']}"
        rss = (
            "" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:,.0f} / {r['rss_sum_mb']:,.0f}"
        )
        cells = [name, r["data"], num(r["mb_per_s"], 1), num(r["ratio_to_ceiling"], 2),
                 *(num(r["ratios_to_compared"].get(c), 2) for c in compared),
                 num(r["cpu_s_per_gib"], 2), num(r["server_cpu_s_per_gib"], 2),
                 num(r.get("first_byte_s"), 2), rss,
                 verified]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
