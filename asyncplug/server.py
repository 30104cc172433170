"""The warm server: one pre-imported process per user, host and install that forks a
worker for each command the thin client (asyncplug.client) hands it.

gpbackup's multi-file mode starts one plugin process per table and segment; most of
such a process's time went to imports and start-up. Here the imports happen once per
host: `setup_plugin_for_backup`/`_restore` at segment_host scope start the server, the
matching cleanup stops it, and it ends by itself after IDLE seconds without work.

A request is served in a forked worker that takes the client's fds 0-2, working
directory, environment and argv and runs asyncplug.cli.main exactly as the client
would have. The worker reports its exit code to the client (`X<code>`); a client that
gets no report takes its worker for killed.
The worker watches the client connection: when the client dies, or the server does,
it sends itself SIGTERM, which aborts the command as a signal to the client would.

Security: the socket lives in a directory of mode 0700 owned by the user (refused
otherwise, see client.private_dir), and each connection's peer uid (SO_PEERCRED) must
be the server's own. A server serves one install only: the request names the client's
version and install prefix (client.install_prefix), and a change to any module file
since the server started (an upgrade, an edit) makes it refuse and stop, so the client
runs the command itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import select
import signal
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from asyncplug import __version__, client

IDLE_SECONDS = 60.0
REQUEST_TIMEOUT = 5.0  # a client that connects and sends nothing does not hold the server
START_TIMEOUT = 10.0
MAX_WORKERS = 256
EXTRA_IDLE = 5.0  # seconds an idle worker beyond the first waits before it leaves
MAX_REQUESTS = 1000  # then a worker makes way for a fresh one
THREAD_GRACE = 2.0  # seconds a finished command's threads get to end before reuse
PACKAGE = os.path.dirname(os.path.abspath(__file__))
PREFIX = client.install_prefix()

# Imported once by the server so that no worker pays for them.
PRELOAD = (
    "asyncplug.cli",
    "asyncplug.commands",
    "asyncplug.pipeline.backup",
    "asyncplug.pipeline.restore",
    "asyncplug.pipeline.splice",
    "asyncplug.storage.fs",
    "asyncplug.storage.s3",
    "asyncplug.storage.s3lean",
    "encodings.ascii",  # the offsets file of restore_data_subset
    "encodings.idna",  # socket.create_connection of the splice path (with unicodedata)
    "json",
    "uvloop",
)

Signature = list[tuple[str, int, int, int]]


def signature(package: str = PACKAGE) -> Signature:
    """Every module file of the install with its mtime, size and inode."""
    found: Signature = []
    stack = [package]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        stack.append(entry.path)
                elif entry.name.endswith((".py", ".so")):
                    st = entry.stat()
                    found.append((entry.path, st.st_mtime_ns, st.st_size, st.st_ino))
    return sorted(found)


def make_private_dir(path: str) -> bool:
    """Create the socket directory (0700) if missing; False when it is not ours alone."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return False
    return client.private_dir(path)


@dataclass
class Request:
    version: str
    prefix: str
    cwd: str
    umask: int
    argv: list[str]
    env: dict[str, str]


def parse_request(body: bytes) -> Request:
    parts = body.split(b"\0")
    if len(parts) < 6 or parts[0] != client.PROTOCOL:
        raise ValueError("not an asyncplug request")
    count = int(parts[5])
    argv = [os.fsdecode(a) for a in parts[6 : 6 + count]]
    if len(argv) != count:
        raise ValueError("truncated request")
    env: dict[str, str] = {}
    for item in parts[6 + count :]:
        name, sep, value = item.partition(b"=")
        if sep:  # the first of a repeated name, as os.environ has it in-process
            env.setdefault(os.fsdecode(name), os.fsdecode(value))
    cwd = parts[3].decode("utf-8", "surrogateescape")
    return Request(parts[1].decode(), os.fsdecode(parts[2]), cwd, int(parts[4], 8), argv, env)


