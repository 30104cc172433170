"""Fixtures of the end-to-end tests: the real gpbackup_helper and Go plugin from
../shared/tools (skipped, with the reason, on a machine without them), one PostgreSQL
for the session holding the awkward tables, and plugin configs as gpbackup writes them.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import asyncplug
from tests.e2e import dataset
from tests.e2e.dataset import Table
from tests.e2e.gpbackup import (
    MISSING_TOOLS,
    PluginConfig,
    PluginLog,
    Segment,
    tools_present,
)
from tests.e2e.postgres import Postgres, postgres_bindir, reachable, server
from tests.integration.runner import EXECUTABLE

_numbers = itertools.count(1)


@pytest.fixture(scope="session", autouse=True)
def gp_tools() -> None:
    if not tools_present():
        pytest.skip(MISSING_TOOLS)


@pytest.fixture(scope="session")
def e2e_root() -> Iterator[Path]:
    """A directory every user can traverse (pytest's own tmp is private to root)."""
    root = Path(tempfile.mkdtemp(prefix="asyncplug-e2e-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(e2e_root: Path) -> Iterator[Postgres]:
    reach = [
        Path(sys.executable).resolve(),
        Path(EXECUTABLE),
        Path(sysconfig.get_paths()["purelib"]),
        Path(sys.base_prefix).resolve() / "lib",
        Path(asyncplug.__file__).resolve().parent,
        postgres_bindir().parent,
    ]
    with server(e2e_root / "pg", reach) as pg:
        assert pg.user is not None
        seen = reachable(pg.user, [EXECUTABLE, "--version"], pg.env())
        if "asyncplug version" not in seen:
            pytest.fail(f"the server's user cannot run {EXECUTABLE}: {seen}")
        yield pg


@dataclass
class Lab:
    """The session's server with the source database, and what a test needs around it."""

    pg: Postgres
    root: Path
    tables: list[Table]
    digests: dict[str, str]
    env: dict[str, str]
    configs: list[PluginConfig] = field(default_factory=list)
    logs: list[PluginLog] = field(default_factory=list)

    def table(self, name: str) -> Table:
        return next(t for t in self.tables if str(t) == name)

    def new_db(self) -> str:
        """A fresh database with the tables, empty (a restore target)."""
        name = f"restore_{next(_numbers)}"
        self.pg.sql("postgres", f"CREATE DATABASE {name} TEMPLATE ddl")
        return name

    def segment(self, name: str) -> Segment:
        """Segment 0 of a new backup (its own timestamp) under the lab's root."""
        seq = next(_numbers)
        return Segment(self.root / f"{name}-{seq}" / "seg0", f"2025010112{seq:04d}")

    def directory(self, name: str, owner_is_server: bool = False) -> Path:
        path = self.root / f"{name}-{next(_numbers)}"
        path.mkdir(mode=0o755)
        if owner_is_server:
            assert self.pg.user is not None
            self.pg.user.own(path)
        return path

    def config(
        self, options: dict[str, Any], name: str = "asyncplug.yaml", **extra: Any
    ) -> tuple[PluginConfig, PluginLog]:
        """A gpbackup-style config for asyncplug with its own log directory."""
        logs = self.directory("logs", owner_is_server=True)
        config = PluginConfig.write(EXECUTABLE, {**options, "log_dir": logs, **extra}, name)
        self.configs.append(config)
        self.logs.append(PluginLog(logs))
        return config, self.logs[-1]

    def digest(self, db: str, table: Table) -> str:
        data = self.pg.psql(db, f"COPY (SELECT * FROM {table.fqn} ORDER BY id) TO STDOUT")
        return hashlib.md5(data.stdout).hexdigest()

    def row_count(self, db: str, table: Table) -> int:
        return int(self.pg.rows(db, f"SELECT count(*) FROM {table.fqn}")[0][0])

    def assert_restored(self, db: str, names: list[str] | None = None) -> None:
        """The named tables (all by default) equal the source; the others are empty."""
        wanted = [str(t) for t in self.tables] if names is None else names
        for table in self.tables:
            if str(table) in wanted:
                assert self.digest(db, table) == self.digests[str(table)], f"{table} differs"
            else:
                assert self.row_count(db, table) == 0, f"{table} was not selected"


@pytest.fixture(scope="session")
def lab_session(postgres: Postgres, e2e_root: Path) -> Lab:
    postgres.sql("postgres", "CREATE DATABASE ddl")
    postgres.sql("ddl", dataset.DDL)
    postgres.sql("postgres", "CREATE DATABASE src TEMPLATE ddl")
    postgres.sql("src", dataset.DATA)
    oids = {
        f"{schema}.{name}": int(oid)
        for schema, name, oid in postgres.rows(
            "src",
            "SELECT n.nspname, c.relname, c.oid FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
            "AND n.nspname IN ('public', 'Sales Data')",
        )
    }
    tables = [Table(t.schema, t.name, oids[str(t)]) for t in dataset.TABLES]
    assert max(tables, key=lambda t: t.oid).name == "big_table"
    home = e2e_root / "home"
    home.mkdir()
    env = {**_plain_env(), "HOME": str(home)}
    lab = Lab(postgres, e2e_root, tables, {}, env)
    lab.digests = {str(t): lab.digest("src", t) for t in tables}
    return lab


@pytest.fixture
def lab(lab_session: Lab) -> Iterator[Lab]:
    yield lab_session
    while lab_session.configs:
        lab_session.configs.pop().remove()
    # The helper leaves its offsets files in /tmp; the runs without a log_dir log at home.
    home_log = PluginLog(Path(lab_session.env["HOME"]) / "gpAdminLogs")
    for log in [*lab_session.logs, home_log]:
        for offsets in log.offsets_files():
            offsets.unlink(missing_ok=True)
    lab_session.logs.clear()


@pytest.fixture
def e2e_options(request: pytest.FixtureRequest, lab: Lab) -> Callable[[str], dict[str, Any]]:
    """e2e_options(backend): S3 (a fresh bucket) or a directory every user can write."""

    def make(backend: str) -> dict[str, Any]:
        if backend == "s3":
            seaweed = request.getfixturevalue("seaweed")
            bucket = request.getfixturevalue("bucket")
            return {**seaweed.plugin_options(bucket, "prod/cluster1"), "max_retries": 5}
        store = lab.directory("store", owner_is_server=True)
        return {"storage": "file", "path": str(store), "folder": "prod/cluster1"}

    return make


def _plain_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
