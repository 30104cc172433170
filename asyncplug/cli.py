"""The command line gpbackup runs: `asyncplug COMMAND CONFIG_PATH ARGS...` (SPEC §1).

Only parsing and dispatch live here, plus the three things every command shares:
the exit status (errors.exit_code_for), exactly one line on stderr per error (the
traceback goes to the log), and SIGTERM/SIGINT/SIGHUP cancelling the command so the
pipelines abort their uploads (signals.py: within seconds, whatever the loop is doing).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from asyncplug import API_VERSION, __version__
from asyncplug import log as logfile
from asyncplug.config import load_config
from asyncplug.errors import Interrupted, PluginError, ReaderGone, UsageError, exit_code_for
from asyncplug.redact import secret_values
from asyncplug.signals import Watcher

T = TypeVar("T")

USAGE = "usage: asyncplug COMMAND CONFIG_PATH ARGS... (asyncplug --help lists the commands)"
READER_GONE = 128 + signal.SIGPIPE  # what a shell shows for a death by SIGPIPE


@dataclass(frozen=True)
class Command:
    args: tuple[str, ...]  # after CONFIG_PATH; [NAME] is optional
    on_interrupt: str = ""  # what an interrupted run leaves behind, for the message

    @property
    def required(self) -> int:
        return sum(not a.startswith("[") for a in self.args)

    @property
    def hook(self) -> bool:
        return "SCOPE" in self.args

    def usage(self, name: str) -> str:
        return " ".join(("usage: asyncplug", name, "CONFIG_PATH", *self.args))


_HOOK = ("LOCAL_BACKUP_DIR", "SCOPE", "[CONTENT_ID]")
COMMANDS: dict[str, Command] = {
    "setup_plugin_for_backup": Command(_HOOK),
    "setup_plugin_for_restore": Command(_HOOK),
    "cleanup_plugin_for_backup": Command(_HOOK),
    "cleanup_plugin_for_restore": Command(_HOOK),
    "backup_file": Command(("FILE",), "nothing was stored"),
    "restore_file": Command(("FILE",), "no file was written"),
    "backup_data": Command(("DATA_KEY",), "nothing was stored"),
    "restore_data": Command(("DATA_KEY",), "the output is incomplete"),
    "restore_data_subset": Command(("DATA_KEY", "OFFSETS_FILE"), "the output is incomplete"),
    "delete_backup": Command(("TIMESTAMP",), "some objects may remain"),
    "list_directory": Command(("[PREFIX]",), "the listing is incomplete"),
    "delete_directory": Command(("PREFIX",), "some objects may remain"),
    "verify": Command(("TIMESTAMP|KEY",), "the check is incomplete"),
}

HELP = "\n".join(
    [
        "asyncplug: storage plugin for gpbackup / gprestore (S3 or a mounted directory)",
        "",
        "usage: asyncplug COMMAND CONFIG_PATH ARGS...",
        "       asyncplug plugin_api_version",
        "       asyncplug --version",
        "",
        "commands:",
        *(f"  {name} CONFIG_PATH {' '.join(c.args)}" for name, c in COMMANDS.items()),
        "",
        "SCOPE is coordinator, master, segment_host or segment. See README.md for the options.",
        "",
    ]
)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    args = sys.argv[1:] if argv is None else argv
    # Started here, not in run(): a signal while stdout is flushed below is honoured too.
    watcher = _watcher(args)
    watcher.start()
    code = run(args, watcher)
    _settle_stdout()
    if code == READER_GONE:
        _die_of_sigpipe()
    if code != 0:
        # A pipeline thread may still block on stdin (gpbackup keeps the pipe open);
        # joining it at interpreter exit would hang, so leave once logs are flushed.
        sys.stderr.flush()
        logfile.close()
        os._exit(code)
    watcher.stop()  # a warm server's worker serves its next command with its own
    return code


def _watcher(argv: Sequence[str]) -> Watcher:
    name = argv[0] if argv and argv[0] in COMMANDS else "asyncplug"
    return Watcher(lambda signame: _interrupted(name, signame), logfile.log)


def run(argv: Sequence[str], watcher: Watcher | None = None) -> int:
    """Run one invocation and return its exit status; never raises. Without a watcher
    (in-process callers) it owns the signals for the duration of the call."""
    args = list(argv)
    name = args[0] if args else ""
    started = time.monotonic()
    own = watcher is None
    if watcher is None:
        watcher = _watcher(args)
        watcher.start()
    configured = False
    try:
        if not args:
            raise UsageError(f"no command given; {USAGE}")
        if name in ("-h", "--help", "help"):
            _print(HELP)
            return 0
        if name == "--version":
            _print(f"asyncplug version {__version__}\n")
            return 0
        if name == "plugin_api_version":
            if len(args) > 2:  # gpbackup passes none; a config path is tolerated
                raise UsageError(
                    "plugin_api_version takes no arguments; usage: asyncplug plugin_api_version"
                )
            _print(f"{API_VERSION}\n")
            return 0
        command = COMMANDS.get(name)
        if command is None:
            raise UsageError(f"unknown command {name!r}; {USAGE}")
        call = _bind(name, command, args[1:])
        config = load_config(args[1])
        logfile.configure(config.log_dir, config.log_level)
        logfile.hide(secret_values(config))
        configured = True
        logfile.log.debug("%s options: %s", name, config.redacted())
        moved = run_async(_guarded(name, command, lambda: call(config), watcher))
        _log_done(args, started, moved)
        watcher.reported(0)
        return 0
    except ReaderGone as gone:
        logfile.log.info("%s: %s", shlex.join(args), gone)
        watcher.reported(READER_GONE)
        return READER_GONE
    except (Exception, KeyboardInterrupt, asyncio.CancelledError) as exc:
        code = _fail(name, args, exc, started, configured)
        watcher.reported(code)
        return code
    finally:
        if own:
            watcher.stop()


def _bind(
    name: str, command: Command, rest: list[str]
) -> Callable[[Any], Coroutine[Any, Any, int]]:
    """Check the argument count (and SCOPE/CONTENT_ID) before anything else runs."""
    given = len(rest) - 1  # after CONFIG_PATH
    if not rest or not command.required <= given <= len(command.args):
        want = (
            str(command.required)
            if command.required == len(command.args)
            else f"{command.required} or {len(command.args)}"
        )
        raise UsageError(
            f"{name} takes CONFIG_PATH and {want} argument(s), got {max(given, 0)} "
            f"after it; {command.usage(name)}"
        )
    values = rest[1:]
    from asyncplug import commands  # here, so --version needs neither boto nor the pipelines

    function = getattr(commands, name)
    if command.hook:
        hook = commands.Hook(values[0], _scope(values[1], commands.SCOPES), _content_id(values))
        return lambda config: function(config, hook)
    return lambda config: function(config, *values)


def _scope(text: str, scopes: tuple[str, ...]) -> str:
    if text not in scopes:
        raise UsageError(f"scope {text!r} is not one of {', '.join(scopes)}")
    return text


def _content_id(values: list[str]) -> int | None:
    if len(values) < 3:
        return None
    text = values[2].strip().strip("\"'")  # gpbackup passes \"-1\": the quotes arrive
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"content id {values[2]!r} is not an integer") from None


async def _guarded(
    name: str, command: Command, make: Callable[[], Coroutine[Any, Any, T]], watcher: Watcher
) -> T:
    """Run the command; the first SIGTERM/SIGINT/SIGHUP cancels it (the pipelines abort
    their multipart uploads on cancellation) and becomes Interrupted. The watcher thread
    takes the signal and hands it to the loop."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    caught: list[str] = []

    def stop(sig: signal.Signals) -> None:
        if not caught and task is not None:
            caught.append(sig.name)
            task.cancel()

    watcher.attach(lambda sig: loop.call_soon_threadsafe(stop, sig))
    try:
        return await make()
    except BaseException as exc:
        # Whatever the cancellation turned into on its way up, the cause was the signal.
        if caught:
            raise Interrupted(_interrupted(name, caught[0])) from exc
        raise
    finally:
        watcher.detach()


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop when importable, but without waiting for the default
    executor's threads at the end (one may block on a read of stdin; see main)."""
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        try:
            leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def _interrupted(name: str, signame: str) -> str:
    consequence = COMMANDS[name].on_interrupt if name in COMMANDS else ""
    return f"{name} interrupted by {signame}" + (f"; {consequence}" if consequence else "")


