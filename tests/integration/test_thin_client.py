"""The `asyncplug` executable as installed (client/asyncplug.c, built by setup.py) against
servers of the tests' own: what it sends, how it ends for each reply, signals before
and after the worker is known, and every way to the in-process fallback. The commands
themselves run both ways in test_commands.py; the real server's faults are in
test_warm_server.py."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncplug import __version__, cli, client, server
from tests.integration.runner import EXECUTABLE, Plugin
from tests.integration.test_commands import data_file
from tests.integration.test_warm_server import (
    file_plugin,
    held_elsewhere,
    logged_by_worker,
    socket_in,
)
from tests.server_support import private_dir, wait_until

TIMEOUT = 60
# A worker's stand-in that each forwarded signal ends, even when the tests run with one
# ignored (under nohup, SIGHUP: a shell cannot reset what it was started ignoring).
STAND_IN_WORKER = [
    sys.executable, "-c",
    "import signal, time\n"
    "for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n"
    "    signal.signal(s, signal.SIG_DFL)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n",
]  # fmt: skip
NOBODY = 65534
Handler = Callable[[socket.socket], None]


def test_the_executable_is_the_compiled_client() -> None:
    """setup.py found a compiler here: bin/asyncplug is a program, not a Python script."""
    with open(EXECUTABLE, "rb") as f:
        assert f.read(4) == b"\x7fELF"


class FakeServer:
    """A listener on the socket the executable looks for, whose `handler` answers each
    connection (in a thread); `requests` keeps what each complete request carried."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.handler = handler
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(8)
        self.listener.settimeout(0.2)
        self.connections = 0
        self.requests: list[tuple[server.Request, list[os.stat_result]]] = []
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping:
            try:
                conn = self.listener.accept()[0]
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(TIMEOUT)
                self.handler(conn)

    def receive(self, conn: socket.socket) -> server.Request | None:
        """The request, with the fstat of the fds that came with it (then closed)."""
        try:
            request, fds = server.receive(conn)
        except (OSError, ValueError):  # the Python client with a closed fd sends nothing
            return None
        self.requests.append((request, [os.fstat(fd) for fd in fds]))
        for fd in fds:
            os.close(fd)
        return request

    def close(self) -> None:
        self.stopping = True
        self.thread.join(TIMEOUT)
        self.listener.close()


@pytest.fixture
def fake(runtime: str) -> Iterator[Callable[[Handler], FakeServer]]:
    started: list[FakeServer] = []

    def start(handler: Handler) -> FakeServer:
        started.append(FakeServer(socket_in(runtime), handler))
        return started[-1]

    yield start
    for one in started:
        one.close()


@pytest.fixture
def runtime() -> Iterator[str]:
    directory = private_dir()
    yield directory
    with contextlib.suppress(OSError):
        for entry in os.listdir(directory):
            os.unlink(os.path.join(directory, entry))
        os.rmdir(directory)


def run(
    runtime: str, *argv: str, stdin: bytes = b"", **kwargs: Any
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "ASYNCPLUG_RUNTIME_DIR": runtime, **kwargs.pop("env", {})}
    return subprocess.run(
        [EXECUTABLE, *argv], input=stdin, capture_output=True, env=env, timeout=TIMEOUT,
        check=False, **kwargs,
    )  # fmt: skip


