"""The offsets file of restore_data_subset: `N s1 e1 s2 e2 ... sN eN` (end exclusive)."""

from __future__ import annotations

import re
from pathlib import Path

from asyncplug.errors import InputError

Range = tuple[int, int]

# gprestore writes plain non-negative decimals; int() would also take `1_0` and `+5`,
# and raises an internal error beyond 4300 digits. 20 digits hold any 64-bit offset.
MAX_DIGITS = 20
_NUMBER = re.compile(rf"[0-9]{{1,{MAX_DIGITS}}}")


def parse_offsets(text: str, source: str = "offsets file") -> list[Range]:
    """Parse and check the syntax; `check_ranges` checks them against the object size."""
    words = text.split()
    if not words:
        raise InputError(f"{source} is empty")
    bad = next((w for w in words if not _NUMBER.fullmatch(w)), None)
    if bad is not None:
        shown = bad if len(bad) <= 40 else bad[:40] + "..."
        raise InputError(
            f"{source}: {shown!r} is not an integer (plain decimal digits, at most {MAX_DIGITS})"
        )
    numbers = [int(w) for w in words]
    count, values = numbers[0], numbers[1:]
    if len(values) != 2 * count:
        raise InputError(f"{source}: count {count} does not match {len(values)} offsets")
    ranges = [(values[i], values[i + 1]) for i in range(0, len(values), 2)]
    for start, end in ranges:
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
