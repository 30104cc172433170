"""The warm server (asyncplug/server.py) under faults: its lifecycle, a stale socket, a
server or a client killed mid-request, another user, a changed install. The commands
themselves run both ways in test_commands.py and tests/unit/test_cli.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncplug import client, server
from asyncplug.config import build_config
from asyncplug.errors import Interrupted, ObjectNotFound
from asyncplug.keys import backup_prefix
from tests.conftest import file_options, s3_options
from tests.integration.runner import EXECUTABLE, Plugin, make_plugin
from tests.integration.test_commands import FOLDER, TS, backup_dir, count_unfinished, data_file
from tests.server_support import private_dir, wait_until

NOBODY = 65534


@pytest.fixture
def runtime() -> Iterator[str]:
    """A private runtime directory; whatever server runs there is stopped afterwards."""
    directory = private_dir()
    yield directory
    pid = client.control(client.PING, socket_in(directory))
    server.stop(socket_in(directory))
    if pid:
        wait_until(lambda: not alive(pid))
    shutil.rmtree(directory, ignore_errors=True)


def socket_in(directory: str) -> str:
    return os.path.join(directory, os.path.basename(client.socket_path()))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def file_plugin(
    write_config: Callable[..., str], tmp_path: Path, runtime: str, **extra: Any
) -> Plugin:
    options = file_options(tmp_path / "store", **extra)
    return make_plugin(options, write_config, tmp_path, runtime_dir=runtime)


def held_elsewhere(link: str, besides: set[int]) -> bool:
    """Whether a process not in `besides` has an fd that is `link` (e.g. "pipe:[123]")."""
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        with contextlib.suppress(OSError):
            if int(fd.parts[2]) not in besides and os.readlink(fd) == link:
                return True
    return False


def logged_by_worker(plugin: Plugin, tmp_path: Path) -> bool:
    return plugin.served(tmp_path / "logs")


# --- lifecycle ------------------------------------------------------------------------


def test_setup_starts_it_and_cleanup_stops_it(
    write_config: Callable[..., str], tmp_path: Path, runtime: str
) -> None:
    plugin = file_plugin(write_config, tmp_path, runtime)
    where = str(backup_dir(tmp_path))
    plugin("setup_plugin_for_backup", where, "coordinator", '"-1"')
    assert client.control(client.PING, socket_in(runtime)) is None  # once per segment host
    plugin("setup_plugin_for_backup", where, "segment_host")
    pid = client.control(client.PING, socket_in(runtime))
    assert pid is not None and alive(pid)
    for path in (runtime, socket_in(runtime)):  # nobody else may enter or connect
        assert not os.stat(path).st_mode & 0o077
    key = data_file(tmp_path)
    plugin("backup_data", key, stdin=b"one small table\n")
    assert plugin("restore_data", key).stdout == b"one small table\n"
    assert logged_by_worker(plugin, tmp_path)
    plugin("setup_plugin_for_restore", where, "segment_host")  # one server, not two
    assert client.control(client.PING, socket_in(runtime)) == pid
    plugin("cleanup_plugin_for_backup", where, "segment_host")
    assert wait_until(lambda: not alive(pid)), "cleanup did not stop the server"
    assert not os.path.exists(socket_in(runtime))
    plugin.clients.clear()
    (tmp_path / "logs").rename(tmp_path / "logs-served")
    assert plugin("restore_data", key).stdout == b"one small table\n"  # in-process again
    assert not logged_by_worker(plugin, tmp_path)


def test_warm_server_off(write_config: Callable[..., str], tmp_path: Path, runtime: str) -> None:
    plugin = file_plugin(write_config, tmp_path, runtime, warm_server="off")
    plugin("setup_plugin_for_backup", str(backup_dir(tmp_path)), "segment_host")
    assert client.control(client.PING, socket_in(runtime)) is None
    assert server.start(path=socket_in(runtime)) is not None  # started for another config
    key = data_file(tmp_path)
    plugin("backup_data", key, stdin=b"x")
    assert plugin("restore_data", key).stdout == b"x"
    assert not logged_by_worker(plugin, tmp_path)  # this config is never served


def test_idle_timeout_and_one_server_per_install(runtime: str) -> None:
    path = socket_in(runtime)
    pid = server.start(idle=1, path=path)
    assert pid is not None
    assert server.start(idle=1, path=path) == pid
    server.run(path, 1, preload=lambda: None)  # the lock is taken: returns at once
    assert client.control(client.PING, path) == pid
    assert wait_until(lambda: not alive(pid), 60), "the idle server did not stop"
    assert not os.path.exists(path)


def test_stop_answers_before_it_stops(runtime: str) -> None:
    """The worker that takes STOP answers first: stopping ends it (stop() said None)."""
    path = socket_in(runtime)
    for _ in range(30):
        pid = os.fork()
        if pid == 0:
            try:
                server.run(path, 30, preload=lambda: None)
            finally:
                os._exit(0)
        assert wait_until(lambda: client.control(client.PING, path) == pid)  # noqa: B023
        assert server.stop(path) == pid
        os.waitpid(pid, 0)


# --- faults ---------------------------------------------------------------------------


def test_stale_socket(write_config: Callable[..., str], tmp_path: Path, runtime: str) -> None:
    """A socket file nobody listens on (a server killed with SIGKILL leaves one)."""
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(socket_in(runtime))
    stale.close()
    plugin = file_plugin(write_config, tmp_path, runtime)
    key = data_file(tmp_path)
    plugin("backup_data", key, stdin=b"still works")
    assert plugin("restore_data", key).stdout == b"still works"
    assert not logged_by_worker(plugin, tmp_path)
    assert server.start(path=socket_in(runtime)) is not None  # and a server replaces it
    assert plugin("restore_data", key).stdout == b"still works"
    assert logged_by_worker(plugin, tmp_path)


def test_directory_others_can_enter_is_refused(
    write_config: Callable[..., str], tmp_path: Path, runtime: str
) -> None:
    assert server.start(path=socket_in(runtime)) is not None
    plugin = file_plugin(write_config, tmp_path, runtime)
    key = data_file(tmp_path)
    os.chmod(runtime, 0o755)
    plugin("backup_data", key, stdin=b"x")
    assert not logged_by_worker(plugin, tmp_path)
    assert not client.private_dir(runtime)
    os.chmod(runtime, 0o700)
    other = private_dir()
    try:
        os.chown(other, NOBODY, NOBODY)  # another user's directory: never used
        assert server.start(path=socket_in(other)) is None
        assert client.request(["--version"], socket_in(other)) is None
    finally:
        os.rmdir(other)


def test_another_users_connection_is_refused(runtime: str) -> None:
    """SO_PEERCRED: a process of another uid that reaches the socket gets nothing."""
    path = socket_in(runtime)
    if os.getuid() == 0:
        assert server.start(path=path) is not None
        os.chmod(runtime, 0o711)  # let it reach the socket: the server must still refuse
        os.chmod(path, 0o666)
        pid = os.fork()
        if pid == 0:
            try:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                status = client.request(["--version"], path)
                os._exit(0 if status is None else 1)
            finally:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "another user's request was served"
    else:  # not root: a server that sees every peer as another uid refuses us the same way
        assert server.peer_uid(socket.socketpair()[0]) == os.getuid()
        pid = os.fork()
        if pid == 0:
            try:
                server.peer_uid = lambda conn: os.getuid() + 1  # type: ignore[assignment]
                server.run(path, 30, preload=lambda: None)
            finally:
                os._exit(0)
        try:
            assert wait_until(lambda: os.path.exists(path))
            assert client.request(["--version"], path) is None
            assert client.control(client.PING, path) is None
        finally:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)


def test_changed_install_is_never_served(
    write_config: Callable[..., str], tmp_path: Path, runtime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = server.start(path=socket_in(runtime))
    assert pid is not None
    plugin = file_plugin(write_config, tmp_path, runtime)
    plugin("backup_data", data_file(tmp_path), stdin=b"x")
    assert logged_by_worker(plugin, tmp_path)
    module = Path(server.PACKAGE) / "keys.py"
    before = os.stat(module)
    os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    try:
        plugin.clients.clear()
        (tmp_path / "logs").rename(tmp_path / "logs-before")
        assert plugin("restore_data", data_file(tmp_path)).stdout == b"x"
        assert not logged_by_worker(plugin, tmp_path)  # ran in the client, with the new code
        assert wait_until(lambda: not alive(pid)), "the old server kept running"
    finally:
        os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns))
    # another version or install never even finds this install's socket (the executable
    # computes the same name: tests/integration/test_thin_client.py)
    name = os.path.basename(client.socket_path())
    with monkeypatch.context() as patch:
        patch.setattr(client, "__version__", "99.0.0")
        assert os.path.basename(client.socket_path()) != name
    monkeypatch.setattr(sys, "prefix", "/another/install")
    assert os.path.basename(client.socket_path()) != name


def start_backup(plugin: Plugin, key: str) -> subprocess.Popen[bytes]:
    """backup_data with 12 MiB written: parts are being uploaded when this returns."""
    proc = plugin.popen("backup_data", key, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(os.urandom(12 * 2**20))
    proc.stdin.flush()
    return proc


def nothing_stored(plugin: Plugin, key: str, options: dict[str, Any]) -> None:
    assert plugin("restore_data", key, check=False).returncode == ObjectNotFound.exit_code
    config = build_config(options)
    assert asyncio.run(count_unfinished(config, backup_prefix(FOLDER, TS))) == 0


def test_server_killed_mid_request(
    seaweed: Any, bucket: str, write_config: Callable[..., str], tmp_path: Path, runtime: str
) -> None:
    options = s3_options(seaweed, bucket)
    plugin = make_plugin(options, write_config, tmp_path, runtime_dir=runtime)
    pid = server.start(path=socket_in(runtime))
    assert pid is not None
    key = data_file(tmp_path)
    proc = start_backup(plugin, key)
    os.kill(pid, signal.SIGKILL)
    code = proc.wait(timeout=60)
    assert proc.stdin is not None and proc.stderr is not None
    err = proc.stderr.read().decode()
    proc.stdin.close()
    proc.stderr.close()
    assert code == Interrupted.exit_code
    assert err == "asyncplug: backup_data interrupted by SIGTERM; nothing was stored\n"
    nothing_stored(plugin, key, options)


def test_sigkilled_client_stops_its_work(
    seaweed: Any, bucket: str, write_config: Callable[..., str], tmp_path: Path, runtime: str
) -> None:
    options = s3_options(seaweed, bucket)
    plugin = make_plugin(options, write_config, tmp_path, runtime_dir=runtime)
    assert server.start(path=socket_in(runtime)) is not None
    key = data_file(tmp_path)
    proc = start_backup(plugin, key)
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL

    def aborted() -> bool:
        logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("asyncplug_*.log"))
        return "interrupted by SIGTERM; nothing was stored" in logs

    assert wait_until(aborted, 60), "the worker went on without its client"
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.close()
    proc.stderr.close()
    nothing_stored(plugin, key, options)
    assert logged_by_worker(plugin, tmp_path)


def test_over_ssh_with_a_minimal_environment(
    write_config: Callable[..., str], tmp_path: Path, runtime: str
) -> None:
    """As gpbackup runs it: `ssh host CMD` (no HOME, USER, LANG or TZ), from /, with the
    host's copy of the config at /tmp/<name>_<nanotime>_<content>."""
    written = Path(file_plugin(write_config, tmp_path, runtime).config)
    config = Path(f"/tmp/{written.stem}_{time.time_ns()}_0")
    config.write_text(written.read_text())
    env = {"PATH": "/usr/bin:/bin", "ASYNCPLUG_RUNTIME_DIR": runtime}
    clients = Plugin(str(config), tmp_path / "home")  # only for its list of client pids

    def run(*argv: str, stdin: bytes = b"") -> bytes:
        with subprocess.Popen(
            [EXECUTABLE, argv[0], str(config), *argv[1:]],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, cwd="/",
        ) as proc:  # fmt: skip
            clients.clients.append(proc.pid)
            out, err = proc.communicate(stdin, timeout=120)
        assert (proc.returncode, err) == (0, b""), err
        return out

    try:
        where = str(backup_dir(tmp_path))
        run("setup_plugin_for_backup", where, "segment_host")
        pid = client.control(client.PING, socket_in(runtime))
        assert pid is not None
        key = f"{where}/gpbackup_0_{TS}_16384.gz"
        run("backup_data", key, stdin=b"a table\n")
        assert run("restore_data", key) == b"a table\n"
        lines = [ln for p in (tmp_path / "logs").glob("*.log") for ln in p.read_text().splitlines()]
        done = [ln for ln in lines if f"restore_data {config} {key}: ok, 8 bytes" in ln]
        assert len(done) == 1
        assert int(done[0].split("-[INFO]")[0].rsplit(":", 1)[1]) not in clients.clients
        run("cleanup_plugin_for_backup", where, "segment_host")
        assert wait_until(lambda: not alive(pid))
    finally:
        config.unlink()


