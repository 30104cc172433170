"""What the benchmark can run: scenario names, their variants, and subset ranges.

A scenario is what `--scenarios` names; a variant is one measured configuration of
it (backup_zstd runs at levels 1 and 3). Each variant yields one result row per
data kind and per executable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# operation, as the plugin command or baseline tool does it
BACKUP_DATA = "backup_data"
RESTORE_DATA = "restore_data"
RESTORE_SUBSET = "restore_data_subset"
BACKUP_FILE = "backup_file"
RESTORE_FILE = "restore_file"
PUT = "put"
GET = "get"
WRITES = (BACKUP_DATA, BACKUP_FILE, PUT)
SUBSET_RANGES = 20


@dataclass(frozen=True)
class Variant:
    scenario: str
    op: str
    name: str = ""  # "zstd-3"; empty when the scenario has one variant
    compression: str = "none"
    level: int | None = None
    tool: str = "asyncplug"  # or the baseline: curl, awscli, cat
    fraction: float = 0.0  # restore_subset: share of the object read

    @property
    def label(self) -> str:
        return f"{self.scenario}[{self.name}]" if self.name else self.scenario

    @property
    def direction(self) -> str:
        return "backup" if self.op in WRITES else "restore"

    @property
    def baseline(self) -> bool:
        return self.tool != "asyncplug"

    @property
    def codec(self) -> str:
        """The stored object this variant writes or reads: 'none', 'zstd-3', ..."""
        if self.compression == "none":
            return "none"
        return f"{self.compression}-{self.level}" if self.level is not None else self.compression


def for_codec(scenario: str, op: str, codec: str) -> Variant:
    """A variant reading or writing objects of `codec` ('none', 'zstd-3', 'lz4'; 'file'
    is an uncompressed backup_file object)."""
    if codec in ("none", "file"):
        return Variant(scenario, op)
    compression, _, level = codec.partition("-")
    return Variant(scenario, op, compression=compression, level=int(level) if level else None)


def _codec(scenario: str, compression: str, level: int | None = None) -> Variant:
    name = f"{compression}-{level}" if level is not None else ""
    return Variant(scenario, BACKUP_DATA, name, compression, level)


VARIANTS: tuple[Variant, ...] = (
    _codec("backup_none", "none"),
    _codec("backup_zstd", "zstd", 1),
    _codec("backup_zstd", "zstd", 3),
    _codec("backup_gzip", "gzip", 1),
    _codec("backup_gzip", "gzip", 6),
    _codec("backup_lz4", "lz4"),
    Variant("restore_data", RESTORE_DATA, "none"),
    Variant("restore_data", RESTORE_DATA, "zstd-3", "zstd", 3),
    Variant("restore_subset_1pct", RESTORE_SUBSET, fraction=0.01),
    Variant("restore_subset_10pct", RESTORE_SUBSET, fraction=0.10),
    Variant("backup_file", BACKUP_FILE),
    Variant("restore_file", RESTORE_FILE),
    Variant("curl_put", PUT, tool="curl"),
    Variant("curl_get", GET, tool="curl"),
    Variant("awscli_put", PUT, tool="awscli"),
    Variant("awscli_get", GET, tool="awscli"),
    Variant("cat_put", PUT, tool="cat"),
    Variant("cat_get", GET, tool="cat"),
)
# Scenarios that run many processes or their own objects, in their own modules
# (bench/streams.py, bench/subsets.py); they run only when named in --scenarios.
OWN_MODULE = ("streams", "subset_scale")
SCENARIOS: tuple[str, ...] = tuple(dict.fromkeys(v.scenario for v in VARIANTS)) + OWN_MODULE
S3_BASELINES = ("curl_put", "curl_get", "awscli_put", "awscli_get")
FILE_BASELINES = ("cat_put", "cat_get")
QUICK = (
    "backup_none",
    "backup_zstd",
    "restore_data",
    "restore_subset_1pct",
    "curl_put",
    "curl_get",
)
# What a compared executable (the reference Go plugin) understands: no compression.
COMPARABLE = ("backup_none", "restore_data[none]", "restore_subset_1pct", "restore_subset_10pct",
              "backup_file", "restore_file")  # fmt: skip
# The baseline that is the practical ceiling for each direction, by storage kind.
CEILING = {("s3", "backup"): "curl_put", ("s3", "restore"): "curl_get",
           ("file", "backup"): "cat_put", ("file", "restore"): "cat_get"}  # fmt: skip


def default_scenarios(storage: str, quick: bool) -> list[str]:
    if quick:
        return [s if storage == "s3" else s.replace("curl_", "cat_") for s in QUICK]
    skip = (FILE_BASELINES if storage == "s3" else S3_BASELINES) + OWN_MODULE
    return [s for s in SCENARIOS if s not in skip]


def parse_scenarios(text: str) -> list[str]:
    """`a,b,c` -> names, each checked; raises ValueError naming the unknown one."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("--scenarios is empty")
    for name in names:
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")
    return list(dict.fromkeys(names))


def variants_for(names: Sequence[str]) -> list[Variant]:
    """The variants of the chosen scenarios, writes before reads (reads need objects)."""
    chosen = [v for v in VARIANTS if v.scenario in names]
    return sorted(chosen, key=lambda v: v.direction != "backup")


def spread_ranges(
    size: int, fraction: float, count: int = SUBSET_RANGES, seed: int = 0
) -> list[tuple[int, int]]:
    """`count` ranges covering `fraction` of [0, size), one in each of `count` equal slots.

    Like the tables a filtered gprestore reads from a single data file: spread over the
    whole object, in file order, at a seeded spot inside each slot.
    """
    if size <= 0 or count <= 0:
        raise ValueError("size and count must be positive")
    total = max(count, round(size * fraction))
    lengths = [total // count + (1 if i < total % count else 0) for i in range(count)]
    rng = np.random.Generator(np.random.PCG64([seed, size, count]))
    ranges: list[tuple[int, int]] = []
    for i, length in enumerate(lengths):
        slot_start, slot_end = size * i // count, size * (i + 1) // count
        length = min(length, slot_end - slot_start)
        start = slot_start + int(rng.integers(0, slot_end - slot_start - length + 1))
        ranges.append((start, start + length))
    return ranges


def offsets_text(ranges: Sequence[tuple[int, int]]) -> str:
    """The offsets file gprestore writes: `N s1 e1 ... sN eN` on one line."""
    numbers = [str(len(ranges))] + [str(x) for r in ranges for x in r]
    return " ".join(numbers) + "\n"