def start(runtime: str, *argv: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ASYNCPLUG_RUNTIME_DIR": runtime}
    return subprocess.Popen(
        [EXECUTABLE, *argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=env,
    )  # fmt: skip


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, bytes, bytes]:
    out, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out, err


# --- what it sends ----------------------------------------------------------------------


def test_the_request_is_the_python_clients(
    fake: Callable[[Handler], FakeServer], runtime: str, tmp_path: Path
) -> None:
    def handler(conn: socket.socket) -> None:
        fake_server.receive(conn)
        conn.sendall(b"P%d\nX0\n" % os.getpid())

    fake_server = fake(handler)
    env = {"ONE": "1", "ODD": "caf\xe9 \\ = x", "EMPTY": ""}
    proc = run(
        runtime, "backup_data", "cfg.yaml", "the key", "", env=env, cwd=tmp_path,
        preexec_fn=lambda: os.umask(0o027),
    )  # fmt: skip
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    [(request, fds)] = fake_server.requests
    assert (request.version, request.prefix) == (__version__, client.install_prefix())
    assert (request.cwd, request.umask) == (str(tmp_path), 0o027)
    assert request.argv == ["backup_data", "cfg.yaml", "the key", ""]
    assert request.env == {**os.environ, "ASYNCPLUG_RUNTIME_DIR": runtime, **env}
    assert len(fds) == 3 and all(fd.st_mode for fd in fds)
    assert fake_server.connections == 1  # served: no Python client asked again


def test_its_fds_are_the_commands(fake: Callable[[Handler], FakeServer], runtime: str) -> None:
    """The worker reads the client's stdin and writes its stdout and stderr."""

    def handler(conn: socket.socket) -> None:
        _, fds = server.receive(conn)
        with open(fds[0], "rb") as stdin, open(fds[1], "wb") as out, open(fds[2], "wb") as err:
            out.write(stdin.read().upper())
            err.write(b"asyncplug: a line\n")
        conn.sendall(b"P%d\nX6\n" % os.getpid())

    fake(handler)
    proc = run(runtime, "restore_data", "c", "k", stdin=b"some rows")
    assert (proc.returncode, proc.stdout, proc.stderr) == (6, b"SOME ROWS", b"asyncplug: a line\n")


# --- how it ends ------------------------------------------------------------------------

KILLED = b"asyncplug: backup_data interrupted: its warm server process was killed\n"


def replying(*lines: bytes) -> Callable[[FakeServer], Handler]:
    def make(owner: FakeServer) -> Handler:
        def handler(conn: socket.socket) -> None:
            owner.receive(conn)
            for line in lines:
                conn.sendall(line)

        return handler

    return make


@pytest.mark.parametrize(
    ("replies", "code", "err"),
    [
        ((b"P%d\n", b"X0\n"), 0, b""),
        ((b"P%d\nX", b"4\n"), 4, b""),  # a reply in two pieces
        ((b"P%d\n", b"X141\n"), -signal.SIGPIPE, b""),  # the reader gone: as in-process
        ((b"P%d\n",), 9, KILLED),
    ],
)
def test_exit_as_the_worker_says(
    fake: Callable[[Handler], FakeServer],
    runtime: str,
    replies: tuple[bytes, ...],
    code: int,
    err: bytes,
) -> None:
    idle = subprocess.Popen(["sleep", "60"])  # the worker's pid: nothing signals it here
    lines = [line % idle.pid if line.startswith(b"P") else line for line in replies]
    holder: list[FakeServer] = []
    holder.append(fake(lambda conn: replying(*lines)(holder[0])(conn)))
    try:
        proc = run(runtime, "backup_data", "c", "k")
    finally:
        idle.kill()
        idle.wait()
    assert (proc.returncode, proc.stderr) == (code, err)
    assert holder[0].connections == 1


# --- signals ----------------------------------------------------------------------------


def hold(owner: list[FakeServer], got: threading.Event, reply: bytes = b"") -> Handler:
    """Take the request, answer `reply`, tell the test, then wait for the client to go."""

    def handler(conn: socket.socket) -> None:
        owner[0].receive(conn)
        conn.sendall(reply)
        got.set()
        conn.recv(1)  # b"" once the client has closed its end

    return handler


NAMES = [*cli.COMMANDS, "no_such_command"]


@pytest.mark.parametrize("name", NAMES)
def test_a_signal_before_the_worker_is_known(
    fake: Callable[[Handler], FakeServer], runtime: str, name: str
) -> None:
    """The line the command would print, from the strings baked into the C client: they
    cannot drift from cli.COMMANDS' on_interrupt."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        got = threading.Event()
        owner: list[FakeServer] = []
        owner.append(fake(hold(owner, got)))
        proc = start(runtime, name, "c")
        assert got.wait(TIMEOUT)
        proc.send_signal(signum)
        expected = f"asyncplug: {cli._interrupted(name, signal.Signals(signum).name)}\n"
        assert finish(proc) == (9, b"", expected.encode())
        owner[0].close()
        os.unlink(socket_in(runtime))


def unread(conn: socket.socket) -> int:
    """Bytes sent on conn that its peer has not read yet (SIOCOUTQ)."""
    return int(struct.unpack("i", fcntl.ioctl(conn.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_go_to_the_worker(
    fake: Callable[[Handler], FakeServer], runtime: str, signum: int
) -> None:
    worker = subprocess.Popen(STAND_IN_WORKER, stdout=subprocess.PIPE)
    assert worker.stdout is not None and worker.stdout.readline() == b"ready\n"
    worker.stdout.close()
    owner: list[FakeServer] = []
    clients: list[subprocess.Popen[bytes]] = []
    started = threading.Event()

    def handler(conn: socket.socket) -> None:
        owner[0].receive(conn)
        conn.sendall(b"P%d\n" % worker.pid)
        # Once it has read the P line the client knows its worker: a signal goes there.
        if started.wait(TIMEOUT) and wait_until(lambda: unread(conn) == 0):
            clients[0].send_signal(signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(TIMEOUT)
        conn.sendall(b"X9\n")  # the command reports its interruption

    owner.append(fake(handler))
    clients.append(start(runtime, "backup_data", "c", "k"))
    started.set()
    assert finish(clients[0]) == (9, b"", b"")
    assert worker.wait(TIMEOUT) == -signum


# --- the in-process fallback ------------------------------------------------------------


VERSION_LINE = f"asyncplug version {__version__}\n".encode()


def test_a_refusal_runs_it_here(fake: Callable[[Handler], FakeServer], runtime: str) -> None:
    """F (another install, warm_server off, a changed install): the Python client asks
    again, is refused again, and runs the command in its own process."""
    holder: list[FakeServer] = []
    holder.append(fake(lambda conn: replying(b"F\n")(holder[0])(conn)))
    proc = run(runtime, "--version")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, VERSION_LINE, b"")
    assert holder[0].connections == 2 and len(holder[0].requests) == 2


def test_a_server_that_closes_at_once(runtime: str, fake: Callable[[Handler], FakeServer]) -> None:
    """A worker that refused the peer's uid closes without a word: no P, run it here."""
    fake_server = fake(lambda conn: None)
    proc = run(runtime, "--version")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, VERSION_LINE, b"")
    assert fake_server.connections == 2


