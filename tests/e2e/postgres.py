"""A real PostgreSQL for the end-to-end tests, on a Unix socket only (no TCP at all).

The server comes from the test extras (PyPI `pgserver`, PostgreSQL 16 binaries), or
else from the distribution's packages. PostgreSQL refuses to run as root, and CI runs
as root: then the server runs as `nobody`, and so do the programs its `COPY ... PROGRAM`
starts (gpbackup runs all of it as gpadmin). That user must reach the interpreter, the
project and the binaries: `grant_traverse` adds the search bit for others where a
directory on the way lacks it (pyenv's interpreter lives under /root), and puts every
mode back at the end of the session.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import signal
import stat
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

UNPRIVILEGED = "nobody"
TIMEOUT = 120  # seconds for one SQL command (a COPY of the several-MB table included)


def postgres_bindir() -> Path:
    """The bin directory of pgserver's PostgreSQL, else of the distribution's newest."""
    spec = importlib.util.find_spec("pgserver")  # found, not imported: it has side effects
    if spec is not None and spec.submodule_search_locations:
        bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (bindir / "postgres").exists():
            return bindir
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_version)
    if found:
        return Path(found[-1]).parent
    raise RuntimeError("PostgreSQL not found: install the test extras (pip install -e '.[test]')")


def _version(path: str) -> tuple[int, ...]:
    return tuple(int(p) for p in Path(path).parts[-3].split(".") if p.isdigit())


@dataclass(frozen=True)
class RunAs:
    """Who runs the server and the programs it starts: this user, or nobody under root."""

    uid: int
    gid: int
    home: Path

    @classmethod
    def server_user(cls, home: Path) -> RunAs:
        if os.geteuid() != 0:
            return cls(os.getuid(), os.getgid(), home)
        entry = pwd.getpwnam(UNPRIVILEGED)
        return cls(entry.pw_uid, entry.pw_gid, home)

    @property
    def switches(self) -> bool:
        return self.uid != os.getuid()

    def popen_args(self) -> dict[str, Any]:
        if not self.switches:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def own(self, *paths: Path) -> None:
        for path in paths:
            path.mkdir(parents=True, exist_ok=True)
            if self.switches:
                os.chown(path, self.uid, self.gid)


@dataclass
class Traverse:
    """Search (x) bits for others added on the way to some paths, and put back after."""

    changed: list[tuple[Path, int]] = field(default_factory=list)

    def grant(self, targets: Iterable[Path]) -> None:
        for target in targets:
            for directory in reversed([target, *target.parents]):
                if not directory.is_dir():
                    continue
                mode = stat.S_IMODE(directory.stat().st_mode)
                if not mode & stat.S_IXOTH:
                    os.chmod(directory, mode | stat.S_IXOTH)
                    self.changed.append((directory, mode))

    def restore(self) -> None:
        while self.changed:
            directory, mode = self.changed.pop()
            with contextlib.suppress(OSError):
                os.chmod(directory, mode)


class PostgresError(AssertionError):
    pass


@dataclass
class Postgres:
    """`with Postgres(root) as pg:` a running server; `pg.sql(db, "...")` runs SQL."""

    root: Path
    bindir: Path = field(default_factory=postgres_bindir)
    user: RunAs | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def env(self) -> dict[str, str]:
        """The server's environment, which COPY ... PROGRAM passes on to the programs."""
        assert self.user is not None
        keep = ("PATH", "LANG", "TZ", "AWS_EC2_METADATA_DISABLED")
        env = {k: v for k, v in os.environ.items() if k in keep}
        return {**env, "HOME": str(self.user.home), "LC_ALL": "C.UTF-8"}

    def start(self) -> Postgres:
        self.user = RunAs.server_user(self.root / "home")
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        self.user.own(self.root / "home", self.socket_dir)
        if self.user.switches:
            os.chown(self.root, self.user.uid, self.user.gid)
        self._run_as_server(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
        )  # fmt: skip
        settings = {
            "listen_addresses": "",  # the Unix socket only
            "unix_socket_directories": str(self.socket_dir),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "32MB",
            "max_connections": "20",
            "TimeZone": "UTC",
        }
        args = [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data), *args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env(), start_new_session=True, **self.user.popen_args(),
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited at start:\n{self.log.read_text()}")
            probe = self.psql("postgres", "SELECT 1", check=False)
            if probe.returncode == 0:
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"PostgreSQL did not start in 60 s:\n{self.log.read_text()}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # fast shutdown: cancels the sessions
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run_as_server(self, *argv: str) -> None:
        assert self.user is not None
        proc = subprocess.run(
            argv, capture_output=True, env=self.env(), timeout=TIMEOUT, **self.user.popen_args()
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {proc.stderr.decode(errors='replace')}")

    def psql(
        self, db: str, sql: str, check: bool = True, timeout: float = TIMEOUT
    ) -> subprocess.CompletedProcess[bytes]:
        """Run SQL as the superuser; stdout is raw (COPY ... TO STDOUT gives the bytes)."""
        proc = subprocess.run(
            [
                str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                "-h", str(self.socket_dir), "-U", "postgres", "-d", db, "-c", sql,
            ],
            capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise PostgresError(f"{sql[:300]}\n-> {proc.stderr.decode(errors='replace')}")
        return proc

    def sql(self, db: str, sql: str) -> None:
        self.psql(db, sql)

    def rows(self, db: str, query: str) -> list[list[str]]:
        """Rows of a query as text fields (tab-separated unaligned psql output)."""
        out = self.psql(db, f"COPY ({query}) TO STDOUT").stdout.decode()
        return [line.split("\t") for line in out.splitlines()]


def reachable(user: RunAs, argv: Sequence[str], env: dict[str, str]) -> str:
    """What `argv` prints as `user` (empty when it cannot run): a check before a session."""
    try:
        proc = subprocess.run(argv, capture_output=True, env=env, timeout=60, **user.popen_args())
    except OSError as exc:
        return f"cannot run {argv[0]}: {exc}"
    return (proc.stdout + proc.stderr).decode(errors="replace")


@contextlib.contextmanager
def server(root: Path, reach: Iterable[Path]) -> Iterator[Postgres]:
    """A started server whose user can reach `reach` (searched dirs are put back after)."""
    traverse = Traverse()
    try:
        if os.geteuid() == 0:
            traverse.grant(reach)
        with Postgres(root) as pg:
            yield pg
    finally:
        traverse.restore()
