"""Run the chosen scenarios against one target and collect one row per measurement.

Every plugin run is what gpbackup does: the executable in a subprocess, a generated
plugin config, a single-data-file key under a backup timestamp of this run, the
stream on a pipe. Every restore is hashed as it arrives and compared with the data
it should return; every backup is read back (in a measured restore, or after the
scenarios in an unmeasured one), so a stored object that does not round-trip fails
the run.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import scenarios as sc
from bench import subsets, warm
from bench.datagen import Dataset
from bench.procs import ChildRun, run_child
from bench.progress import PlainDisplay, RichDisplay
from bench.targets import Target, write_plugin_config
from bench.verify import digest_file

GiB = 2**30
MB = 1e6
WARM_UP_BYTES = 32 * 2**20


@dataclass(frozen=True)
class Executable:
    """A plugin executable: asyncplug itself or one given with --compare."""

    name: str
    path: str
    compared: bool = False


@dataclass
class Measure:
    wall_s: float
    cpu_s: float
    maxrss_kib: int
    verified: bool | None


@dataclass
class StoredObject:
    """An object a variant wrote; the rows that wrote it learn whether it read back."""

    local: str  # the DATA_KEY / FILE path (or the baseline's key)
    writers: list[dict[str, Any]] = field(default_factory=list)
    exists: bool = False
    verified: bool | None = None


class RunFailed(Exception):
    """One measured run failed: the row records it, the run goes on."""


@dataclass
class Runner:
    target: Target
    plugin: Executable
    compared: Sequence[Executable]
    datasets: Sequence[Dataset]
    variants: Sequence[sc.Variant]
    work_dir: str
    display: PlainDisplay | RichDisplay
    repeat: int = 1
    seed: int = 0
    plugin_set: dict[str, str] = field(default_factory=dict)  # --set NAME=VALUE (asyncplug)
    warm_server: bool = False  # asyncplug through the warm server, as deployed (warm.py)
    warm_starts: list[float] = field(default_factory=list)  # the server's start, CPU s
    timestamp: str = field(default_factory=lambda: time.strftime("%Y%m%d%H%M%S"))
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    _objects: dict[tuple[str, str, str], StoredObject] = field(default_factory=dict)
    _configs: dict[tuple[str, str], str] = field(default_factory=dict)
    _limits: dict[tuple[str, str], tuple[float | None, str | None]] = field(default_factory=dict)
    _content_ids: int = 0
    _runtime_dir: str = ""

    # --- the run ------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        self.warm_up()
        for variant in self.variants:
            reason = self.unavailable(variant)
            if reason:
                self.skipped.append({"scenario": variant.label, "reason": reason})
                self.display.note(f"{variant.label}: skipped ({reason})")
                continue
            for dataset in self.datasets:
                for exe in self.executables(variant):
                    self.rows.append(self.measure(variant, dataset, exe))
        self.verify_leftovers()
        return self.rows

    def warm_up(self) -> None:
        """One small unmeasured backup first: the server allocates its first volumes and
        the plugin's modules come into the page cache, so neither lands on scenario one."""
        source = os.path.join(self.work_dir, "warmup.dat")
        with open(self.datasets[0].path, "rb") as f, open(source, "wb") as out:
            out.write(f.read(WARM_UP_BYTES))
        local = os.path.join(self.work_dir, "seg0", "backups", self.timestamp[:8], self.timestamp)
        os.makedirs(local, exist_ok=True)
        key = os.path.join(local, f"gpbackup_0_{self.timestamp}")
        config = self.config(self.plugin, sc.for_codec("warm-up", sc.BACKUP_DATA, "none"))
        try:
            self.prepare(
                "warm-up backup_data", [self.plugin.path, sc.BACKUP_DATA, config, key], source
            )
        except RunFailed as exc:
            self.display.note(f"warm-up failed: {exc}")
        os.unlink(source)

    def executables(self, variant: sc.Variant) -> list[Executable]:
        if variant.baseline:
            return [Executable(variant.tool, variant.tool)]
        extra = [e for e in self.compared if variant.label in sc.COMPARABLE]
        return [self.plugin, *extra]

    def unavailable(self, variant: sc.Variant) -> str:
        """Why a baseline cannot run here ('' when it can)."""
        if not variant.baseline:
            return ""
        if (variant.tool == "cat") != (self.target.storage == "file"):
            where = "a directory" if variant.tool == "cat" else "S3"
            return f"{variant.tool} is a baseline for {where}"
        if variant.tool == "curl":
            if not shutil.which("curl"):
                return "curl is not installed"
            if not self.target.credentials:
                return "curl needs aws_access_key_id/aws_secret_access_key in the config"
        if variant.tool == "awscli" and not aws_works():
            return "awscli is not installed or does not start (pip install -e '.[bench]')"
        return ""

    def measure(self, variant: sc.Variant, dataset: Dataset, exe: Executable) -> dict[str, Any]:
        row = self.new_row(variant, dataset, exe)
        measures: list[Measure] = []
        try:
            for _ in range(self.repeat):
                measures.append(self.once(variant, dataset, exe, row))
        except RunFailed as exc:
            row["error"] = str(exc)
            row["verified"] = False if "mismatch" in str(exc) else None
            self.display.note(f"{row['label']} ({exe.name}, {dataset.kind}): FAILED: {exc}")
            return row
        wall = statistics.median(m.wall_s for m in measures)
        cpu = statistics.median(m.cpu_s for m in measures)
        logical = row["bytes_logical"]
        row.update(
            wall_s=round(wall, 3),
            mb_per_s=round(logical / MB / wall, 3) if wall > 0 else None,
            cpu_s=round(cpu, 3),
            cpu_s_per_gib=round(cpu / (logical / GiB), 2) if logical else None,
            peak_rss_mb=round(max(m.maxrss_kib for m in measures) / 1024, 1),
            walls_s=[round(m.wall_s, 3) for m in measures],
        )
        checks = [m.verified for m in measures if m.verified is not None]
        if checks:
            row["verified"] = all(checks)
        if variant.op == sc.RESTORE_SUBSET:
            self.subset_limits(variant, dataset, exe, row)
        self.display.note(one_line(row))
        return row

    def subset_limits(
        self, variant: sc.Variant, dataset: Dataset, exe: Executable, row: dict[str, Any]
    ) -> None:
        ranges = self.subset(variant, dataset)
        obj = self.ensure(exe, dataset, "none")
        self.limits(
            row, exe, obj, self.offsets_file(variant, dataset, ranges), self.config(exe, variant),
            ranges, digest_file(dataset.path, ranges)[0], (dataset.kind, variant.label),
        )  # fmt: skip

    def limits(
        self,
        row: dict[str, Any],
        exe: Executable,
        obj: StoredObject,
        offsets: str,
        config: str,
        ranges: list[tuple[int, int]],
        want: str,
        slot: tuple[str, str],
    ) -> None:
        """Bytes a subset fetched (counted on the wire, one unmeasured run) and the wall
        time of `curl --parallel` fetching the same ranges (bench/subsets.py); the curl
        figure is measured once per `slot`."""

        def argv_for(path: str) -> list[str]:
            return [exe.path, sc.RESTORE_SUBSET, path, obj.local, offsets]

        if self.target.storage == "s3":
            with self.display.task(f"(counting bytes fetched: {row['label']})", 0):
                fetched, why = subsets.fetched_bytes(
                    self.target.url, config, argv_for, want, self.env()
                )
            row["bytes_fetched"] = fetched
            if why:
                self.display.note(f"{row['label']} ({exe.name}): bytes fetched unknown: {why}")
        if slot not in self._limits:
            self._limits[slot] = self.curl_limit(obj, ranges, want, row["label"])
        limit = self._limits[slot][0]
        row["limit_wall_s"] = None if limit is None else round(limit, 3)
        row["ratio_to_limit"] = subsets.ratio(row["wall_s"], row["limit_wall_s"])

    def curl_limit(
        self, obj: StoredObject, ranges: list[tuple[int, int]], want: str, label: str
    ) -> tuple[float | None, str | None]:
        """The physical limit of a subset: curl --parallel fetching the same ranges of an
        object holding the same bytes (a raw object is the stream itself)."""
        reason = self.unavailable(sc.Variant("limit", sc.GET, tool="curl"))
        if reason:
            return None, reason
        with self.display.task(f"(curl --parallel, the limit of {label})", 0):
            url = self.target.object_url(self.key(obj.local))
            limit = subsets.curl_limit(
                self.curl(), url, ranges, want, self.repeat, self.work_dir, self.env()
            )
        if limit[1]:
            self.display.note(f"{label}: curl --parallel failed: {limit[1]}")
        return limit

    def new_row(self, variant: sc.Variant, dataset: Dataset, exe: Executable) -> dict[str, Any]:
        logical = dataset.size
        if variant.op == sc.RESTORE_SUBSET:
            logical = sum(e - s for s, e in self.subset(variant, dataset))
        kind = "baseline" if variant.baseline else "compared" if exe.compared else "plugin"
        extra: dict[str, Any] = {}
        if variant.op == sc.RESTORE_SUBSET:
            extra = {
                "object_bytes": dataset.size,
                "ranges": sc.SUBSET_RANGES,
                "bytes_fetched": None,
                "limit_wall_s": None,
                "ratio_to_limit": None,
            }
        return {
            "scenario": variant.scenario,
            "variant": variant.name,
            "label": variant.label,
            "data": dataset.kind,
            "executable": exe.name,
            "kind": kind,
            "direction": variant.direction,
            "operation": variant.op,
            "compression": variant.codec,
            "bytes_logical": logical,
            "bytes_stored": None,
            "compression_ratio": None,
            "wall_s": None,
            "mb_per_s": None,
            "cpu_s": None,
            "cpu_s_per_gib": None,
            "peak_rss_mb": None,
            "ratio_to_ceiling": None,
            "ratios_to_compared": {},
            "verified": None,
            "error": None,
            "warm_server": self.warm_server if kind == "plugin" else None,
            **extra,
        }

    # --- one repetition -------------------------------------------------------------------
    def once(
        self, variant: sc.Variant, dataset: Dataset, exe: Executable, row: dict[str, Any]
    ) -> Measure:
        op = variant.op
        if variant.baseline:
            return self.baseline(variant, dataset, row)
        config = self.config(exe, variant)
        if op in (sc.BACKUP_DATA, sc.BACKUP_FILE):
            obj = self.stored(exe, dataset, variant.codec, file=op == sc.BACKUP_FILE)
            if op == sc.BACKUP_FILE:
                link_dataset(dataset, obj.local)
                run = self.plugin_run(row, [exe.path, op, config, obj.local])
            else:
                run = self.plugin_run(row, [exe.path, op, config, obj.local], stdin=dataset.path)
                if run.bytes_in != dataset.size:
                    raise RunFailed(f"fed {run.bytes_in} of {dataset.size} bytes")
            obj.exists = True
            if row not in obj.writers:
                obj.writers.append(row)
            row["bytes_stored"] = self.target.stored_bytes(self.key(obj.local))
            if row["bytes_stored"]:
                row["compression_ratio"] = round(dataset.size / row["bytes_stored"], 3)
            return measure(run, None)
        if op == sc.RESTORE_FILE:
            obj = self.ensure(exe, dataset, "none", file=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(obj.local)  # restore_file must create it
            run = self.plugin_run(row, [exe.path, op, config, obj.local])
            ok = os.path.exists(obj.local) and digest_file(obj.local)[0] == dataset.digest
            return measure(run, self.checked(obj, ok, row))
        obj = self.ensure(exe, dataset, variant.codec)
        argv = [exe.path, op, config, obj.local]
        want = dataset.digest
        if op == sc.RESTORE_SUBSET:
            ranges = self.subset(variant, dataset)
            argv.append(self.offsets_file(variant, dataset, ranges))
            want = digest_file(dataset.path, ranges)[0]
        run = self.plugin_run(row, argv, drain=True)
        ok = run.digest == want and run.bytes_out == row["bytes_logical"]
        return measure(run, self.checked(obj if op == sc.RESTORE_DATA else None, ok, row))

    def plugin_run(
        self, row: dict[str, Any], argv: list[str], stdin: str | None = None, drain: bool = False
    ) -> ChildRun:
        """One measured command; asyncplug's through the warm server when it is on."""
        title = f"{row['label']} ({row['executable']}, {row['data']})"
        try:
            with (
                self.session(row["direction"] if row["kind"] == "plugin" else "") as session,
                self.display.task(title, row["bytes_logical"]) as tick,
            ):
                run = warm.run_served(session, argv, stdin_file=stdin, drain_stdout=drain,
                                      tick=tick, env=self.env())  # fmt: skip
        except RuntimeError as exc:  # the warm server did not start or did not serve
            raise RunFailed(str(exc)) from None
        if not run.ok:
            raise RunFailed(run.failure())
        return run

    @contextlib.contextmanager
    def session(self, direction: str) -> Iterator[warm.Session | None]:
        """A backup or restore on a segment host as gpbackup runs it, around asyncplug's
        measured commands of `direction` (warm.py); None when the warm server is off or
        for another tool (direction '')."""
        if not (self.warm_server and direction):
            yield None
            return
        config = self.config(self.plugin, sc.for_codec("session", sc.BACKUP_DATA, "none"))
        ts = self.timestamp
        local = os.path.join(self.work_dir, "seg0", "backups", ts[:8], ts)
        with warm.Session(self.plugin.path, config, self.env(), local, direction) as session:
            self.warm_starts.append(session.start_cpu_s)
            yield session

    def checked(self, obj: StoredObject | None, ok: bool, row: dict[str, Any]) -> bool:
        if obj is not None:
            obj.verified = ok if obj.verified in (None, True) else False
            for writer in obj.writers:
                writer["verified"] = obj.verified
        if not ok:
            raise RunFailed(f"restored bytes mismatch the data backed up ({row['label']})")
        return ok

    # --- baselines --------------------------------------------------------------------------
    def baseline(self, variant: sc.Variant, dataset: Dataset, row: dict[str, Any]) -> Measure:
        tool = variant.tool
        obj = self.stored(Executable(tool, tool), dataset, "none")
        key = self.key(obj.local)
        if variant.op == sc.PUT:
            argv, stdin = self.put_command(tool, key, dataset.path)
            run = self.plugin_run(row, argv, stdin=stdin)
            obj.exists = True
            if row not in obj.writers:
                obj.writers.append(row)
            row["bytes_stored"] = dataset.size
            row["compression_ratio"] = 1.0
            return measure(run, None)
        if not obj.exists:
            argv, stdin = self.put_command(tool, key, dataset.path)
            self.prepare(f"{tool} put for {variant.label}", argv, stdin)
            obj.exists = True
        run = self.plugin_run(row, self.get_command(tool, key), drain=True)
        ok = run.digest == dataset.digest and run.bytes_out == dataset.size
        return measure(run, self.checked(obj, ok, row))

    def put_command(self, tool: str, key: str, path: str) -> tuple[list[str], str | None]:
        t = self.target
        if tool == "curl":
            return [*self.curl(), "-T", path, t.object_url(key)], None
        if tool == "awscli":
            return [*self.aws(), "cp", "-", t.s3_uri(key)], path
        local = os.path.join(t.options["path"], key)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        return ["dd", f"of={local}", "bs=1M", "conv=fsync", "status=none"], path

    def get_command(self, tool: str, key: str) -> list[str]:
        t = self.target
        if tool == "curl":
            return [*self.curl(), t.object_url(key)]
        if tool == "awscli":
            return [*self.aws(), "cp", t.s3_uri(key), "-"]
        return ["cat", os.path.join(t.options["path"], key)]

    def curl(self) -> list[str]:
        key, secret = self.target.credentials or ("", "")
        sigv4 = f"aws:amz:{self.target.region}:s3"
        return ["curl", "-sS", "--fail", "--aws-sigv4", sigv4, "--user", f"{key}:{secret}"]

    def aws(self) -> list[str]:
        argv = [aws_executable(), "s3", "--only-show-errors"]
        if self.target.options.get("endpoint"):
            argv += ["--endpoint-url", self.target.url]
        return argv

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        creds = self.target.credentials
        if creds:
            env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = creds
        env.setdefault("AWS_DEFAULT_REGION", self.target.region)
        # A socket directory of this run's own: with the warm server off no server serves
        # it, so every command is a whole process; on, only the sessions' servers do.
        if not self._runtime_dir:
            self._runtime_dir = warm.private_runtime_dir()
        env["ASYNCPLUG_RUNTIME_DIR"] = self._runtime_dir
        return env

    # --- objects, keys, configs ------------------------------------------------------------
    def stored(
        self, exe: Executable, dataset: Dataset, codec: str, file: bool = False
    ) -> StoredObject:
        slot = (exe.name, dataset.kind, "file" if file else codec)
        if slot not in self._objects:
            self._content_ids += 1
            cid, ts = self._content_ids, self.timestamp
            name = f"gpbackup_{ts}_{cid}_metadata.sql" if file else f"gpbackup_{cid}_{ts}"
            local = os.path.join(self.work_dir, f"seg{cid}", "backups", ts[:8], ts, name)
            os.makedirs(os.path.dirname(local), exist_ok=True)
            self._objects[slot] = StoredObject(local)
        return self._objects[slot]

    def ensure(
        self, exe: Executable, dataset: Dataset, codec: str, file: bool = False
    ) -> StoredObject:
        """The object a restore reads; backed up first (unmeasured) if no scenario did."""
        obj = self.stored(exe, dataset, codec, file)
        if not obj.exists:
            config = self.config(exe, sc.for_codec("prepare", sc.BACKUP_DATA, codec))
            if file:
                link_dataset(dataset, obj.local)
                self.prepare("backup_file", [exe.path, sc.BACKUP_FILE, config, obj.local], None)
            else:
                argv = [exe.path, sc.BACKUP_DATA, config, obj.local]
                self.prepare(f"backup_data ({codec})", argv, dataset.path)
            obj.exists = True
        return obj

    def prepare(self, what: str, argv: list[str], stdin: str | None) -> None:
        with self.display.task(f"(preparing: {what})", 0) as tick:
            run = run_child(argv, stdin_file=stdin, tick=tick, env=self.env())
        if not run.ok:
            raise RunFailed(f"preparing {what}: {run.failure()}")

    def key(self, local: str) -> str:
        return f"{self.target.folder}/{'/'.join(Path(local).parts[-4:])}"

    def config(self, exe: Executable, variant: sc.Variant) -> str:
        slot = (exe.name, variant.codec)
        if slot not in self._configs:
            if exe.compared:
                options = self.target.compare_options()
            else:
                options = self.target.plugin_options(variant.compression, variant.level)
                options.update(self.plugin_set)
            safe = exe.name.replace("/", "_")
            path = os.path.join(self.work_dir, f"plugin-{safe}-{variant.codec}.yaml")
            self._configs[slot] = write_plugin_config(path, exe.path, options)
        return self._configs[slot]

    def subset(self, variant: sc.Variant, dataset: Dataset) -> list[tuple[int, int]]:
        return sc.spread_ranges(dataset.size, variant.fraction, seed=self.seed)

    def offsets_file(
        self, variant: sc.Variant, dataset: Dataset, ranges: list[tuple[int, int]]
    ) -> str:
        path = os.path.join(self.work_dir, f"offsets-{variant.scenario}-{dataset.kind}.txt")
        Path(path).write_text(sc.offsets_text(ranges), encoding="ascii")
        return path

    # --- read back what no measured restore read -------------------------------------------
    def verify_leftovers(self) -> None:
        for (name, kind, codec), obj in self._objects.items():
            if obj.verified is not None or not obj.exists or not obj.writers:
                continue
            exe = self.plugin if name == self.plugin.name else self.find_compared(name)
            dataset = next(d for d in self.datasets if d.kind == kind)
            if exe is None:
                continue  # a baseline put whose get was not chosen
            what = f"{exe.name} {codec} {kind} ({obj.local})"
            try:
                obj.verified = self.read_back(exe, dataset, codec, obj)
            except RunFailed as exc:  # could not read it: unknown, not a mismatch
                for writer in obj.writers:
                    writer["error"] = writer["error"] or f"read-back failed: {exc}"
                self.display.note(f"READ-BACK FAILED: {what}: {exc}")
                continue
            for writer in obj.writers:
                writer["verified"] = obj.verified
            if not obj.verified:
                self.display.note(f"READ-BACK MISMATCH: {what}")

    def read_back(self, exe: Executable, dataset: Dataset, codec: str, obj: StoredObject) -> bool:
        config = self.config(exe, sc.for_codec("verify", sc.RESTORE_DATA, codec))
        if codec == "file":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(obj.local)
            self.prepare(
                "read-back restore_file", [exe.path, sc.RESTORE_FILE, config, obj.local], None
            )
            return digest_file(obj.local)[0] == dataset.digest
        argv = [exe.path, sc.RESTORE_DATA, config, obj.local]
        with self.display.task(
            f"(read-back: {exe.name} {codec} {dataset.kind})", dataset.size
        ) as tick:
            run = run_child(argv, drain_stdout=True, tick=tick, env=self.env())
        if not run.ok:
            raise RunFailed(run.failure())
        return run.digest == dataset.digest and run.bytes_out == dataset.size

    def find_compared(self, name: str) -> Executable | None:
        return next((e for e in self.compared if e.name == name), None)

    def cleanup(self) -> None:
        """Delete what this run stored (its own backup timestamp only)."""
        prefix = f"{self.target.folder}/backups/{self.timestamp[:8]}/{self.timestamp}/"
        try:
            self.target.remove_prefix(prefix)
        except Exception as exc:  # cleanup must not hide the results
            self.display.note(f"could not remove {prefix}: {exc}")

    def close(self) -> None:
        """Remove the run's socket directory."""
        if self._runtime_dir:
            shutil.rmtree(self._runtime_dir, ignore_errors=True)


def measure(run: ChildRun, verified: bool | None) -> Measure:
    return Measure(run.wall_s, run.cpu_s, run.maxrss_kib, verified)


def link_dataset(dataset: Dataset, local: str) -> None:
    """Put the data file at the FILE path backup_file reads (a hard link: no copy)."""
    if os.path.lexists(local):
        os.unlink(local)
    try:
        os.link(dataset.path, local)
    except OSError:
        shutil.copyfile(dataset.path, local)


@functools.cache
def aws_works() -> bool:
    path = aws_executable()
    if not path:
        return False
    try:
        return subprocess.run([path, "--version"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def aws_executable() -> str:
    beside = Path(sys.executable).parent / "aws"
    if beside.exists():
        return str(beside)
    return shutil.which("aws") or ""


def harness_speed(dataset: Dataset) -> dict[str, float]:
    """How fast the bench alone feeds and drains: must be far above any plugin rate."""
    fed = run_child(["sh", "-c", "cat >/dev/null"], stdin_file=dataset.path)
    drained = run_child(["cat", dataset.path], drain_stdout=True)
    return {
        "generate_mb_per_s": round(dataset.generate_mb_per_s, 1),
        "producer_mb_per_s": round(dataset.size / MB / fed.wall_s, 1),
        "consumer_mb_per_s": round(dataset.size / MB / drained.wall_s, 1),
    }


def one_line(row: dict[str, Any]) -> str:
    verified = {True: "verified", False: "MISMATCH", None: ""}[row["verified"]]
    return (
        f"{row['label']:<24} {row['executable']:<10} {row['data']:<6} "
        f"{row['mb_per_s']:>8.1f} MB/s  {row['cpu_s_per_gib']:>7.2f} CPU s/GiB  "
        f"{row['peak_rss_mb']:>7.1f} MiB RSS  {verified}"
    )


def byte_compile() -> None:
    """Write the .pyc files of the asyncplug package this Python imports (the plugin's
    own beside it, by default). An editable install compiles nothing, and where
    PYTHONDONTWRITEBYTECODE is set every plugin process would compile its modules again:
    64 ms of CPU per process here, a start-up cost no installed copy pays."""
    import compileall

    import asyncplug

    compileall.compile_dir(os.path.dirname(asyncplug.__file__), quiet=1)


def plugin_executable() -> str:
    beside = Path(sys.executable).parent / "asyncplug"
    return str(beside) if beside.exists() else shutil.which("asyncplug") or ""


def version_of(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip()
