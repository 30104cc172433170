"""asyncplug.keys: the Go plugin's key layout and the folder fence of *_directory."""

from __future__ import annotations

import pytest

from asyncplug.errors import InputError
from asyncplug.keys import backup_prefix, folder_prefix, object_key, timestamp_of

FOLDER = "prod/cluster1"


@pytest.mark.parametrize(
    ("local", "key"),
    [
        (
            "/data/seg0/backups/20250101/20250101123456/gpbackup_0_20250101123456",
            "prod/cluster1/backups/20250101/20250101123456/gpbackup_0_20250101123456",
        ),
        (
            "/data/master/gpseg-1/backups/20250101/20250101123456/gpbackup_20250101123456_metadata.sql",
            "prod/cluster1/backups/20250101/20250101123456/gpbackup_20250101123456_metadata.sql",
        ),
        # The Go plugin's GetS3Path keeps the last four components, whatever they are.
        (
            "/tmp/testseg/backups/20250101/20250101123456/f.txt",
            "prod/cluster1/backups/20250101/20250101123456/f.txt",
        ),
        ("a/b/c/d", "prod/cluster1/a/b/c/d"),
        (
            "//x//backups/20250101/20250101123456/f",
            "prod/cluster1/backups/20250101/20250101123456/f",
        ),
    ],
)
def test_object_key_is_the_go_layout(local: str, key: str) -> None:
    assert object_key(FOLDER, local) == key


@pytest.mark.parametrize(
    "local",
    [
        "/backups/20250101/file",
        "/data/backups/20250101//20250101123456/f",  # the Go plugin would store .../20250101/...
        "/data/backups/20250101/20250101123456/",
        "/data/backups/20250101/./f",
        "/data/backups/20250101/../f",
    ],
)
def test_object_key_needs_four_plain_components(local: str) -> None:
    with pytest.raises(InputError, match="is not a gpbackup path"):
        object_key(FOLDER, local)


def test_backup_prefix_ends_with_a_slash() -> None:
    assert (
        backup_prefix(FOLDER, "20250101123456") == "prod/cluster1/backups/20250101/20250101123456/"
    )
    assert (
        backup_prefix(FOLDER, '"20250101123456"')
        == "prod/cluster1/backups/20250101/20250101123456/"
    )


@pytest.mark.parametrize("bad", ["2025010112345", "202501011234567", "2025-01-01", "", "latest"])
def test_backup_prefix_wants_14_digits(bad: str) -> None:
    with pytest.raises(InputError, match="14 digits"):
        backup_prefix(FOLDER, bad)


def test_timestamp_of_local_backup_dir() -> None:
    assert timestamp_of("/data/seg0/backups/20250101/20250101123456/") == "20250101123456"
    with pytest.raises(InputError, match="14-digit backup timestamp"):
        timestamp_of("/data/seg0/backups/20250101")


@pytest.mark.parametrize(
    ("prefix", "resolved"),
    [
        ("", "prod/cluster1/"),
        ("backups", "prod/cluster1/backups"),
        ("backups/20250101/", "prod/cluster1/backups/20250101"),
        ("./backups//20250101", "prod/cluster1/backups/20250101"),
        ("prod/cluster1/backups", "prod/cluster1/backups"),
        ("prod/cluster1", "prod/cluster1/"),
        ('"backups"', "prod/cluster1/backups"),
        ("other/x", "prod/cluster1/other/x"),
    ],
)
def test_folder_prefix_inside(prefix: str, resolved: str) -> None:
    assert folder_prefix(FOLDER, prefix) == resolved


@pytest.mark.parametrize(
    ("prefix", "why"),
    [
        ("..", "'..' would leave"),
        ("backups/../../other", "'..' would leave"),
        ("prod/cluster1/..", "'..' would leave"),
        ("/prod/cluster1/backups", "must be a relative path"),
        ("/", "must be a relative path"),
        ("prod/cluster2/backups", "outside the folder"),
        ("prod", "outside the folder"),
        ("prod/cluster1x", "outside the folder"),
        ("back\\slash", "must be a relative path"),
    ],
)
def test_folder_prefix_refuses_escapes(prefix: str, why: str) -> None:
    with pytest.raises(InputError, match=why):
        folder_prefix(FOLDER, prefix)
