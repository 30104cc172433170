"""What gpbackup and gprestore do on one segment, driven against the real programs.

Read from the gpbackup source (af19cd8; ../shared/tools/README.md): helper/*.go,
utils/agent_remote.go, utils/plugin.go, backup/data.go, restore/data.go. Greenplum's
`ON SEGMENT` and `IGNORE EXTERNAL PARTITIONS` are left out of the COPY commands: the
server is plain PostgreSQL standing in for segment 0, so `<SEGID>` is already 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.e2e.dataset import Table
from tests.e2e.postgres import Postgres, PostgresError

TOOLS = Path(__file__).resolve().parents[2].parent / "shared" / "tools"
HELPER = TOOLS / "gpbackup_helper"
GO_PLUGIN = TOOLS / "gpbackup_s3_plugin"
PLUGIN_TEST_BENCH = TOOLS / "plugin_test_commands.sh"
MISSING_TOOLS = (
    "needs gpbackup_helper, gpbackup_s3_plugin and plugin_test_commands.sh in "
    f"{TOOLS} (../shared/tools beside the project): see ../shared/tools/README.md"
)
HELPER_TIMEOUT = 180


def tools_present() -> bool:
    return all(os.access(p, os.X_OK) for p in (HELPER, GO_PLUGIN, PLUGIN_TEST_BENCH))


# --- the plugin config, as gpbackup copies it to a segment host -----------------------


def yaml_v2_scalar(value: str) -> str:
    """A string as gopkg.in/yaml.v2 writes it: plain, or double-quoted when plain text
    would read back as something else (`"on"`, `"5432"`, `""`)."""
    plain = value != "" and value == value.strip()
    with contextlib.suppress(yaml.YAMLError):
        plain = plain and yaml.safe_load(value) == value
    return value if plain else json.dumps(value)


@dataclass(frozen=True)
class PluginConfig:
    """A plugin config file as gpbackup rewrites it for a segment host: yaml.v2's
    marshalling of {executablepath, options (strings, sorted)}, `pgport` and
    `backup_plugin_version` added, at /tmp/<name>_<nanotime>_<content>."""

    path: Path
    executable: str
    options: dict[str, str]

    @classmethod
    def write(
        cls,
        executable: str | Path,
        options: dict[str, object],
        name: str,
        content: int = 0,
        pgport: int = 5432,
        plugin_version: str = "0.1.0",
    ) -> PluginConfig:
        values = {k: _go_string(v) for k, v in options.items()}
        values["pgport"] = str(pgport)
        values["backup_plugin_version"] = plugin_version
        lines = [f"executablepath: {executable}", "options:"]
        lines += [f"  {k}: {yaml_v2_scalar(values[k])}" for k in sorted(values)]
        path = Path("/tmp") / f"{name}_{time.time_ns()}_{content}"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o644)  # read by the programs COPY starts, as the server's user
        return cls(path, str(executable), values)

    def with_options(self, name: str, **changes: object) -> PluginConfig:
        options: dict[str, object] = {**self.options, **changes}
        for gpbackup_adds in ("pgport", "backup_plugin_version"):
            options.pop(gpbackup_adds)
        return PluginConfig.write(self.executable, options, name)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _go_string(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


# --- one segment's files ---------------------------------------------------------------


@dataclass
class Segment:
    """The files of segment `content` for one backup timestamp, with gpbackup's names."""

    root: Path  # the segment's data directory
    timestamp: str
    content: int = 0
    pid: int = field(default_factory=os.getpid)  # gpbackup's pid, in the helper's names

    @property
    def backup_dir(self) -> Path:
        return self.root / "backups" / self.timestamp[:8] / self.timestamp

    @property
    def pipe(self) -> str:
        return f"{self.root}/gpbackup_{self.content}_{self.timestamp}_pipe_{self.pid}"

    def helper_file(self, suffix: str) -> Path:
        return self.root / f"gpbackup_{self.content}_{self.timestamp}_{suffix}_{self.pid}"

    @property
    def toc(self) -> Path:
        return self.backup_dir / f"gpbackup_{self.content}_{self.timestamp}_toc.yaml"

    @property
    def data_file(self) -> Path:
        return self.backup_dir / f"gpbackup_{self.content}_{self.timestamp}"

    def table_file(self, oid: int) -> Path:
        """Multi-file mode: one gzip file per table (gpbackup's default compression)."""
        return self.backup_dir / f"gpbackup_{self.content}_{self.timestamp}_{oid}.gz"

    @property
    def error_file(self) -> Path:
        return Path(f"{self.pipe}_error")

    def prepare(self) -> None:
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        for directory in (self.root, self.backup_dir.parent.parent, self.backup_dir.parent):
            os.chmod(directory, 0o755)  # the COPY programs open pipes here
        os.chmod(self.backup_dir, 0o755)

    def mkfifo(self, oid: int) -> None:
        """gpbackup/gprestore create the first pipe (`mkfifo`) before starting the helper."""
        path = f"{self.pipe}_{oid}"
        os.mkfifo(path)
        os.chmod(path, 0o666)

    def unblock(self) -> None:
        """Open every pipe left behind for a moment from both ends, so that a COPY program
        blocked in open() on one returns (after a failure: no test may hang)."""
        for path in self.root.glob(os.path.basename(self.pipe) + "_*"):
            for flags in (os.O_RDONLY, os.O_WRONLY):
                with contextlib.suppress(OSError):
                    fd = os.open(path, flags | os.O_NONBLOCK)
                    time.sleep(0.2)
                    os.close(fd)


