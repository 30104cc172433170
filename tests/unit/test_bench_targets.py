"""Bench targets: the plugin configs they write and what a compared plugin is given."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from asyncplug.config import load_config
from bench import targets

S3 = {
    "endpoint": "127.0.0.1:9000", "bucket": "b-1", "folder": "prod/c1", "encryption": "off",
    "aws_access_key_id": "k", "aws_secret_access_key": "s", "compression": "gzip",
    "backup_multipart_chunksize": "16MiB", "restore_max_concurrent_requests": 4,
    "log_level": "debug",
}  # fmt: skip


def test_plugin_config_sets_the_variant_codec_and_loads_in_asyncplug(tmp_path: Path) -> None:
    target = targets.Target("s3", dict(S3))
    path = targets.write_plugin_config(
        str(tmp_path / "p.yaml"), "/usr/bin/asyncplug", target.plugin_options("zstd", 3)
    )
    config = load_config(path)
    assert (config.compression, config.compression_level) == ("zstd", 3)
    assert config.backup_multipart_chunksize == 16 * 2**20 and config.log_level == "debug"
    assert config.pgport == "5432"  # added as gpbackup does
    assert "compression_level" not in target.plugin_options("none", None)


def test_a_compared_plugin_gets_only_the_options_both_understand() -> None:
    options = targets.Target("s3", dict(S3)).compare_options()
    assert set(options) == {
        "endpoint", "bucket", "folder", "encryption", "aws_access_key_id",
        "aws_secret_access_key", "backup_multipart_chunksize", "restore_max_concurrent_requests",
    }  # fmt: skip
    directory = targets.Target("file", {"storage": "file", "path": "/d", "folder": "f"})
    assert directory.compare_options() == {"storage": "file", "path": "/d", "folder": "f"}


def test_urls_follow_endpoint_encryption_and_region() -> None:
    assert targets.Target("s3", dict(S3)).object_url("f/k") == "http://127.0.0.1:9000/b-1/f/k"
    aws = targets.Target("s3", {"region": "eu-west-1", "bucket": "b-1", "folder": "f"})
    assert aws.url == "https://s3.eu-west-1.amazonaws.com" and aws.credentials is None
    assert aws.s3_uri("f/k") == "s3://b-1/f/k"


def test_from_config_drops_what_gpbackup_adds_and_refuses_a_bad_config(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        yaml.safe_dump({"options": {**S3, "pgport": 5432, "backup_plugin_version": "1"}})
    )
    target = targets.from_config(str(good))
    assert target.kind == "s3" and "pgport" not in target.options
    assert target.describe() == {"kind": "s3", "folder": "prod/c1", "endpoint": "127.0.0.1:9000",
                                 "bucket": "b-1"}  # fmt: skip
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"options": {**S3, "bukket": "x"}}))
    with pytest.raises(targets.TargetError, match="bukket"):
        targets.from_config(str(bad))


def test_directory_target_stores_under_its_path(tmp_path: Path) -> None:
    target = targets.directory(str(tmp_path / "store"))
    key = "bench/backups/20260101/20260101000000/gpbackup_1_20260101000000"
    obj = tmp_path / "store" / key
    obj.parent.mkdir(parents=True)
    obj.write_bytes(b"x" * 10)
    (obj.parent / f".{obj.name}.asyncplug-meta.json").write_bytes(b"{}")
    (obj.parent / "gpbackup_10_20260101000000").write_bytes(b"y" * 99)  # another object
    assert target.stored_bytes(key) == 12
    target.remove_prefix("bench/backups/20260101/20260101000000/")
    assert not obj.parent.exists()
    with pytest.raises(targets.TargetError):
        targets.directory("")
