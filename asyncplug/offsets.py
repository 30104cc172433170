"""The offsets file of restore_data_subset: `N s1 e1 s2 e2 ... sN eN` (end exclusive)."""

from __future__ import annotations

from pathlib import Path

from asyncplug.errors import InputError

Range = tuple[int, int]


def parse_offsets(text: str, source: str = "offsets file") -> list[Range]:
    """Parse and check the syntax; `check_ranges` checks them against the object size."""
    words = text.split()
    if not words:
        raise InputError(f"{source} is empty")
    try:
        numbers = [int(w) for w in words]
    except ValueError:
        bad = next(w for w in words if not w.lstrip("-").isdigit())
        raise InputError(f"{source}: {bad!r} is not an integer") from None
    count, values = numbers[0], numbers[1:]
    if count < 0 or len(values) != 2 * count:
        raise InputError(f"{source}: count {count} does not match {len(values)} offsets")
    ranges = [(values[i], values[i + 1]) for i in range(0, len(values), 2)]
    for start, end in ranges:
        if start < 0 or end < 0:
            raise InputError(f"{source}: negative offset in range {start} {end}")
        if end < start:
            raise InputError(f"{source}: range {start} {end} ends before it starts")
    return ranges


def check_ranges(ranges: list[Range], size: int, source: str = "offsets file") -> None:
    for start, end in ranges:
        if end > size:
            raise InputError(
                f"{source}: range {start} {end} goes beyond the end of the object ({size} bytes)"
            )


def read_offsets(path: str) -> list[Range]:
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read offsets file {path}: {exc}") from exc
    return parse_offsets(text, f"offsets file {path}")
