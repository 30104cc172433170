"""The warm server imports before it forks whatever the S3 commands import: a module a
worker imports is paid again by every worker (server.PRELOAD, server.warm_up)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import s3_options

# In a process that warmed up as the server does, each command runs in a fork (a worker)
# with its stdout on a pipe, as gpbackup gives it; each prints what it imported.
SCRIPT = r"""
import os, sys
from asyncplug import server
server.warm_up()
before = set(sys.modules)
from asyncplug import cli
config, key, data, offsets = sys.argv[1:]


def run(argv, stdin=None):
    pid = os.fork()
    if pid == 0:
        if stdin:
            os.dup2(os.open(stdin, os.O_RDONLY), 0)
        r, w = os.pipe()
        if os.fork() == 0:
            os.close(w)
            while os.read(r, 1 << 20):
                pass
            os._exit(0)
        os.dup2(w, 1)
        os.close(w)
        os.close(r)
        code = cli.main(argv)
        print(argv[0], code, *sorted(set(sys.modules) - before), file=sys.stderr)
        os._exit(0)
    os.waitpid(pid, 0)


run(["backup_data", config, key], data)
run(["restore_data", config, key])
run(["restore_data_subset", config, key, offsets])
"""


def test_a_worker_imports_nothing_for_s3_backups_and_restores(
    seaweed: Any, bucket: str, write_config: Any, tmp_path: Path
) -> None:
    config = write_config(s3_options(seaweed, bucket, log_dir=str(tmp_path / "log")))
    data = tmp_path / "data"
    data.write_bytes(os.urandom(20 * 2**20))  # multipart, and the splice path on restore
    offsets = tmp_path / "offsets"
    offsets.write_text("2 0 100 5000000 5000100\n")
    key = f"{tmp_path}/backups/20250101/20250101123456/gpbackup_0_20250101123456"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, config, key, str(data), str(offsets)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = proc.stderr.splitlines()
    assert lines == ["backup_data 0", "restore_data 0", "restore_data_subset 0"], proc.stderr