def test_umask_and_commands_side_by_side(
    write_config: Callable[..., str], tmp_path: Path, runtime: str
) -> None:
    """A worker creates files with the client's umask; a command arriving while every
    worker is busy gets a new one (segments run their tables at the same time)."""
    assert server.start(path=socket_in(runtime)) is not None
    plugin = file_plugin(write_config, tmp_path, runtime)
    local = backup_dir(tmp_path) / f"gpbackup_{TS}_toc.yaml"
    local.parent.mkdir(parents=True)
    local.write_text("toc\n")
    plugin("backup_file", str(local))
    local.unlink()
    busy = plugin.popen("backup_data", data_file(tmp_path), stdin=subprocess.PIPE)
    assert busy.stdin is not None
    busy.stdin.write(b"first table, still coming")
    busy.stdin.flush()
    # Only once a worker holds its stdin is that worker busy: the next command must not
    # overtake the first on its way to the server.
    pipe = f"pipe:[{os.fstat(busy.stdin.fileno()).st_ino}]"
    assert wait_until(lambda: held_elsewhere(pipe, {busy.pid, os.getpid()})), "not served"
    old = os.umask(0o027)
    try:
        plugin("restore_file", str(local))  # while the other worker waits for its stdin
    finally:
        os.umask(old)
    assert local.read_text() == "toc\n"
    assert os.stat(local).st_mode & 0o777 == 0o640
    busy.stdin.close()
    assert busy.wait(timeout=60) == 0
    assert plugin("restore_data", data_file(tmp_path)).stdout == b"first table, still coming"
    pids = {
        int(line.split("-[INFO]")[0].rsplit(":", 1)[1])
        for line in (tmp_path / "logs").glob("*.log").__next__().read_text().splitlines()
        if ": ok," in line
    }
    assert not pids & set(plugin.clients) and len(pids) >= 2  # served, by two workers


