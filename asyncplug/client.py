"""The Python client: hand the command to the warm server, else run it here.

The `asyncplug` executable is client/asyncplug.c, which does what main() does when a
server serves and execs this module's main() otherwise; without a C compiler at install
time, this module is the executable itself.

gpbackup starts one plugin process per table and segment in multi-file mode, so the
start of this process is the cost of a small table. This module imports nothing but
`_socket` and `_signal` (the `socket` and `signal` modules load `enum`, about 10 ms):
it finds the warm server of this install (asyncplug.server), passes it argv, the
environment, the working directory and fds 0-2 (SCM_RIGHTS), forwards SIGTERM, SIGINT
and SIGHUP to the worker the server forked, and exits with the worker's status.

Whenever the server is absent or cannot serve (no socket, a directory that is not the
user's own, another install, `warm_server: off`), the command runs in this process
through asyncplug.cli, exactly as without a server.
"""

from __future__ import annotations

import os
import sys

from asyncplug import __version__

MYPY = False  # typing.TYPE_CHECKING without importing typing (~2 ms)
if MYPY:
    from _socket import socket

PROTOCOL = b"asyncplug-warm-1"
DIR_ENV = "ASYNCPLUG_RUNTIME_DIR"  # tests point it at a private directory
INSTALL_ENV = "ASYNCPLUG_INSTALL"  # set by the compiled client: its install prefix
INTERRUPTED = 9  # errors.Interrupted.exit_code, without importing errors
FORWARDED = (15, 2, 1)  # SIGTERM, SIGINT, SIGHUP: as signals.SIGNALS
SIGPIPE = 13
READER_GONE = 128 + SIGPIPE  # cli.READER_GONE: the worker's reader closed stdout early
STOP = "stop"  # control requests: an empty working directory, then one of these
PING = "ping"


def runtime_dir() -> str:
    """Not under XDG_RUNTIME_DIR: gpbackup's ssh sessions and the segments' COPY
    programs run with different environments, and both must find the same socket."""
    return os.environ.get(DIR_ENV) or f"/tmp/asyncplug-{os.getuid()}"


def install_prefix() -> str:
    """The install, as the compiled client (client/asyncplug.c) knows it: the parent of
    the bin/ directory it runs from. It passes that on in ASYNCPLUG_INSTALL when it runs
    this client, since pip may have put it elsewhere than the interpreter's prefix
    (/usr/local/bin for a system Python's /usr); otherwise the interpreter's prefix
    (in a virtualenv, the same directory)."""
    named = os.environ.get(INSTALL_ENV, "")
    return named if os.path.isabs(named) else os.path.realpath(sys.prefix)


def install_key() -> str:
    """This version and install prefix (FNV-1a, 64 bits), as client/asyncplug.c has it."""
    text = "\0".join((__version__, install_prefix())).encode()
    value = 0xCBF29CE484222325
    for byte in text:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{value:016x}"


def socket_path() -> str:
    return os.path.join(runtime_dir(), f"{__version__}-{install_key()}.sock")