# --- the helper ---------------------------------------------------------------------


@dataclass
class HelperRun:
    returncode: int
    error_file: bool  # <pipe>_error: what gpbackup/gprestore check for an agent failure
    copy_errors: dict[str, str]  # table -> COPY's error message
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.error_file and not self.copy_errors


def _helper_args(seg: Segment, agent: str, config: PluginConfig, extra: Sequence[str]) -> list[str]:
    """utils/agent_remote.go StartGpbackupHelpers, one job (--copy-queue-size 1)."""
    return [
        str(HELPER), agent,
        "--toc-file", str(seg.toc),
        "--oid-file", str(seg.helper_file("oid")),
        "--pipe-file", seg.pipe,
        "--data-file", str(seg.data_file),
        "--content", str(seg.content),
        "--plugin-config", str(config.path),
        *extra,
        "--copy-queue-size", "1",
        "--replication-file", str(seg.helper_file("replicated_oid")),
    ]  # fmt: skip


def _run_helper(
    pg: Postgres,
    db: str,
    seg: Segment,
    agent: str,
    config: PluginConfig,
    extra: Sequence[str],
    tables: Sequence[Table],
    copy_sql: str,
    env: dict[str, str],
) -> HelperRun:
    ordered = sorted(tables, key=lambda t: t.oid)  # the helper sorts the oid list
    seg.prepare()
    seg.helper_file("oid").write_text("".join(f"{t.oid}\n" for t in ordered))
    seg.mkfifo(ordered[0].oid)
    log = seg.root / f"helper_{agent.strip('-')}_{seg.timestamp}.out"
    copy_errors: dict[str, str] = {}
    with open(log, "wb") as out:
        # The pipes the helper makes must be open to the server's user: gpbackup runs all
        # of it as gpadmin, here the helper runs as the test's user and the server not.
        helper = subprocess.Popen(
            _helper_args(seg, agent, config, extra),
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, umask=0,
        )  # fmt: skip
        try:
            for table in ordered:
                pipe = f"{seg.pipe}_{table.oid}"
                try:
                    pg.sql(db, copy_sql.format(table=table.fqn, pipe=pipe))
                except PostgresError as exc:
                    copy_errors[str(table)] = str(exc)
                except subprocess.TimeoutExpired:
                    copy_errors[str(table)] = "COPY timed out"
                    seg.unblock()
                if helper.poll() is not None and not os.path.exists(pipe):
                    # the helper has gone: the tables after this one have no pipe
                    for rest in ordered[ordered.index(table) + 1 :]:
                        copy_errors.setdefault(str(rest), "no helper")
                    break
            code = helper.wait(timeout=HELPER_TIMEOUT)
        finally:
            if helper.poll() is None:
                helper.kill()
                helper.wait()
                seg.unblock()
    return HelperRun(code, seg.error_file.exists(), copy_errors, log.read_text(errors="replace"))


