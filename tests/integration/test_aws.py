"""AWS in production, through the real executable: encryption at rest, storage classes,
upload checksums, and credentials from every source of the AWS chain on the lean path.

moto's server (signatures and session tokens checked) stands in for AWS where
SeaweedFS lacks the feature (SSE-KMS, storage classes, archived objects, STS);
SSE-C runs against SeaweedFS, which checks the key.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from bench.seaweed import SeaweedServer
from tests.aws_support import CredentialServer, MotoServer
from tests.conftest import s3_options
from tests.integration.runner import EXECUTABLE, TIMEOUT, make_plugin, one_line_error
from tests.integration.test_s3_faults import Fault, FaultProxy

BACKUP = "/backups/20250101/20250101123456"
DATA_KEY = f"{BACKUP}/gpbackup_0_20250101123456"
PART = 5 * 1024 * 1024
_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer().start(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def moto_bucket(moto: MotoServer) -> str:
    name = f"aws-bucket-{next(_numbers)}"
    moto.create_bucket(name)
    return name


@pytest.fixture
def credential_server(moto: MotoServer) -> Iterator[CredentialServer]:
    server = CredentialServer(moto).start()
    try:
        yield server
    finally:
        server.stop()


def run(
    config: str,
    env: dict[str, str],
    command: str,
    *args: str,
    stdin: bytes = b"",
    importtime: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """`asyncplug COMMAND CONFIG ARGS` with this environment."""
    head = [sys.executable, "-X", "importtime", "-m", "asyncplug"] if importtime else [EXECUTABLE]
    return subprocess.run(
        [*head, command, config, *args], input=stdin, capture_output=True, env=env, timeout=TIMEOUT
    )


def chain_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment with no AWS keys, no shared files and no instance metadata: only
    the credential source a test adds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.pop("XDG_RUNTIME_DIR", None)  # the credential cache goes under HOME: one per test
    env.update(
        HOME=str(home),
        AWS_CONFIG_FILE=str(home / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "no-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    env.update(extra)
    return env


def without_keys(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if not k.startswith("aws_")}


def stored_objects(client: Any, bucket: str) -> list[str]:
    listing = client.list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in listing.get("Contents", [])]


# --- encryption at rest, storage class, upload checksum (moto) ------------------------

WRITES = [
    pytest.param({"server_side_encryption": "aws:kms", "storage_class": "STANDARD_IA"}, "lean",
                 id="kms-standard_ia-lean"),
    pytest.param({"server_side_encryption": "aws:kms", "storage_class": "ONEZONE_IA",
                  "upload_checksum": "md5"}, "boto", id="kms-onezone_ia-md5-boto"),
    pytest.param({"server_side_encryption": "AES256", "storage_class": "GLACIER_IR",
                  "upload_checksum": "md5"}, "lean", id="aes256-glacier_ir-md5-lean"),
    pytest.param({"server_side_encryption": "aws:kms:dsse", "storage_class": "INTELLIGENT_TIERING",
                  "upload_checksum": "none"}, "lean", id="dsse-intelligent_tiering-none-lean"),
    pytest.param({"server_side_encryption": "AES256", "storage_class": "REDUCED_REDUNDANCY",
                  "upload_checksum": "none"}, "boto", id="aes256-passed_through-none-boto"),
]  # fmt: skip


@pytest.mark.parametrize(("settings", "transport"), WRITES)
async def test_every_object_written_carries_encryption_and_class(
    moto: MotoServer,
    moto_bucket: str,
    write_config: Callable[..., str],
    tmp_path: Path,
    settings: dict[str, str],
    transport: str,
) -> None:
    """A multipart stream, a one-part stream and a file (each with its block index): every
    object has the encryption, KMS key and storage class; restores give the bytes back."""
    options: dict[str, Any] = {
        **moto.plugin_options(moto_bucket),
        **settings,
        "backup_multipart_chunksize": "5MiB",
    }
    if settings["server_side_encryption"].startswith("aws:kms"):
        options["sse_kms_key_id"] = moto.kms_key_id
    proxy = await FaultProxy(moto.endpoint).start()
    if transport == "boto":
        options["http_proxy"] = proxy.endpoint  # every call through aiobotocore
    else:
        options["endpoint"] = proxy.endpoint  # to see the requests
    plugin = make_plugin(options, write_config, tmp_path)
    big = random.Random(1).randbytes(PART + 1000)
    small = b"one part" * 100
    local = tmp_path / BACKUP.lstrip("/") / "gpbackup_20250101123456_metadata.sql"
    local.parent.mkdir(parents=True)
    local.write_bytes(b"CREATE TABLE t ();\n")
    try:
        await asyncio.to_thread(plugin, "backup_data", DATA_KEY, stdin=big)
        await asyncio.to_thread(plugin, "backup_data", DATA_KEY + "_small", stdin=small)
        await asyncio.to_thread(plugin, "backup_file", str(local))
        restored = await asyncio.to_thread(plugin, "restore_data", DATA_KEY)
        assert restored.stdout == big
        restored = await asyncio.to_thread(plugin, "restore_data", DATA_KEY + "_small")
        assert restored.stdout == small
    finally:
        await proxy.stop()
    agents = {h.get("User-Agent", "").split("/")[0] for _, _, h in proxy.seen}
    assert agents == ({"aiobotocore"} if transport == "boto" else {"asyncplug"})
    client = moto.client()
    keys = stored_objects(client, moto_bucket)
    # three objects, each with its block index sidecar: every one must carry the settings
    assert sum(k.endswith(".asyncplug-idx") for k in keys) == 3, keys
    assert len(keys) == 6, keys
    for key in keys:
        head = client.head_object(Bucket=moto_bucket, Key=key)
        assert head["ServerSideEncryption"] == settings["server_side_encryption"], key
        if settings["server_side_encryption"] != "aws:kms:dsse":  # moto drops its key id
            assert head.get("SSEKMSKeyId") == options.get("sse_kms_key_id"), key
        assert head["StorageClass"] == settings["storage_class"], key
    writes = [h for m, p, h in proxy.seen if m == "POST" and "uploads" in p]
    writes += [h for m, p, h in proxy.seen if m == "PUT" and "partNumber=" not in p]
    assert len(writes) == 6  # CreateMultipartUpload, two PutObject and three block indexes
    for headers in writes:
        assert headers["x-amz-server-side-encryption"] == settings["server_side_encryption"]
        kms_key = headers.get("x-amz-server-side-encryption-aws-kms-key-id")
        assert kms_key == options.get("sse_kms_key_id")
        assert headers["x-amz-storage-class"] == settings["storage_class"]
    uploads = [(m, h) for m, p, h in proxy.seen if m == "PUT" and "partNumber=" in p]
    assert uploads
    for _, headers in [(m, h) for m, p, h in proxy.seen if m == "PUT"]:
        checksum = settings.get("upload_checksum", "crc32c")
        assert ("x-amz-checksum-crc32c" in headers) == (checksum == "crc32c")
        assert ("Content-MD5" in headers) == (checksum == "md5")


async def test_archived_objects_need_a_restore_request(
    moto: MotoServer, moto_bucket: str, write_config: Callable[..., str], tmp_path: Path
) -> None:
    options = {**moto.plugin_options(moto_bucket), "storage_class": "GLACIER"}
    plugin = make_plugin(options, write_config, tmp_path)
    plugin("backup_data", DATA_KEY, stdin=b"cold data")
    head = moto.client().head_object(Bucket=moto_bucket, Key=f"prod/cluster1{DATA_KEY}")
    assert head["StorageClass"] == "GLACIER"
    proc = plugin("restore_data", DATA_KEY, check=False)
    message = one_line_error(proc)
    assert proc.returncode == 5 and proc.stdout == b""
    assert "archived" in message and "restore-object" in message, message


def test_unknown_storage_class_is_refused_in_one_line(
    moto: MotoServer, moto_bucket: str, write_config: Callable[..., str], tmp_path: Path
) -> None:
    """Passed through as written; the store's refusal comes back as one line."""
    options = {**moto.plugin_options(moto_bucket), "storage_class": "NO_SUCH_CLASS"}
    plugin = make_plugin(options, write_config, tmp_path)
    message = one_line_error(plugin("backup_data", DATA_KEY, stdin=b"x", check=False))
    assert "InvalidStorageClass" in message, message


