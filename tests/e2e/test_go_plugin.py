"""asyncplug is a drop-in for the reference Go plugin (../shared/tools/gpbackup_s3_plugin),
both ways: the same SeaweedFS, the same options (only those both know), only
`executablepath` changed. Each test backs one line of README "Migrating from the Go
plugin".
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from bench.seaweed import SeaweedServer
from tests.e2e.conftest import Lab
from tests.e2e.dataset import SELECTED
from tests.e2e.gpbackup import (
    GO_PLUGIN,
    PluginConfig,
    Segment,
    backup_single_file,
    plugin,
    restore_single_file,
)
from tests.e2e.test_caller_needs import SIGPIPE_STATUS, recorded, recording_wrapper
from tests.integration.runner import EXECUTABLE

GO_VERSION = "1.10.1+dev.4.g88cf545"  # what the Go plugin's --version says, for gpbackup


@pytest.fixture
def shared_options(seaweed: SeaweedServer, bucket: str) -> dict[str, Any]:
    """Options of one config file, as a Go plugin user has it (no asyncplug-only option)."""
    return seaweed.plugin_options(bucket, "prod/cluster1")


def both(lab: Lab, options: dict[str, Any], name: str) -> tuple[PluginConfig, PluginConfig]:
    """The same config for the Go plugin and for asyncplug: only executablepath differs."""
    go = PluginConfig.write(GO_PLUGIN, options, f"go_{name}", plugin_version=GO_VERSION)
    ours = PluginConfig.write(EXECUTABLE, options, f"asyncplug_{name}")
    lab.configs += [go, ours]
    return go, ours


def test_a_go_backup_restored_by_asyncplug_whole_and_a_subset(
    lab: Lab, shared_options: dict[str, Any]
) -> None:
    go, ours = both(lab, shared_options, "s3.yaml")
    seg = lab.segment("go-backup")
    backup = backup_single_file(lab.pg, "src", seg, lab.tables, go, lab.env)
    assert backup.ok, backup

    whole = lab.new_db()
    run = restore_single_file(lab.pg, whole, seg, lab.tables, ours, lab.env)
    assert run.ok, run
    lab.assert_restored(whole)

    # gprestore --include-table with restore_subset: asyncplug's ranged reads of the Go object
    subset_config = ours.with_options("asyncplug_subset.yaml", restore_subset="on")
    lab.configs.append(subset_config)
    subset = lab.new_db()
    selected = [lab.table(name) for name in SELECTED]
    run = restore_single_file(lab.pg, subset, seg, selected, subset_config, lab.env, True)
    assert run.ok, run
    lab.assert_restored(subset, SELECTED)


def test_an_asyncplug_backup_restored_by_go(lab: Lab, shared_options: dict[str, Any]) -> None:
    go, ours = both(lab, shared_options, "s3.yaml")  # asyncplug's default: compression none
    seg = lab.segment("asyncplug-backup")
    backup = backup_single_file(lab.pg, "src", seg, lab.tables, ours, lab.env)
    assert backup.ok, backup

    whole = lab.new_db()
    run = restore_single_file(lab.pg, whole, seg, lab.tables, go, lab.env)
    assert run.ok, run
    lab.assert_restored(whole)

    # A filtered restore: the helper closes the Go plugin's stdout early too, and the Go
    # plugin dies of SIGPIPE (asyncplug ends the same way: test_caller_needs.py).
    records = lab.directory("go-records")
    wrapped = PluginConfig.write(
        recording_wrapper(records, str(GO_PLUGIN)), shared_options, "go_recorded.yaml"
    )
    lab.configs.append(wrapped)
    filtered = lab.new_db()
    selected = [lab.table(name) for name in SELECTED]
    run = restore_single_file(lab.pg, filtered, seg, selected, wrapped, lab.env, True)
    assert run.ok, run
    lab.assert_restored(filtered, SELECTED)
    assert [(code, command) for code, command, _ in recorded(records, 2)] == [
        (0, "restore_file"),
        (SIGPIPE_STATUS, "restore_data"),
    ]


def stored(seaweed: SeaweedServer, bucket: str, prefix: str = "") -> dict[str, int]:
    client = seaweed.client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


def go_listing(output: str) -> dict[str, int]:
    """The Go plugin's list_directory table (header, then `KEY SIZE` rows)."""
    return {k: int(n) for k, n in re.findall(r"(prod/cluster1/\S+)\s+(\d+)", output)}


def test_list_directory_and_delete_backup_of_each_others_backups(
    lab: Lab, seaweed: SeaweedServer, bucket: str, shared_options: dict[str, Any]
) -> None:
    # 5MB parts (5 MiB, both plugins): asyncplug's 12 MiB backup is a multipart upload and
    # gets its `.asyncplug-idx` block index object.
    go, ours = both(lab, {**shared_options, "backup_multipart_chunksize": "5MB"}, "s3.yaml")
    go_seg, our_seg, sibling = (lab.segment(n) for n in ("go", "ours", "sibling"))
    for seg in (go_seg, our_seg, sibling):
        seg.prepare()
        (seg.backup_dir / f"gpbackup_{seg.timestamp}_report").write_text("report\n")
    plugin(go, lab.env, "backup_data", str(go_seg.data_file), stdin=b"go data\n" * 10_000)
    plugin(
        go, lab.env, "backup_file", str(go_seg.backup_dir / f"gpbackup_{go_seg.timestamp}_report")
    )
    for seg, size in ((our_seg, 12 * 2**20), (sibling, 1000)):
        plugin(ours, lab.env, "backup_data", str(seg.data_file), stdin=b"a" * size)
        plugin(
            ours, lab.env, "backup_file", str(seg.backup_dir / f"gpbackup_{seg.timestamp}_report")
        )
    everything = stored(seaweed, bucket)
    assert f"{_key(our_seg.data_file)}.asyncplug-idx" in everything

    ours_listed = plugin(ours, lab.env, "list_directory").stdout.decode()
    assert (
        dict((key, int(size)) for key, size in (ln.split("\t") for ln in ours_listed.splitlines()))
        == everything
    )
    assert go_listing(plugin(go, lab.env, "list_directory").stdout.decode()) == everything

    plugin(go, lab.env, "delete_backup", our_seg.timestamp)
    assert stored(seaweed, bucket, _prefix(our_seg)) == {}  # the sidecar went with it
    plugin(ours, lab.env, "delete_backup", go_seg.timestamp)
    assert stored(seaweed, bucket, _prefix(go_seg)) == {}
    assert len(stored(seaweed, bucket, _prefix(sibling))) == 4  # a sibling stays (with indexes)


