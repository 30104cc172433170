"""The streams scenario without a server: groups started together, rows, table, configs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from asyncplug.config import MiB, load_config
from bench import report, runner, streams, targets
from bench.__main__ import Usage, check_args, parse_args
from bench.datagen import Dataset
from bench.procs import ChildRun
from bench.progress import PlainDisplay

# Each child waits (bounded) until all have started: only a group started at once ends well.
RENDEZVOUS = """
import os, sys, time
directory, count = sys.argv[1], int(sys.argv[2])
open(os.path.join(directory, str(os.getpid())), "w").close()
deadline = time.monotonic() + 30
while len(os.listdir(directory)) < count:
    if time.monotonic() > deadline:
        sys.exit(3)
    time.sleep(0.01)
sys.stdout.write(sys.stdin.read())
"""


def child(cpu_s: float, rss_kib: int, ok: bool = True) -> ChildRun:
    return ChildRun(("x",), 0 if ok else 4, 1.0, cpu_s, rss_kib, 0, 0, "", "" if ok else "bad\n")


def test_a_group_starts_every_process_at_once_and_feeds_and_drains_each(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(b"segment data " * 1000)
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    argvs = [[sys.executable, "-c", RENDEZVOUS, str(meeting), "4"] for _ in range(4)]
    moved: list[int] = []
    group = streams.run_group(argvs, stdin_file=str(source), drain=True, tick=moved.append)
    assert group.failure() is None
    assert [r.bytes_out for r in group.runs] == [source.stat().st_size] * 4
    assert len({r.digest for r in group.runs}) == 1
    assert sum(moved) == 2 * 4 * source.stat().st_size  # fed and drained, every stream
    assert group.wall_s >= max(r.wall_s for r in group.runs)


def test_a_group_sums_cpu_and_memory_and_names_the_first_failure() -> None:
    group = streams.Group([child(0.5, 30 * 1024), child(0.25, 90 * 1024, ok=False)], 2.0)
    assert group.cpu_s == 0.75
    assert group.rss_max_kib == 90 * 1024 and group.rss_sum_kib == 120 * 1024
    assert group.failure() == "x exited 4: bad"
    assert streams.Group([child(1.0, 1)], 1.0).failure() is None


def fake_streams(tmp_path: Path) -> streams.Streams:
    target = targets.Target("s3", {"endpoint": "http://127.0.0.1:9", "bucket": "b",
                                   "folder": "bench", "aws_access_key_id": "k",
                                   "aws_secret_access_key": "s", "encryption": "off",
                                   "region": "us-east-1"})  # fmt: skip
    plugin = runner.Executable("asyncplug", "/bin/true")
    other = runner.Executable("gpbackup_s3_plugin", "/bin/false", compared=True)
    run = runner.Runner(target, plugin, [other], [], [], str(tmp_path), PlainDisplay())
    dataset = Dataset("random", str(tmp_path / "random.dat"), 512 * MiB, "digest", 1.0)
    return streams.Streams(run, dataset, count=8)


def test_rows_give_aggregate_speed_summed_cpu_and_ratios_to_curl_and_compared(
    tmp_path: Path,
) -> None:
    scenario = fake_streams(tmp_path)
    tools = scenario.tools()
    assert [t.name for t in tools] == ["asyncplug", "curl", "gpbackup_s3_plugin"]
    mine, curl, go = tools
    eight = [child(0.1, 30 * 1024)] * 8
    for wall, tool in ((4.0, mine), (4.4, curl), (6.0, go)):
        tool.groups["restore"] = [streams.Group(eight, wall, server_cpu_s=4.0),
                                  streams.Group(eight, wall + 1.0, server_cpu_s=6.0),
                                  streams.Group(eight, wall + 9.0, server_cpu_s=5.0)]  # fmt: skip
        tool.verified = True
    row = scenario.row(mine, "restore", tools)
    assert row["label"] == "streams[restore_data x8]" and row["bytes_logical"] == 4 * 2**30
    assert row["wall_s"] == 5.0 and row["walls_s"] == [4.0, 5.0, 13.0]  # the median round
    assert row["mb_per_s"] == round(4 * 2**30 / 1e6 / 5.0, 3)
    assert row["cpu_s_per_gib"] == 0.2  # 8 x 0.1 CPU-s over 4 GiB
    assert row["server_cpu_s_per_gib"] == 1.25
    assert row["peak_rss_mb"] == 30.0 and row["rss_sum_mb"] == 240.0
    assert row["ratio_to_ceiling"] == 1.08  # curl x 8 took 5.4 s
    assert row["ratios_to_compared"] == {"gpbackup_s3_plugin": 1.4}
    baseline = scenario.row(curl, "restore", tools)
    assert baseline["label"] == "streams[curl get x8]" and baseline["ratio_to_ceiling"] == 1.0
    assert scenario.row(go, "restore", tools)["ratios_to_compared"] == {}
    doc = {"results": [row, baseline]}
    assert report.check_document({**DOC, **doc}) == []
    rows = [row, baseline, scenario.row(go, "restore", tools)]
    report.derive(rows, "s3")  # leaves the streams ratios alone
    assert rows[0]["ratio_to_ceiling"] == 1.08
    table = streams.summary(rows).splitlines()
    assert table[0].startswith("| N streams at once |") and "vs gpbackup_s3_plugin xN" in table[0]
    assert table[2].split("|")[3:6] == [" 859.0 ", " 1.08 ", " 1.40 "]
    assert "30 / 240" in table[2]


def test_a_failed_backup_leaves_an_error_row_for_both_directions(tmp_path: Path) -> None:
    scenario = fake_streams(tmp_path)
    mine = scenario.tools()[0]
    mine.error["backup"] = "asyncplug exited 5: bucket not found"
    for direction in ("backup", "restore"):
        row = scenario.row(mine, direction, [mine])
        assert row["error"] == "asyncplug exited 5: bucket not found"
        assert row["mb_per_s"] is None
    assert "failed: asyncplug exited 5" in streams.summary([row])


def test_the_compared_config_holds_options_both_plugins_read_alike(tmp_path: Path) -> None:
    scenario = fake_streams(tmp_path)
    go = scenario.runner.compared[0]
    path = scenario.compare_config(go)
    with open(path, encoding="utf-8") as f:
        options = yaml.safe_load(f)["options"]
    assert options["backup_multipart_chunksize"] == "67108864B"  # go-bytesize: 64 MiB too
    assert set(options) - {"pgport", "backup_plugin_version"} <= set(targets.COMMON_OPTIONS)
    config = load_config(path)  # asyncplug reads it: no option either plugin lacks
    assert config.backup_multipart_chunksize == config.restore_multipart_chunksize == 64 * MiB
    assert config.compression == "none"


def test_each_stream_has_its_own_segment_key(tmp_path: Path) -> None:
    scenario = fake_streams(tmp_path)
    plugin = scenario.runner.plugin
    keys = {scenario.key(plugin, i) for i in range(8)}
    assert len(keys) == 8
    assert scenario.key(plugin, 0) == scenario.key(plugin, 0)
    assert all(k.startswith("bench/backups/") for k in keys)
    argv, stdin = scenario.tools()[1].backup(3)
    assert argv[0] == "curl" and "--aws-sigv4" in argv and stdin is None


def test_options_of_the_streams_and_subset_scenarios() -> None:
    args = parse_args(["--scenarios", "streams", "--streams", "3", "--stream-size", "8MiB",
                       "--set", "restore_multipart_chunksize=24MiB"])  # fmt: skip
    check_args(args)
    assert args.streams == 3 and args.stream_bytes == 8 * MiB
    assert args.plugin_set == {"restore_multipart_chunksize": "24MiB"}
    assert args.subset_bytes == [2**30, 4 * 2**30]
    quick = parse_args(["--quick"])
    check_args(quick)
    assert quick.stream_bytes == 16 * MiB
    for bad, message in ((["--streams", "0"], "at least 1"), (["--set", "x"], "NAME=VALUE"),
                         (["--stream-size", "lots"], "--stream-size"),
                         (["--subset-sizes", "1GiB,huge"], "--subset-sizes")):  # fmt: skip
        with pytest.raises(Usage, match=message):
            check_args(parse_args(bad))


DOC = {
    "schema_version": report.SCHEMA_VERSION, "started_at": "2026-01-01T00:00:00Z",
    "duration_s": 1.0, "asyncplug_version": "", "host": {}, "target": {}, "settings": {},
    "data": [], "compared": [], "skipped": [], "ok": True,
}  # fmt: skip


def test_load_probe_variants_name_their_options() -> None:
    from bench.load_probe import parse_variant

    assert parse_variant("chunk24:restore_multipart_chunksize=24MiB,restore_splice=off") == (
        "chunk24", {"restore_multipart_chunksize": "24MiB", "restore_splice": "off"})  # fmt: skip
    with pytest.raises(SystemExit, match="NAME:OPTION=VALUE"):
        parse_variant("chunk24")
