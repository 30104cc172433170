"""asyncplug.offsets: the restore_data_subset offsets file (SPEC §1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from asyncplug.errors import InputError
from asyncplug.offsets import check_ranges, parse_offsets, read_offsets


@pytest.mark.parametrize(
    ("text", "ranges"),
    [
        ("1 3 10", [(3, 10)]),
        ("1 900000 900001\n", [(900000, 900001)]),
        ("2 0 700000 900000 900001", [(0, 700000), (900000, 900001)]),
        ("2 1001 2007 4500 6000", [(1001, 2007), (4500, 6000)]),
        # table order, not sorted; empty and adjacent ranges are fine
        ("3 50 60 10 10 60 70", [(50, 60), (10, 10), (60, 70)]),
        ("0", []),
    ],
)
def test_spec_examples(text: str, ranges: list[tuple[int, int]]) -> None:
    assert parse_offsets(text) == ranges


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("2 1 5", "count 2 does not match 2 offsets"),
        ("1 1 5 7", "count 1 does not match 3 offsets"),
        ("1 3 ten", "'ten' is not an integer"),
        ("1 3.5 10", "'3.5' is not an integer"),
        ("1 -3 10", "'-3' is not an integer"),
        ("-1", "'-1' is not an integer"),
        ("1_0", "'1_0' is not an integer"),
        ("1 +5 10", "'\\+5' is not an integer"),
        ("1 0x10 20", "'0x10' is not an integer"),
        ("1 0 \u0663", "is not an integer"),  # an Arabic-Indic digit: int() takes it
        ("1 0 123456789012345678901", "at most 20"),  # 21 digits
        ("1 10 3", "ends before it starts"),
    ],
)
def test_malformed(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_offsets(text)


def test_end_beyond_the_object() -> None:
    check_ranges([(0, 100), (100, 100)], 100)
    with pytest.raises(InputError, match="beyond the end of the object"):
        check_ranges([(0, 10), (90, 101)], 100)


def test_read_offsets_file(tmp_path: Path) -> None:
    path = tmp_path / "offsets"
    path.write_text("2 0 700000 900000 900001\n")
    assert read_offsets(str(path)) == [(0, 700000), (900000, 900001)]


def test_read_missing_offsets_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read offsets file"):
        read_offsets(str(tmp_path / "nope"))


def test_messages_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "offsets"
    path.write_text("1 3 x\n")
    with pytest.raises(InputError, match=f"offsets file {path}"):
        read_offsets(str(path))


def test_numbers_of_twenty_digits_are_the_limit() -> None:
    assert parse_offsets("1 0 99999999999999999999") == [(0, 10**20 - 1)]


def test_a_huge_number_is_an_input_error_with_a_short_message(tmp_path: Path) -> None:
    """5000 digits made int() raise (its 4300-digit limit) and the CLI exit 1."""
    path = tmp_path / "offsets"
    path.write_text("1 0 " + "9" * 5000 + "\n")
    with pytest.raises(InputError, match=r"is not an integer") as caught:
        read_offsets(str(path))
    assert len(str(caught.value)) < 200 + len(str(path))
