"""Runner decisions that need no server: which baselines can run, who runs what."""

from __future__ import annotations

from pathlib import Path

from bench import runner, targets
from bench import scenarios as sc
from bench.__main__ import harness_warnings
from bench.progress import PlainDisplay


def make_runner(target: targets.Target, tmp_path: Path) -> runner.Runner:
    plugin = runner.Executable("asyncplug", "/bin/true")
    other = runner.Executable("gpbackup_s3_plugin", "/bin/true", compared=True)
    return runner.Runner(target, plugin, [other], [], [], str(tmp_path), PlainDisplay())


def variant(label: str) -> sc.Variant:
    return next(v for v in sc.VARIANTS if v.label == label)


def test_baselines_that_cannot_run_say_why(tmp_path: Path) -> None:
    no_keys = targets.Target("s3", {"region": "us-east-1", "bucket": "b-1", "folder": "f"})
    run = make_runner(no_keys, tmp_path)
    assert "aws_access_key_id" in run.unavailable(variant("curl_put"))
    assert "directory" in run.unavailable(variant("cat_get"))
    assert run.unavailable(variant("backup_none")) == ""
    directory = make_runner(targets.directory(str(tmp_path / "d")), tmp_path)
    assert "S3" in directory.unavailable(variant("curl_get"))
    assert directory.unavailable(variant("cat_put")) == ""


def test_compared_executables_run_only_what_they_understand(tmp_path: Path) -> None:
    run = make_runner(targets.directory(str(tmp_path / "d")), tmp_path)
    names = lambda label: [e.name for e in run.executables(variant(label))]  # noqa: E731
    assert names("backup_none") == ["asyncplug", "gpbackup_s3_plugin"]
    assert names("restore_data[none]") == ["asyncplug", "gpbackup_s3_plugin"]
    assert names("restore_data[zstd-3]") == ["asyncplug"]
    assert names("backup_zstd[zstd-1]") == ["asyncplug"]
    assert names("curl_put") == ["curl"]


def test_keys_are_gpbackup_single_data_file_paths(tmp_path: Path) -> None:
    run = make_runner(targets.directory(str(tmp_path / "d")), tmp_path)
    run.timestamp = "20260102030405"
    dataset = type("D", (), {"kind": "text"})()
    data = run.stored(run.plugin, dataset, "zstd-3")  # type: ignore[arg-type]
    assert data.local.endswith("/seg1/backups/20260102/20260102030405/gpbackup_1_20260102030405")
    assert run.key(data.local) == "bench/backups/20260102/20260102030405/gpbackup_1_20260102030405"
    again = run.stored(run.plugin, dataset, "zstd-3")  # type: ignore[arg-type]
    assert again is data
    meta = run.stored(run.plugin, dataset, "none", file=True)  # type: ignore[arg-type]
    assert meta.local.endswith("/20260102030405/gpbackup_20260102030405_2_metadata.sql")


def test_harness_warns_when_it_is_not_far_faster_than_the_plugin() -> None:
    rows = [
        {"kind": "plugin", "data": "text", "direction": "backup", "mb_per_s": 400.0},
        {"kind": "plugin", "data": "text", "direction": "restore", "mb_per_s": 100.0},
        {"kind": "baseline", "data": "text", "direction": "restore", "mb_per_s": 5000.0},
    ]
    harness = [{"kind": "text", "producer_mb_per_s": 1000.0, "consumer_mb_per_s": 900.0}]
    (warning,) = harness_warnings(rows, harness)
    assert warning.startswith("the producer (1,000 MB/s) is not 3x the fastest asyncplug backup")
