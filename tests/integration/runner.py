"""Run the installed `asyncplug` executable the way gpbackup does: config file, pipes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXECUTABLE = str(Path(sys.executable).parent / "asyncplug")
TIMEOUT = 120


@dataclass
class Plugin:
    """`plugin("backup_data", key, stdin=b"...")` runs `asyncplug backup_data CONFIG key`."""

    config: str
    home: Path

    @property
    def env(self) -> dict[str, str]:
        # HOME in tmp: errors before the config is read log to ~/gpAdminLogs.
        return {**os.environ, "HOME": str(self.home)}

    def __call__(
        self, command: str, *args: str, stdin: bytes = b"", check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        return self.raw(command, self.config, *args, stdin=stdin, check=check)

    def raw(
        self, *argv: str, stdin: bytes = b"", check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        """Any argv after the executable (no config inserted)."""
        proc = subprocess.run(
            [EXECUTABLE, *argv], input=stdin, capture_output=True, env=self.env, timeout=TIMEOUT
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"asyncplug {' '.join(argv)} exited {proc.returncode}: {proc.stderr!r}"
            )
        return proc

    def popen(self, command: str, *args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen([EXECUTABLE, command, self.config, *args], env=self.env, **kwargs)


def make_plugin(
    options: dict[str, Any],
    write_config: Callable[..., str],
    tmp_path: Path,
    name: str = "plugin.yaml",
) -> Plugin:
    """A config file (as gpbackup writes it) with the log kept in tmp."""
    if options.get("storage") == "file":
        Path(options["path"]).mkdir(parents=True, exist_ok=True)  # the mount point exists
    config = write_config({"log_dir": str(tmp_path / "logs"), **options}, name)
    return Plugin(config, tmp_path / "home")


def one_line_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    """The stderr of a failed run: exactly one `asyncplug: ` line, no traceback."""
    assert proc.returncode != 0
    err = proc.stderr.decode()
    assert err.startswith("asyncplug: ") and err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    return err
