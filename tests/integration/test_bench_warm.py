"""bench/warm.py with the real executable: a session as gpbackup runs one on a host."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import warm
from bench.procs import run_child
from bench.verify import digest_file
from tests.conftest import s3_options

PLUGIN = str(Path(sys.executable).parent / "asyncplug")
MiB = 2**20
STAMP = "20250101123456"


@pytest.fixture
def runtime_dir() -> Iterator[str]:
    path = warm.private_runtime_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)  # a killed server leaves its socket and lock


def setting(tmp_path: Path, runtime_dir: str) -> tuple[dict[str, str], str, str]:
    env = {**os.environ, "ASYNCPLUG_RUNTIME_DIR": runtime_dir}
    local = tmp_path / "seg0" / "backups" / STAMP[:8] / STAMP
    return env, str(local), f"{local}/gpbackup_0_{STAMP}"


def test_a_session_serves_charges_the_workers_and_keeps_buffers_between_backups(
    seaweed: Any, bucket: str, write_config: Any, tmp_path: Path, runtime_dir: str
) -> None:
    config = write_config(s3_options(seaweed, bucket, log_dir=str(tmp_path / "log")))
    source = tmp_path / "data"
    source.write_bytes(os.urandom(24 * MiB))  # three 8 MiB parts
    env, local, key = setting(tmp_path, runtime_dir)
    runs = []
    with warm.Session(PLUGIN, config, env, local) as session:
        assert session.start_cpu_s > 0 and warm.alive(session.pid)
        for _ in range(2):
            with session.usage() as usage:
                run = run_child([PLUGIN, "backup_data", config, key], stdin_file=str(source),
                                env=env)  # fmt: skip
            assert run.ok, run.failure()
            runs.append(warm.with_usage(run, usage))
            assert max(usage.worker_peaks_kib) >= 24 * 1024  # the worker held the buffers
        with session.usage() as usage:
            restore = run_child([PLUGIN, "restore_data", config, key], drain_stdout=True,
                                env=env)  # fmt: skip
        assert restore.ok and restore.digest == digest_file(str(source))[0]
    assert not warm.alive(session.pid)  # cleanup stopped it
    first, second = runs
    assert first.warm_cpu_s > 0 and second.warm_cpu_s > 0 and first.cpu_s > first.warm_cpu_s
    # The second backup reused the first's 24 MiB of buffers: 6144 pages not faulted again.
    assert second.minflt < first.minflt - 5000, (first.minflt, second.minflt)


def test_a_server_gone_during_a_measured_command_fails_the_measure(
    seaweed: Any, bucket: str, write_config: Any, tmp_path: Path, runtime_dir: str
) -> None:
    config = write_config(s3_options(seaweed, bucket, log_dir=str(tmp_path / "log")))
    env, local, key = setting(tmp_path, runtime_dir)
    with (
        warm.Session(PLUGIN, config, env, local) as session,
        pytest.raises(RuntimeError, match="stopped during a measured command"),
        session.usage(),
    ):
        os.kill(session.pid, signal.SIGKILL)
        run = run_child([PLUGIN, "restore_data", config, key], drain_stdout=True, env=env)
        assert not run.ok  # no such backup; it ran in its own process


def test_setup_with_the_warm_server_off_is_refused(
    seaweed: Any, bucket: str, write_config: Any, tmp_path: Path, runtime_dir: str
) -> None:
    config = write_config(s3_options(seaweed, bucket, warm_server="off"))
    env, local, _ = setting(tmp_path, runtime_dir)
    with (
        pytest.raises(RuntimeError, match="started no warm server"),
        warm.Session(PLUGIN, config, env, local, "restore"),
    ):
        pass