def _key(local: Path) -> str:
    return "prod/cluster1/" + "/".join(local.parts[-4:])


def _prefix(seg: Segment) -> str:
    return f"prod/cluster1/backups/{seg.timestamp[:8]}/{seg.timestamp}/"


@pytest.mark.parametrize(
    ("folder", "keys_under"),
    [("backups/", "backups/"), ("/prod//cluster1/", "prod/cluster1/"), ("./x/./y", "x/y/")],
)
def test_the_same_keys_for_folders_the_go_plugin_cleans(
    lab: Lab,
    seaweed: SeaweedServer,
    bucket: str,
    shared_options: dict[str, Any],
    folder: str,
    keys_under: str,
) -> None:
    go, ours = both(lab, {**shared_options, "folder": folder}, "s3.yaml")
    seg = lab.segment("folder")
    data = uuid.uuid4().bytes * 1000
    go_file, our_file = str(seg.data_file), str(seg.data_file) + "_ours"
    plugin(go, lab.env, "backup_data", go_file, stdin=data)
    assert plugin(ours, lab.env, "restore_data", go_file).stdout == data
    plugin(ours, lab.env, "backup_data", our_file, stdin=data)
    assert plugin(go, lab.env, "restore_data", our_file).stdout == data
    tail = f"backups/{seg.timestamp[:8]}/{seg.timestamp}/gpbackup_0_{seg.timestamp}"
    ours_index = keys_under + tail + "_ours.asyncplug-idx"  # asyncplug's block index
    assert set(stored(seaweed, bucket)) == {
        keys_under + tail,
        keys_under + tail + "_ours",
        ours_index,
    }


def parts_of(seaweed: SeaweedServer, bucket: str, key: str) -> int:
    etag = seaweed.client().head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    return int(etag.rpartition("-")[2]) if "-" in etag else 1


def test_sizes_mean_the_same_to_both(
    lab: Lab, seaweed: SeaweedServer, bucket: str, shared_options: dict[str, Any]
) -> None:
    """`6MB` is 6 MiB to both: a 12 MiB stream goes up in 2 parts (in 6,000,000-byte
    parts it would take 3). `8MiB` and whole bytes are asyncplug's: Go refuses them."""
    go, ours = both(lab, {**shared_options, "backup_multipart_chunksize": "6MB"}, "s3.yaml")
    seg = lab.segment("sizes")
    data = b"s" * (12 * 2**20)
    for config, name in ((go, "go"), (ours, "ours")):
        plugin(config, lab.env, "backup_data", f"{seg.data_file}_{name}", stdin=data)
        assert parts_of(seaweed, bucket, f"{_key(seg.data_file)}_{name}") == 2, name
    for size in ("8MiB", "10485760"):
        go, ours = both(lab, {**shared_options, "backup_multipart_chunksize": size}, "x.yaml")
        refused = plugin(go, lab.env, "backup_data", str(seg.data_file), stdin=b"x", check=False)
        assert refused.returncode != 0
        assert b"Invalid backup_multipart_chunksize" in refused.stdout + refused.stderr
        plugin(ours, lab.env, "backup_data", str(seg.data_file), stdin=b"x")


GO_UNKNOWN = {
    "restore_subset": "on",
    "compression": "none",
    "remove_duplicate_bucket": "off",
    "log_dir": "/tmp",
}


def test_the_go_plugin_refuses_options_it_does_not_know(
    lab: Lab, shared_options: dict[str, Any]
) -> None:
    """The Go plugin reads its config strictly: a config with any asyncplug-only option
    (restore_subset included, which gprestore reads) works with asyncplug only."""
    seg = lab.segment("extra")
    for name, value in GO_UNKNOWN.items():
        go, _ = both(lab, {**shared_options, name: value}, "extra.yaml")
        refused = plugin(go, lab.env, "backup_data", str(seg.data_file), stdin=b"x", check=False)
        assert refused.returncode != 0
        assert re.search(rf"field {name} not found".encode(), refused.stdout + refused.stderr)
    _, ours = both(lab, {**shared_options, **GO_UNKNOWN}, "extra.yaml")
    plugin(ours, lab.env, "backup_data", str(seg.data_file), stdin=b"x")

    # a compressed backup: the Go plugin gives back the stored bytes, not the stream
    go, ours = both(lab, shared_options, "plain.yaml")
    zstd = ours.with_options("asyncplug_zstd.yaml", compression="zstd")
    lab.configs.append(zstd)
    data = b"compressed by asyncplug\n" * 10_000
    plugin(zstd, lab.env, "backup_data", str(seg.data_file), stdin=data)
    assert plugin(ours, lab.env, "restore_data", str(seg.data_file)).stdout == data
    assert plugin(go, lab.env, "restore_data", str(seg.data_file)).stdout != data
