"""Deterministic benchmark data: COPY-like text rows, or incompressible bytes.

Text is what a gpbackup single data file holds: the COPY output of several tables
back to back. Rows look like TPC-H lineitem / orders / customer (ints, decimals,
dates, short categorical strings, free-text comments), tab separated, one row per
line. Every block of rows is built with numpy from its own seed, so block `i` is
the same bytes whatever the size asked for, and a stream of any length is a prefix
of the same infinite stream.

Building rows costs about 30 MB/s, too slow to feed a plugin, so only the first
POOL_BLOCKS blocks (about 64 MiB) are built; block `i` beyond them is block
`i % POOL_BLOCKS` cut at row boundaries into CHUNKS pieces put back in an order
drawn from `i`'s seed. A block's bytes repeat only POOL_BLOCKS blocks later
(about 64 MiB on), far beyond the window of any compressor level used here
(zstd <= 19: 8 MiB, gzip: 32 KiB, lz4: 64 KiB), so ratios stay those of fresh rows.

Rows are assembled without a Python loop per row: each field becomes a uint8 matrix
(one row per table row) plus a mask of the bytes that are really there (leading
zeros and padding are masked out); the row matrix `M[mask]` read row-major is the
text.
"""

from __future__ import annotations

import datetime
import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bench.verify import new_digest

Bytes2D = npt.NDArray[np.uint8]
Mask2D = npt.NDArray[np.bool_]
Field = tuple[Bytes2D, Mask2D]

KINDS = ("text", "random")
ROWS_PER_BLOCK = 16384
POOL_BLOCKS = 32
CHUNKS = 64
RANDOM_BLOCK = 4 * 1024 * 1024
DEFAULT_SEED = 20250101

_WORD_TEXT = (
    "furiously quickly carefully blithely slyly ironic regular final express special "
    "pending bold even silent unusual idle busy ruthless fluffy daring enticing careful "
    "deposits requests accounts packages theodolites instructions foxes pinto beans "
    "ideas dependencies platelets excuses asymptotes courts dolphins multipliers "
    "sauternes warthogs frets dinos attainments somas tithes braids hockey players "
    "sleep wake are cajole haggle nag use boost affix detect integrate maintain "
    "nod was lose sublate solve thrash promise engage hinder print x-ray breach eat "
    "grow impress mold poach serve run dazzle snooze doze unwind kindle play hang "
    "believe doubt above according across after against along alongside among "
    "around at atop before behind beneath beside besides between beyond by despite "
    "during except for from inside instead of into near of on outside over past since "
    "through throughout to toward under until up upon without with within the"
)
_WORDS = tuple(_WORD_TEXT.split())
_SHIPMODES = ("REG AIR", "AIR", "RAIL", "SHIP", "TRUCK", "MAIL", "FOB")
_INSTRUCT = ("DELIVER IN PERSON", "COLLECT COD", "NONE", "TAKE BACK RETURN")
_PRIORITY = ("1-URGENT", "2-HIGH", "3-MEDIUM", "4-NOT SPECIFIED", "5-LOW")
_SEGMENTS = ("AUTOMOBILE", "BUILDING", "FURNITURE", "MACHINERY", "HOUSEHOLD")
_ALNUM = np.frombuffer(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,. ", dtype=np.uint8
)
_EPOCH = datetime.date(1992, 1, 1)
_DAYS = 2557  # 1992-01-01 .. 1998-12-31


def _table(strings: tuple[str, ...] | list[str]) -> tuple[Bytes2D, npt.NDArray[np.int64]]:
    width = max(len(s) for s in strings)
    out = np.zeros((len(strings), width), dtype=np.uint8)
    for i, s in enumerate(strings):
        out[i, : len(s)] = np.frombuffer(s.encode(), dtype=np.uint8)
    return out, np.array([len(s) for s in strings], dtype=np.int64)


_DATE_TABLE = _table([(_EPOCH + datetime.timedelta(days=d)).isoformat() for d in range(_DAYS)])[0]
_WORD_TABLE = _table(_WORDS)


def _const(n: int, text: bytes) -> Field:
    row = np.frombuffer(text, dtype=np.uint8)
    return np.broadcast_to(row, (n, len(row))), np.ones((n, len(row)), dtype=bool)


