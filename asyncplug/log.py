"""The plugin's log file: `<log_dir>/asyncplug_YYYYMMDD.log`, next to gpbackup's own logs.

One line per command (arguments, duration, bytes moved, outcome); tracebacks at
ERROR; the options only in redacted form. Every line, tracebacks included, goes
through redact.Redactor (URL user-info, key values); the file is created 0600.
Lines follow gpbackup's gplog layout so `grep` habits carry over:

    20250101:12:00:00 asyncplug:gpadmin:sdw1:012345-[INFO]:-backup_data ... ok ...

Logging must never make a command fail: when the directory cannot be created or
the file cannot be opened, the command runs without a log file.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import socket
import time
from pathlib import Path

from asyncplug.config import Config
from asyncplug.redact import Redactor

LOGGER_NAME = "asyncplug"
DEFAULT_LOG_DIR = Config.log_dir
DEFAULT_LOG_LEVEL = Config.log_level

log = logging.getLogger(LOGGER_NAME)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return str(os.getuid())


class _GplogFormatter(logging.Formatter):
    """`YYYYMMDD:HH:MM:SS asyncplug:user:host:pid-[LEVEL]:-message`."""

    def __init__(self) -> None:
        super().__init__()
        self._who = f"asyncplug:{_user()}:{socket.gethostname()}"
        self.redact = Redactor()

    def format(self, record: logging.LogRecord) -> str:
        when = time.strftime("%Y%m%d:%H:%M:%S", time.localtime(record.created))
        who = f"{self._who}:{record.process:06d}"
        line = f"{when} {who}-[{record.levelname}]:-{record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return self.redact(line)


class _QuietFileHandler(logging.FileHandler):
    def handleError(self, record: logging.LogRecord) -> None:
        # A full disk or a removed directory must not print logging's own report on stderr.
        pass


def log_path(log_dir: str, when: float | None = None) -> Path:
    day = time.strftime("%Y%m%d", time.localtime(when))
    return Path(os.path.expanduser(log_dir)) / f"asyncplug_{day}.log"


def configure(log_dir: str = DEFAULT_LOG_DIR, level: str = DEFAULT_LOG_LEVEL) -> Path | None:
    """Send the `asyncplug` loggers to the day's file; returns its path, or None without one.

    Calling it again (after the config is read) replaces the previous file handler.
    """
    close()
    log.setLevel(level.upper())
    log.propagate = False  # never onto stderr: stderr carries exactly one line per error
    path = log_path(log_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _create_private(path)
        handler = _QuietFileHandler(path, encoding="utf-8")
    except OSError:
        log.addHandler(logging.NullHandler())
        return None
    handler.setFormatter(_GplogFormatter())
    log.addHandler(handler)
    return path


def _create_private(path: Path) -> None:
    """Create the log file 0600 (it names hosts, buckets and paths); one this user owns
    from before is made 0600 too."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_uid == os.getuid():
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def hide(secrets: list[str]) -> None:
    """Mask these values (keys, tokens, passwords) in every line from now on."""
    for handler in log.handlers:
        if isinstance(handler.formatter, _GplogFormatter):
            handler.formatter.redact = Redactor(secrets)


def close() -> None:
    """Flush and detach every handler (also used at exit, before os._exit)."""
    for handler in list(log.handlers):
        log.removeHandler(handler)
        with contextlib.suppress(OSError):
            handler.close()
