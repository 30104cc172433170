"""The results document: its schema, the derived ratios, the summary table."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from bench import report


def row(label: str, mb_per_s: float, **extra: Any) -> dict[str, Any]:
    scenario, _, variant = label.partition("[")
    base: dict[str, Any] = {
        "scenario": scenario, "variant": variant.rstrip("]"), "label": label, "data": "text",
        "executable": "asyncplug", "kind": "plugin", "direction": "backup",
        "operation": "backup_data", "compression": "none", "bytes_logical": 2**30,
        "bytes_stored": 2**30, "compression_ratio": 1.0, "wall_s": 2**30 / 1e6 / mb_per_s,
        "mb_per_s": mb_per_s, "cpu_s": 1.5, "cpu_s_per_gib": 1.5, "peak_rss_mb": 80.0,
        "ratio_to_ceiling": None, "ratios_to_compared": {}, "verified": True, "error": None,
    }  # fmt: skip
    base.update(extra)
    return base


def document(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schema_version": report.SCHEMA_VERSION, "started_at": "2026-01-01T00:00:00Z",
        "duration_s": 12.5, "asyncplug_version": "asyncplug version 0.1.0",
        "host": {"cpus": 2}, "target": {"kind": "seaweedfs"}, "settings": {"size": 2**30},
        "data": [], "compared": [], "skipped": [], "ok": True, "results": rows,
    }  # fmt: skip


def sample_rows() -> list[dict[str, Any]]:
    return [
        row("backup_none", 150.0),
        row("curl_put", 200.0, kind="baseline", executable="curl", operation="put"),
        row("backup_none", 100.0, kind="compared", executable="gpbackup_s3_plugin"),
        row("restore_data[none]", 300.0, direction="restore", operation="restore_data"),
        row(
            "restore_subset_1pct",
            50.0,
            direction="restore",
            operation="restore_data_subset",
            bytes_logical=2**30 // 100,
        ),
        row(
            "curl_get",
            400.0,
            kind="baseline",
            executable="curl",
            direction="restore",
            operation="get",
        ),
    ]


def test_derive_fills_ratios_to_ceiling_and_compared() -> None:
    rows = sample_rows()
    rows[4]["wall_s"] = rows[3]["wall_s"] / 10
    report.derive(rows, "s3")
    assert rows[0]["ratio_to_ceiling"] == 0.75
    assert rows[0]["ratios_to_compared"] == {"gpbackup_s3_plugin": 1.5}
    assert rows[1]["ratio_to_ceiling"] == 1.0
    assert rows[3]["ratio_to_ceiling"] == 0.75
    assert rows[4]["wall_vs_full_restore"] == 0.1
    assert report.check_document(document(rows)) == []


def test_schema_catches_missing_and_mistyped_fields() -> None:
    good = document(sample_rows())
    assert report.check_document(good) == []
    bad = copy.deepcopy(good)
    del bad["results"][0]["mb_per_s"]
    bad["results"][1]["peak_rss_mb"] = "80"
    bad["results"][2]["verified"] = "yes"
    bad["ok"] = 1
    del bad["host"]
    problems = report.check_document(bad)
    assert "results[0] lacks mb_per_s" in problems
    assert "results[1].peak_rss_mb has type str" in problems
    assert "results[2].verified has type str" in problems
    assert "document.ok has type int" in problems
    assert "document lacks host" in problems


def test_a_row_needs_a_speed_or_an_error() -> None:
    rows = [row("backup_none", 1.0)]
    rows[0]["mb_per_s"] = None
    assert report.check_document(document(rows)) == ["results[0] has neither mb_per_s nor error"]
    rows[0]["error"] = "asyncplug exited 5: bucket not found"
    assert report.check_document(document(rows)) == []


def test_write_json_refuses_a_broken_document(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    report.write_json(document(sample_rows()), str(path))
    assert json.loads(path.read_text())["results"][0]["scenario"] == "backup_none"
    broken = document([{"scenario": "backup_none"}])
    with pytest.raises(ValueError, match="lacks mb_per_s"):
        report.write_json(broken, str(tmp_path / "broken.json"))
    assert not (tmp_path / "broken.json").exists()


def test_failures_are_mismatches_and_own_errors_not_compared_ones() -> None:
    rows = sample_rows()
    rows[0]["verified"] = False
    rows[2]["error"] = "gpbackup_s3_plugin exited 1: unknown command"
    rows[5]["error"] = "curl exited 7: Failed to connect"
    rows[3]["error"] = "asyncplug exited 5: timeout"
    found = report.failures(rows)
    assert len(found) == 2
    assert "do not match" in found[0] and "timeout" in found[1]


def test_summary_is_a_markdown_table_with_compared_columns() -> None:
    rows = sample_rows()
    report.derive(rows, "s3")
    text = report.summary(rows, ["gpbackup_s3_plugin"])
    table = text.split("\n\n")[0].splitlines()
    assert table[0].startswith("| scenario |") and table[0].endswith("| vs gpbackup_s3_plugin |")
    assert len(table) == 2 + len(rows)
    assert table[2].split("|")[-2].strip() == "1.50"


def test_summary_notes_subset_time_against_the_full_restore() -> None:
    rows = sample_rows()
    rows[4]["wall_s"] = rows[3]["wall_s"] / 4
    report.derive(rows, "s3")
    lines = report.summary(rows).splitlines()
    assert "restore_subset_1pct (asyncplug, text): 0.25 x the wall time of restore_data[none]" in (
        lines
    )


def test_subsets_are_shown_by_wall_time_against_curl_parallel_not_mb_per_s() -> None:
    rows = sample_rows()
    rows[4].update(wall_s=0.26, object_bytes=2**30, ranges=20, bytes_fetched=11 * 2**20,
                   limit_wall_s=0.2, ratio_to_limit=1.3)  # fmt: skip
    report.derive(rows, "s3")
    main, *rest = report.summary(rows).split("\n\n")
    subset_row = next(line for line in main.splitlines() if "restore_subset_1pct" in line)
    cells = [c.strip() for c in subset_row.split("|")[1:-1]]
    assert cells[3] == "" and cells[4] == ""  # no MB/s, no ratio to a single curl GET
    assert cells[8] == "0.26"
    table = next(t for t in rest if t.startswith("| subset |"))
    cells = [c.strip() for c in table.splitlines()[2].split("|")[1:-1]]
    assert cells == ["restore_subset_1pct (text)", "asyncplug", "1,024", "20", "10.24", "11.00",
                     "0.260", "0.200", "1.30", "yes"]  # fmt: skip