def private_dir(path: str) -> bool:
    """A real directory owned by this user that nobody else may enter."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return st.st_mode & 0o170000 == 0o040000 and st.st_uid == os.getuid() and not st.st_mode & 0o077


def encode(argv: list[str], control: bool = False) -> bytes:
    """The request: protocol, version, install prefix, cwd, umask, argv count, argv,
    environment (client/asyncplug.c builds the same)."""
    parts = [PROTOCOL, __version__.encode(), os.fsencode(install_prefix())]
    cwd = b"" if control else os.getcwd().encode("utf-8", "surrogateescape")
    mask = os.umask(0o077)
    os.umask(mask)
    parts += [cwd, b"%o" % mask, str(len(argv)).encode()]
    parts += [os.fsencode(a) for a in argv]
    parts += [k + b"=" + v for k, v in os.environb.items()]
    body = b"\0".join(parts)
    return len(body).to_bytes(4, "big") + body


def connect(path: str) -> socket | None:
    import _socket

    if not private_dir(os.path.dirname(path)):
        return None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:  # no server, or a stale socket file
        sock.close()
        return None
    return sock


def read_line(sock: socket, buffer: bytearray) -> bytes:
    """The next `\\n`-terminated reply (`buffer` keeps what came after it), or b"" at EOF."""
    while b"\n" not in buffer:
        chunk = sock.recv(64)
        if not chunk:
            return b""
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line + b"\n"


def send(sock: socket, argv: list[str], fds: tuple[int, ...]) -> None:
    import _socket

    data = encode(argv, control=not fds)
    if fds:
        rights = b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds)
        sent = sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
    else:
        sent = sock.send(data)
    if sent < len(data):
        sock.sendall(data[sent:])


class _Early(Exception):
    """A signal came before the worker had said which process runs the command."""


def request(
    argv: list[str], path: str | None = None, fds: tuple[int, int, int] = (0, 1, 2)
) -> int | None:
    """Run argv in a worker of the warm server: its wait status (see finish), or None when
    the command must run in this process instead (nothing has started then)."""
    import _signal

    for fd in fds:
        try:
            os.fstat(fd)
        except OSError:  # not open: the server needs all three, and the socket would be fd 0
            return None
    sock = connect(path or socket_path())
    if sock is None:
        return None
    caught: list[int] = []
    worker = [0]
    pending = bytearray()

    def forward(signum: int, frame: object) -> None:
        if worker[0]:
            os.kill(worker[0], signum)
        else:
            caught.append(signum)
            if waiting[0]:
                raise _Early  # a worker stuck before it started (a config on a hung mount)

    waiting = [True]
    previous = {sig: _signal.signal(sig, forward) for sig in FORWARDED}
    try:
        try:
            send(sock, argv, fds)
            reply = read_line(sock, pending)
        except OSError:  # fds 0-2 not all open, or the server went away: run here
            reply = b""
        if not reply.startswith(b"P"):
            waiting[0] = False
            return None
        worker[0] = int(reply[1:])
        while caught:
            os.kill(worker[0], caught.pop())
        try:
            status = read_line(sock, pending)
        except OSError:
            status = b""
        waiting[0] = False
        worker[0] = 0  # the worker may serve another client now: signal no more
    except _Early:
        # Closing the socket below tells a worker that has started to stop; this process
        # reports the signal as the command would before it runs.
        import signal

        from asyncplug.cli import _interrupted

        name = argv[0] if argv else "asyncplug"
        signame = signal.Signals(caught.pop()).name
        caught.clear()
        sys.stderr.write(f"asyncplug: {_interrupted(name, signame)}\n")
        sys.stderr.flush()
        return INTERRUPTED << 8
    finally:
        sock.close()
        for sig, handler in previous.items():
            _signal.signal(sig, handler)
        for sig in caught:  # none reached a worker: as if they came to a process of its own
            os.kill(os.getpid(), sig)
    if status.startswith(b"X"):  # the worker's exit code
        code = int(status[1:])
        # A reader gone: end as the in-process command does, killed by SIGPIPE.
        return SIGPIPE if code == READER_GONE else code << 8
    # The worker is gone without a word: killed (SIGKILL), or its server with it.
    name = argv[0] if argv else "asyncplug"
    sys.stderr.write(f"asyncplug: {name} interrupted: its warm server process was killed\n")
    sys.stderr.flush()
    return INTERRUPTED << 8


def control(what: str, path: str | None = None) -> int | None:
    """Send STOP or PING to the server at `path`: the server's pid, or None without one."""
    sock = connect(path or socket_path())
    if sock is None:
        return None
    try:
        send(sock, [what], ())
        reply = read_line(sock, bytearray())
    except OSError:
        return None
    finally:
        sock.close()
    return int(reply[1:]) if reply.startswith(b"K") else None


def finish(status: int) -> None:
    """Leave with the worker's exit code, or die of the signal the status names."""
    if os.WIFSIGNALED(status):
        import _signal

        sys.stderr.flush()
        _signal.signal(os.WTERMSIG(status), _signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    os._exit(os.waitstatus_to_exitcode(status))


def main() -> int:
    """Console entry point."""
    argv = sys.argv[1:]
    status = request(argv) if argv else None
    if status is not None:
        finish(status)
    from asyncplug.cli import main as run_here

    return run_here()
