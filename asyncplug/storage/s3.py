"""The S3 backend (any S3-compatible service): a facade over two paths.

- s3lean.py makes the calls that move data (HEAD, ranged GET, PUT, multipart) with
  its own SigV4 signer and small HTTP/1.1 client, when it can: no proxy. Credentials
  are static keys or come from the AWS chain through botocore (credentials.py).
- s3boto.py (aiobotocore) makes every other call, and all of them when the lean path
  cannot be used. It is imported on first use: a backup or restore with static keys
  never loads it (measured: 0.45 CPU-s of imports and 0.1-0.2 s of client set-up per
  process saved).
Errors from both are mapped by the same table (s3common.translate); s3options.py adds
what to set when an S3 code tells (encryption demanded, SSE-C key, archived object).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING

from asyncplug.config import Config
from asyncplug.errors import InputError, PluginError
from asyncplug.storage import probe
from asyncplug.storage.base import Buffer, HttpSource, ObjectInfo, Storage, Upload
from asyncplug.storage.credentials import ChainCredentials, static_keys
from asyncplug.storage.s3common import MAPPINGS, crc_header, endpoint_settings, mapping_for
from asyncplug.storage.s3common import translate as translate
from asyncplug.storage.s3lean import LeanS3
from asyncplug.storage.s3options import ObjectOptions

if TYPE_CHECKING:
    from asyncplug.storage.s3boto import BotoStorage

__all__ = ["MAPPINGS", "S3Storage", "crc_header", "endpoint_settings", "mapping_for", "translate"]


def _proxied(config: Config, url: str | None) -> bool:
    """A proxy applies (http_proxy option, or HTTP(S)_PROXY without a NO_PROXY match)."""
    if config.http_proxy:
        return True
    if not any(name.lower().endswith("_proxy") for name in os.environ):
        return False  # and urllib.request (3-5 ms of imports per process) is not needed
    import urllib.request

    scheme = "https" if url is None or url.startswith("https") else "http"
    proxies = urllib.request.getproxies()
    if not proxies.get(scheme):
        return False
    host = (url or "").split("://", 1)[-1].split("/", 1)[0]
    return not urllib.request.proxy_bypass(host)


class S3Storage(Storage):
    name = "s3"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.bucket = config.bucket
        url, _, _ = endpoint_settings(config)
        self.options = ObjectOptions(config)
        self.lean: LeanS3 | None = None
        if not _proxied(config, url):
            credentials = static_keys(config) or ChainCredentials.of(config)
            self.lean = LeanS3(config, credentials, self._get_range_boto)
        self._boto: BotoStorage | None = None

    def boto(self) -> BotoStorage:
        """The aiobotocore path, imported and created on first use."""
        if self._boto is None:
            from asyncplug.storage.s3boto import BotoStorage

            self._boto = BotoStorage(self.config)
        return self._boto

    def where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    async def _get_range_boto(
        self, key: str, start: int, end: int, what: str, etag: str | None
    ) -> list[bytes]:
        return await self.boto().get_range_from(key, start, end, what, etag)

    def _explain(self, exc: PluginError, what: str) -> None:
        """Raise a more helpful error than `exc` when its S3 code says what to set."""
        better = self.options.explain(exc, what)
        if better is not exc:
            raise better from exc

    # --- data calls: lean when possible ------------------------------------------------

    async def put(
        self, key: str, data: Buffer, crc32c: int, metadata: Mapping[str, str] | None = None
    ) -> None:
        what = f"put {self.where(key)}"
        try:
            if self.lean is None:
                return await self.boto().put(key, data, crc32c, metadata)
            await self.lean.put(key, data, crc32c, metadata, what)
        except PluginError as exc:
            self._explain(exc, what)
            raise

    async def start_upload(self, key: str, metadata: Mapping[str, str] | None = None) -> Upload:
        what = f"start upload of {self.where(key)}"
        try:
            if self.lean is None:
                return await self.boto().start_upload(key, metadata)
            return await self.lean.start_upload(key, metadata, what)
        except PluginError as exc:
            self._explain(exc, what)
            raise

    async def get_range(self, key: str, start: int, end: int) -> list[Buffer]:
        what = f"get bytes [{start}, {end}) of {self.where(key)}"
        try:
            if self.lean is None:
                return await self.boto().get_range(key, start, end)
            if start < 0 or end < start:
                raise InputError(f"bad range [{start}, {end}) of {self.where(key)}")
            if start == end:
                return []
            return await self.lean.get_range(key, start, end, what)
        except PluginError as exc:
            self._explain(exc, what)
            raise

    async def stat(self, key: str) -> ObjectInfo:
        what = f"stat {self.where(key)}"
        try:
            if self.lean is None:
                return await self.boto().stat(key)
            return await self.lean.stat(key, what)
        except PluginError as exc:
            self._explain(exc, what)
            raise

    def http_source(self, key: str) -> HttpSource | None:
        return self.lean.http_source(key) if self.lean is not None else None

    def recycle(self, chunks: Sequence[Buffer]) -> None:
        if self.lean is not None:
            self.lean.pool.recycle(chunks)

    # --- everything else: aiobotocore --------------------------------------------------

    def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        return self.boto().list(prefix)

    async def delete(self, keys: Sequence[str]) -> int:
        if self.lean is not None and len(keys) == 1:  # the setup probe: no aiobotocore
            await self.lean.delete(keys[0], f"delete {self.where(keys[0])}")
            return 1
        return await self.boto().delete(keys)

    async def abort_uploads(self, prefix: str) -> int:
        return await self.boto().abort_uploads(prefix)

    async def check_bucket(self, write: bool) -> None:
        try:
            await probe.check(self, self.config.folder, write)
        except PluginError as exc:  # the write probe meets the bucket policy first
            self._explain(exc, f"bucket {self.bucket}")
            raise

    async def close(self) -> None:
        if self.lean is not None:
            self.lean.close()
        if self._boto is not None:
            await self._boto.close()
