"""SIGTERM, SIGINT and SIGHUP end the process within seconds, whatever the loop is doing.

asyncio's own handlers (loop.add_signal_handler) run on the event loop: a loop stuck
in a busy callback, or a main thread blocked in a system call that is restarted after
the signal (PEP 475), never runs them, and gpbackup's SIGTERM would then wait for a
SIGKILL. So the three signals are blocked in every thread (threads inherit the mask
of the main thread, which blocks them first) and one watcher thread takes them with
sigwait(), which does not depend on the main thread at all:

1. it asks the loop to cancel the command (call_soon_threadsafe), so the pipelines
   abort their multipart uploads and the CLI reports the interruption as usual;
2. if the process is still alive GRACE seconds later, the loop could not do it: the
   watcher prints the same one line and leaves with the same exit status, without
   cleanup (os._exit).

A signal before the command runs (config loading) needs no cleanup: the watcher ends
the process at once. One that comes after the command, while the CLI reports its
outcome, gets the same grace, then the status already reported and no second line.
The plugin starts no programs, which would inherit the blocked mask.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable

from asyncplug.errors import Interrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# The abort of a multipart upload is one request; 5 s is the bound the caller is promised.
GRACE = 4.0
REPORT_TIMEOUT = 0.5

Cancel = Callable[[signal.Signals], object]


class Watcher:
    """Owns the three signals: start() once, attach()/detach() around the command's run
    on the event loop, reported() once the CLI has written its line, stop() to give the
    signals back (in-process callers; the CLI process just exits)."""

    def __init__(self, message: Callable[[str], str], log: logging.Logger) -> None:
        self._message = message  # signal name -> the one line (without "asyncplug: ")
        self._log = log
        self._lock = threading.Lock()
        self._cancel: Cancel | None = None
        self._attached = False  # the command has started: an outcome is coming
        self._code: int | None = None  # the exit status the CLI has reported
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mask: set[int | signal.Signals] | None = None

    def start(self) -> None:
        self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        self._thread = threading.Thread(target=self._run, name="asyncplug-signals", daemon=True)
        self._thread.start()

    def attach(self, cancel: Cancel) -> None:
        """From now on a signal first asks `cancel` (thread-safe) to stop the command."""
        with self._lock:
            self._cancel = cancel
            self._attached = True

    def detach(self) -> None:
        with self._lock:
            self._cancel = None

    def reported(self, code: int) -> None:
        """The CLI has written its outcome (exit status `code`): a late signal adds no line."""
        with self._lock:
            self._code = code

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None and thread.ident is not None:
            self._stop.set()
            with contextlib.suppress(ProcessLookupError):  # the thread has just ended
                signal.pthread_kill(thread.ident, signal.SIGHUP)  # blocked there: sigwait
            thread.join(timeout=GRACE + 1)
        if self._mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
            self._mask = None

    def _run(self) -> None:
        sig = signal.Signals(signal.sigwait(SIGNALS))
        with self._lock:
            cancel, attached = self._cancel, self._attached
        if self._stop.is_set():
            return
        if cancel is not None:
            with contextlib.suppress(RuntimeError):  # the loop has just closed
                cancel(sig)
        # Normally the CLI reports the interruption and exits during this wait.
        if attached and self._stop.wait(GRACE):
            return
        with self._lock:
            code = self._code
        if code is None:
            # stderr may be a full pipe and the log on a hung mount: bound the report too.
            report = threading.Thread(target=self._report, args=(sig,), daemon=True)
            report.start()
            report.join(timeout=REPORT_TIMEOUT)
        os._exit(Interrupted.exit_code if code is None else code)

    def _report(self, sig: signal.Signals) -> None:
        """The one line, written without sys.stderr or logging locks the main thread may hold."""
        message = self._message(sig.name)
        with contextlib.suppress(OSError):
            os.write(2, f"asyncplug: {message}\n".encode())
        record = self._log.makeRecord(
            self._log.name, logging.ERROR, __file__, 0,
            "%s; the command did not stop within %.0f s: exit without cleanup",
            (message, GRACE), None,
        )  # fmt: skip
        for handler in self._log.handlers:
            if handler.lock is not None and handler.lock.acquire(timeout=0.5):
                try:
                    handler.emit(record)
                finally:
                    handler.lock.release()
