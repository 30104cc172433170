"""bench/warm.py without a plugin: what a command through the warm server is charged."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bench import runner, streams, targets, warm
from bench.__main__ import parse_args, warm_line
from bench.procs import ChildRun
from bench.progress import PlainDisplay


def child(cpu_s: float, rss_kib: int, minflt: int = 0) -> ChildRun:
    return ChildRun(("x",), 0, 1.0, cpu_s, rss_kib, 0, 0, "", "", minflt=minflt)


def test_a_served_command_is_charged_its_workers_cpu_memory_and_faults() -> None:
    usage = warm.Usage(cpu_s=0.25, worker_peaks_kib=[40_000, 90_000], minflt=300)
    run = warm.with_usage(child(0.02, 10_000, minflt=900), usage)
    assert (run.cpu_s, run.warm_cpu_s) == (0.27, 0.25)
    assert run.maxrss_kib == 100_000 and run.minflt == 1200


def test_a_group_through_the_server_adds_the_workers_to_the_clients() -> None:
    usage = warm.Usage(cpu_s=1.5, worker_peaks_kib=[50_000, 70_000])
    group = streams.Group([child(0.1, 10_000), child(0.2, 12_000)], 3.0, warm=usage)
    assert group.cpu_s == 0.1 + 0.2 + 1.5
    assert group.rss_max_kib == 12_000 + 70_000  # the largest client and the largest worker
    assert group.rss_sum_kib == 22_000 + 120_000
    alone = streams.Group([child(0.1, 10_000)], 1.0)
    assert (alone.cpu_s, alone.rss_max_kib, alone.rss_sum_kib) == (0.1, 10_000, 10_000)


def test_the_server_and_its_children_are_read_from_proc(tmp_path: Path) -> None:
    """A stand-in server: a process with one child; its pid in a lock file as the server
    writes it."""
    code = "import subprocess, sys, time; subprocess.Popen(['sleep', '30']); time.sleep(30)"
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while not warm.children(parent.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        (worker,) = warm.children(parent.pid)
        (tmp_path / "x.lock").write_text(f"{parent.pid}\n")
        assert warm.server_pid(str(tmp_path)) == parent.pid and warm.alive(parent.pid)
        assert warm.server_cpu(parent.pid) > 0 and warm.server_faults(parent.pid) > 0
        warm.reset_peaks(parent.pid)
        (peak,) = warm.worker_peaks(parent.pid)
        assert peak > 0
        os.kill(worker, 9)
    finally:
        parent.kill()
        parent.wait()
    assert not warm.alive(parent.pid)
    assert warm.server_pid(str(tmp_path / "none")) == 0


def test_a_private_runtime_directory_is_the_users_alone() -> None:
    path = warm.private_runtime_dir()
    try:
        st = os.stat(path)
        assert st.st_uid == os.getuid() and st.st_mode & 0o777 == 0o700
        assert len(path) < 40  # a socket path under it stays within 108 bytes
    finally:
        os.rmdir(path)


def test_the_option_defaults_to_the_warm_server_and_says_so() -> None:
    assert parse_args([]).warm_server == "on"
    assert parse_args(["--warm-server", "off"]).warm_server == "off"
    assert "warm server off" in warm_line("off", None, 0)
    line = warm_line("on", 0.123, 4)
    assert "4 setup/cleanup at segment_host scope" in line and "0.12 CPU s" in line


def test_every_command_of_a_run_gets_its_own_socket_directory(tmp_path: Path) -> None:
    target = targets.directory(str(tmp_path / "d"))
    plugin = runner.Executable("asyncplug", "/bin/true")
    run = runner.Runner(target, plugin, [], [], [], str(tmp_path), PlainDisplay())
    directory = run.env()["ASYNCPLUG_RUNTIME_DIR"]
    assert run.env()["ASYNCPLUG_RUNTIME_DIR"] == directory and os.path.isdir(directory)
    with run.session("backup") as session:  # the warm server off: no setup, no server
        assert session is None
    run.warm_server = True
    with run.session("") as session:  # not asyncplug's command
        assert session is None
    run.close()
    assert not os.path.exists(directory)