def test_no_server_a_stale_socket_or_no_directory(runtime: str) -> None:
    assert run(runtime, "--version").stdout == VERSION_LINE  # an empty directory
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(socket_in(runtime))
    stale.close()
    assert run(runtime, "--version").stdout == VERSION_LINE
    assert run(os.path.join(runtime, "missing"), "--version").stdout == VERSION_LINE


@pytest.mark.parametrize("how", ["open to others", "another user's", "a symlink"])
def test_a_directory_not_ours_alone_is_never_used(
    runtime: str, fake: Callable[[Handler], FakeServer], how: str, tmp_path: Path
) -> None:
    fake_server = fake(lambda conn: conn.sendall(b"F\n"))
    where = runtime
    if how == "open to others":
        os.chmod(runtime, 0o750)
    elif how == "another user's":
        os.chown(runtime, NOBODY, NOBODY)
    else:
        where = str(tmp_path / "link")
        os.symlink(runtime, where)
    try:
        proc = run(where, "--version")
    finally:
        os.chmod(runtime, 0o700)
        os.chown(runtime, os.getuid(), os.getgid())
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, VERSION_LINE, b"")
    assert fake_server.connections == 0


def test_closed_standard_fds_run_it_here(
    runtime: str, fake: Callable[[Handler], FakeServer]
) -> None:
    """The server needs all of fds 0-2: with stdin closed nothing is sent, neither by the
    executable nor by the Python client it runs, which runs the command itself."""
    fake_server = fake(lambda conn: fake_server.receive(conn) and conn.sendall(b"F\n"))
    proc = run(runtime, "--version", stdin=None, preexec_fn=lambda: os.close(0))  # type: ignore[arg-type]
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, VERSION_LINE, b"")
    assert fake_server.requests == []


def copy_of_executable(prefix: Path) -> Path:
    """The compiled client copied to PREFIX/bin/asyncplug, as pip puts it in /usr/local/bin
    for a system Python whose prefix is /usr."""
    copy = prefix / "bin" / "asyncplug"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(Path(EXECUTABLE).read_bytes())
    copy.chmod(0o755)
    return copy


def test_no_arguments_and_the_recorded_interpreter(runtime: str, tmp_path: Path) -> None:
    """Without arguments there is nothing to serve; a copy of the executable in a
    directory without python3 runs the interpreter it was built for."""
    proc = run(runtime)
    assert proc.returncode == 2 and proc.stderr.startswith(b"asyncplug: no command given")
    copy = copy_of_executable(tmp_path)
    env = {**os.environ, "ASYNCPLUG_RUNTIME_DIR": runtime}
    done = subprocess.run([str(copy), "--version"], capture_output=True, env=env, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, VERSION_LINE, b"")