@pytest.mark.parametrize("encrypted", [False, True])
async def test_refused_for_missing_encryption_names_the_option(
    seaweed: SeaweedServer,
    bucket: str,
    write_config: Callable[..., str],
    tmp_path: Path,
    encrypted: bool,
) -> None:
    """A bucket policy that demands encryption answers AccessDenied to PutObject."""
    proxy = await FaultProxy(seaweed.endpoint).start()
    extra = {"server_side_encryption": "AES256"} if encrypted else {}
    options = s3_options(seaweed, bucket, endpoint=proxy.endpoint, **extra)
    plugin = make_plugin(options, write_config, tmp_path)
    proxy.faults = [Fault("PUT", "status", 403, "AccessDenied") for _ in range(2)]
    local = str(tmp_path / BACKUP.lstrip("/"))
    try:
        setup = await asyncio.to_thread(
            plugin, "setup_plugin_for_backup", local, "coordinator", '"-1"', check=False
        )
        backup = await asyncio.to_thread(plugin, "backup_data", DATA_KEY, stdin=b"x", check=False)
    finally:
        await proxy.stop()
    for proc in (setup, backup):  # the setup's write probe (aiobotocore), then the lean path
        message = one_line_error(proc)
        assert proc.returncode == 7
        assert ("set server_side_encryption" in message) == (not encrypted), message
    assert not proxy.faults


