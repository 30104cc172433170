"""SIGTERM, SIGINT and SIGHUP end the installed executable within seconds whatever it is
doing (README "Exit codes"; asyncplug/signals.py): blocked on stdin, blocked on a full
stdout, waiting on a server that never answers, or stuck in a busy loop that never gives
the event loop back. Each ends with exit 9 and the one documented line."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncplug.errors import Interrupted, ObjectNotFound
from asyncplug.signals import GRACE
from bench.seaweed import SeaweedServer
from tests.conftest import s3_options
from tests.integration.runner import Plugin, make_plugin

TS = "20250101123456"
SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]
# The promise is 5 s (GRACE plus the exit); the bound here leaves room for a busy machine.
BOUND = GRACE + 8


def data_key(root: Path) -> str:
    path = root / "seg0" / "backups" / TS[:8] / TS / f"gpbackup_0_{TS}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


@pytest.fixture
def s3_plugin(
    seaweed: SeaweedServer, bucket: str, write_config: Callable[..., str], tmp_path: Path
) -> Plugin:
    return make_plugin(s3_options(seaweed, bucket), write_config, tmp_path)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def interrupt(proc: subprocess.Popen[bytes], sig: signal.Signals) -> tuple[int, str]:
    """Send sig; the exit status and stderr, failing if the process outlives BOUND."""
    assert proc.stderr is not None
    proc.send_signal(sig)
    try:
        code = proc.wait(timeout=BOUND)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        proc.stderr.close()
        raise AssertionError(f"still running {BOUND} s after {sig.name}") from None
    with proc.stderr:
        return code, proc.stderr.read().decode()


def pipe_full(fd: int) -> bool:
    """Within a page of the pipe's capacity (writes not page-aligned leave page ends free)."""
    waiting = int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)
    return waiting > fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) - 4096