def _as_plugin_error(name: str, exc: BaseException) -> BaseException:
    """Signals and closed pipes become Interrupted; everything else stays as it is."""
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted(_interrupted(name, "SIGINT"))
    if isinstance(exc, BrokenPipeError):
        return Interrupted(f"{name} stopped: stdout was closed by the reader")
    if isinstance(exc, asyncio.CancelledError):
        return Interrupted(f"{name} was cancelled")
    return exc


def _fail(name: str, args: list[str], exc: BaseException, started: float, configured: bool) -> int:
    error = _as_plugin_error(name, exc)
    code = exit_code_for(error)
    path = None if configured else logfile.configure()  # no config: the default log dir
    if isinstance(error, PluginError):
        message = str(error)
    else:
        where = f"; details in {path}" if path else ""
        message = " ".join(f"internal error: {type(error).__name__}: {error}{where}".split())
    seconds = time.monotonic() - started
    # A traceback helps with bugs and with foreign causes (botocore, OSError); a plain
    # usage or config mistake only gets one at debug level.
    plain = isinstance(error, PluginError) and error.__cause__ is None and error is exc
    logfile.log.error(
        "%s: failed after %.3f s, exit %d: %s",
        shlex.join(args) or "(no command)", seconds, code, message,
        exc_info=None if plain and not logfile.log.isEnabledFor(logging.DEBUG) else exc,
    )  # fmt: skip
    try:
        sys.stderr.write(f"asyncplug: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr gone too: the exit status still tells
    return code


def _log_done(args: list[str], started: float, moved: int) -> None:
    seconds = time.monotonic() - started
    rate = f" ({moved / seconds / 2**20:.1f} MiB/s)" if moved and seconds > 0 else ""
    logfile.log.info("%s: ok, %d bytes in %.3f s%s", shlex.join(args), moved, seconds, rate)


def _print(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _die_of_sigpipe() -> NoReturn:
    """End as `cat` and the Go plugin do when their reader has gone: killed by SIGPIPE,
    which PostgreSQL's COPY FROM PROGRAM accepts from a program it stopped reading, and
    which nobody reports as an error (gprestore's helper does not wait for the status)."""
    sys.stderr.flush()
    logfile.close()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPIPE)
    os._exit(READER_GONE)  # not reached: the signal ends the process


def _settle_stdout() -> None:
    """Flush stdout now; if the reader has gone, point fd 1 at /dev/null so the flush at
    interpreter exit does not print "Exception ignored ... BrokenPipeError"."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