def _int(values: npt.NDArray[np.int64], width: int, pad: bool = False) -> Field:
    """Decimal digits, most significant first; leading zeros masked unless `pad`."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    digits = (values[:, None] // powers) % 10
    chars = (digits + 48).astype(np.uint8)
    if pad:
        return chars, np.ones(chars.shape, dtype=bool)
    significant = np.maximum.accumulate(digits != 0, axis=1)
    significant[:, -1] = True  # zero prints as "0"
    return chars, significant


def _decimal(cents: npt.NDArray[np.int64], width: int) -> Field:
    whole, whole_mask = _int(cents // 100, width)
    frac, frac_mask = _int(cents % 100, 2, pad=True)
    dot, dot_mask = _const(len(cents), b".")
    return np.hstack([whole, dot, frac]), np.hstack([whole_mask, dot_mask, frac_mask])


def _choice(table: tuple[Bytes2D, npt.NDArray[np.int64]], index: npt.NDArray[np.int64]) -> Field:
    chars, lengths = table
    mask = np.arange(chars.shape[1])[None, :] < lengths[index][:, None]
    return chars[index], mask


def _date(days: npt.NDArray[np.int64]) -> Field:
    chars = _DATE_TABLE[np.clip(days, 0, _DAYS - 1)]
    return chars, np.ones(chars.shape, dtype=bool)


def _comment(rng: np.random.Generator, n: int, low: int, high: int) -> Field:
    """`low`..`high` words, Zipf-like word choice (a few words are very common)."""
    count = rng.integers(low, high + 1, size=n)
    ranks = np.minimum(rng.zipf(1.3, size=(n, high)) - 1, len(_WORDS) - 1)
    parts: list[Field] = []
    for j in range(high):
        word, word_mask = _choice(_WORD_TABLE, ranks[:, j])
        active = (count > j)[:, None]
        if j:
            space, space_mask = _const(n, b" ")
            parts.append((space, space_mask & active))
        parts.append((word, word_mask & active))
    return _join(parts)


def _random_chars(rng: np.random.Generator, n: int, low: int, high: int) -> Field:
    chars = _ALNUM[rng.integers(0, len(_ALNUM), size=(n, high))]
    lengths = rng.integers(low, high + 1, size=n)
    return chars, np.arange(high)[None, :] < lengths[:, None]


def _join(parts: list[Field]) -> Field:
    return np.hstack([p[0] for p in parts]), np.hstack([p[1] for p in parts])


def _row(fields: list[Field], sep: bytes = b"\t") -> bytes:
    n = fields[0][0].shape[0]
    parts: list[Field] = []
    for i, field in enumerate(fields):
        if i:
            parts.append(_const(n, sep))
        parts.append(field)
    parts.append(_const(n, b"\n"))
    chars, mask = _join(parts)
    return chars[mask].tobytes()


def _lineitem(rng: np.random.Generator, first_key: int, n: int) -> bytes:
    order = first_key + np.arange(n, dtype=np.int64) // 4
    quantity = rng.integers(1, 51, size=n)
    part = rng.integers(1, 200_000, size=n)
    price = quantity * (90_000 + (part % 20_001) * 10) // 100
    ship = rng.integers(0, _DAYS - 200, size=n)
    return _row([
        _int(order, 10), _int(part, 6), _int(rng.integers(1, 10_000, size=n), 5),
        _int(np.arange(n, dtype=np.int64) % 4 + 1, 1), _decimal(quantity * 100, 2),
        _decimal(price, 7), _decimal(rng.integers(0, 11, size=n), 1),
        _decimal(rng.integers(0, 9, size=n), 1),
        _choice(_table(("R", "A", "N")), rng.integers(0, 3, size=n)),
        _choice(_table(("O", "F")), (ship > 1200).astype(np.int64)),
        _date(ship), _date(ship + rng.integers(-60, 60, size=n)),
        _date(ship + rng.integers(1, 30, size=n)),
        _choice(_table(_INSTRUCT), rng.integers(0, len(_INSTRUCT), size=n)),
        _choice(_table(_SHIPMODES), rng.integers(0, len(_SHIPMODES), size=n)),
        _comment(rng, n, 2, 6),
    ])  # fmt: skip


def _orders(rng: np.random.Generator, first_key: int, n: int) -> bytes:
    return _row([
        _int(first_key + np.arange(n, dtype=np.int64), 10),
        _int(rng.integers(1, 150_000, size=n), 6),
        _choice(_table(("O", "F", "P")), rng.integers(0, 3, size=n)),
        _decimal(rng.integers(90_000, 50_000_000, size=n), 6),
        _date(rng.integers(0, _DAYS, size=n)),
        _choice(_table(_PRIORITY), rng.integers(0, len(_PRIORITY), size=n)),
        _join([_const(n, b"Clerk#"), _int(rng.integers(1, 1000, size=n), 9, pad=True)]),
        _const(n, b"0"),
        _comment(rng, n, 3, 9),
    ])  # fmt: skip


def _customer(rng: np.random.Generator, first_key: int, n: int) -> bytes:
    key = first_key + np.arange(n, dtype=np.int64)
    nation = rng.integers(0, 25, size=n)
    return _row([
        _int(key, 9), _join([_const(n, b"Customer#"), _int(key, 9, pad=True)]),
        _random_chars(rng, n, 10, 40), _int(nation, 2),
        _join([
            _int(nation + 10, 2), _const(n, b"-"), _int(rng.integers(100, 1000, size=n), 3),
            _const(n, b"-"), _int(rng.integers(100, 1000, size=n), 3), _const(n, b"-"),
            _int(rng.integers(1000, 10000, size=n), 4),
        ]),
        _decimal(rng.integers(0, 1_000_000, size=n), 4),
        _choice(_table(_SEGMENTS), rng.integers(0, len(_SEGMENTS), size=n)),
        _comment(rng, n, 5, 12),
    ], sep=b"|")  # fmt: skip


# A segment's data file: mostly lineitem, then orders, then customer (by block index).
_TABLES = (_lineitem,) * 6 + (_orders,) * 3 + (_customer,)


def built_block(index: int, seed: int = DEFAULT_SEED) -> bytes:
    """ROWS_PER_BLOCK freshly built rows of one table (slow: the pool only)."""
    rng = np.random.Generator(np.random.PCG64([seed, index]))
    make = _TABLES[index % len(_TABLES)]
    return make(rng, 1 + index * ROWS_PER_BLOCK, ROWS_PER_BLOCK)


def shuffled_block(base: bytes, index: int, seed: int = DEFAULT_SEED) -> bytes:
    """`base` cut at row ends into CHUNKS pieces, put back in an order drawn from `index`."""
    ends = np.flatnonzero(np.frombuffer(base, dtype=np.uint8) == 10) + 1
    cuts = [0, *ends[np.linspace(0, len(ends) - 1, CHUNKS + 1).astype(np.int64)[1:]].tolist()]
    pieces = [base[a:b] for a, b in itertools.pairwise(cuts) if b > a]
    order = np.random.Generator(np.random.PCG64([seed, index, 2])).permutation(len(pieces))
    return b"".join(pieces[i] for i in order)


class TextBlocks:
    """Block `i` of the text stream; keeps the pool of built blocks it has made."""

    def __init__(self, seed: int = DEFAULT_SEED) -> None:
        self.seed = seed
        self._pool: dict[int, bytes] = {}

    def __call__(self, index: int) -> bytes:
        slot = index % POOL_BLOCKS
        if slot not in self._pool:
            self._pool[slot] = built_block(slot, self.seed)
        if index < POOL_BLOCKS:
            return self._pool[slot]
        return shuffled_block(self._pool[slot], index, self.seed)


def text_block(index: int, seed: int = DEFAULT_SEED) -> bytes:
    """Block `index` of the text stream (builds the pool block it needs each call)."""
    return TextBlocks(seed)(index)


def random_block(index: int, seed: int = DEFAULT_SEED) -> bytes:
    """Block `index` of the incompressible stream (RANDOM_BLOCK bytes)."""
    bits = np.random.Generator(np.random.SFC64([seed, index, 1])).bit_generator
    return bytes(bits.random_raw(RANDOM_BLOCK // 8).tobytes())


def stream(kind: str, size: int, seed: int = DEFAULT_SEED) -> Iterator[bytes]:
    """The first `size` bytes of the `kind` stream, in blocks."""
    if kind not in KINDS:
        raise ValueError(f"unknown data kind {kind!r} (choose from {', '.join(KINDS)})")
    text = TextBlocks(seed)
    left, index = size, 0
    while left > 0:
        data = text(index) if kind == "text" else random_block(index, seed)
        index += 1
        if len(data) > left:
            data = data[:left]
        left -= len(data)
        yield data


@dataclass(frozen=True)
class Dataset:
    """A generated data file: the producer pipes from it, the verifier checks against it."""

    kind: str
    path: str
    size: int
    digest: str  # verify.new_digest of the whole file
    generate_mb_per_s: float


def write_dataset(kind: str, size: int, path: str, seed: int = DEFAULT_SEED) -> Dataset:
    digest = new_digest()
    start = time.perf_counter()
    with open(path, "wb") as out:
        for data in stream(kind, size, seed):
            digest.update(data)
            out.write(data)
    elapsed = time.perf_counter() - start
    if os.path.getsize(path) != size:
        raise RuntimeError(f"generated {path} has the wrong size")
    return Dataset(kind, path, size, digest.hexdigest(), size / 1e6 / max(elapsed, 1e-9))
