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

The cache: importing botocore.session and resolving costs ~0.15 CPU-s per process, and
gpbackup starts one plugin process per segment (and per table without
--single-data-file). Temporary credentials (never long-term keys) are therefore kept
in a file of the user's own (0600, in $XDG_RUNTIME_DIR/asyncplug or
~/.cache/asyncplug), named by a hash of everything the chain reads (profile, region,
AWS_* variables, the config files' size and mtime), and used by the next processes
while they have more than botocore's advisory window left; a process that finds
them there imports nothing of botocore's chain. Credentials the server refuses are
dropped from the cache and resolved afresh. `credential_cache: off` turns it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import botocore.exceptions as bce

from asyncplug.config import Config
from asyncplug.errors import ConfigError
from asyncplug.storage.s3common import translate
from asyncplug.storage.sigv4 import Credentials

CHECK_EVERY = 1.0  # seconds between two looks at the expiry
ADVISORY = 15 * 60  # botocore's advisory refresh window for temporary credentials (seconds)
CACHE_MARGIN = 5 * 60  # cached only with this much left beyond the window
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


class CredentialCache:
    """Temporary credentials shared by one user's plugin processes (see the module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_chain(cls, profile: str, region: str) -> CredentialCache:
        """The cache file of this profile, region and environment."""
        import json  # here: a process with static keys does not need it

        runtime = os.environ.get("XDG_RUNTIME_DIR", "")
        base = Path(runtime) if runtime and os.path.isdir(runtime) else Path.home() / ".cache"
        files = []
        for name, default in (
            ("AWS_CONFIG_FILE", "~/.aws/config"),
            ("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
        ):
            path = os.path.expanduser(os.environ.get(name, default))
            try:
                stat = os.stat(path)
                files.append((path, stat.st_mtime_ns, stat.st_size))
            except OSError:
                files.append((path, 0, -1))
        chain = sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))
        material = json.dumps([profile, region, chain, files]).encode()
        name = f"credentials-{hashlib.sha256(material).hexdigest()[:32]}.json"
        return cls(base / "asyncplug" / name)

    def _private(self) -> bool:
        """The directory is the user's alone (else others could plant credentials)."""
        try:
            info = self.path.parent.stat()
        except OSError:
            return False
        return info.st_uid == os.getuid() and not info.st_mode & 0o077

    def load(self) -> tuple[Credentials, float] | None:
        """(credentials, expiry as epoch seconds) when the file holds a set with more
        than a minute left before the advisory window."""
        import json

        if not self._private():
            return None
        try:
            data = json.loads(self.path.read_text())
            token = data["token"]
            found = Credentials(
                str(data["key"]), str(data["secret"]), str(token) if token else None
            )
            expiry = float(data["expiry"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return (found, expiry) if expiry - time.time() > ADVISORY + 60 else None

    def save(self, credentials: Credentials, expiry: float) -> None:
        import json
        import tempfile

        record = {
            "key": credentials.access_key,
            "secret": credentials.secret_key,
            "token": credentials.token,
            "expiry": expiry,
        }
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self._private():
                return
            fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=".credentials-")  # 0600
            with os.fdopen(fd, "w") as file:
                json.dump(record, file)
            os.replace(name, self.path)
        except OSError:
            pass  # no cache: the next process resolves again

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


class ChainCredentials:
    """Credentials from botocore's chain for one profile, kept fresh.

    `current()` is what the signer calls (synchronous, no I/O once resolved);
    `await ready()` before a request resolves them the first time and refreshes them
    when due, off the event loop."""

    def __init__(
        self, profile: str = "", region: str = "", cache: CredentialCache | None = None
    ) -> None:
        self.profile = profile
        self.region = region
        self.method = ""  # botocore's name of the source, e.g. "container-role"; for the log
        self.fetches = 0  # resolutions and refreshes that renewed the credentials
        self._source: Any = None  # botocore Credentials or RefreshableCredentials
        self._current: Credentials | None = None
        self._next_check = 0.0  # monotonic; no refresh is asked for before then
        self._lock = threading.Lock()
        self._pending: asyncio.Future[None] | None = None
        self._cache = cache
        self._cached_until = 0.0  # epoch: credentials from the cache are good until then
        found = cache.load() if cache is not None else None
        if found is not None:
            self._current, expiry = found
            self._cached_until = expiry - ADVISORY
            self.method = "cache"

    @classmethod
    def of(cls, config: Config) -> ChainCredentials:
        cache = None
        if config.credential_cache:
            cache = CredentialCache.for_chain(config.aws_profile, config.region)
        return cls(config.aws_profile, config.region, cache)

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
        now = time.monotonic()
        if now < self._next_check:
            return False
        if self._source is None:  # from the cache (or not resolved yet)
            self._next_check = now + CHECK_EVERY
            return 0 < self._cached_until <= time.time()
        refresh_needed = getattr(self._source, "refresh_needed", None)
        if refresh_needed is None:
            return False
        self._next_check = now + CHECK_EVERY
        return bool(refresh_needed())

    def discard_cached(self) -> bool:
        """The server refused credentials taken from the cache: forget them (the file
        too) so that the next request resolves afresh. False when they did not come
        from the cache (then there is nothing to try again)."""
        if self._source is not None or not self._cached_until or self._cache is None:
            return False
        self._cache.discard()
        self._cached_until, self._current = 0.0, None
        return True

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
            expiry = _expiry(self._source)
            if self._cache is not None and expiry - time.time() > ADVISORY + CACHE_MARGIN:
                self._cache.save(renewed, expiry)


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


def _expiry(source: Any) -> float:
    """When temporary credentials expire (epoch seconds); 0 for long-term keys.
    botocore keeps it in RefreshableCredentials._expiry_time (a datetime)."""
    expiry = getattr(source, "_expiry_time", None)
    return float(expiry.timestamp()) if expiry is not None else 0.0
