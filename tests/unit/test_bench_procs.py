"""The child runner: piped stream in and out, rusage of the child alone."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.procs import run_child
from bench.verify import digest_file

MiB = 1024 * 1024


def test_cpu_and_peak_rss_are_the_childs(tmp_path: Path) -> None:
    """A child touching 160 MiB and burning 0.3 s of CPU reports both, not the bench's."""
    script = (
        "import time\n"
        "block = bytearray(160 * 2**20)\n"
        "block[::4096] = b'x' * len(block[::4096])\n"
        "while time.process_time() < 0.3:\n"
        "    pass\n"
    )
    run = run_child([sys.executable, "-c", script])
    assert run.ok
    assert run.cpu_s >= 0.3
    assert 160 * 1024 <= run.maxrss_kib < 400 * 1024


def test_a_small_child_does_not_inherit_the_bench_rss() -> None:
    ballast = bytearray(300 * MiB)
    ballast[::4096] = b"x" * len(ballast[::4096])
    run = run_child(["true"])
    assert run.ok
    assert run.maxrss_kib < 64 * 1024  # the launcher and `true`, not our 300 MiB
    del ballast


def test_stdin_is_fed_and_stdout_hashed(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(bytes(range(256)) * 20_000)
    run = run_child(["cat"], stdin_file=str(source), drain_stdout=True)
    assert run.ok
    assert run.bytes_in == run.bytes_out == source.stat().st_size
    assert run.digest == digest_file(str(source))[0]


def test_a_failing_child_reports_its_status_and_last_stderr_line(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(b"y" * (4 * MiB))  # more than a pipe holds: the child never reads it
    script = (
        "import sys; print('first', file=sys.stderr); print('broken', file=sys.stderr); sys.exit(5)"
    )
    run = run_child([sys.executable, "-c", script], stdin_file=str(source))
    assert run.returncode == 5 and not run.ok
    assert run.failure().endswith("exited 5: broken")


def test_a_missing_command_is_a_failure_not_an_exception() -> None:
    run = run_child(["/nonexistent/asyncplug"])
    assert run.returncode == 127
    assert "cannot start" in run.failure()


def test_digest_file_of_ranges(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"0123456789")
    assert digest_file(str(path), [(3, 5), (0, 1)])[1] == 3
    whole = tmp_path / "whole"
    whole.write_bytes(b"340")
    assert digest_file(str(path), [(3, 5), (0, 1)])[0] == digest_file(str(whole))[0]


def test_the_first_byte_out_is_timed_from_the_start() -> None:
    script = "import time, sys; time.sleep(0.3); sys.stdout.write('x' * 100)"
    run = run_child([sys.executable, "-c", script], drain_stdout=True)
    assert run.ok and run.bytes_out == 100
    assert run.first_byte_s is not None and 0.3 <= run.first_byte_s <= run.wall_s + 0.5
    assert run_child(["true"], drain_stdout=True).first_byte_s is None
