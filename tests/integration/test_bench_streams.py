"""`python -m bench --scenarios streams,...`: N processes at once and subsets against curl."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench import report

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = str(Path(sys.executable).parent / "asyncplug")


def test_streams_and_subsets_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--data", "random", "--size", "4MiB",
         "--scenarios", "streams,restore_subset_1pct,subset_scale", "--streams", "3",
         "--stream-size", "3MiB", "--subset-sizes", "2MiB,8MiB", "--compare", PLUGIN,
         "--output", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    (path,) = out.glob("bench-*.json")
    doc = json.loads(path.read_text())
    assert report.check_document(doc) == [] and doc["ok"] is True
    rows = {(r["label"], r["executable"]): r for r in doc["results"]}
    mine = rows[("streams[restore_data x3]", "asyncplug")]
    assert mine["bytes_logical"] == 3 * 3 * 2**20 and mine["streams"] == 3
    assert mine["verified"] is True and mine["error"] is None
    assert mine["ratio_to_ceiling"] > 0 and set(mine["ratios_to_compared"]) == {"asyncplug-2"}
    assert mine["rss_sum_mb"] >= mine["peak_rss_mb"] > 0
    assert mine["server_cpu_s_per_gib"] > 0
    # Through the warm server: its and its workers' CPU is part of asyncplug's.
    assert mine["warm_server"] is True and 0 < mine["warm_cpu_s_per_gib"] < mine["cpu_s_per_gib"]
    assert rows[("streams[restore_data x3]", "asyncplug-2")]["warm_server"] is None
    for label in ("streams[backup_data x3]", "streams[curl put x3]", "streams[curl get x3]"):
        (row,) = [r for (name, _), r in rows.items() if name == label and r["kind"] != "compared"]
        assert row["verified"] is True and row["mb_per_s"] > 0, label
    subset = rows[("restore_subset_1pct", "asyncplug")]
    assert subset["limit_wall_s"] > 0 and subset["ratio_to_limit"] > 0
    assert subset["bytes_fetched"] >= subset["bytes_logical"]
    for size in ("2MiB", "8MiB"):
        scale = rows[(f"subset_scale[{size}]", "asyncplug")]
        assert scale["verified"] is True and scale["ratio_to_limit"] > 0
        assert scale["bytes_fetched"] >= scale["bytes_logical"]
    assert "| N streams at once |" in proc.stdout and "| subset |" in proc.stdout