def unfinished_uploads(seaweed: SeaweedServer, bucket: str) -> list[str]:
    response = seaweed.client().list_multipart_uploads(Bucket=bucket)
    return [u["Key"] for u in response.get("Uploads", [])]


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_backup_blocked_on_stdin_aborts_its_upload(
    s3_plugin: Plugin, seaweed: SeaweedServer, bucket: str, tmp_path: Path, sig: signal.Signals
) -> None:
    """gpbackup keeps the pipe open and sends nothing: the read blocks in a thread."""
    key = data_key(tmp_path)
    proc = s3_plugin.popen("backup_data", key, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        proc.stdin.write(os.urandom(17 * 2**20))  # two 8 MiB parts: a multipart upload
        proc.stdin.flush()
        wait_until(lambda: unfinished_uploads(seaweed, bucket) != [], "the multipart upload")
        code, err = interrupt(proc, sig)
    finally:
        proc.stdin.close()
    assert code == Interrupted.exit_code
    assert err == f"asyncplug: backup_data interrupted by {sig.name}; nothing was stored\n"
    assert unfinished_uploads(seaweed, bucket) == []  # the abort path ran
    assert s3_plugin("restore_data", key, check=False).returncode == ObjectNotFound.exit_code


@pytest.mark.parametrize("splice", ["on", "off"])
def test_restore_blocked_on_a_full_stdout(
    seaweed: SeaweedServer,
    bucket: str,
    write_config: Callable[..., str],
    tmp_path: Path,
    splice: str,
) -> None:
    """The reader never reads: the write to stdout blocks (splice and regular paths)."""
    options = s3_options(seaweed, bucket, restore_splice=splice)
    plugin = make_plugin(options, write_config, tmp_path)
    key = data_key(tmp_path)
    plugin("backup_data", key, stdin=os.urandom(24 * 2**20))
    proc = plugin.popen("restore_data", key, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    out = proc.stdout.fileno()

    try:
        wait_until(lambda: pipe_full(out), "a full stdout pipe")
        time.sleep(0.2)  # the plugin is now blocked in its write (or splice)
        code, err = interrupt(proc, signal.SIGTERM)
    finally:
        proc.stdout.close()
    assert code == Interrupted.exit_code
    assert err == "asyncplug: restore_data interrupted by SIGTERM; the output is incomplete\n"


class SilentServer:
    """Accepts connections on 127.0.0.1, reads what comes and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self._conns.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self.sock.close()
        for conn in self._conns:
            conn.close()
        self._thread.join(timeout=5)


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_backup_waiting_on_a_server_that_never_answers(
    silent: SilentServer, write_config: Callable[..., str], tmp_path: Path, sig: signal.Signals
) -> None:
    options = {
        "endpoint": f"http://127.0.0.1:{silent.port}",
        "encryption": "off",
        "bucket": "stalled",
        "folder": "prod/cluster1",
        "aws_access_key_id": "k",
        "aws_secret_access_key": "s",
    }
    plugin = make_plugin(options, write_config, tmp_path)
    proc = plugin.popen(
        "backup_data", data_key(tmp_path), stdin=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdin is not None
    try:
        proc.stdin.write(b"a small table\n")
        proc.stdin.close()  # one PUT, whose response never comes (request_timeout: 120 s)
        assert silent.accepted.wait(60)
        code, err = interrupt(proc, sig)
    finally:
        proc.stdin.close()
    assert code == Interrupted.exit_code
    assert err == f"asyncplug: backup_data interrupted by {sig.name}; nothing was stored\n"


# A command stuck in a busy loop on the event loop (as a parser bug could leave it):
# the loop never runs a signal handler again. Injected here, in a wrapper around the
# real entry point, rather than through a hook in the plugin.
STUCK = """
import sys
from asyncplug import cli, commands

async def backup_data(config, data_key, fd=0):
    sys.stdin.buffer.read(1)
    print("stuck", file=sys.stderr, flush=True)
    while True:
        pass

commands.backup_data = backup_data
sys.exit(cli.main())
"""


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_a_busy_loop_does_not_keep_the_process_alive(
    write_config: Callable[..., str], tmp_path: Path, sig: signal.Signals
) -> None:
    options: dict[str, Any] = {"storage": "file", "path": str(tmp_path), "folder": "f"}
    plugin = make_plugin(options, write_config, tmp_path)
    argv = [sys.executable, "-c", STUCK, "backup_data", plugin.config, data_key(tmp_path)]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=plugin.env, cwd=os.getcwd()
    )
    assert proc.stdin is not None and proc.stderr is not None
    try:
        proc.stdin.write(b"x")
        proc.stdin.flush()
        assert proc.stderr.readline() == b"stuck\n"
        code, err = interrupt(proc, sig)
    finally:
        proc.stdin.close()
    assert code == Interrupted.exit_code
    assert err == f"asyncplug: backup_data interrupted by {sig.name}; nothing was stored\n"
    log = next((tmp_path / "logs").glob("asyncplug_*.log")).read_text()
    assert "did not stop within" in log


def test_a_signal_before_the_command_runs(write_config: Callable[..., str], tmp_path: Path) -> None:
    """While the config is read (here: a config path that is a FIFO nobody writes)."""
    fifo = tmp_path / "plugin.yaml"
    os.mkfifo(fifo)
    plugin = Plugin(str(fifo), tmp_path / "home")
    proc = plugin.popen("list_directory", stderr=subprocess.PIPE)
    writer = -1

    def opened() -> bool:  # ENXIO until the plugin has the FIFO open for reading
        nonlocal writer
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return False
        return True

    try:
        wait_until(opened, "the plugin to open its config")
        code, err = interrupt(proc, signal.SIGTERM)  # it waits for the config's bytes
    finally:
        if writer >= 0:
            os.close(writer)
    assert code == Interrupted.exit_code
    assert err == "asyncplug: list_directory interrupted by SIGTERM; the listing is incomplete\n"


def test_listing_blocked_on_a_full_stdout(write_config: Callable[..., str], tmp_path: Path) -> None:
    """list_directory writes on the event loop's thread: a full pipe blocks the loop
    itself, so only the watcher can end it."""
    store = tmp_path / "store"
    where = store / "f" / "backups" / TS[:8] / TS
    where.mkdir(parents=True)
    for i in range(4000):  # about 200 KB of listing: more than the pipe holds
        (where / f"gpbackup_{i}_{TS}").write_bytes(b"x")
    options: dict[str, Any] = {"storage": "file", "path": str(store), "folder": "f"}
    plugin = make_plugin(options, write_config, tmp_path)
    proc = plugin.popen("list_directory", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    out = proc.stdout.fileno()

    try:
        wait_until(lambda: pipe_full(out), "a full stdout pipe")
        code, err = interrupt(proc, signal.SIGTERM)
    finally:
        proc.stdout.close()
    assert code == Interrupted.exit_code
    assert err == "asyncplug: list_directory interrupted by SIGTERM; the listing is incomplete\n"
