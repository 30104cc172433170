"""The session's SeaweedFS checks every signature (bench/seaweed.py runs it with
identities), so every integration test exercises the signer on the wire. Here: what a
wrong secret and missing rights look like, and the setup probe naming the permission."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from asyncplug.config import build_config
from asyncplug.errors import AccessDenied
from asyncplug.storage import open_storage
from bench.seaweed import Identity, SeaweedServer
from tests.conftest import READ_LIST, READ_WRITE, WRITE_LIST, s3_options
from tests.integration.runner import Plugin, make_plugin, one_line_error
from tests.integration.test_s3_faults import Fault, FaultProxy

TS = "20250101123456"


def local_dir(root: Path) -> str:
    return str(root / "seg0" / "backups" / TS[:8] / TS)


def plugin_as(
    seaweed: SeaweedServer,
    bucket: str,
    write_config: Callable[..., str],
    tmp_path: Path,
    identity: Identity,
    **extra: str,
) -> Plugin:
    options = {
        **s3_options(seaweed, bucket),
        **seaweed.plugin_options(bucket, "prod/cluster1", identity),
    }
    return make_plugin({**options, **extra}, write_config, tmp_path, f"{identity.name}.yaml")


def test_an_unsigned_request_is_refused(seaweed: SeaweedServer, bucket: str) -> None:
    """Without this, a signer bug would go unnoticed: the server would take anything."""
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{seaweed.endpoint}/{bucket}/prod/x", timeout=30)
    refused.value.close()
    assert refused.value.code == 403


@pytest.mark.parametrize(
    ("command", "path"),
    [
        ("backup_data", "lean"),  # our own signer
        ("restore_data", "lean"),
        ("list_directory", "aiobotocore"),
        ("setup_plugin_for_backup", "probe"),
    ],
)
def test_a_wrong_secret_is_exit_7_in_one_line(
    seaweed: SeaweedServer,
    bucket: str,
    write_config: Callable[..., str],
    tmp_path: Path,
    command: str,
    path: str,
) -> None:
    wrong = Identity("wrong", seaweed.identity.access_key, "not-the-secret")
    plugin = plugin_as(seaweed, bucket, write_config, tmp_path, wrong)
    key = f"{local_dir(tmp_path)}/gpbackup_0_{TS}"
    args = {
        "backup_data": [key],
        "restore_data": [key],
        "list_directory": [],
        "setup_plugin_for_backup": [local_dir(tmp_path), "coordinator", '"-1"'],
    }[command]
    proc = plugin(command, *args, stdin=b"rows\n", check=False)
    assert proc.returncode == AccessDenied.exit_code, proc.stderr
    err = one_line_error(proc)
    # a HEAD's 403 has no body to name the code
    assert re.search(r"access denied \((SignatureDoesNotMatch|403)\)", err), err
    assert "not-the-secret" not in err


@pytest.mark.parametrize(
    ("identity", "backup", "restore"),
    [
        (READ_LIST, "s3:PutObject", None),  # a restore-only host
        (WRITE_LIST, "s3:GetObject", "s3:GetObject"),
        (READ_WRITE, "s3:ListBucket", "s3:ListBucket"),
    ],
    ids=lambda v: v.name if isinstance(v, Identity) else str(v),
)
def test_setup_names_the_missing_permission(
    seaweed: SeaweedServer,
    bucket: str,
    write_config: Callable[..., str],
    tmp_path: Path,
    identity: Identity,
    backup: str,
    restore: str | None,
) -> None:
    plugin = plugin_as(seaweed, bucket, write_config, tmp_path, identity)
    where = local_dir(tmp_path)
    proc = plugin("setup_plugin_for_backup", where, "segment_host", check=False)
    assert proc.returncode == AccessDenied.exit_code, proc.stderr
    assert f"needs {backup} " in one_line_error(proc)
    proc = plugin("setup_plugin_for_restore", where, "segment_host", check=False)
    if restore is None:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode == AccessDenied.exit_code, proc.stderr
        assert f"needs {restore} " in one_line_error(proc)
    assert seaweed.client().list_objects_v2(Bucket=bucket).get("KeyCount") == 0  # no probe left


def test_setup_passes_with_full_rights(
    seaweed: SeaweedServer, bucket: str, write_config: Callable[..., str], tmp_path: Path
) -> None:
    plugin = plugin_as(seaweed, bucket, write_config, tmp_path, seaweed.identity)
    for hook in ("setup_plugin_for_backup", "setup_plugin_for_restore"):
        plugin(hook, local_dir(tmp_path), "segment_host")
    assert seaweed.client().list_objects_v2(Bucket=bucket).get("KeyCount") == 0


async def test_a_denied_delete_names_s3_delete_object(proxy: FaultProxy, bucket: str) -> None:
    """SeaweedFS's Write covers PUT and DELETE together: the denial comes from the proxy."""
    config = build_config({**s3_options_for(proxy, bucket)})
    proxy.faults = [Fault("DELETE", "status", 403, "AccessDenied")]
    async with open_storage(config) as storage:
        with pytest.raises(AccessDenied, match="needs s3:DeleteObject "):
            await storage.check_bucket(write=True)
    assert [m for m, _, _ in proxy.seen].count("DELETE") == 1  # the lean DeleteObject
    assert not any(m == "POST" and "delete" in p for m, p, _ in proxy.seen)  # no DeleteObjects


def s3_options_for(proxy: FaultProxy, bucket: str) -> dict[str, object]:
    from bench.seaweed import ACCESS_KEY, SECRET_KEY

    return {
        "endpoint": proxy.endpoint,
        "encryption": "off",
        "bucket": bucket,
        "folder": "prod/cluster1",
        "aws_access_key_id": ACCESS_KEY,
        "aws_secret_access_key": SECRET_KEY,
        "max_retries": 0,
    }