def test_encryption_options_are_checked_before_any_call(
    write_config: Callable[..., str], tmp_path: Path
) -> None:
    options = {
        "endpoint": "http://127.0.0.1:9",  # never reached
        "bucket": "b",
        "folder": "f",
        "aws_access_key_id": "a",
        "aws_secret_access_key": "b",
    }
    cases = [
        ({"sse_kms_key_id": "alias/k"}, "sse_kms_key_id needs server_side_encryption"),
        ({"sse_customer_key_file": str(tmp_path / "none")}, "cannot read it"),
        ({"server_side_encryption": "aws:kms", "sse_customer_key_file": __file__}, "exclude"),
    ]
    for number, (extra, expected) in enumerate(cases):
        plugin = make_plugin({**options, **extra}, write_config, tmp_path, f"{number}.yaml")
        proc = plugin("backup_data", DATA_KEY, stdin=b"x", check=False)
        assert proc.returncode == 3 and expected in one_line_error(proc)


# --- SSE-C (SeaweedFS checks the key) ------------------------------------------------


@pytest.mark.parametrize("transport", ["lean", "boto"])
async def test_customer_key_round_trip(
    seaweed: SeaweedServer,
    bucket: str,
    write_config: Callable[..., str],
    tmp_path: Path,
    transport: str,
) -> None:
    key = os.urandom(32)
    key_file = tmp_path / "sse-c.key"
    key_file.write_bytes(base64.b64encode(key) + b"\n")
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(32))
    proxy = await FaultProxy(seaweed.endpoint).start()
    route = {"http_proxy" if transport == "boto" else "endpoint": proxy.endpoint}
    options = {
        **s3_options(seaweed, bucket, **route),
        "backup_multipart_chunksize": "5MiB",
        "log_level": "debug",
    }
    good = make_plugin({**options, "sse_customer_key_file": str(key_file)}, write_config, tmp_path)
    none = make_plugin(options, write_config, tmp_path, "none.yaml")
    wrong = make_plugin({**options, "sse_customer_key_file": str(other)}, write_config, tmp_path,
                        "wrong.yaml")  # fmt: skip
    data = random.Random(2).randbytes(PART + 77)
    offsets = tmp_path / "offsets"
    offsets.write_text("2 10 20 300 400")
    try:
        await asyncio.to_thread(good, "backup_data", DATA_KEY, stdin=data)
        await asyncio.to_thread(good, "backup_data", DATA_KEY + "_small", stdin=b"small")
        assert (await asyncio.to_thread(good, "restore_data", DATA_KEY)).stdout == data
        subset = await asyncio.to_thread(good, "restore_data_subset", DATA_KEY, str(offsets))
        assert subset.stdout == data[10:20] + data[300:400]
        small = await asyncio.to_thread(good, "restore_data", DATA_KEY + "_small")
        assert small.stdout == b"small"
        failed = [
            await asyncio.to_thread(plugin, "restore_data", DATA_KEY, check=False)
            for plugin in (none, wrong)
        ]
    finally:
        await proxy.stop()
    missing, mismatched = (one_line_error(proc) for proc in failed)
    assert "set sse_customer_key_file" in missing, missing
    assert "sse_customer_key_file is not the key" in mismatched, mismatched
    assert all(proc.stdout == b"" for proc in failed)
    # The objects are encrypted with the key, and it never reached a log or stderr.
    client = seaweed.client()
    keys = [k for k in stored_objects(client, bucket) if "asyncplug-probe" not in k]
    assert len(keys) == 4 and sum(k.endswith(".asyncplug-idx") for k in keys) == 2, keys
    for name in keys:
        with pytest.raises(botocore.exceptions.ClientError):
            client.head_object(Bucket=bucket, Key=name)
        head = client.head_object(
            Bucket=bucket, Key=name, SSECustomerAlgorithm="AES256", SSECustomerKey=key
        )
        assert head["SSECustomerAlgorithm"] == "AES256"
    secrets = (base64.b64encode(key).decode(), key_file.read_text().strip())
    logs = "".join(p.read_text() for p in (tmp_path / "logs").iterdir())
    assert "sse_customer_key_file" in logs  # the debug log lists the options
    assert not any(s in logs + "".join(p.stderr.decode() for p in failed) for s in secrets)
    agents = {h.get("User-Agent", "").split("/")[0] for _, _, h in proxy.seen}
    assert agents == ({"aiobotocore"} if transport == "boto" else {"asyncplug"})


