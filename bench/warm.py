"""asyncplug as gpbackup deploys it: through the warm server, with its CPU counted.

gpbackup runs `setup_plugin_for_backup` / `_restore` at segment_host scope on every
segment host before any data command, and the matching cleanup after; the setup starts
asyncplug's warm server (asyncplug/server.py), so each data command is a thin client
whose work runs in a worker the server forked. A `Session` does the same around the
bench's asyncplug commands, in a private runtime directory (ASYNCPLUG_RUNTIME_DIR, mode
0700) that nothing else serves.

What is counted (`Session.usage()` around one command or a group run at once):
- CPU: the clients' own user + system time (os.wait4, bench/procs.py) plus the CPU the
  server and its workers used meanwhile, read from /proc: theirs, and that of the
  workers the server reaped (cutime/cstime). Forking a worker is the server's CPU, and
  the worker's clean-up after its client left is waited for. Nothing is left out.
- Peak RSS: the clients' own ru_maxrss plus the VmHWM of each worker alive at the end
  (their high-water marks are reset through /proc/<pid>/clear_refs first). A worker's
  RSS counts the pages it still shares with the server (the pre-imported modules), so
  a sum over workers overstates what the host needs by those shared pages; the server's
  own memory is not added.
- The server's own start (its imports and warm-up, setup) is not a command's: it is
  kept apart in `Session.start_cpu_s`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import ChildRun, run_child

TICK = os.sysconf("SC_CLK_TCK")
STOP_TIMEOUT = 15.0  # cleanup asks the server to stop; its workers end within seconds
SETTLE = 0.1  # a worker finishes its command's clean-up after its client has left
SETTLE_MAX = 2.0
SCOPE = "segment_host"


def server_cpu(pid: int) -> float:
    """CPU seconds of the server, of its live workers and of those it reaped."""
    return _totals(pid, (11, 12, 13, 14)) / TICK


def server_faults(pid: int) -> int:
    """Minor page faults of the server, of its live workers and of those it reaped."""
    return _totals(pid, (7, 8))


def _totals(pid: int, columns: tuple[int, ...]) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(fields[i]) for i in columns)
    for child in children(pid):
        with contextlib.suppress(OSError):  # it ended meanwhile: now in the reaped figures
            total += _totals(child, columns)
    return total


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def server_pid(runtime_dir: str) -> int:
    """The pid the server wrote into its lock file (0 when none is there)."""
    locks = list(Path(runtime_dir).glob("*.lock"))
    text = locks[0].read_text().strip() if locks else ""
    return int(text) if text.isdigit() else 0


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def reset_peaks(pid: int) -> None:
    """Reset each worker's VmHWM to its current RSS (clear_refs 5, Linux >= 4.0)."""
    for child in children(pid):
        with contextlib.suppress(OSError):
            Path(f"/proc/{child}/clear_refs").write_text("5")


def worker_peaks(pid: int) -> list[int]:
    """VmHWM (KiB) of each live worker of the server."""
    peaks = []
    for child in children(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]))
    return peaks


def private_runtime_dir() -> str:
    """A socket directory for this run only (short: a socket path has 108 bytes)."""
    path = tempfile.mkdtemp(prefix="ap-", dir="/tmp")
    os.chmod(path, 0o700)
    return path


@dataclass
class Usage:
    """What the server and its workers used during some commands."""

    cpu_s: float = 0.0
    worker_peaks_kib: list[int] = field(default_factory=list)
    minflt: int = 0


def with_usage(run: ChildRun, usage: Usage) -> ChildRun:
    """One command served by the warm server: the client's CPU and memory plus its worker's."""
    return dataclasses.replace(
        run,
        cpu_s=run.cpu_s + usage.cpu_s,
        maxrss_kib=run.maxrss_kib + max(usage.worker_peaks_kib, default=0),
        minflt=run.minflt + usage.minflt,
        warm_cpu_s=usage.cpu_s,
    )


class Session:
    """setup_plugin_for_<direction> at segment_host scope (the warm server starts), the
    commands, cleanup_plugin_for_<direction> (it stops), as gpbackup runs them on a host.

    `env` must name the runtime directory (ASYNCPLUG_RUNTIME_DIR) that the commands run
    with; `config` must not turn the warm server off."""

    def __init__(
        self,
        plugin: str,
        config: str,
        env: dict[str, str],
        local_dir: str,
        direction: str = "backup",
    ) -> None:
        self.argv = [plugin, "", config, local_dir, SCOPE]
        self.env = env
        self.runtime_dir = env["ASYNCPLUG_RUNTIME_DIR"]
        self.direction = direction
        self.pid = 0
        self.start_cpu_s = 0.0
        os.makedirs(local_dir, exist_ok=True)

    def hook(self, name: str) -> None:
        argv = list(self.argv)
        argv[1] = f"{name}_plugin_for_{self.direction}"
        run = run_child(argv, env=self.env)
        if not run.ok:
            raise RuntimeError(f"{argv[1]}: {run.failure()}")

    def __enter__(self) -> Session:
        self.hook("setup")
        self.pid = server_pid(self.runtime_dir)
        if not self.pid or not alive(self.pid):
            self.hook("cleanup")
            raise RuntimeError(f"setup_plugin_for_{self.direction} started no warm server")
        self.start_cpu_s = server_cpu(self.pid)
        return self

    def __exit__(self, *exc: object) -> None:
        self.hook("cleanup")
        deadline = time.monotonic() + STOP_TIMEOUT
        while alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.02)  # the next commands must not find it still serving
        for lock in Path(self.runtime_dir).glob("*.lock"):
            with contextlib.suppress(OSError):
                lock.unlink()

    @contextlib.contextmanager
    def usage(self) -> Iterator[Usage]:
        """Usage of the server and its workers during the with-block, filled at its end;
        RuntimeError if the server did not serve throughout (a fallback to in-process
        commands would be measured as if it had)."""
        gone = RuntimeError("the warm server stopped during a measured command")
        try:
            reset_peaks(self.pid)
            before, faults = server_cpu(self.pid), server_faults(self.pid)
        except OSError:
            raise gone from None
        found = Usage()
        yield found
        if not alive(self.pid):
            raise gone
        try:
            found.cpu_s = self._settled() - before
            found.minflt = server_faults(self.pid) - faults
            found.worker_peaks_kib = worker_peaks(self.pid)
        except OSError:
            raise gone from None

    def _settled(self) -> float:
        """The server's CPU once its workers are done with the commands' clean-up."""
        now = server_cpu(self.pid)
        deadline = time.monotonic() + SETTLE_MAX
        while time.monotonic() < deadline:
            time.sleep(SETTLE)
            later = server_cpu(self.pid)
            if later == now:
                return now
            now = later
        return now


def run_served(session: Session | None, argv: list[str], **kwargs: Any) -> ChildRun:
    """run_child(argv, **kwargs); through a warm server `session`, charged with what the
    server and its workers used meanwhile (with_usage)."""
    if session is None:
        return run_child(argv, **kwargs)
    with session.usage() as usage:
        run = run_child(argv, **kwargs)
    return with_usage(run, usage)
