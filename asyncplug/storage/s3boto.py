"""The S3 backend (any S3-compatible service) on aiobotocore.

Retries: botocore's "standard" mode retries 5xx, throttling codes (SlowDown, ...),
resets, connect/read timeouts and connection errors for every call, up to
max_retries + 1 attempts with jittered exponential backoff; we lift its per-client
retry quota (lift_retry_quota). It does not retry two things we need, so this
module does:
  - a 429 whose error code is not one of botocore's throttling codes;
  - an error or a short body while reading a GetObject body (botocore has
    returned by then): get_range resumes at the first missing byte.

Ranged reads (get_range) take a faster road when no proxy is configured: a presigned
URL per key and fastget's small HTTP/1.1 client, which receives bodies straight into
buffers allocated for them (measured in process: 0.87 -> 0.43 CPU-s/GiB). It retries
everything itself (5xx, throttling, resets, timeouts, cut bodies) up to max_retries,
and maps errors through the same `translate` table. aiobotocore stays the path for
everything else, for proxies, and for responses fastget does not handle (chunked).

Bodies: botocore turns `bytes` into a BytesIO that aiohttp then copies out in
64 KiB reads, and its parameter validation rejects memoryview. `BufferBody` hands
aiohttp the caller's buffer itself (zero-copy up to the socket write); it needs
`parameter_validation=False` (we build every parameter here) and has a no-op
seek() because botocore rewinds the body before each retry.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiobotocore.session
import aiohttp
import aiohttp.http_exceptions
import aiohttp.payload
import botocore.exceptions as bce
import crc32c
from aiobotocore.retries.standard import (
    AioRetryHandler,
    AioRetryPolicy,
    AioStandardRetryConditions,
)
from aiohttp.abc import AbstractStreamWriter
from botocore.config import Config as BotoConfig
from botocore.httpsession import get_cert_path
from botocore.retries.quota import RetryQuota
from botocore.retries.standard import ExponentialBackoff, RetryEventAdapter, RetryQuotaChecker
from botocore.utils import get_environ_proxies

from asyncplug.config import Config
from asyncplug.errors import (
    AccessDenied,
    ConfigError,
    InputError,
    IntegrityError,
    ObjectNotFound,
    PluginError,
    StorageError,
)
from asyncplug.storage import fastget
from asyncplug.storage.base import Buffer, ObjectInfo, Storage, Upload
from asyncplug.storage.retry import backoff

_PROBE = b"asyncplug write probe"
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys (S3 API reference)
_BODY_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
# Presigned GET URLs live 15 min but are re-signed after 5 (fastget.Presigner says why).
PRESIGN_EXPIRY = 900


def crc_header(crc32c: int) -> str:
    """x-amz-checksum-crc32c: base64 of the 4-byte big-endian CRC."""
    return base64.b64encode(crc32c.to_bytes(4, "big")).decode("ascii")


class BufferBody(aiohttp.payload.Payload):
    """A request body over the caller's buffer, sent without a copy.

    botocore reads only len() (Content-Length) and calls seek(0) before a retry;
    aiohttp calls write_with_length, which hands memoryview slices to the writer.
    """

    _autoclose = True

    def __init__(self, data: Buffer) -> None:
        view = data if isinstance(data, memoryview) else memoryview(data)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        super().__init__(view, content_type="application/octet-stream")
        self._view = view
        self._size = view.nbytes

    def __len__(self) -> int:
        return self._view.nbytes

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0  # stateless: every write sends the whole buffer again

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self._view).decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await writer.write(self._view)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        view = self._view if content_length is None else self._view[:content_length]
        send_headers = getattr(writer, "send_headers", None)
        if send_headers is not None:
            # Else aiohttp joins the buffered headers and this chunk into a new bytes (on
            # Python < 3.12.9): a copy of every part, measured +0.4 CPU-s/GiB and +22 MB RSS.
            send_headers()
        await writer.write(view)


def user_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    # parameter_validation is off: make sure botocore gets strings.
    return {str(k): str(v) for k, v in (metadata or {}).items()}


def body_of(data: Buffer) -> Any:
    return BufferBody(data) if len(data) else b""


# --- foreign errors -> asyncplug.errors, in one place -------------------------------

_CREDENTIALS_HINT = (
    "check aws_access_key_id / aws_secret_access_key (or the AWS credential chain) "
    "and the bucket policy"
)
_ACCESS_CODES = {
    "AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
    "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem",
    "InvalidSecurity", "RequestTimeTooSkewed", "Forbidden",
}  # fmt: skip
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchUpload", "NoSuchVersion"}
_INTEGRITY_CODES = {
    "BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "XAmzContentChecksumMismatch",
    "InvalidChecksum", "InvalidPart", "InvalidPartOrder", "PreconditionFailed",
    "IncompleteBody",
}  # fmt: skip
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^@\s]*@")
_RANGE_CODES = {"InvalidRange", "416"}
_BUSY_CODES = {
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling",
    "TooManyRequests", "503", "500", "502", "504", "429",
}  # fmt: skip


def _mask(url: object) -> str:
    """A URL without user:password (proxies may carry them)."""
    return _USERINFO.sub(r"\1", str(url))


def _client_error(exc: bce.ClientError, what: str) -> PluginError:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {})
    meta = response.get("ResponseMetadata", {})
    code = str(error.get("Code") or meta.get("HTTPStatusCode") or "unknown")
    status = meta.get("HTTPStatusCode")
    tries = int(meta.get("RetryAttempts", 0)) + 1
    if code == "NoSuchBucket":
        return StorageError(f"{what}: the bucket does not exist (NoSuchBucket)")
    if code in _NOT_FOUND_CODES:
        return ObjectNotFound(f"{what}: not found ({code})")
    if code in _ACCESS_CODES or status == 403:
        return AccessDenied(f"{what}: access denied ({code}); {_CREDENTIALS_HINT}")
    if code in _RANGE_CODES:
        return InputError(f"{what}: the range is past the end of the object ({code})")
    if code in _INTEGRITY_CODES:
        return IntegrityError(f"{what}: the server rejected the data as corrupt ({code})")
    if code in _BUSY_CODES or (isinstance(status, int) and status >= 500):
        return StorageError(f"{what}: the server kept failing ({code}) after {tries} attempts")
    return StorageError(f"{what}: the server answered {code} (HTTP {status})")


def _endpoint(exc: BaseException) -> str:
    kwargs = getattr(exc, "kwargs", None) or {}
    url = kwargs.get("endpoint_url") or kwargs.get("proxy_url")
    return _mask(url) if url else "the endpoint"


# Foreign exception class -> (our error, message). The first entry the exception is an
# instance of wins, so the most specific come first. {endpoint}: the URL it talked to;
# {name}: the class name; {reason}: an OSError's strerror. The unit test enumerates
# botocore's and aiohttp's exception classes and fails if one matches no entry.
_CHAIN = "check the AWS credential chain (environment, profile, instance role)"
MAPPINGS: tuple[tuple[type[BaseException], type[PluginError], str], ...] = (
    (bce.NoCredentialsError, AccessDenied, f"no AWS credentials found; {_CREDENTIALS_HINT}"),
    (bce.PartialCredentialsError, AccessDenied, f"incomplete credentials; {_CREDENTIALS_HINT}"),
    (bce.CredentialRetrievalError, AccessDenied, f"cannot get credentials; {_CHAIN}"),
    (bce.UnknownCredentialError, AccessDenied, f"unknown credential provider; {_CHAIN}"),
    (bce.NoAuthTokenError, AccessDenied, f"no auth token found; {_CHAIN}"),
    (bce.TokenRetrievalError, AccessDenied, f"cannot get an auth token; {_CHAIN}"),
    (bce.SSOError, AccessDenied, "AWS SSO credentials are missing or expired (aws sso login)"),
    (bce.LoginError, AccessDenied, f"AWS login failed; {_CHAIN}"),
    (bce.MetadataRetrievalError, AccessDenied, "cannot read instance-role credentials"),
    (bce.RefreshWithMFAUnsupportedError, AccessDenied, "the AWS profile needs MFA"),
    (bce.SSLError, StorageError, "TLS error with {endpoint} (check encryption and certificates)"),
    (bce.ProxyConnectionError, StorageError, "cannot connect through http_proxy {endpoint}"),
    (bce.ConnectTimeoutError, StorageError, "timed out connecting to {endpoint}"),
    (bce.EndpointConnectionError, StorageError, "cannot connect to endpoint {endpoint}"),
    (bce.ReadTimeoutError, StorageError, "timed out waiting for {endpoint} (request_timeout)"),
    (bce.ConnectionClosedError, StorageError, "the connection to {endpoint} was closed"),
    (bce.ConnectionError, StorageError, "connection to {endpoint} failed ({name})"),
    (bce.HTTPClientError, StorageError, "HTTP error talking to {endpoint} ({name})"),
    (bce.ChecksumError, IntegrityError, "checksum mismatch"),
    (bce.FlexibleChecksumError, IntegrityError, "checksum mismatch"),
    (bce.IncompleteReadError, IntegrityError, "the response body was cut short"),
    (bce.AwsChunkedWrapperError, IntegrityError, "bad chunked body"),
    (bce.UnseekableStreamError, StorageError, "cannot resend the request body"),
    (bce.ParamValidationError, InputError, "invalid request parameters"),
    (bce.ValidationError, InputError, "invalid request parameters"),
    (bce.NoRegionError, ConfigError, "no region: set region or endpoint"),
    (bce.ProfileNotFound, ConfigError, "the AWS profile named in AWS_PROFILE does not exist"),
    (bce.ConfigParseError, ConfigError, "cannot parse the AWS config file"),
    (bce.InvalidProxiesConfigError, ConfigError, "invalid http_proxy"),
    (bce.InvalidConfigError, ConfigError, "invalid AWS configuration ({name})"),
    (bce.BaseEndpointResolverError, ConfigError, "cannot resolve the endpoint (region/endpoint)"),
    (bce.EndpointProviderError, ConfigError, "cannot resolve the endpoint (region/endpoint)"),
    (bce.BotoCoreError, StorageError, "S3 client error ({name})"),
    (bce.UndefinedModelAttributeError, StorageError, "S3 client error ({name})"),
    (bce.ClientError, StorageError, "S3 error"),  # translate() reads its code first
    (aiohttp.http_exceptions.HttpProcessingError, StorageError, "bad HTTP response ({name})"),
    (aiohttp.ClientPayloadError, StorageError, "the response body was cut short"),
    (aiohttp.ClientConnectionError, StorageError, "connection failed ({name})"),
    (aiohttp.ClientError, StorageError, "HTTP error ({name})"),
    (asyncio.TimeoutError, StorageError, "timed out (request_timeout)"),
    (PermissionError, AccessDenied, "{reason}"),
    (OSError, StorageError, "{reason}"),
    (ValueError, ConfigError, "invalid S3 settings ({name})"),
)


def mapping_for(cls: type[BaseException]) -> tuple[type[PluginError], str] | None:
    """The MAPPINGS entry for an exception class (None: no mapping)."""
    for base, error, message in MAPPINGS:
        if issubclass(cls, base):
            return error, message
    return None


def translate(exc: BaseException, what: str) -> PluginError:
    """The asyncplug error for a foreign one; the caller does `raise ... from exc`.

    Messages are built from fixed text, error codes and URLs without user:password,
    never from the foreign message, so no secret (or request dump) reaches stderr.
    """
    if isinstance(exc, PluginError):
        return exc
    if isinstance(exc, bce.ClientError):
        return _client_error(exc, what)
    found = mapping_for(type(exc))
    if found is None:
        return StorageError(f"{what}: unexpected {type(exc).__name__}")
    error, message = found
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
    return error(
        f"{what}: "
        + message.format(endpoint=_endpoint(exc), name=type(exc).__name__, reason=reason)
    )


# --- configuration -------------------------------------------------------------------


def endpoint_settings(config: Config) -> tuple[str | None, bool, str]:
    """(endpoint_url, use_ssl, addressing_style) for the config."""
    use_ssl = config.encryption
    if not config.endpoint:
        return None, use_ssl, "path"
    url = config.endpoint
    if "://" not in url:
        url = ("https://" if config.encryption else "http://") + url
    style = "path"  # like the Go plugin (S3ForcePathStyle)
    if config.remove_duplicate_bucket:
        # The endpoint already names the bucket: strip it and let botocore put it
        # back once, as a virtual host (or keep path style if it was in the path).
        parts = urlsplit(url)
        host = parts.hostname or ""
        path = parts.path.rstrip("/")
        if host.startswith(config.bucket + "."):
            netloc = parts.netloc.replace(config.bucket + ".", "", 1)
            url = urlunsplit(parts._replace(netloc=netloc))
            style = "virtual"
        elif path.split("/")[-1] == config.bucket:
            url = urlunsplit(parts._replace(path=path[: -len(config.bucket)].rstrip("/")))
        else:
            raise ConfigError(
                f"remove_duplicate_bucket is on but endpoint {config.endpoint} does not name "
                f"bucket {config.bucket}"
            )
    return url, use_ssl, style


def client_config(config: Config) -> BotoConfig:
    pool = max(config.backup_max_concurrent_requests, config.restore_max_concurrent_requests) + 4
    _, _, style = endpoint_settings(config)
    proxies = {"http": config.http_proxy, "https": config.http_proxy} if config.http_proxy else None
    return BotoConfig(
        region_name=config.region or "us-east-1",
        signature_version="s3v4",
        s3={"addressing_style": style, "payload_signing_enabled": False},
        # Our own CRC32C header covers integrity; botocore must not CRC bodies on the loop.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=config.request_timeout,
        read_timeout=config.request_timeout,
        # botocore's "max_attempts" counts retries only (measured: max_attempts=4 sent 5
        # requests); total_max_attempts counts the first request too.
        retries={"mode": "standard", "total_max_attempts": config.max_retries + 1},
        max_pool_connections=pool,
        proxies=proxies,
        parameter_validation=False,  # lets BufferBody through; see the module docstring
    )


def lift_retry_quota(client: Any, total_attempts: int) -> None:
    """Give the client botocore's standard retry handler again, minus the retry quota.

    Standard mode shares one quota per client (500, a retry costs 5 or more): measured
    through a fault proxy, 20 concurrent calls failing with 500 got 100 retries in all
    and gave up after 5-7 of their 9 attempts. A backup should ride out an outage up to
    max_retries for every request, as the Go plugin (aws-sdk-go v1, no quota) does.
    Same policy, backoff and event id as aiobotocore's own registration.
    """
    handler = AioRetryHandler(
        retry_policy=AioRetryPolicy(
            retry_checker=AioStandardRetryConditions(max_attempts=total_attempts),
            retry_backoff=ExponentialBackoff(),
        ),
        retry_event_adapter=RetryEventAdapter(),
        retry_quota=RetryQuotaChecker(RetryQuota(initial_capacity=2**62)),
    )
    client.meta.events.unregister("needs-retry.s3", unique_id="retry-config-s3")
    client.meta.events.register("needs-retry.s3", handler.needs_retry, unique_id="retry-config-s3")


# --- the backend ---------------------------------------------------------------------


class S3Upload(Upload):
    def __init__(self, storage: S3Storage, key: str, upload_id: str) -> None:
        self.key = key
        self.upload_id = upload_id
        self._storage = storage
        self._parts: dict[int, tuple[str, str]] = {}  # number -> (ETag, CRC32C header)
        self._finished = False

    def _params(self) -> dict[str, Any]:
        return {"Bucket": self._storage.bucket, "Key": self.key, "UploadId": self.upload_id}

    async def put_part(self, number: int, offset: int, data: Buffer, crc32c: int) -> None:
        if not 1 <= number <= self._storage.max_parts:
            raise InputError(f"part number {number} is outside 1..{self._storage.max_parts}")
        checksum = crc_header(crc32c)
        response = await self._storage.call(
            "upload_part",
            f"upload part {number} of {self._storage.where(self.key)}",
            PartNumber=number,
            Body=body_of(data),
            ChecksumCRC32C=checksum,
            **self._params(),
        )
        self._parts[number] = (response["ETag"], checksum)

    async def complete(self) -> None:
        if not self._parts:  # S3 needs at least one part: an empty object has one empty part
            await self.put_part(1, 0, b"", 0)
        parts = [
            {"PartNumber": n, "ETag": etag, "ChecksumCRC32C": checksum}
            for n, (etag, checksum) in sorted(self._parts.items())
        ]
        await self._storage.call(
            "complete_multipart_upload",
            f"complete upload of {self._storage.where(self.key)}",
            MultipartUpload={"Parts": parts},
            **self._params(),
        )
        self._finished = True

    async def abort(self) -> None:
        if self._finished:
            return
        with contextlib.suppress(ObjectNotFound):  # NoSuchUpload: already gone
            await self._storage.call(
                "abort_multipart_upload",
                f"abort upload of {self._storage.where(self.key)}",
                **self._params(),
            )
        self._finished = True


class S3Storage(Storage):
    name = "s3"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.bucket = config.bucket
        self.endpoint_url, self.use_ssl, _ = endpoint_settings(config)
        self._botocore_config = client_config(config)
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._session: Any = None
        self._lock = asyncio.Lock()
        self._pool: fastget.Pool | None = None
        self._presigner = fastget.Presigner(self._presign)
        self._fast: bool | None = None  # decided on the first get_range

    def where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    @property
    def endpoint_text(self) -> str:
        if self.endpoint_url:
            return _mask(self.endpoint_url)
        return f"AWS S3 in {self._botocore_config.region_name}"

    async def client(self) -> Any:
        """The aiobotocore client, created on first use inside the running loop."""
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    stack = AsyncExitStack()
                    keys: dict[str, str] = {}
                    if self.config.aws_access_key_id and self.config.aws_secret_access_key:
                        keys = {
                            "aws_access_key_id": self.config.aws_access_key_id,
                            "aws_secret_access_key": self.config.aws_secret_access_key,
                        }
                    session = aiobotocore.session.get_session()
                    self._session = session
                    try:
                        client = await stack.enter_async_context(
                            session.create_client(
                                "s3",
                                endpoint_url=self.endpoint_url,
                                use_ssl=self.use_ssl,
                                config=self._botocore_config,
                                **keys,
                            )
                        )
                    except Exception as exc:
                        await stack.aclose()
                        raise translate(exc, f"S3 client for {self.endpoint_text}") from exc
                    lift_retry_quota(client, self.config.max_retries + 1)
                    self._stack, self._client = stack, client
        return self._client

    async def call(self, operation: str, what: str, **params: Any) -> Any:
        """One S3 call, with every failure translated; retries a 429 botocore did not."""
        client = await self.client()
        method: Callable[..., Awaitable[Any]] = getattr(client, operation)
        attempt = 0
        while True:
            try:
                return await method(**{"Bucket": self.bucket, **params})
            except bce.ClientError as exc:
                meta = exc.response.get("ResponseMetadata", {})
                if (
                    meta.get("HTTPStatusCode") == 429
                    and not meta.get("RetryAttempts")
                    and attempt < self.config.max_retries
                ):
                    attempt += 1
                    await backoff(attempt)
                    continue
                raise translate(exc, what) from exc
            except Exception as exc:
                raise translate(exc, what) from exc

    async def put(
        self, key: str, data: Buffer, crc32c: int, metadata: Mapping[str, str] | None = None
    ) -> None:
        await self.call(
            "put_object",
            f"put {self.where(key)}",
            Key=key,
            Body=body_of(data),
            ChecksumCRC32C=crc_header(crc32c),
            Metadata=user_metadata(metadata),
        )

    async def start_upload(self, key: str, metadata: Mapping[str, str] | None = None) -> Upload:
        response = await self.call(
            "create_multipart_upload",
            f"start upload of {self.where(key)}",
            Key=key,
            ChecksumAlgorithm="CRC32C",
            Metadata=user_metadata(metadata),
        )
        return S3Upload(self, key, response["UploadId"])

    async def get_range(self, key: str, start: int, end: int) -> list[Buffer]:
        if start < 0 or end < start:
            raise InputError(f"bad range [{start}, {end}) of {self.where(key)}")
        if start == end:
            return []
        what = f"get bytes [{start}, {end}) of {self.where(key)}"
        if self._fast is None:
            url = await self._presigner.url(key)
            self._fast = not self.config.http_proxy and not get_environ_proxies(url)
        if self._fast:
            return await self._get_range_fast(key, start, end, what)
        return list(await self._get_range_botocore(key, start, end, what, None))

    async def _get_range_botocore(
        self, key: str, start: int, end: int, what: str, etag: str | None
    ) -> list[bytes]:
        chunks: list[bytes] = []
        pos, failures = start, 0
        while pos < end:
            params: dict[str, Any] = {"Key": key, "Range": f"bytes={pos}-{end - 1}"}
            if etag:
                params["IfMatch"] = etag  # a resumed read must see the same object
            response = await self.call("get_object", what, **params)
            body = response["Body"]
            failure: BaseException | None = None
            try:
                self._check_range(response, pos, end, what)
                etag = etag or response.get("ETag")
                content = body.raw_stream.content
                while True:
                    chunk = await content.readany()
                    if not chunk:
                        break
                    chunks.append(chunk)
                    pos += len(chunk)
            except _BODY_ERRORS as exc:
                failure = exc
            finally:
                body.close()
            failures = await self._after_attempt(what, start, pos, end, failures, failure)
        return chunks

    async def _presign(self, key: str) -> str:
        client = await self.client()
        try:
            url: str = await client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=PRESIGN_EXPIRY
            )
        except Exception as exc:
            raise translate(exc, f"sign a GET of {self.where(key)}") from exc
        return url

    def _ssl_context(self) -> ssl.SSLContext:
        """Verified like botocore: AWS_CA_BUNDLE / the profile's ca_bundle, else its bundle."""
        bundle = self._session.get_config_variable("ca_bundle") if self._session else None
        return ssl.create_default_context(cafile=bundle or get_cert_path(True))

    def _fast_pool(self) -> fastget.Pool:
        if self._pool is None:
            size = max(
                self.config.backup_max_concurrent_requests,
                self.config.restore_max_concurrent_requests,
            )
            self._pool = fastget.Pool(size + 4, self.config.request_timeout, self._ssl_context)
        return self._pool

    async def _get_range_fast(self, key: str, start: int, end: int, what: str) -> list[Buffer]:
        """get_range over fastget; same checks, resume and error mapping as the slow path."""
        pool = self._fast_pool()
        chunks: list[Buffer] = []
        pos, failures, etag, resigned = start, 0, None, False
        while pos < end:
            target = fastget.Target.of(await self._presigner.url(key))
            headers = f"Range: bytes={pos}-{end - 1}\r\n"
            if etag:
                headers += f"If-Match: {etag}\r\n"  # a resumed read must see the same object
            failure: BaseException | None = None
            try:
                response, conn = await pool.get(target, headers, _sink(pos, end, what))
            except fastget.Unsupported:  # e.g. a chunked body: botocore reads it
                chunks += await self._get_range_botocore(key, pos, end, what, etag)
                return chunks
            except (bce.BotoCoreError, OSError) as exc:  # no response: connect, reset, timeout
                failure = exc
            else:
                pool.release(target, conn, response)
                if response.status in (200, 206):
                    etag = etag or response.headers.get("etag")
                    chunks += response.body()
                    pos += response.received
                    failure = response.error
                else:
                    code = fastget.error_code(response)
                    error = _status_error(response.status, code, failures)
                    if response.status == 403 and not resigned:
                        resigned = True  # maybe an expired URL: sign again, once
                        self._presigner.forget(key)
                        continue
                    if not _retryable(response.status, code):
                        raise translate(error, what) from error
                    failure = error
            failures = await self._after_attempt(what, start, pos, end, failures, failure)
        return chunks

    async def _after_attempt(
        self,
        what: str,
        start: int,
        pos: int,
        end: int,
        failures: int,
        failure: BaseException | None,
    ) -> int:
        """After one read of [start, end) that got to pos: the failure count for the next
        attempt (after a backoff), or raise when the bytes are wrong or retries run out."""
        if pos > end:
            raise IntegrityError(f"{what}: the server sent {pos - start} bytes")
        if pos == end:
            return failures
        failures += 1
        if failures > self.config.max_retries:
            if isinstance(failure, bce.ClientError):  # an error status: its own message
                raise translate(failure, what) from failure
            message = f"{what}: body cut short at byte {pos} after {failures} attempts"
            if failure is not None:
                raise translate(failure, message) from failure
            raise IntegrityError(message)
        await backoff(failures)
        return failures

    @staticmethod
    def _check_range(response: Mapping[str, Any], pos: int, end: int, what: str) -> None:
        """The response must hold exactly bytes [pos, end): check Content-Range."""
        content_range = response.get("ContentRange")
        length = response.get("ContentLength")
        if not content_range:
            if pos == 0 and length == end:
                return  # the server ignored Range and sent the whole object: same bytes
            raise IntegrityError(f"{what}: no Content-Range in the response")
        try:
            unit, _, rest = content_range.partition(" ")
            span, _, total = rest.partition("/")
            first, _, last = span.partition("-")
            first_i, last_i = int(first), int(last)
        except ValueError:
            raise IntegrityError(f"{what}: bad Content-Range {content_range!r}") from None
        if total.isdigit() and int(total) < end:
            raise InputError(f"{what}: the object has only {total} bytes")
        if unit != "bytes" or first_i != pos or last_i != end - 1:
            raise IntegrityError(f"{what}: got Content-Range {content_range!r}")
        if length is not None and length != end - pos:
            raise IntegrityError(f"{what}: Content-Length {length} for {end - pos} bytes")

    async def stat(self, key: str) -> ObjectInfo:
        response = await self.call("head_object", f"stat {self.where(key)}", Key=key)
        return ObjectInfo(key, int(response["ContentLength"]), dict(response.get("Metadata", {})))

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        client = await self.client()
        what = f"list {self.where(prefix)}"
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        try:
            async for page in pages:
                for item in page.get("Contents", []):
                    yield ObjectInfo(item["Key"], int(item["Size"]))
        except PluginError:
            raise
        except Exception as exc:
            raise translate(exc, what) from exc

    async def delete(self, keys: Sequence[str]) -> int:
        deleted = 0
        for first in range(0, len(keys), DELETE_BATCH):
            batch = keys[first : first + DELETE_BATCH]
            response = await self.call(
                "delete_objects",
                f"delete {len(batch)} objects in s3://{self.bucket}",
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            )
            errors = response.get("Errors", [])
            if errors:
                bad = errors[0]
                raise StorageError(
                    f"cannot delete {len(errors)} objects, e.g. {self.where(bad.get('Key', '?'))}: "
                    f"{bad.get('Code', 'error')}"
                )
            deleted += len(batch)
        return deleted

    async def abort_uploads(self, prefix: str) -> int:
        client = await self.client()
        what = f"list uploads under {self.where(prefix)}"
        uploads: list[tuple[str, str]] = []
        pages = client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        try:
            async for page in pages:
                uploads += [(u["Key"], u["UploadId"]) for u in page.get("Uploads", [])]
        except Exception as exc:
            raise translate(exc, what) from exc
        for key, upload_id in uploads:
            await S3Upload(self, key, upload_id).abort()
        return len(uploads)

    async def check_bucket(self, write: bool) -> None:
        what = f"bucket {self.bucket} at {self.endpoint_text}"
        try:
            await self.call("head_bucket", what)
        except ObjectNotFound as exc:  # HeadBucket has no body: a bare 404
            raise StorageError(f"{what}: the bucket does not exist") from exc
        if write:
            probe = f"{self.config.folder}/.asyncplug-probe-{socket.gethostname()}-{os.getpid()}"
            await self.put(probe, _PROBE, crc32c.crc32c(_PROBE))
            await self.delete([probe])

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()


