"""`python -m bench` end to end: the real plugin against an embedded SeaweedFS, and a directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import report

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = str(Path(sys.executable).parent / "asyncplug")


def bench(*args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], Path]:
    out = Path(args[args.index("--output") + 1])
    proc = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    (json_path,) = [p for p in out.glob("bench-*.json")]
    return proc, json.loads(json_path.read_text()), out


def test_quick_run_writes_verified_results_and_a_chart(tmp_path: Path) -> None:
    proc, doc, out = bench("--quick", "--size", "16MiB", "--output", str(tmp_path / "results"))
    assert report.check_document(doc) == []
    assert doc["ok"] is True and doc["target"]["kind"] == "seaweedfs"
    rows = {r["label"]: r for r in doc["results"]}
    assert {"backup_none", "backup_zstd[zstd-3]", "restore_data[none]", "restore_data[zstd-3]",
            "restore_subset_1pct", "curl_put", "curl_get"} <= set(rows)  # fmt: skip
    for r in doc["results"]:
        assert r["error"] is None
        assert r["mb_per_s"] > 0 and r["cpu_s_per_gib"] > 0 and r["peak_rss_mb"] > 0
        assert r["verified"] is True, r["label"]  # every backup read back, every restore hashed
    assert rows["restore_subset_1pct"]["bytes_logical"] == round(16 * 2**20 / 100)
    assert rows["backup_zstd[zstd-3]"]["compression_ratio"] > 2.5
    assert rows["backup_none"]["ratio_to_ceiling"] is not None
    assert (out / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| backup_none | text | asyncplug |" in proc.stdout
    # As deployed: through the warm server that setup at segment_host scope starts.
    assert doc["settings"]["warm_server"] == "on" and doc["warm_server_start_cpu_s"] > 0
    assert all(r["warm_server"] is (r["kind"] == "plugin" or None) for r in doc["results"])
    assert "setup/cleanup at segment_host scope around its measured runs" in proc.stdout


def test_directory_target_with_a_compared_executable(tmp_path: Path) -> None:
    """--compare with asyncplug itself: the compared rows and the ratios to them appear."""
    proc, doc, _ = bench(
        "--storage", "file", "--path", str(tmp_path / "store"), "--size", "4MiB",
        "--scenarios", "backup_none,restore_data,restore_subset_10pct,cat_get",
        "--compare", PLUGIN, "--output", str(tmp_path / "results"), "--warm-server", "off",
    )  # fmt: skip
    assert report.check_document(doc) == []
    compared = [r for r in doc["results"] if r["kind"] == "compared"]
    assert {r["label"] for r in compared} == {
        "backup_none", "restore_data[none]", "restore_subset_10pct",
    }  # fmt: skip
    mine = next(r for r in doc["results"] if r["label"] == "backup_none" and r["kind"] == "plugin")
    assert set(mine["ratios_to_compared"]) == {"asyncplug-2"}
    assert all(r["verified"] is True for r in doc["results"])
    assert not [p for p in (tmp_path / "store").rglob("*") if p.is_file()]  # cleaned up
    assert "vs asyncplug-2" in proc.stdout
    # Every command a whole process: no server was started, none is counted.
    assert doc["settings"]["warm_server"] == "off" and doc["warm_server_start_cpu_s"] is None
    assert {r["warm_server"] for r in doc["results"] if r["kind"] == "plugin"} == {False}
    assert "warm server off" in proc.stdout


FAKE_PLUGIN = """#!/bin/sh
# A plugin that stores nothing: backup_data swallows stdin, restore_data {restore}.
case "$1" in
  --version) echo "fake version 0.0.1" ;;
  backup_data) cat >/dev/null ;;
  restore_data) {command} ;;
  *) echo "fake: $1 not supported" >&2; exit 5 ;;
esac
"""


def fake_plugin(tmp_path: Path, restore: str) -> str:
    path = tmp_path / "fake-plugin"
    path.write_text(FAKE_PLUGIN.format(restore=restore, command=restore))
    path.chmod(0o755)
    return str(path)


def failing_bench(
    tmp_path: Path, plugin: str, warm: str = "off"
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--plugin", plugin, "--storage", "file",
         "--path", str(tmp_path / "store"), "--size", "1MiB", "--scenarios",
         "backup_none,restore_data", "--output", str(out), "--warm-server", warm],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    (json_path,) = out.glob("bench-*.json")
    return proc, json.loads(json_path.read_text())


def test_wrong_restored_bytes_fail_the_run_loudly(tmp_path: Path) -> None:
    plugin = fake_plugin(tmp_path, "head -c 1048576 /dev/zero")
    proc, doc = failing_bench(tmp_path, plugin)
    assert proc.returncode == 1
    assert "BENCHMARK FAILED" in proc.stderr and "do not match" in proc.stderr
    assert doc["ok"] is False
    rows = {r["label"]: r for r in doc["results"]}
    assert rows["restore_data[none]"]["verified"] is False
    assert rows["backup_none"]["verified"] is False  # its object did not read back


def test_a_failing_restore_is_reported_not_taken_for_a_mismatch(tmp_path: Path) -> None:
    plugin = fake_plugin(tmp_path, "echo 'fake: broken restore' >&2; exit 5")
    proc, doc = failing_bench(tmp_path, plugin)
    assert proc.returncode == 1 and "exited 5: fake: broken restore" in proc.stderr
    rows = {r["label"]: r for r in doc["results"]}
    assert rows["restore_data[none]"]["error"] == "fake-plugin exited 5: fake: broken restore"
    assert rows["backup_none"]["verified"] is None
    assert rows["backup_none"]["error"].startswith("read-back failed")
    assert "Traceback" not in proc.stderr


def test_a_plugin_whose_setup_fails_fails_its_measured_runs(tmp_path: Path) -> None:
    """With the warm server on, each measured run starts with setup at segment_host scope."""
    plugin = fake_plugin(tmp_path, "head -c 1048576 /dev/zero")
    proc, doc = failing_bench(tmp_path, plugin, warm="on")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    rows = {r["label"]: r for r in doc["results"]}
    for label in ("backup_none", "restore_data[none]"):
        assert rows[label]["error"] == (
            "setup_plugin_for_" + ("backup" if label == "backup_none" else "restore")
            + ": fake-plugin exited 5: fake: setup_plugin_for_"
            + ("backup" if label == "backup_none" else "restore") + " not supported"
        )  # fmt: skip
