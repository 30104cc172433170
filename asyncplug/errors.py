"""Every error asyncplug reports, and the exit code each one maps to.

    PluginError                 exit 1   base; its message is the one line on stderr
    ├── UsageError              exit 2   wrong command or argument count
    ├── ConfigError             exit 3   config file unreadable, invalid YAML, bad option
    ├── InputError              exit 4   bad offsets file, bad timestamp, refused prefix
    ├── StorageError            exit 5   the backend failed (after retries)
    │   ├── ObjectNotFound      exit 6   the key (or the backup) does not exist
    │   ├── AccessDenied        exit 7   credentials or permissions
    │   └── IntegrityError      exit 8   checksum mismatch, short read, corrupt format
    └── Interrupted             exit 9   SIGTERM / SIGINT / SIGHUP or a closed pipe
        └── ReaderGone          SIGPIPE  a restore's stdout closed by its reader (a normal end)

Foreign errors (botocore, aiohttp, OSError) are translated in one place,
`storage.s3.translate` / `storage.fs.translate`, with `raise ... from exc`,
so the CLI never shows a traceback for them.
"""

from __future__ import annotations


class PluginError(Exception):
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        # The message must stay on one line: gprestore shows stderr to the user.
        return " ".join(self.message.split())


class UsageError(PluginError):
    exit_code = 2


class ConfigError(PluginError):
    exit_code = 3


class InputError(PluginError):
    exit_code = 4


class StorageError(PluginError):
    exit_code = 5


class ObjectNotFound(StorageError):
    exit_code = 6


class AccessDenied(StorageError):
    exit_code = 7


class IntegrityError(StorageError):
    exit_code = 8


class Interrupted(PluginError):
    exit_code = 9


class ReaderGone(Interrupted):
    """The reader of a restore's stdout closed it before the end: gprestore's helper does
    so once it has the tables it wants. Not an error: the CLI logs it at INFO and ends by
    SIGPIPE, as the Go plugin does (README "Exit codes")."""


def exit_code_for(exc: BaseException) -> int:
    """The process exit status for an exception that reached the CLI."""
    if isinstance(exc, PluginError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted.exit_code
    return 1