def receive(conn: socket.socket) -> tuple[Request, list[int]]:
    """The request and the fds that came with it (the caller closes them)."""
    data, fds, _, _ = socket.recv_fds(conn, 65536, 3)
    try:
        while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
            chunk = conn.recv(65536)
            if not chunk:
                raise ValueError("request cut short")
            data += chunk
        return parse_request(data[4 : 4 + int.from_bytes(data[:4], "big")]), list(fds)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


class Server:
    """The supervisor: binds the socket, keeps one worker forked and forks another when a
    connection waits while every worker is busy (commands run side by side: gpbackup
    runs a table per segment at once), reaps them, and stops when asked, signalled, or
    idle for `idle` seconds. Extra workers leave after EXTRA_IDLE idle seconds, so that
    tables in sequence keep going to the same warm worker."""

    def __init__(self, path: str, idle: float = IDLE_SECONDS) -> None:
        self.path = path
        self.idle = idle
        self.signature = signature()
        self.workers: dict[int, bool] = {}  # pid -> busy
        self.first = 0  # the worker that stays while the server runs
        self.stopping = False
        self.listener: socket.socket | None = None
        self.inode = 0
        self.wakeup_r, self.wakeup_w = os.pipe()
        self.status_r, self.status_w = os.pipe()  # workers -> supervisor: op + pid

    def serve(self) -> None:
        """Serve until stopped, signalled or idle; the caller holds the lock."""
        for fd in (self.wakeup_r, self.wakeup_w, self.status_r):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self.wakeup_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._signalled)
        old = os.umask(0o077)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # stale: whoever bound it has lost the lock
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(self.path)
        finally:
            os.umask(old)
        listener.listen(128)
        listener.setblocking(False)  # idle workers all wait on it; one accept wins
        self.listener = listener
        self.inode = os.stat(self.path).st_ino
        gc.freeze()  # the workers then copy fewer of the server's pages
        poller = select.poll()
        poller.register(self.status_r, select.POLLIN)
        poller.register(self.wakeup_r, select.POLLIN)
        waiting = False  # every worker is busy: the listener is polled for a waiting client
        ready: set[int] = set()
        last = time.monotonic()
        try:
            while True:
                with contextlib.suppress(OSError):
                    os.read(self.wakeup_r, 512)
                if self._read_status():
                    last = time.monotonic()
                self._reap()
                busy = sum(self.workers.values())
                if busy:
                    last = time.monotonic()
                elif time.monotonic() - last > self.idle:
                    self.stopping = True
                all_busy = bool(self.first) and busy == len(self.workers)
                if waiting and (self.stopping or not all_busy or listener.fileno() in ready):
                    poller.unregister(listener)
                    waiting = False
                    if all_busy and not self.stopping and len(self.workers) < MAX_WORKERS:
                        # A client waits and no worker is free. Segments start their
                        # streams together: double the workers (the extra ones leave
                        # after EXTRA_IDLE) rather than fork one per turn of this loop.
                        for _ in range(min(busy, MAX_WORKERS - len(self.workers))):
                            self._spawn()
                        all_busy = False
                if self.stopping:
                    self._close_listener()
                    if not busy:
                        for pid in self.workers:  # idle: waiting for a connection
                            with contextlib.suppress(OSError):
                                os.kill(pid, signal.SIGTERM)
                    if not self.workers:
                        return
                elif not self.first:
                    self._spawn()
                elif all_busy and not waiting:
                    poller.register(listener, select.POLLIN)
                    waiting = True
                ready = {fd for fd, _ in poller.poll(1000)}
        finally:
            self._close_listener()

    def _read_status(self) -> bool:
        """Apply the workers' messages; True when one took a request."""
        took = False
        try:
            data = os.read(self.status_r, 65536)
        except BlockingIOError:
            return False
        for i in range(0, len(data) - 4, 5):
            op, pid = data[i : i + 1], int.from_bytes(data[i + 1 : i + 5], "little")
            if pid in self.workers:
                self.workers[pid] = op == b"+"
            took = took or op == b"+"
            if op == b"S":  # stop asked, or the install changed under us
                self.stopping = True
        return took

    def _spawn(self) -> None:
        first = not self.first
        pid = os.fork()
        if pid == 0:
            try:
                Worker(self, IDLE_SECONDS if first else EXTRA_IDLE).run()
            finally:
                os._exit(0)
        self.workers[pid] = False
        if first:
            self.first = pid

    def _signalled(self, signum: int, frame: Any) -> NoReturn:
        # Killed, not asked: the workers get SIGTERM (PR_SET_PDEATHSIG) and stop.
        self._close_listener()
        os._exit(128 + signum)

    def _close_listener(self) -> None:
        if self.listener is None:
            return
        self.listener.close()
        self.listener = None
        try:
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass

    def _reap(self) -> None:
        while self.workers:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.workers.pop(pid, None)
            if pid == self.first:
                self.first = 0


