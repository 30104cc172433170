"""Credentials for the lean S3 path from the whole AWS chain, resolved by botocore.

Static keys (config, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY without aws_profile)
need nothing from here. Otherwise botocore's credential chain is asked, exactly as the
AWS CLI asks it: environment, shared credentials and config files (aws_profile or
AWS_PROFILE, with assume-role, credential_process, SSO and web-identity profiles),
web identity (EKS IRSA), container credentials (ECS, EKS pod identity), and the EC2
instance role over IMDSv2. botocore.session (and the urllib3 it brings) is imported
only then, and the lean path signs with what it returns; aiobotocore is not needed.

Temporary credentials come back as botocore RefreshableCredentials. Before each
request `ready()` asks it whether its advisory refresh window has begun (a clock
read); only then is get_frozen_credentials called, in a thread because the refresh
may fetch over the network (IMDS, container endpoint, STS). So a stream that outlives
its credentials keeps going with fresh ones.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import botocore.exceptions as bce

from asyncplug.config import Config
from asyncplug.errors import ConfigError
from asyncplug.storage.s3common import translate
from asyncplug.storage.sigv4 import Credentials

CHECK_EVERY = 1.0  # seconds between two looks at the expiry
# After a refresh that did not renew them (botocore keeps the old credentials when an
# advisory refresh fails), wait this long before asking again.
RETRY_REFRESH = 5.0


def static_keys(config: Config) -> Credentials | None:
    """Keys from the config, else from the environment (botocore's first sources); None
    when the chain must be asked. An explicit aws_profile skips the environment's keys,
    as botocore does for an explicit profile."""
    if config.aws_access_key_id and config.aws_secret_access_key:
        return Credentials(config.aws_access_key_id, config.aws_secret_access_key)
    if config.aws_profile:
        return None
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        token = os.environ.get("AWS_SESSION_TOKEN") or os.environ.get("AWS_SECURITY_TOKEN")
        return Credentials(key, secret, token or None)
    return None


class ChainCredentials:
    """Credentials from botocore's chain for one profile, kept fresh.

    `current()` is what the signer calls (synchronous, no I/O once resolved);
    `await ready()` before a request resolves them the first time and refreshes them
    when due, off the event loop."""

    def __init__(self, profile: str = "", region: str = "") -> None:
        self.profile = profile
        self.region = region
        self.method = ""  # botocore's name of the source, e.g. "container-role"; for the log
        self.fetches = 0  # resolutions and refreshes that renewed the credentials
        self._source: Any = None  # botocore Credentials or RefreshableCredentials
        self._current: Credentials | None = None
        self._next_check = 0.0  # monotonic; no refresh is asked for before then
        self._lock = threading.Lock()
        self._pending: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"ChainCredentials(profile={self.profile!r}, method={self.method!r})"

    def current(self) -> Credentials:
        if self._current is None or self._due():
            self._load()  # not awaited before (e.g. a splice-path GET): block once
        assert self._current is not None
        return self._current

    async def ready(self) -> None:
        if self._current is not None and not self._due():
            return
        if self._pending is None:
            self._pending = asyncio.ensure_future(asyncio.to_thread(self._load))
        pending = self._pending
        try:
            await asyncio.shield(pending)
        finally:
            if pending.done() and self._pending is pending:
                self._pending = None

    def _due(self) -> bool:
        """The credentials expire within botocore's advisory window (15 minutes before
        the end for container, instance and STS credentials). Asked at most once a
        second: the check reads the local time zone (~40 us)."""
        refresh_needed = getattr(self._source, "refresh_needed", None)
        now = time.monotonic()
        if refresh_needed is None or now < self._next_check:
            return False
        self._next_check = now + CHECK_EVERY
        return bool(refresh_needed())

    def _load(self) -> None:
        """Resolve (first call) or refresh the credentials. Blocking: may use the network."""
        with self._lock:
            what = "AWS credentials" + (f" of profile {self.profile}" if self.profile else "")
            try:
                if self._source is None:
                    self._source = _resolve(self.profile, self.region)
                    self.method = str(getattr(self._source, "method", ""))
                frozen = self._source.get_frozen_credentials()  # refreshes when due
                still_due = bool(getattr(self._source, "refresh_needed", bool)())
            except bce.ProfileNotFound as exc:
                named = "option aws_profile" if self.profile else "AWS_PROFILE"
                raise ConfigError(
                    f"{what}: the profile named by {named} is not in the AWS config files"
                ) from exc
            except Exception as exc:
                raise translate(exc, what) from exc
            renewed = Credentials(frozen.access_key, frozen.secret_key, frozen.token or None)
            if renewed != self._current:
                self.fetches += 1
            self._current = renewed
            if still_due:  # botocore kept the old ones (a failed advisory refresh)
                self._next_check = time.monotonic() + RETRY_REFRESH


def _resolve(profile: str, region: str) -> Any:
    """botocore's credential chain for the profile ("" = AWS_PROFILE, else default).
    STS calls (assume-role, web identity) go to the profile's or the environment's
    region, else to the bucket's `region`, else to us-east-1."""
    import botocore.session  # ~0.15 CPU-s: only when there are no static keys

    session = botocore.session.Session(profile=profile or None)
    if not session.get_config_variable("region"):
        session.set_config_variable("region", region or "us-east-1")
    source = session.get_credentials()
    if source is None:
        raise bce.NoCredentialsError()
    return source