# --- fastget responses -> the checks and errors of the botocore path ---------------


def _sink(pos: int, end: int, what: str) -> fastget.Sink:
    """Decides, from a response's head, how many body bytes to receive."""

    def sink(response: fastget.Response) -> int:
        headers = response.headers
        length_text = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if response.status in (200, 206):
            if chunked or length_text is None or not length_text.isdigit():
                raise fastget.Unsupported("no Content-Length")
            length = int(length_text)
            S3Storage._check_range(
                {"ContentRange": headers.get("content-range"), "ContentLength": length},
                pos,
                end,
                what,
            )
            return length
        # An error: read the small XML document for its code; never keep a connection
        # whose body we do not read to the end.
        if chunked or length_text is None or not length_text.isdigit():
            response.reusable = False
            return 0
        length = int(length_text)
        if length > fastget.ERROR_BODY_LIMIT:
            response.reusable = False
        return min(length, fastget.ERROR_BODY_LIMIT)

    return sink


def _status_error(status: int, code: str, retries: int) -> bce.ClientError:
    """The ClientError botocore would raise, so translate() maps it the same way."""
    response: Any = {
        "Error": {"Code": code, "Message": ""},
        "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": retries},
    }
    return bce.ClientError(response, "GetObject")


def _retryable(status: int, code: str) -> bool:
    """What botocore's standard mode and our 429 rule retry."""
    return status >= 500 or status == 429 or code in _BUSY_CODES
