"""Run the installed `asyncplug` executable the way gpbackup does: config file, pipes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXECUTABLE = str(Path(sys.executable).parent / "asyncplug")
TIMEOUT = 120


@dataclass
class Plugin:
    """`plugin("backup_data", key, stdin=b"...")` runs `asyncplug backup_data CONFIG key`."""

    config: str
    home: Path
    runtime_dir: str = ""  # where the client looks for a warm server (ASYNCPLUG_RUNTIME_DIR)
    clients: list[int] = field(default_factory=list)  # pids of the executables started

    @property
    def env(self) -> dict[str, str]:
        # HOME in tmp: errors before the config is read log to ~/gpAdminLogs.
        env = {**os.environ, "HOME": str(self.home)}
        if self.runtime_dir:
            env["ASYNCPLUG_RUNTIME_DIR"] = self.runtime_dir
        return env

    def __call__(
        self, command: str, *args: str, stdin: bytes = b"", check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        return self.raw(command, self.config, *args, stdin=stdin, check=check)

    def raw(
        self, *argv: str, stdin: bytes = b"", check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        """Any argv after the executable (no config inserted)."""
        with subprocess.Popen(
            [EXECUTABLE, *argv],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env,
        ) as child:  # fmt: skip
            self.clients.append(child.pid)
            try:
                out, err = child.communicate(stdin, timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                child.kill()
                raise
        proc = subprocess.CompletedProcess(child.args, child.returncode, out, err)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"asyncplug {' '.join(argv)} exited {proc.returncode}: {proc.stderr!r}"
            )
        return proc

    def popen(self, command: str, *args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        child = subprocess.Popen([EXECUTABLE, command, self.config, *args], env=self.env, **kwargs)
        self.clients.append(child.pid)
        return child

    def served(self, log_dir: Path) -> bool:
        """Whether some command logged from another process than the executables started
        (a warm server's worker); the log lines carry the pid of the process writing them."""
        pids = {
            int(m.group(1))
            for p in log_dir.glob("asyncplug_*.log")
            for m in re.finditer(r"^\d{8}:\S+ asyncplug:[^:]*:[^:]*:(\d+)-", p.read_text(), re.M)
        }
        return bool(pids - set(self.clients))


def make_plugin(
    options: dict[str, Any],
    write_config: Callable[..., str],
    tmp_path: Path,
    name: str = "plugin.yaml",
    runtime_dir: str = "",
) -> Plugin:
    """A config file (as gpbackup writes it) with the log kept in tmp."""
    if options.get("storage") == "file":
        Path(options["path"]).mkdir(parents=True, exist_ok=True)  # the mount point exists
    config = write_config({"log_dir": str(tmp_path / "logs"), **options}, name)
    return Plugin(config, tmp_path / "home", runtime_dir)


def one_line_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    """The stderr of a failed run: exactly one `asyncplug: ` line, no traceback."""
    assert proc.returncode != 0
    err = proc.stderr.decode()
    assert err.startswith("asyncplug: ") and err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    return err
