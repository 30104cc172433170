"""Live progress: a rich bar (bytes moved, rate) on a terminal, plain lines otherwise.

`with display.task(label, total) as tick:` gives the callable the pumps call with
each chunk they move (from their own threads).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

Tick = Callable[[int], None]
PLAIN_EVERY_S = 5.0


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


class PlainDisplay:
    """One line when a task starts, one every PLAIN_EVERY_S seconds, one at the end."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    @contextmanager
    def task(self, label: str, total: int) -> Iterator[Tick]:
        lock = threading.Lock()
        moved = [0]
        start = last = time.perf_counter()

        def tick(n: int) -> None:
            nonlocal last
            with lock:
                moved[0] += n
                now = time.perf_counter()
                if now - last >= PLAIN_EVERY_S:
                    last = now
                    rate = moved[0] / 1e6 / (now - start)
                    self._print(f"  {label}: {_mib(moved[0])} of {_mib(total)}, {rate:,.0f} MB/s")

        self._print(f"{label} ...")
        yield tick

    def note(self, text: str) -> None:
        self._print(text)

    def close(self) -> None:
        pass


class RichDisplay:
    """A transient rich progress bar per task; notes are printed above it."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        self.console = Console()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.progress.start()

    @contextmanager
    def task(self, label: str, total: int) -> Iterator[Tick]:
        task_id = self.progress.add_task(label, total=total or None)

        def tick(n: int) -> None:
            self.progress.advance(task_id, n)

        try:
            yield tick
        finally:
            self.progress.remove_task(task_id)

    def note(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False)

    def close(self) -> None:
        self.progress.stop()


def make_display() -> PlainDisplay | RichDisplay:
    """rich when stdout is a terminal, plain lines when it is a file or a pipe."""
    if sys.stdout.isatty():
        try:
            return RichDisplay()
        except ImportError:
            pass
    return PlainDisplay()
