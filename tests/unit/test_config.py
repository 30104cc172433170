"""asyncplug.config: every option parses, every mistake has its own message."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from asyncplug.config import OPTIONS, Config, MiB, build_config, load_config, parse_size
from asyncplug.errors import ConfigError

# One valid value for every option, and the Config value it must become.
EVERY_OPTION: dict[str, tuple[Any, Any]] = {
    "storage": ("s3", "s3"),
    "bucket": ("gp-backups", "gp-backups"),
    "folder": ("/prod/cluster1/", "prod/cluster1"),
    "region": ("us-east-1", "us-east-1"),
    "endpoint": ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
    "aws_access_key_id": ("AKIAEXAMPLE", "AKIAEXAMPLE"),
    "aws_secret_access_key": ("secret/key", "secret/key"),
    "encryption": ("off", False),
    "http_proxy": ("http://proxy:3128", "http://proxy:3128"),
    "remove_duplicate_bucket": ("on", True),
    "addressing_style": ("Virtual", "virtual"),
    "ca_bundle": ("/etc/ssl/corp-ca.pem", "/etc/ssl/corp-ca.pem"),
    # AWS in production
    "aws_profile": ("backup-role", "backup-role"),
    "credential_cache": ("off", False),
    "server_side_encryption": ("AWS:KMS", "aws:kms"),
    "sse_kms_key_id": ("alias/gp-backups", "alias/gp-backups"),
    "sse_customer_key_file": ("/etc/asyncplug/sse-c.key", "/etc/asyncplug/sse-c.key"),
    "storage_class": ("standard_ia", "STANDARD_IA"),
    "upload_checksum": ("MD5", "md5"),
    "path": ("/mnt/backups", "/mnt/backups"),
    "backup_max_concurrent_requests": ("12", 12),
    "backup_multipart_chunksize": ("500MB", 500 * MiB),
    "backup_queue_depth": (3, 3),
    "restore_max_concurrent_requests": (4, 4),
    "restore_multipart_chunksize": ("64MiB", 64 * MiB),
    "restore_splice": ("off", False),
    "max_retries": (0, 0),
    "request_timeout": ("30", 30.0),
    "connect_timeout": ("2.5", 2.5),
    "compression": ("zstd", "zstd"),
    "compression_level": (3, 3),
    "compression_workers": (4, 4),
    "spool_dir": ("/data/spool", "/data/spool"),
    "restore_subset": ("on", True),
    "log_dir": ("/var/log/gp", "/var/log/gp"),
    "log_level": ("DEBUG", "debug"),
    "warm_server": ("off", False),
    "pgport": (5432, "5432"),
    "backup_plugin_version": (1.3, "1.3"),
}

S3 = {"bucket": "b", "folder": "f", "region": "us-east-1"}


def test_the_sample_covers_every_option() -> None:
    assert set(EVERY_OPTION) == set(OPTIONS)


def test_every_option_parses() -> None:
    config = build_config({name: raw for name, (raw, _) in EVERY_OPTION.items()})
    for name, (_, expected) in EVERY_OPTION.items():
        assert getattr(config, name) == expected, name


def test_defaults_need_only_bucket_folder_and_region() -> None:
    config = build_config(S3)
    assert config == Config(folder="f", bucket="b", region="us-east-1")
    assert config.storage == "s3"
    assert config.encryption is True


@pytest.mark.parametrize(
    ("text", "size"),
    [
        # go-bytesize, as the Go plugin reads them: powers of 1024, any case, long names,
        # decimals (fractions of a byte dropped), spaces around the unit
        ("500MB", 500 * MiB),
        ("500mb", 500 * MiB),
        ("1.5GB", 3 * 2**29),
        ("2 megabytes", 2 * MiB),
        ("1 Kilobyte", 1024),
        (" 8 MB ", 8 * MiB),
        (".5GB", 2**29),
        ("1.KB", 1024),
        ("10.7B", 10),
        ("3 bytes", 3),
        ("1TB", 2**40),
        # ours: IEC names and whole bytes
        ("64MiB", 64 * MiB),
        ("1.5GiB", 3 * 2**29),
        ("10485760", 10485760),
        (10485760, 10485760),
    ],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text, "backup_multipart_chunksize") == size


@pytest.mark.parametrize(
    ("folder", "clean"),
    [
        ("prod/cluster1", "prod/cluster1"),
        ("backups/", "backups"),
        ("/prod//cluster1/", "prod/cluster1"),
        ("./prod/./cluster1", "prod/cluster1"),
    ],
)
def test_folder_is_cleaned_like_the_go_plugins_request_paths(folder: str, clean: str) -> None:
    """The Go plugin's SDK cleans the request path (tests/e2e/test_go_plugin.py shows the
    keys it writes), so these folders name the same keys there and here."""
    assert build_config({**S3, "folder": folder}).folder == clean


def test_yaml_on_off_booleans_are_switches() -> None:
    config = build_config({**S3, "encryption": False, "restore_subset": True})
    assert (config.encryption, config.restore_subset) == (False, True)


def test_file_storage_needs_no_bucket() -> None:
    config = build_config({"storage": "file", "path": "/mnt/b", "folder": "f"})
    assert (config.storage, config.path, config.bucket) == ("file", "/mnt/b", "")


def test_redacted_masks_credentials() -> None:
    config = build_config({**S3, "aws_access_key_id": "AKIA", "aws_secret_access_key": "s3cr3t"})
    shown = config.redacted()
    assert "s3cr3t" not in repr(shown) and "AKIA" not in repr(shown)
    assert shown["bucket"] == "b"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"folder": "f", "region": "r"}, "option bucket is required"),
        ({"bucket": "b", "region": "r"}, "option folder is required"),
        ({"bucket": "b", "folder": "f"}, "option region or endpoint is required"),
        ({**S3, "aws_access_key_id": "AKIA"}, "aws_access_key_id and aws_secret_access_key go"),
        ({**S3, "aws_secret_access_key": "s"}, "aws_access_key_id and aws_secret_access_key go"),
        ({**S3, "backup_multipart_chunksize": "lots"}, "'lots' is not a size"),
        ({**S3, "restore_multipart_chunksize": "5XB"}, "'5XB' is not a size"),
        ({**S3, "backup_multipart_chunksize": "0"}, "size must be greater than zero"),
        ({**S3, "backup_multipart_chunksize": "0.1B"}, "size must be greater than zero"),
        ({**S3, "backup_multipart_chunksize": "1.5"}, "'1.5' is not a size"),
        ({**S3, "backup_multipart_chunksize": "1e3MB"}, "'1e3MB' is not a size"),
        ({**S3, "backup_multipart_chunksize": "1.2.3MB"}, "'1.2.3MB' is not a size"),
        ({**S3, "backup_multipart_chunksize": "-1MB"}, "'-1MB' is not a size"),
        ({**S3, "backup_multipart_chunksize": "5M"}, "'5M' is not a size"),
        ({**S3, "backup_multipart_chunksize": "MB"}, "'MB' is not a size"),
        ({**S3, "encryption": "maybe"}, "option encryption: 'maybe' is not on or off"),
        ({**S3, "restore_subset": "sometimes"}, "option restore_subset: 'sometimes' is not on"),
        ({**S3, "bucket_name": "x"}, "unknown option 'bucket_name'"),
        ({**S3, "folder": "a/../b"}, "is not a clean relative folder"),
        ({**S3, "folder": "../b"}, "is not a clean relative folder"),
        ({**S3, "folder": "/./"}, "is not a clean relative folder"),
        ({**S3, "storage": "ftp"}, "option storage: 'ftp' is not one of s3, file"),
        ({"storage": "file", "folder": "f"}, "option path is required when storage is file"),
        ({**S3, "backup_max_concurrent_requests": "six"}, "'six' is not a whole number"),
        ({**S3, "compression": "gzip", "compression_level": 12}, "outside 1..9 for gzip"),
        ({**S3, "connect_timeout": "0"}, "connect_timeout: must be greater than zero"),
        ({**S3, "connect_timeout": "inf"}, "connect_timeout: must be greater than zero"),
        ({**S3, "request_timeout": "nan"}, "request_timeout: must be greater than zero"),
        ({**S3, "connect_timeout": "soon"}, "'soon' is not a number of seconds"),
    ],
)
def test_each_mistake_has_its_own_message(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        build_config(options)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plugin.yaml"
    path.write_text(text)
    return path


def test_load_config_reads_the_gpbackup_file(tmp_path: Path) -> None:
    document = {"executablepath": "/x/asyncplug", "options": {**S3, "pgport": 5432}}
    config = load_config(write(tmp_path, yaml.safe_dump(document)))
    assert (config.bucket, config.pgport) == ("b", "5432")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read plugin config .*missing\.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is not valid YAML at line \d+"):
        load_config(write(tmp_path, "options:\n  bucket: [unclosed\n"))


def test_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(write(tmp_path, "- just\n- a list\n"))


def test_no_options_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="has no options section"):
        load_config(write(tmp_path, "executablepath: /x\n"))


def test_unknown_top_level_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown top-level key 'option'"):
        load_config(write(tmp_path, "option:\n  bucket: b\n"))


def test_messages_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "options:\n  bucket: [\n"))
    assert "\n" not in str(caught.value)


def readme_options() -> dict[str, str]:
    """`| \\`name\\` (Go) | default | meaning |` rows of the README's configuration table."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = readme.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z0-9_]+)`(?: \(Go\))? \| ([^|]+) \|", table, re.MULTILINE)
    return {name: default.strip() for name, default in rows}


def test_readme_documents_every_option_with_its_default() -> None:
    documented = readme_options()
    assert set(documented) == set(OPTIONS)
    defaults = Config(folder="")  # required, so documented without a default
    for name, shown in documented.items():
        value = getattr(defaults, name)
        if shown.startswith("`"):
            assert OPTIONS[name](shown.strip("`"), name) == value, name
        elif shown == "—":
            assert value == "", name


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({**S3, "server_side_encryption": "aes"}, "is not one of AES256, aws:kms, aws:kms:dsse"),
        ({**S3, "storage_class": "STANDARD IA"}, "option storage_class: 'STANDARD IA' is not a"),
        ({**S3, "storage_class": "X\r\nHost: y"}, "option storage_class: "),
        ({**S3, "upload_checksum": "sha1"}, "'sha1' is not one of crc32c, md5, none"),
        ({**S3, "aws_profile": ""}, "option aws_profile: must not be empty"),
    ],
)
def test_aws_option_mistakes(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_config(options)
