"""The benchmark's data generators: deterministic, realistic text, incompressible random."""

from __future__ import annotations

import zstandard

from bench import datagen
from bench.verify import digest_file

MiB = 1024 * 1024


def test_text_is_deterministic_and_seeded() -> None:
    assert datagen.text_block(3) == datagen.text_block(3)
    assert datagen.text_block(3) != datagen.text_block(3, seed=7)
    assert datagen.random_block(3) == datagen.random_block(3)


def test_a_stream_is_a_prefix_of_a_longer_one() -> None:
    short = b"".join(datagen.stream("text", 3 * MiB + 17))
    longer = b"".join(datagen.stream("text", 5 * MiB))
    assert len(short) == 3 * MiB + 17
    assert longer.startswith(short)


def test_blocks_past_the_pool_are_shuffled_rows_of_a_pool_block() -> None:
    blocks = datagen.TextBlocks()
    index = datagen.POOL_BLOCKS + 5
    late, base = blocks(index), blocks(5)
    assert late == datagen.TextBlocks()(index)  # deterministic from a fresh pool too
    assert late != base
    assert sorted(late.splitlines()) == sorted(base.splitlines())
    assert late.endswith(b"\n")


def test_text_rows_look_like_copy_output() -> None:
    rows = datagen.text_block(0).decode("ascii").splitlines()
    assert len(rows) == datagen.ROWS_PER_BLOCK
    fields = rows[0].split("\t")
    assert len(fields) == 16  # lineitem
    assert fields[0].isdigit() and "." in fields[4] and fields[10].count("-") == 2
    orders = datagen.text_block(6).split(b"\n", 1)[0]
    assert orders.count(b"\t") == 8 and b"Clerk#" in orders
    customer = datagen.text_block(9).split(b"\n", 1)[0]
    assert customer.count(b"|") == 7 and b"Customer#" in customer


def test_text_compresses_like_real_table_data() -> None:
    """zstd level 3 shrinks COPY output of TPC-H-like tables about 3-6x: so must ours.

    Measured past the pool of built blocks, where blocks are reshuffled pool rows, so
    that the reuse does not inflate the ratio.
    """
    blocks = datagen.TextBlocks()
    first = datagen.POOL_BLOCKS
    data = b"".join(blocks(i) for i in range(first, first + len(datagen._TABLES)))
    ratio = len(data) / len(zstandard.ZstdCompressor(level=3).compress(data))
    assert 3.0 <= ratio <= 6.0


def test_random_is_deterministic_and_incompressible() -> None:
    first = b"".join(datagen.stream("random", 6 * MiB))
    assert first == b"".join(datagen.stream("random", 6 * MiB))
    assert first != b"".join(datagen.stream("random", 6 * MiB, seed=1))
    compressed = zstandard.ZstdCompressor(level=3).compress(first)
    assert len(compressed) >= len(first)


def test_write_dataset_records_size_and_digest(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "data")
    dataset = datagen.write_dataset("text", 2 * MiB + 5, path)
    assert dataset.size == 2 * MiB + 5
    assert digest_file(path) == (dataset.digest, dataset.size)
    assert dataset.generate_mb_per_s > 0