# --- credentials from the chain, signed on the lean path (moto checks them) -----------


def _access_keys(proxy: FaultProxy) -> list[str]:
    found = (
        re.search(r"Credential=([^/]+)/", h.get("Authorization", "")) for _, _, h in proxy.seen
    )
    return [m.group(1) for m in found if m]


async def test_container_credentials_are_refreshed_mid_stream(
    moto: MotoServer,
    moto_bucket: str,
    credential_server: CredentialServer,
    write_config: Callable[..., str],
    tmp_path: Path,
) -> None:
    """Credentials that enter botocore's 15-minute advisory refresh window 2 s after
    each fetch: a backup fed over ~7 s fetches them again mid-stream, signs with the
    new ones (moto checks every signature and session token) and completes."""
    credential_server.lifetime = 15 * 60 + 2
    credential_server.authorization = "pod-identity-token"
    token_file = tmp_path / "eks-pod-identity-token"
    token_file.write_text(credential_server.authorization)
    proxy = await FaultProxy(moto.endpoint).start()
    options = {
        **without_keys(moto.plugin_options(moto_bucket)),
        "endpoint": proxy.endpoint,
        "backup_multipart_chunksize": "5MiB",
    }
    plugin = make_plugin(options, write_config, tmp_path)
    env = chain_env(
        tmp_path,
        AWS_CONTAINER_CREDENTIALS_FULL_URI=f"{credential_server.url}/container",
        AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(token_file),
    )
    data = random.Random(3).randbytes(5 * PART + 999)
    try:
        proc = await asyncio.create_subprocess_exec(
            EXECUTABLE, "backup_data", plugin.config, DATA_KEY,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        assert proc.stdin is not None
        for at in range(0, len(data), PART):  # one part every 1.5 s
            proc.stdin.write(data[at : at + PART])
            await proc.stdin.drain()
            await asyncio.sleep(1.5)
        proc.stdin.close()
        _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert proc.returncode == 0, err
    finally:
        await proxy.stop()
    fetched = credential_server.hits["container"]
    assert fetched >= 2
    used = _access_keys(proxy)
    assert set(used) <= set(credential_server.keys) and len(set(used)) >= 2
    assert used[-1] == credential_server.keys[-1]  # the last call signed with the newest
    direct = make_plugin({**options, "endpoint": moto.endpoint}, write_config, tmp_path, "d.yaml")
    restored = await asyncio.to_thread(run, direct.config, env, "restore_data", DATA_KEY)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout == data


def test_container_credentials_keep_aiobotocore_out(
    moto: MotoServer,
    moto_bucket: str,
    credential_server: CredentialServer,
    write_config: Callable[..., str],
    tmp_path: Path,
) -> None:
    """With container credentials a backup and a restore import neither aiobotocore nor
    aiohttp: the chain is botocore's resolver, the calls are the lean path's. The
    restore, a later process, takes the credentials from the cache and imports no
    botocore chain at all; with credential_cache off it resolves its own."""
    options = without_keys(moto.plugin_options(moto_bucket))
    plugin = make_plugin(options, write_config, tmp_path)
    uncached = make_plugin({**options, "credential_cache": "off"}, write_config, tmp_path, "u.yaml")
    env = chain_env(
        tmp_path, AWS_CONTAINER_CREDENTIALS_FULL_URI=f"{credential_server.url}/container"
    )
    data = bytes(range(256)) * 40
    runs = [(plugin, "backup_data", 1), (plugin, "restore_data", 1), (uncached, "restore_data", 2)]
    for config, command, fetched in runs:
        stdin = data if command == "backup_data" else b""
        proc = run(config.config, env, command, DATA_KEY, stdin=stdin, importtime=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        imported = {
            line.rsplit("|", 1)[1].strip()
            for line in proc.stderr.decode().splitlines()
            if line.startswith("import time:") and "|" in line
        }
        assert "asyncplug.storage.credentials" in imported  # the parse found the imports
        unwanted = sorted(m for m in imported if m.split(".")[0] in ("aiobotocore", "aiohttp"))
        assert not unwanted, f"{command} imported {unwanted}"
        resolved = config is uncached or command == "backup_data"
        assert ("botocore.credentials" in imported) == resolved, (config, command)
        assert credential_server.hits["container"] == fetched
        if command == "restore_data":
            assert proc.stdout == data
    cached = list((tmp_path / ".cache" / "asyncplug").iterdir())
    assert len(cached) == 1 and cached[0].stat().st_mode & 0o777 == 0o600


def test_refused_cached_credentials_are_resolved_again(
    moto: MotoServer,
    moto_bucket: str,
    credential_server: CredentialServer,
    write_config: Callable[..., str],
    tmp_path: Path,
) -> None:
    plugin = make_plugin(without_keys(moto.plugin_options(moto_bucket)), write_config, tmp_path)
    env = chain_env(
        tmp_path, AWS_CONTAINER_CREDENTIALS_FULL_URI=f"{credential_server.url}/container"
    )
    assert run(plugin.config, env, "backup_data", DATA_KEY, stdin=b"cached").returncode == 0
    (cache,) = (tmp_path / ".cache" / "asyncplug").iterdir()
    record = json.loads(cache.read_text())
    cache.write_text(json.dumps({**record, "secret": "revoked"}))
    proc = run(plugin.config, env, "restore_data", DATA_KEY)
    assert proc.returncode == 0 and proc.stdout == b"cached", proc.stderr
    assert credential_server.hits["container"] == 2
    assert json.loads(cache.read_text())["secret"] != "revoked"


def _profiles(tmp_path: Path, moto: MotoServer, text: str) -> dict[str, str]:
    config = tmp_path / "aws-config"
    config.write_text(text)
    return {"AWS_CONFIG_FILE": str(config), "AWS_ENDPOINT_URL_STS": moto.endpoint}


@pytest.mark.parametrize(
    "source", ["environment", "credential_process", "assume_role", "web_identity", "imds"]
)
def test_every_source_of_the_chain_signs_on_the_lean_path(
    moto: MotoServer,
    moto_bucket: str,
    credential_server: CredentialServer,
    write_config: Callable[..., str],
    tmp_path: Path,
    source: str,
) -> None:
    """Each source hands out credentials moto accepts (it checks every signature and
    session token); backup and restore sign them on the lean path, without aiobotocore."""
    options = without_keys(moto.plugin_options(moto_bucket))
    env = chain_env(tmp_path)
    if source == "environment":
        creds = moto.assume_role()
        env.update(
            AWS_ACCESS_KEY_ID=creds["AccessKeyId"],
            AWS_SECRET_ACCESS_KEY=creds["SecretAccessKey"],
            AWS_SESSION_TOKEN=creds["SessionToken"],
        )
    elif source == "credential_process":
        creds = credential_server.credentials("container")
        answer = tmp_path / "answer.json"
        answer.write_text(
            json.dumps(
                {
                    "Version": 1,
                    "AccessKeyId": creds["AccessKeyId"],
                    "SecretAccessKey": creds["SecretAccessKey"],
                    "SessionToken": creds["Token"],
                    "Expiration": creds["Expiration"],
                }
            )
        )
        profile = f"[profile proc]\ncredential_process = cat {answer}\n"
        env.update(_profiles(tmp_path, moto, profile))
        options["aws_profile"] = "proc"
    elif source == "assume_role":
        env.update(
            _profiles(
                tmp_path,
                moto,
                f"[profile base]\naws_access_key_id = {moto.access_key}\n"
                f"aws_secret_access_key = {moto.secret_key}\n"
                f"[profile backup]\nrole_arn = {moto.role_arn}\nsource_profile = base\n",
            )
        )
        options["aws_profile"] = "backup"
    elif source == "web_identity":
        credential_server.web_identity_token = "eks-service-account-token"
        token = tmp_path / "token"
        token.write_text(credential_server.web_identity_token)
        env.update(
            AWS_WEB_IDENTITY_TOKEN_FILE=str(token),
            AWS_ROLE_ARN=moto.role_arn,
            AWS_ROLE_SESSION_NAME="asyncplug",
            AWS_ENDPOINT_URL_STS=credential_server.url,
        )
    else:
        env.update(
            AWS_EC2_METADATA_DISABLED="false",
            AWS_EC2_METADATA_SERVICE_ENDPOINT=credential_server.url,
        )
    plugin = make_plugin(options, write_config, tmp_path)
    data = b"chained " * 1000
    for command in ("backup_data", "restore_data"):
        stdin = data if command == "backup_data" else b""
        proc = run(plugin.config, env, command, DATA_KEY, stdin=stdin, importtime=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "import time: " in proc.stderr.decode()
        assert "aiobotocore" not in proc.stderr.decode(), command
    assert proc.stdout == data
    kind = {"imds": "imds", "web_identity": "web-identity"}.get(source)
    if kind:
        assert credential_server.hits[kind] == 1  # the restore found them in the cache


def test_no_credentials_anywhere_is_one_line(
    moto: MotoServer, moto_bucket: str, write_config: Callable[..., str], tmp_path: Path
) -> None:
    plugin = make_plugin(without_keys(moto.plugin_options(moto_bucket)), write_config, tmp_path)
    proc = run(plugin.config, chain_env(tmp_path), "backup_data", DATA_KEY, stdin=b"x")
    message = one_line_error(proc)
    assert proc.returncode == 7 and "no AWS credentials found" in message, message
    missing = {**without_keys(moto.plugin_options(moto_bucket)), "aws_profile": "nobody"}
    plugin = make_plugin(missing, write_config, tmp_path, "missing.yaml")
    proc = run(plugin.config, chain_env(tmp_path), "backup_data", DATA_KEY, stdin=b"x")
    message = one_line_error(proc)
    assert proc.returncode == 3 and "profile" in message, message
