"""gpbackup's own plugin test bench, run as it is: ../shared/tools/plugin_test_commands.sh
(plugins/plugin_test.sh up to the part that needs a Greenplum cluster), against asyncplug
on S3 and on a directory.

The script runs its restore_data_subset section only for an executable whose path ends
in `gpbackup_ddboost_plugin`: a symlink of that name runs it here. Its replication
sections need configs named `*ddboost_config*.yaml`, which these are not. It writes under
/tmp/testseg; what a run adds there is removed after it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.gpbackup import PLUGIN_TEST_BENCH, PluginConfig
from tests.integration.runner import EXECUTABLE

TESTSEG = Path("/tmp/testseg/backups")
LAST_LINE = "# official command part: all PASSED"
SUBSET_PASSED = [
    "[PASSED] restore_data_subset with small data",
    "[PASSED] restore_data_subset of one partition from large data",
    "[PASSED] restore_data_subset of two partitions from large data",
]


def backup_dirs() -> set[Path]:
    return set(TESTSEG.glob("*/*")) if TESTSEG.is_dir() else set()


@pytest.fixture
def testseg() -> Iterator[None]:
    """Remove the backup directories the script made under /tmp/testseg (others' stay)."""
    before = backup_dirs()
    yield
    for made in backup_dirs() - before:
        shutil.rmtree(made, ignore_errors=True)
        with_date = made.parent
        if with_date.is_dir() and not any(with_date.iterdir()):
            with_date.rmdir()


@pytest.mark.parametrize("backend", ["s3", "file"])
def test_gpbackup_plugin_test_bench(
    request: pytest.FixtureRequest, tmp_path: Path, testseg: None, backend: str
) -> None:
    options: dict[str, Any]
    if backend == "s3":
        seaweed, bucket = (request.getfixturevalue(f) for f in ("seaweed", "bucket"))
        options = {**seaweed.plugin_options(bucket, "prod/cluster1"), "max_retries": 5}
    else:
        (tmp_path / "store").mkdir()
        options = {"storage": "file", "path": str(tmp_path / "store"), "folder": "prod/cluster1"}
    config = PluginConfig.write(
        EXECUTABLE, {**options, "log_dir": str(tmp_path / "logs")}, f"asyncplug_{backend}.yaml"
    )
    link = tmp_path / "gpbackup_ddboost_plugin"  # runs the restore_data_subset section
    link.symlink_to(EXECUTABLE)
    try:
        proc = subprocess.run(
            ["bash", str(PLUGIN_TEST_BENCH), str(link), str(config.path)],
            capture_output=True, stdin=subprocess.DEVNULL, timeout=600,
            env=_env(tmp_path),
        )  # fmt: skip
    finally:
        config.remove()
    output = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode == 0, output
    lines = output.splitlines()
    assert lines[-1] == LAST_LINE, output
    echoed = re.compile(  # the script echoes its first restore_data_subset command
        rf"{re.escape(str(link))} restore_data_subset {re.escape(str(config.path))} "
        r"/tmp/testseg/\S+ /tmp/testseg/\S+/offsets"
    )
    for line in lines:
        assert line.startswith(("[RUNNING] ", "[PASSED] ", "[PASSED - CLEANUP] ", "# ")) or (
            echoed.fullmatch(line)
        ), f"unexpected line {line!r} in:\n{output}"
    for passed in SUBSET_PASSED:
        assert passed in lines


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(tmp_path / "home")}