def test_streams_started_together_are_all_served_by_a_bounded_pool(
    write_config: Callable[..., str], tmp_path: Path, runtime: str
) -> None:
    """Eight segments start their streams at once: each gets a worker (none falls back
    to a process of its own), the pool doubling while clients wait, so never more than
    twice the workers needed."""
    pid = server.start(path=socket_in(runtime))
    assert pid is not None
    plugin = file_plugin(write_config, tmp_path, runtime)
    streams = [
        plugin.popen("backup_data", data_file(tmp_path, content=n), stdin=subprocess.PIPE)
        for n in range(8)
    ]
    try:
        pipes = [f"pipe:[{os.fstat(p.stdin.fileno()).st_ino}]" for p in streams if p.stdin]
        mine = {os.getpid(), *(p.pid for p in streams)}
        assert wait_until(lambda: all(held_elsewhere(p, mine) for p in pipes)), "not all served"
        workers = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        assert 8 <= len(workers) <= 16
    finally:
        for n, stream in enumerate(streams):
            assert stream.stdin is not None
            stream.stdin.write(b"table %d" % n)
            stream.stdin.close()
    assert [s.wait(timeout=60) for s in streams] == [0] * 8
    for n in range(8):
        assert plugin("restore_data", data_file(tmp_path, content=n)).stdout == b"table %d" % n


# --- what the real callers need, through the server -------------------------------------


def test_a_reader_gone_ends_the_client_by_sigpipe(
    write_config: Callable[..., str], tmp_path: Path, runtime: str
) -> None:
    """gpbackup_helper closes restore_data's stdout after its last table: through the
    server the client ends as it does in-process (killed by SIGPIPE, nothing on stderr),
    and the worker that ran it is not taken for killed."""
    plugin = file_plugin(write_config, tmp_path, runtime)
    plugin("setup_plugin_for_backup", str(backup_dir(tmp_path)), "segment_host")
    key = data_file(tmp_path)
    plugin("backup_data", key, stdin=os.urandom(8 * 2**20))
    proc = plugin.popen("restore_data", key, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert len(proc.stdout.read(1000)) == 1000
    proc.stdout.close()  # the reader has what it wanted
    assert proc.wait(timeout=60) == -signal.SIGPIPE
    with proc.stderr:
        assert proc.stderr.read() == b""
    assert logged_by_worker(plugin, tmp_path)
    assert plugin("restore_data", key).returncode == 0  # the server still serves
