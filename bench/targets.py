"""Where the benchmark writes: the embedded SeaweedFS, any S3 from a config, or a directory.

A target knows the plugin options for it, the commands of the baselines against the
same store, how many bytes an object takes there, and how to clean up afterwards.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from asyncplug.config import build_config, load_config
from bench.seaweed import SeaweedServer

EMBEDDED_BUCKET = "asyncplug-bench"
EMBEDDED_FOLDER = "bench"
# Options a compared plugin (the reference Go plugin) understands with the same meaning.
COMMON_OPTIONS = (
    "bucket", "folder", "endpoint", "region", "aws_access_key_id", "aws_secret_access_key",
    "encryption", "http_proxy", "backup_max_concurrent_requests", "backup_multipart_chunksize",
    "restore_max_concurrent_requests", "restore_multipart_chunksize",
)  # fmt: skip
# Options the bench sets itself for every variant.
OWN_OPTIONS = ("compression", "compression_level")


class TargetError(Exception):
    """A target that cannot be used (bad --config, missing --path)."""


@dataclass
class Target:
    """The store the plugin and the baselines talk to."""

    kind: str  # "seaweedfs" (embedded), "s3" or "file"
    options: dict[str, Any]  # base plugin options (YAML names)
    server: SeaweedServer | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def storage(self) -> str:
        return "file" if self.kind == "file" else "s3"

    @property
    def folder(self) -> str:
        return str(self.options["folder"]).strip("/")

    def describe(self) -> dict[str, Any]:
        """For the JSON: no secrets."""
        out: dict[str, Any] = {"kind": self.kind, "folder": self.folder}
        for name in ("endpoint", "region", "bucket", "path"):
            if self.options.get(name):
                out[name] = self.options[name]
        return out

    # --- plugin configs -------------------------------------------------------------
    def plugin_options(self, compression: str, level: int | None) -> dict[str, Any]:
        options = {k: v for k, v in self.options.items() if k not in OWN_OPTIONS}
        options["compression"] = compression
        if level is not None:
            options["compression_level"] = level
        return options

    def compare_options(self) -> dict[str, Any]:
        """The options a compared plugin gets. The reference Go plugin has no directory
        backend; on a directory target the other plugin must accept storage and path."""
        common = (*COMMON_OPTIONS, "storage", "path") if self.storage == "file" else COMMON_OPTIONS
        return {k: v for k, v in self.options.items() if k in common}

    # --- S3 access for baselines and inspection ---------------------------------------
    @property
    def url(self) -> str:
        endpoint = str(self.options.get("endpoint", "")).rstrip("/")
        if not endpoint:
            return f"https://s3.{self.region}.amazonaws.com"
        if "://" not in endpoint:
            scheme = "https" if self.encrypted else "http"
            return f"{scheme}://{endpoint}"
        return endpoint

    @property
    def region(self) -> str:
        return str(self.options.get("region") or "us-east-1")

    @property
    def encrypted(self) -> bool:
        return build_config(self.options).encryption

    @property
    def credentials(self) -> tuple[str, str] | None:
        key, secret = (
            self.options.get("aws_access_key_id"),
            self.options.get("aws_secret_access_key"),
        )
        return (str(key), str(secret)) if key and secret else None

    def object_url(self, key: str) -> str:
        return f"{self.url}/{self.options['bucket']}/{key}"

    def s3_uri(self, key: str) -> str:
        return f"s3://{self.options['bucket']}/{key}"

    def client(self) -> Any:
        """A synchronous botocore client for sizes and cleanup."""
        import botocore.session
        from botocore.config import Config

        creds = self.credentials
        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=creds[0] if creds else None,
            aws_secret_access_key=creds[1] if creds else None,
            config=Config(s3={"addressing_style": "path"}),
        )

    # --- what an object takes ---------------------------------------------------------
    def stored_bytes(self, key: str) -> int:
        """Bytes under the object's key, its sidecars included (`key.*`, `.key.*`)."""
        if self.storage == "file":
            path = Path(self.options["path"]) / key
            if not path.parent.is_dir():
                return 0
            names = (path.name, f".{path.name}")
            return sum(p.stat().st_size for p in path.parent.iterdir() if p.name.startswith(names))
        client = self.client()
        total = 0
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=self.options["bucket"], Prefix=key
        ):
            total += sum(int(item["Size"]) for item in page.get("Contents", []))
        return total

    def remove_prefix(self, prefix: str) -> None:
        """Delete everything the bench wrote under `prefix` (its own backup timestamp)."""
        if self.storage == "file":
            shutil.rmtree(Path(self.options["path"]) / prefix, ignore_errors=True)
            return
        client = self.client()
        bucket = self.options["bucket"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


def embedded(work_dir: str) -> Target:
    """Start SeaweedFS on loopback (telemetry off) with its data under `work_dir`."""
    data_dir = os.path.join(work_dir, "seaweedfs")
    os.makedirs(data_dir, exist_ok=True)
    server = SeaweedServer(data_dir=data_dir).start()
    try:
        server.create_bucket(EMBEDDED_BUCKET)
    except Exception as exc:
        server.stop()
        raise TargetError(f"cannot create the bucket on the embedded SeaweedFS: {exc}") from exc
    options = server.plugin_options(EMBEDDED_BUCKET, EMBEDDED_FOLDER)
    return Target("seaweedfs", options, server)


def from_config(path: str) -> Target:
    """Any S3 (or a directory) from a plugin config file as gpbackup takes it."""
    try:
        config = load_config(path)  # validates: the bench must not run on a broken config
    except Exception as exc:
        raise TargetError(str(exc)) from None
    with open(path, encoding="utf-8") as f:
        options = dict(yaml.safe_load(f)["options"])
    for added in ("pgport", "backup_plugin_version"):
        options.pop(added, None)
    return Target("file" if config.storage == "file" else "s3", options)


def directory(path: str, folder: str = EMBEDDED_FOLDER) -> Target:
    if not path:
        raise TargetError("--storage file needs --path DIR")
    os.makedirs(path, exist_ok=True)
    return Target("file", {"storage": "file", "path": os.path.abspath(path), "folder": folder})


def write_plugin_config(path: str, executable: str, options: Mapping[str, Any]) -> str:
    """A plugin config file as gpbackup writes it (it adds pgport and the version)."""
    document = {
        "executablepath": executable,
        "options": {**options, "pgport": 5432, "backup_plugin_version": "bench"},
    }
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(document, f, sort_keys=False)
    return path
