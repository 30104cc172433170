"""storage.credentials: which keys the lean path signs with, refresh and cache."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import RefreshableCredentials

from asyncplug.config import build_config
from asyncplug.errors import AccessDenied
from asyncplug.storage import credentials as module
from asyncplug.storage.credentials import ChainCredentials, CredentialCache, static_keys
from asyncplug.storage.sigv4 import Credentials

S3 = {"bucket": "b", "folder": "f", "region": "us-east-1"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_") or name == "XDG_RUNTIME_DIR":
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_static_keys_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    config = build_config({**S3, "aws_access_key_id": "AKIDCONF", "aws_secret_access_key": "s"})
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "e")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token")
    assert static_keys(config) == Credentials("AKIDCONF", "s")
    assert static_keys(build_config(S3)) == Credentials("AKIDENV", "e", "token")
    assert static_keys(build_config({**S3, "aws_profile": "p"})) is None  # as botocore does


class Source:
    """Temporary credentials from a counting refresh function (botocore's own class)."""

    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self.calls = 0

    def fetch(self) -> dict[str, Any]:
        self.calls += 1
        expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
            seconds=self.lifetime
        )
        return {
            "access_key": f"AKID{self.calls}",
            "secret_key": "secret",
            "token": f"token{self.calls}",
            "expiry_time": expiry.isoformat(),
        }

    def credentials(self) -> RefreshableCredentials:
        return RefreshableCredentials.create_from_metadata(self.fetch(), self.fetch, "test")


async def test_refreshed_in_the_advisory_window(monkeypatch: pytest.MonkeyPatch) -> None:
    source = Source(lifetime=15 * 60 + 0.5)  # in the advisory window half a second later
    monkeypatch.setattr(module, "_resolve", lambda profile, region: source.credentials())
    monkeypatch.setattr(module, "CHECK_EVERY", 0.0)
    chain = ChainCredentials()
    await chain.ready()
    assert chain.current() == Credentials("AKID1", "secret", "token1") and source.calls == 1
    await chain.ready()
    assert source.calls == 1  # not due yet: no refresh
    await asyncio.sleep(0.6)
    await asyncio.gather(*(chain.ready() for _ in range(5)))  # one refresh for all
    assert chain.current().access_key == "AKID2" and source.calls == 2 and chain.fetches == 2


async def test_resolution_failures_are_plugin_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    chain = ChainCredentials()  # nothing in this environment
    with pytest.raises(AccessDenied, match="no AWS credentials found"):
        await chain.ready()


def test_cache_round_trip_and_bounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = CredentialCache.for_chain("p", "r")
    assert cache.path.parent == tmp_path / ".cache" / "asyncplug"
    assert cache.load() is None and not cache.path.parent.exists()  # made on the first save
    creds = Credentials("AKID", "secret", "token")
    cache.save(creds, time.time() + 3600)
    assert cache.path.parent.stat().st_mode & 0o777 == 0o700
    assert cache.path.stat().st_mode & 0o777 == 0o600
    found = cache.load()
    assert found is not None and found[0] == creds
    cache.save(creds, time.time() + 15 * 60 + 30)  # too close to the advisory window
    assert cache.load() is None
    cache.path.write_text("{not json")
    assert cache.load() is None
    # Another profile, region or environment is another file.
    other = [CredentialCache.for_chain("q", "r"), CredentialCache.for_chain("p", "s")]
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:1/x")
    other.append(CredentialCache.for_chain("p", "r"))
    assert len({c.path for c in other} | {cache.path}) == 4
    # A directory others can write to is neither read nor written.
    cache.save(creds, time.time() + 3600)
    os.chmod(cache.path.parent, 0o777)
    assert cache.load() is None
    cache.save(Credentials("AKID2", "s"), time.time() + 3600)
    os.chmod(cache.path.parent, 0o700)
    found = cache.load()
    assert found is not None and found[0] == creds


async def test_cached_credentials_skip_resolution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = Source(lifetime=3600)
    resolved: list[str] = []

    def resolve(profile: str, region: str) -> RefreshableCredentials:
        resolved.append(profile)
        return source.credentials()

    monkeypatch.setattr(module, "_resolve", resolve)
    config = build_config({**S3, "aws_profile": "backup"})
    first = ChainCredentials.of(config)
    await first.ready()
    assert resolved == ["backup"] and first.method == "test"
    second = ChainCredentials.of(config)  # another process, later
    await second.ready()
    assert resolved == ["backup"] and second.method == "cache"
    assert second.current() == first.current()
    assert second.discard_cached() and not second.discard_cached()
    await second.ready()  # refused by the server: resolved afresh
    assert resolved == ["backup", "backup"] and second.current().access_key == "AKID2"
    assert not first.discard_cached()  # not from the cache: nothing to try again
    off = ChainCredentials.of(
        build_config({**S3, "aws_profile": "backup", "credential_cache": "off"})
    )
    await off.ready()
    assert len(resolved) == 3
    records = list((tmp_path / ".cache" / "asyncplug").iterdir())
    assert len(records) == 1 and json.loads(records[0].read_text())["key"] == "AKID2"  # not off