def test_a_python3_beside_it_is_taken_only_in_an_environment(runtime: str, tmp_path: Path) -> None:
    """A system's /usr/local/bin/python3 may be another Python, without asyncplug: only a
    virtualenv's (pyvenv.cfg) or a conda environment's python3 is the install's."""
    copy = copy_of_executable(tmp_path)
    other = copy.parent / "python3"
    other.write_text("#!/bin/sh\necho another python >&2\nexit 3\n")
    other.chmod(0o755)
    env = {**os.environ, "ASYNCPLUG_RUNTIME_DIR": runtime}
    done = subprocess.run([str(copy), "--version"], capture_output=True, env=env, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, VERSION_LINE, b"")
    for marker in ("pyvenv.cfg", "conda-meta"):
        made = tmp_path / marker
        made.mkdir() if marker == "conda-meta" else made.write_text("home = /usr/bin\n")
        done = subprocess.run([str(copy), "--version"], capture_output=True, env=env, timeout=60)
        assert (done.returncode, done.stderr) == (3, b"another python\n"), marker
        made.rmdir() if marker == "conda-meta" else made.unlink()


def test_a_copy_outside_the_interpreters_prefix_is_served_by_its_server(
    write_config: Callable[..., str],
    tmp_path: Path,
    runtime: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Installed outside sys.prefix, the executable hands its prefix to the Python client
    it runs (ASYNCPLUG_INSTALL), so the server that setup starts is keyed to that prefix
    and serves the executable itself: no Python start per command."""
    prefix = tmp_path / "usr-local"
    copy = copy_of_executable(prefix)
    plugin = file_plugin(write_config, tmp_path, runtime)
    env = plugin.env
    monkeypatch.setenv(client.INSTALL_ENV, str(prefix.resolve()))
    assert client.install_prefix() == str(prefix.resolve())

    def run_copy(*argv: str) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run([str(copy), *argv], capture_output=True, env=env, timeout=TIMEOUT)
        assert done.returncode == 0, done.stderr
        return done

    where = str(tmp_path / "backups")
    run_copy("setup_plugin_for_backup", plugin.config, where, "segment_host")
    try:
        sockets = [name for name in os.listdir(runtime) if name.endswith(".sock")]
        assert sockets == [os.path.basename(client.socket_path())]  # keyed to the copy's prefix
        table = data_file(tmp_path)
        with subprocess.Popen(
            [str(copy), "backup_data", plugin.config, table],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        ) as held:  # fmt: skip
            assert held.stdin is not None
            held.stdin.write(b"a table ")
            held.stdin.flush()
            pipe = os.readlink(f"/proc/self/fd/{held.stdin.fileno()}")
            # A worker holds the command's stdin; the executable itself never became Python.
            assert wait_until(lambda: held_elsewhere(pipe, {os.getpid(), held.pid}))
            assert os.readlink(f"/proc/{held.pid}/exe") == str(copy.resolve())
            held.stdin.write(b"of rows")
            held.stdin.close()
            assert held.wait(TIMEOUT) == 0
        assert run_copy("restore_data", plugin.config, table).stdout == b"a table of rows"
    finally:
        run_copy("cleanup_plugin_for_backup", plugin.config, where, "segment_host")


# --- the real server refuses what it must not serve --------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        None,  # the control: served
        ("__version__", "99.0.0"),  # a server of another version
        ("PREFIX", "/another/install"),  # a server of another install
        ("peer_uid", lambda conn: os.getuid() + 1),  # SO_PEERCRED: another user
    ],
)
def test_the_server_serves_its_own_install_and_user_only(
    write_config: Callable[..., str],
    tmp_path: Path,
    runtime: str,
    monkeypatch: pytest.MonkeyPatch,
    change: tuple[str, Any] | None,
) -> None:
    if change is not None:
        monkeypatch.setattr(server, *change)
    path = socket_in(runtime)
    pid = os.fork()  # the change applies to the server's workers, forked from this process
    if pid == 0:
        try:
            server.run(path, 60, preload=lambda: None)
        finally:
            os._exit(0)
    try:
        assert wait_until(lambda: os.path.exists(path)), "no server"
        plugin: Plugin = file_plugin(write_config, tmp_path, runtime)
        key = data_file(tmp_path)
        plugin("backup_data", key, stdin=b"a table")
        assert plugin("restore_data", key).stdout == b"a table"
        assert logged_by_worker(plugin, tmp_path) == (change is None)
    finally:
        os.kill(pid, signal.SIGTERM)  # its workers follow (PR_SET_PDEATHSIG)
        os.waitpid(pid, 0)
