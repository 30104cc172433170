"""Shared fixtures: one real SeaweedFS per test session (SPEC §3), fresh buckets per test."""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from asyncplug.config import Config, build_config
from bench.seaweed import ADMIN, Identity, SeaweedServer

# No test may reach the instance-metadata address when a config has no keys and
# botocore walks the credential chain: this machine talks to loopback only.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

_bucket_numbers = itertools.count(1)

# Identities with some rights only, for the setup probe's messages. SeaweedFS actions:
# Read = GetObject/HeadObject, Write = PutObject/DeleteObject/multipart, List = listings.
READ_LIST = Identity("read-list", "asyncplug-read-list", "read-list-secret", ("Read", "List"))
WRITE_LIST = Identity("write-list", "asyncplug-write-list", "write-list-secret", ("Write", "List"))
READ_WRITE = Identity("read-write", "asyncplug-read-write", "read-write-secret", ("Read", "Write"))


@pytest.fixture(autouse=True)
def _own_warm_server_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts with no warm server: a setup_plugin_for_backup at segment_host
    scope (gpbackup's plugin test bench runs one) starts a server that would otherwise
    serve the next tests' commands for a minute, with their state. Tests that want one
    name their own directory (runner.Plugin.runtime_dir)."""
    from asyncplug import client, server
    from tests.server_support import private_dir

    directory = private_dir()
    monkeypatch.setenv("ASYNCPLUG_RUNTIME_DIR", directory)
    yield
    server.stop(os.path.join(directory, os.path.basename(client.socket_path())))
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedServer]:
    """Every request must be signed with one of these identities' keys (ADMIN by default)."""
    with SeaweedServer(identities=(ADMIN, READ_LIST, WRITE_LIST, READ_WRITE)) as server:
        yield server


@pytest.fixture
def bucket(seaweed: SeaweedServer) -> str:
    name = f"test-bucket-{next(_bucket_numbers)}"
    seaweed.create_bucket(name)
    return name


def s3_options(seaweed: SeaweedServer, bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        **seaweed.plugin_options(bucket, "prod/cluster1"),
        # SeaweedFS answers an occasional 500 when the 2 cores are busy: retry like production.
        "max_retries": 5,
        **extra,
    }


def file_options(root: Path, **extra: Any) -> dict[str, Any]:
    return {"storage": "file", "path": str(root), "folder": "prod/cluster1", **extra}


@pytest.fixture(params=["s3", "file"])
def backend_options(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Options for each backend in turn: tests using it run against S3 and a directory."""
    if request.param == "s3":
        server = request.getfixturevalue("seaweed")
        return s3_options(server, request.getfixturevalue("bucket"))
    return file_options(tmp_path / "store")


@pytest.fixture
def backend_config(backend_options: dict[str, Any]) -> Config:
    return build_config(backend_options)


@pytest.fixture
def write_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    """write_config(options) -> path of a plugin config file as gpbackup writes it."""

    def write(options: dict[str, Any], name: str = "plugin.yaml") -> str:
        path = tmp_path / name
        document = {
            "executablepath": "/usr/local/greenplum-db/bin/asyncplug",
            "options": {"pgport": 5432, "backup_plugin_version": "0.1.0", **options},
        }
        path.write_text(yaml.safe_dump(document))
        return str(path)

    return write