class Worker:
    """A forked, reused process that takes one connection at a time and runs its
    command with the client's fds, directory and environment, as the client would."""

    def __init__(self, server: Server, idle: float) -> None:
        assert server.listener is not None
        self.idle = idle
        self.listener = server.listener
        self.status_w = server.status_w
        self.server_pid = os.getppid()
        self.signature = server.signature
        self.environ = dict(os.environ)
        self.configs: dict[str, tuple[tuple[int, ...], Any]] = {}
        self.conn: socket.socket | None = None  # the client of the running command
        for fd in (server.wakeup_r, server.wakeup_w, server.status_r):
            os.close(fd)

    def run(self) -> None:
        _die_with_parent()
        if os.getppid() != self.server_pid:
            return
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGIO, self._client_gone)
        # The interpreter's own streams on fds 1 and 2 (a test harness may have replaced them).
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        from asyncplug import cli
        from asyncplug.pipeline import parts

        parts.keep_between_commands()  # a backup's part buffers serve the next one
        setattr(cli, "load_config", self._load_config(getattr(cli, "load_config")))  # noqa: B009, B010
        waited = 0.0
        served = 0
        while served < MAX_REQUESTS and waited < self.idle:
            ready = select.select([self.listener], [], [], 1.0)[0]
            try:
                conn = self.listener.accept()[0] if ready else None
            except BlockingIOError:  # another worker took it
                conn = None
            if conn is None:
                waited += 0.0 if ready else 1.0
                continue
            waited = 0.0
            served += 1
            if not self._take(conn):
                return

    def _tell(self, op: bytes) -> None:
        os.write(self.status_w, op + os.getpid().to_bytes(4, "little"))

    def _take(self, conn: socket.socket) -> bool:
        """Serve one connection; False when this process must not serve another."""
        fds: list[int] = []
        try:
            if peer_uid(conn) != os.getuid():
                return True  # never serve another user (the directory keeps them out too)
            conn.setblocking(True)
            conn.settimeout(REQUEST_TIMEOUT)
            request, fds = receive(conn)
            conn.settimeout(None)
            if not request.cwd:  # a control request
                conn.sendall(b"K%d\n" % self.server_pid)  # before S: stopping ends this worker
                if request.argv == [client.STOP]:
                    self._tell(b"S")
                return True
            if signature() != self.signature:
                self._tell(b"S")  # an upgrade or an edit: never serve the old code again
                conn.sendall(b"F\n")
                return False
            config = self._config(request)
            wanted = config is None or getattr(config, "warm_server", True)
            if (request.version, request.prefix) != (__version__, PREFIX) or not wanted:
                conn.sendall(b"F\n")
                return True
            if len(fds) != 3:
                conn.sendall(b"F\n")
                return True
            self._tell(b"+")
            try:
                return self._run(conn, request, fds)
            finally:
                fds = []
                self._tell(b"-")
        except (OSError, ValueError):
            return True
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()

    def _run(self, conn: socket.socket, request: Request, fds: list[int]) -> bool:
        from asyncplug import cli
        from asyncplug import log as logfile

        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            if fd > 2:
                os.close(fd)
        try:
            os.chdir(request.cwd)
        except OSError:
            _detach_stdio()
            conn.sendall(b"F\n")  # the client runs it where it is
            return True
        os.environ.clear()
        os.environ.update(request.env)
        time.tzset()  # the log's timestamps follow the client's TZ
        umask = os.umask(request.umask)  # files it creates get the client's permissions
        sys.argv = ["asyncplug", *request.argv]
        real_exit = os._exit

        def report(code: int, leaving: bool = True) -> None:
            self.conn = None
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
            _detach_stdio()  # the client's pipes end now, not when this process does
            with contextlib.suppress(OSError):
                conn.sendall(b"X%d\n" % code)
            if leaving:
                self._tell(b"-")
                real_exit(code)

        os._exit = report  # type: ignore[assignment]  # cli.main leaves with os._exit on failure
        # A reader gone: the client dies of SIGPIPE (client.finish), not this worker.
        die_of_sigpipe = cli._die_of_sigpipe
        cli._die_of_sigpipe = lambda: os._exit(cli.READER_GONE)  # type: ignore[assignment,misc,return-value]
        try:
            # SIGIO when the client's end closes: a client killed with SIGKILL stops its command.
            fcntl.fcntl(conn.fileno(), fcntl.F_SETOWN, os.getpid())
            fcntl.fcntl(conn.fileno(), fcntl.F_SETFL, os.O_ASYNC | fcntl.fcntl(conn, fcntl.F_GETFL))
            self.conn = conn
            conn.sendall(b"P%d\n" % os.getpid())
            code = cli.main(request.argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            os._exit = real_exit
            cli._die_of_sigpipe = die_of_sigpipe  # type: ignore[method-assign]
        report(code, leaving=code != 0)
        logfile.close()
        os.umask(umask)
        os.chdir("/")
        os.environ.clear()
        os.environ.update(self.environ)
        time.tzset()
        for thread in threading.enumerate():  # the pipelines' threads end on their own
            if thread is not threading.current_thread():
                thread.join(THREAD_GRACE)
        return threading.active_count() == 1  # a thread left running: do not reuse

    def _client_gone(self, signum: int, frame: Any) -> None:
        conn = self.conn
        if conn is None:
            return
        try:
            gone = not conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            gone = True
        if gone:
            self.conn = None
            os.kill(os.getpid(), signal.SIGTERM)  # what the client would have received

    def _config(self, request: Request) -> Any:
        """The request's parsed config, cached by the file's identity; None when there is
        none to read or it is invalid (the command then reports it as the CLI does)."""
        from asyncplug.cli import COMMANDS
        from asyncplug.errors import PluginError

        if len(request.argv) < 2 or request.argv[0] not in COMMANDS:
            return None
        path = os.path.join(request.cwd, request.argv[1])
        try:
            key = _identity(path)
            if not stat.S_ISREG(key[0]):
                return None  # a FIFO would block here, before the client knows the worker
            cached = self.configs.get(path)
            if cached is not None and cached[0] == key:
                return cached[1]
            from asyncplug.config import load_config

            config = load_config(path)
        except (OSError, PluginError):
            return None
        self.configs[path] = (key, config)
        return config

    def _load_config(self, load: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """cli.load_config, answered from the cache while the file is unchanged."""

        def load_config(where: Any) -> Any:
            path = os.path.abspath(str(where))
            cached = self.configs.get(path)
            with contextlib.suppress(OSError):
                if cached is not None and _identity(path) == cached[0]:
                    return cached[1]
            return load(where)

        return load_config


def _detach_stdio() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: SIGTERM when the supervisor dies (a running command aborts)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _identity(path: str) -> tuple[int, ...]:
    st = os.stat(path)
    return (st.st_mode, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


# --- starting and stopping ------------------------------------------------------------


def start(idle: float = IDLE_SECONDS, path: str | None = None) -> int | None:
    """Start this install's server unless one runs; its pid, or None when there is none
    (socket directory refused, or it did not come up within START_TIMEOUT)."""
    import subprocess

    path = path or client.socket_path()
    if not make_private_dir(os.path.dirname(path)):
        return None
    pid = client.control(client.PING, path)
    if pid is not None:
        return pid
    subprocess.run(
        [sys.executable, "-I", "-m", "asyncplug.server", path, str(idle)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        cwd="/", check=False, timeout=START_TIMEOUT,
    )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        pid = client.control(client.PING, path)
        if pid is not None:
            return pid
        time.sleep(0.02)
    return None


def stop(path: str | None = None) -> int | None:
    """Ask the server to stop once its running commands end; its pid, or None."""
    return client.control(client.STOP, path or client.socket_path())


def run(path: str, idle: float, preload: Callable[[], None] | None = None) -> None:
    """Serve on `path` unless another server holds its lock (then return at once)."""
    lock = os.open(path.removesuffix(".sock") + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock)
        return
    os.ftruncate(lock, 0)
    os.write(lock, b"%d\n" % os.getpid())  # for the bench: whose CPU to count
    (preload or warm_up)()
    Server(path, idle).serve()


def warm_up() -> None:
    """Import what the commands use, and run a small backup_data and restore_data on a
    scratch directory: first calls load more (NSS for the user name, enum caches, YAML
    and logging set-up), and every worker would pay for them again."""
    import importlib
    import shutil
    import tempfile

    for name in PRELOAD:
        importlib.import_module(name)
    from asyncplug import cli, commands
    from asyncplug import log as logfile
    from asyncplug.config import load_config
    from asyncplug.signals import SIGNALS

    for sig in SIGNALS:
        signal.getsignal(sig)
    scratch = tempfile.mkdtemp(prefix="asyncplug-warm-")
    null = os.open(os.devnull, os.O_RDWR)
    try:
        config_path = os.path.join(scratch, "plugin.yaml")
        with open(config_path, "w", encoding="utf-8") as f:
            f.write(f"options:\n  storage: file\n  path: {scratch}\n  folder: warm\n"
                    f"  log_dir: {scratch}\n  pgport: 5432\n")  # fmt: skip
        config = load_config(config_path)
        logfile.configure(config.log_dir, config.log_level)
        key = "/warm/backups/20250101/20250101000000/gpbackup_0_20250101000000"
        cli.run_async(commands.backup_data(config, key, null))
        cli.run_async(commands.restore_data(config, key, null))
        logfile.log.info("warm")
    finally:
        logfile.close()
        os.close(null)
        shutil.rmtree(scratch, ignore_errors=True)
    for thread in threading.enumerate():  # no executor thread may be copied into a fork
        if thread is not threading.current_thread():
            thread.join(START_TIMEOUT)


async def _nothing() -> None:
    return None


def main(argv: list[str]) -> int:
    """`python -I -m asyncplug.server SOCKET IDLE`: detach, then serve."""
    # Started by a setup command, whose signal watcher blocks SIGTERM, SIGINT and SIGHUP:
    # a blocked mask is inherited, and stop() could then not end idle workers.
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    if len(argv) != 3 or not client.private_dir(os.path.dirname(argv[1])):
        return 2
    if os.fork() != 0:
        return 0  # the starter waits for this process only
    os.setsid()  # no terminal, and the ssh session's end does not reach it
    run(argv[1], float(argv[2]))
    return 0


if __name__ == "__main__":
    os._exit(main(sys.argv))
