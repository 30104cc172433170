"""Scenario selection and the subset ranges of restore_data_subset."""

from __future__ import annotations

import pytest

from asyncplug.offsets import check_ranges, parse_offsets
from bench import scenarios as sc


@pytest.mark.parametrize("fraction", [0.01, 0.10])
@pytest.mark.parametrize("size", [16 * 2**20, 2**30 + 12345, 1000])
def test_spread_ranges_cover_the_fraction_in_twenty_slots(size: int, fraction: float) -> None:
    ranges = sc.spread_ranges(size, fraction)
    assert len(ranges) == sc.SUBSET_RANGES == 20
    assert sum(end - start for start, end in ranges) == max(20, round(size * fraction))
    for i, (start, end) in enumerate(ranges):
        assert size * i // 20 <= start < end <= size * (i + 1) // 20  # own slot, in bounds
    assert ranges == sorted(ranges)


def test_spread_ranges_are_seeded() -> None:
    size = 2**30
    assert sc.spread_ranges(size, 0.01) == sc.spread_ranges(size, 0.01)
    assert sc.spread_ranges(size, 0.01) != sc.spread_ranges(size, 0.01, seed=1)


def test_offsets_text_is_what_the_plugin_parses() -> None:
    size = 64 * 2**20
    ranges = sc.spread_ranges(size, 0.10)
    text = sc.offsets_text(ranges)
    assert text.count("\n") == 1 and text.split()[0] == "20"
    parsed = parse_offsets(text)
    assert parsed == ranges
    check_ranges(parsed, size)


def test_parse_scenarios_names_the_unknown_one() -> None:
    assert sc.parse_scenarios("backup_none, curl_put,backup_none") == ["backup_none", "curl_put"]
    with pytest.raises(ValueError, match="backup_nope"):
        sc.parse_scenarios("backup_none,backup_nope")
    with pytest.raises(ValueError, match="empty"):
        sc.parse_scenarios(" , ")


def test_variants_put_writes_before_reads() -> None:
    variants = sc.variants_for(["restore_data", "backup_zstd", "curl_get", "curl_put"])
    directions = [v.direction for v in variants]
    assert directions == sorted(directions)  # "backup" < "restore"
    assert {v.label for v in variants} == {
        "backup_zstd[zstd-1]", "backup_zstd[zstd-3]", "restore_data[none]",
        "restore_data[zstd-3]", "curl_put", "curl_get",
    }  # fmt: skip


def test_default_scenarios_fit_the_storage() -> None:
    s3 = sc.default_scenarios("s3", quick=False)
    assert "curl_put" in s3 and "awscli_get" in s3 and "cat_put" not in s3
    files = sc.default_scenarios("file", quick=False)
    assert "cat_get" in files and "curl_put" not in files
    quick = sc.default_scenarios("s3", quick=True)
    assert set(quick) < set(s3)
    assert "cat_put" in sc.default_scenarios("file", quick=True)


@pytest.mark.parametrize("variant", [v for v in sc.VARIANTS if not v.baseline])
def test_for_codec_rebuilds_the_codec_of_every_variant(variant: sc.Variant) -> None:
    again = sc.for_codec("verify", sc.RESTORE_DATA, variant.codec)
    assert (again.compression, again.level, again.codec) == (
        variant.compression, variant.level, variant.codec,
    )  # fmt: skip
    assert sc.for_codec("verify", sc.RESTORE_FILE, "file").compression == "none"