def backup_single_file(
    pg: Postgres,
    db: str,
    seg: Segment,
    tables: Sequence[Table],
    config: PluginConfig,
    env: dict[str, str],
) -> HelperRun:
    """gpbackup --single-data-file --no-compression --plugin-config on one segment, then
    the segment TOC stored with backup_file (utils/plugin.go BackupSegmentTOCs)."""
    run = _run_helper(
        pg, db, seg, "--backup-agent", config,
        ["--compression-level", "0", "--single-data-file"], tables,
        "COPY {table} TO PROGRAM '(test -p \"{pipe}\" || (echo \"Pipe not found {pipe}\">&2; "
        "exit 1)) && cat - > {pipe}' WITH CSV DELIMITER ','",
        env,
    )  # fmt: skip
    if run.ok:
        plugin(config, env, "backup_file", str(seg.toc))
    return run


def restore_single_file(
    pg: Postgres,
    db: str,
    seg: Segment,
    tables: Sequence[Table],
    config: PluginConfig,
    env: dict[str, str],
    filtered: bool = False,
) -> HelperRun:
    """gprestore of a single-data-file backup on one segment: the TOC fetched with
    restore_file (RestoreSegmentTOCs), then the helper and one COPY per table."""
    seg.toc.unlink(missing_ok=True)
    plugin(config, env, "restore_file", str(seg.toc))
    return _run_helper(
        pg, db, seg, "--restore-agent", config,
        ["--single-data-file", *(["--with-filters"] if filtered else [])], tables,
        "COPY {table} FROM PROGRAM 'cat {pipe} | cat -' WITH CSV DELIMITER ','",
        env,
    )  # fmt: skip


def backup_multi_file(
    pg: Postgres, db: str, seg: Segment, tables: Iterable[Table], config: PluginConfig
) -> None:
    """gpbackup's default (and --jobs) mode: one plugin process per table, run by COPY."""
    seg.prepare()
    for t in tables:
        pg.sql(
            db,
            f"COPY {t.fqn} TO PROGRAM 'gzip -c -1 | {config.executable} backup_data "
            f"{config.path} {seg.table_file(t.oid)}' WITH CSV DELIMITER ','",
        )


def restore_multi_file(
    pg: Postgres, db: str, seg: Segment, tables: Iterable[Table], config: PluginConfig
) -> None:
    for t in tables:
        pg.sql(
            db,
            f"COPY {t.fqn} FROM PROGRAM '{config.executable} restore_data {config.path} "
            f"{seg.table_file(t.oid)} | gzip -d -c' WITH CSV DELIMITER ','",
        )


# --- plugin commands and their log -------------------------------------------------------


def plugin(
    config: PluginConfig,
    env: dict[str, str],
    command: str,
    *args: str,
    stdin: bytes = b"",
    check: bool = True,
    executable: str | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """`<executablepath> COMMAND CONFIG ARGS...`, as gpbackup runs it on a host."""
    argv = [executable or config.executable, command, str(config.path), *args]
    proc = subprocess.run(argv, input=stdin, capture_output=True, env=env, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr!r}")
    return proc


@dataclass(frozen=True)
class PluginLog:
    """asyncplug's log directory: every command leaves one line (README "Logging")."""

    directory: Path

    def text(self) -> str:
        return "".join(p.read_text() for p in sorted(self.directory.glob("asyncplug_*.log")))

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.text(), re.MULTILINE))

    def wait_for(self, pattern: str, count: int, timeout: float = 60) -> None:
        """The helper does not wait for the restore plugin: wait for its log line."""
        deadline = time.monotonic() + timeout
        while self.count(pattern) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{count} log line(s) matching {pattern!r} never came:\n{self.text()}"
                )
            time.sleep(0.1)

    def offsets_files(self) -> list[Path]:
        """The offsets files the helper made for restore_data_subset (it never deletes them)."""
        found = re.findall(r"restore_data_subset \S+ \S+ (/tmp/gprestore_offsets_\d+)", self.text())
        return [Path(p) for p in found]
