"""The S3 backend on aiobotocore: every S3 call, imported only when needed.

Retries: botocore's "standard" mode retries 5xx, throttling codes (SlowDown, ...),
resets, connect/read timeouts and connection errors for every call, up to
max_retries + 1 attempts with jittered exponential backoff; we lift its per-client
retry quota (lift_retry_quota). It does not retry two things we need, so this
module does:
  - a 429 whose error code is not one of botocore's throttling codes;
  - an error or a short body while reading a GetObject body (botocore has
    returned by then): get_range resumes at the first missing byte.

TLS trusts what the lean path trusts (tls.py): our session class hands aiohttp the
same SSLContext instead of botocore's certifi-or-one-bundle one, and a certificate
that fails verification is not retried (botocore's standard mode would). The backoff
between retries is the lean path's (retry.backoff_delay), so both wait alike.

This path serves every call when a proxy is configured or credentials come from the
AWS credential chain, and otherwise the calls the lean path (s3lean.py) does not make
itself: listings, batch deletes, HeadBucket, and ranged reads whose response it cannot
take (chunked).

Bodies: botocore turns `bytes` into a BytesIO that aiohttp then copies out in
64 KiB reads, and its parameter validation rejects memoryview. `BufferBody` hands
aiohttp the caller's buffer itself (zero-copy up to the socket write); it needs
`parameter_validation=False` (we build every parameter here) and has a no-op
seek() because botocore rewinds the body before each retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

import aiobotocore.session
import aiohttp
import aiohttp.payload
import botocore.exceptions as bce
from aiobotocore.config import AioConfig
from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.retries.standard import (
    AioRetryHandler,
    AioRetryPolicy,
    AioStandardRetryConditions,
)
from aiohttp.abc import AbstractStreamWriter
from botocore.retries.quota import RetryQuota
from botocore.retries.standard import ExponentialBackoff, RetryEventAdapter, RetryQuotaChecker

from asyncplug.config import Config
from asyncplug.errors import AccessDenied, InputError, ObjectNotFound, PluginError, StorageError
from asyncplug.spool import STEP, SpoolMap, release
from asyncplug.storage import endpoints, http1, probe, tls
from asyncplug.storage.base import Buffer, ObjectInfo, Storage, Upload
from asyncplug.storage.retry import backoff, backoff_delay
from asyncplug.storage.s3common import (
    _mask,
    after_attempt,
    check_range,
    endpoint_settings,
    translate,
)
from asyncplug.storage.s3options import ObjectOptions

DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys (S3 API reference)
_BODY_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


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
        if not isinstance(view.obj, SpoolMap):
            await writer.write(view)
            return
        released = 0
        for at in range(0, len(view), STEP):  # a spooled part: never wholly in memory
            await writer.write(view[at : at + STEP])  # returns once mostly sent (drain)
            released = release(view.obj, released, at)
        release(view.obj, released, len(view))


def user_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    # parameter_validation is off: make sure botocore gets strings.
    return {str(k): str(v) for k, v in (metadata or {}).items()}


def body_of(data: Buffer) -> Any:
    return BufferBody(data) if len(data) else b""


def trusting_session(trust: tls.Trust) -> type[AIOHTTPSession]:
    """aiobotocore's HTTP session, verifying TLS against `trust` (tls.py) like the lean
    path. aiobotocore builds the endpoint's context (and a proxy's) in
    _build_verify_context; tests/unit/test_s3_settings.py fails if that goes away."""

    class TrustingSession(AIOHTTPSession):  # type: ignore[misc]
        def _build_verify_context(self) -> ssl.SSLContext:
            if not self._verify:
                context: ssl.SSLContext = super()._build_verify_context()
                return context
            return tls.context(trust)

    return TrustingSession


def client_config(config: Config, trust: tls.Trust | None = None) -> AioConfig:
    pool = max(config.backup_max_concurrent_requests, config.restore_max_concurrent_requests) + 4
    _, _, style = endpoint_settings(config)
    proxies = {"http": config.http_proxy, "https": config.http_proxy} if config.http_proxy else None
    return AioConfig(
        http_session_cls=trusting_session(trust or tls.trust_for(config)),
        region_name=config.region or "us-east-1",
        signature_version="s3v4",
        s3={"addressing_style": style, "payload_signing_enabled": False},
        # Our own CRC32C header covers integrity; botocore must not CRC bodies on the loop.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=config.connect_timeout,
        read_timeout=config.request_timeout,
        # botocore's "max_attempts" counts retries only (measured: max_attempts=4 sent 5
        # requests); total_max_attempts counts the first request too.
        retries={"mode": "standard", "total_max_attempts": config.max_retries + 1},
        max_pool_connections=pool,
        proxies=proxies,
        parameter_validation=False,  # lets BufferBody through; see the module docstring
    )


class _Conditions(AioStandardRetryConditions):  # type: ignore[misc]
    """botocore's standard conditions, except a certificate that failed verification, and
    the lean path's dead-host rule (http1.DEAD_AFTER): once no connection of this client
    has opened for DEAD_AFTER connect timeouts, connection failures are not retried."""

    def __init__(self, max_attempts: int, connect_timeout: float = 10.0) -> None:
        super().__init__(max_attempts=max_attempts)
        self._dead_after = http1.DEAD_AFTER * connect_timeout
        self._failing_since: float | None = None  # first connection failure of a run

    async def is_retryable(self, context: Any) -> bool:
        exc = context.caught_exception
        if tls.certificate_failure(exc) is not None:
            return False
        if isinstance(exc, (bce.ConnectTimeoutError, bce.EndpointConnectionError)):  # no connection
            now = time.monotonic()
            if self._failing_since is None:
                self._failing_since = now
            elif now - self._failing_since >= self._dead_after:
                return False
        else:
            self._failing_since = None
        return bool(await super().is_retryable(context))


class _Backoff(ExponentialBackoff):  # type: ignore[misc]
    """The lean path's delays (retry.py): both paths back off alike from throttling."""

    def delay_amount(self, context: Any) -> float:
        return backoff_delay(int(context.attempt_number))


def lift_retry_quota(client: Any, total_attempts: int, connect_timeout: float = 10.0) -> None:
    """Give the client botocore's standard retry handler again, minus the retry quota.

    Standard mode shares one quota per client (500, a retry costs 5 or more): measured
    through a fault proxy, 20 concurrent calls failing with 500 got 100 retries in all
    and gave up after 5-7 of their 9 attempts. A backup should ride out an outage up to
    max_retries for every request, as the Go plugin (aws-sdk-go v1, no quota) does.
    Same policy, backoff and event id as aiobotocore's own registration.
    """
    handler = AioRetryHandler(
        retry_policy=AioRetryPolicy(
            retry_checker=_Conditions(total_attempts, connect_timeout),
            retry_backoff=_Backoff(),
        ),
        retry_event_adapter=RetryEventAdapter(),
        retry_quota=RetryQuotaChecker(RetryQuota(initial_capacity=2**62)),
    )
    client.meta.events.unregister("needs-retry.s3", unique_id="retry-config-s3")
    client.meta.events.register("needs-retry.s3", handler.needs_retry, unique_id="retry-config-s3")


# --- the backend ---------------------------------------------------------------------


class BotoUpload(Upload):
    def __init__(self, storage: BotoStorage, key: str, upload_id: str) -> None:
        self.key = key
        self.upload_id = upload_id
        self._storage = storage
        self._parts: dict[int, tuple[str, str]] = {}  # number -> (ETag, CRC32C header or "")
        self._finished = False

    def _params(self) -> dict[str, Any]:
        return {"Bucket": self._storage.bucket, "Key": self.key, "UploadId": self.upload_id}

    async def put_part(self, number: int, offset: int, data: Buffer, crc32c: int) -> None:
        if not 1 <= number <= self._storage.max_parts:
            raise InputError(f"part number {number} is outside 1..{self._storage.max_parts}")
        options = self._storage.options
        checksum = await options.checksum_params(data, crc32c)
        response = await self._storage.call(
            "upload_part",
            f"upload part {number} of {self._storage.where(self.key)}",
            PartNumber=number,
            Body=body_of(data),
            **checksum,
            **options.read_params,
            **self._params(),
        )
        self._parts[number] = (response["ETag"], checksum.get("ChecksumCRC32C", ""))

    async def complete(self) -> None:
        if not self._parts:  # S3 needs at least one part: an empty object has one empty part
            await self.put_part(1, 0, b"", 0)
        parts = [
            {"PartNumber": n, "ETag": etag, **({"ChecksumCRC32C": checksum} if checksum else {})}
            for n, (etag, checksum) in sorted(self._parts.items())
        ]
        await self._storage.call(
            "complete_multipart_upload",
            f"complete upload of {self._storage.where(self.key)}",
            MultipartUpload={"Parts": parts},
            **self._storage.options.read_params,
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


class BotoStorage(Storage):
    name = "s3"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.bucket = config.bucket
        self.endpoint_url, self.use_ssl, _ = endpoint_settings(config)
        self.trust = tls.trust_for(config)
        self._botocore_config = client_config(config, self.trust)
        self.options = ObjectOptions(config)
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._lock = asyncio.Lock()

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
                    if self.use_ssl and (self.endpoint_url or "https:").startswith("https:"):
                        # Here, not inside aiohttp's connector, where botocore would take
                        # a bad CA bundle for a network error and retry it.
                        tls.context(self.trust)
                    session = aiobotocore.session.get_session()
                    # A region the lean path was redirected to: no second redirect here.
                    region = endpoints.learnt_region(self.bucket)
                    if self.config.aws_profile:
                        session.set_config_variable("profile", self.config.aws_profile)
                    try:
                        client = await stack.enter_async_context(
                            session.create_client(
                                "s3",
                                region_name=region or self._botocore_config.region_name,
                                endpoint_url=self.endpoint_url,
                                use_ssl=self.use_ssl,
                                config=self._botocore_config,
                                **keys,
                            )
                        )
                    except Exception as exc:
                        await stack.aclose()
                        raise self.translate(exc, f"S3 client for {self.endpoint_text}") from exc
                    lift_retry_quota(
                        client, self.config.max_retries + 1, self.config.connect_timeout
                    )
                    self._stack, self._client = stack, client
        return self._client

    def translate(self, exc: BaseException, what: str) -> PluginError:
        """s3common.translate, after the certificate check both paths make (tls.py)."""
        return tls.certificate_error(exc, what, self.trust) or translate(exc, what)

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
                if attempt:  # our 429 retries count in the message, as on the lean path
                    meta["RetryAttempts"] = int(meta.get("RetryAttempts") or 0) + attempt
                raise translate(exc, what) from exc
            except Exception as exc:
                raise self.translate(exc, what) from exc

    async def put(
        self, key: str, data: Buffer, crc32c: int, metadata: Mapping[str, str] | None = None
    ) -> None:
        await self.call(
            "put_object",
            f"put {self.where(key)}",
            Key=key,
            Body=body_of(data),
            Metadata=user_metadata(metadata),
            **await self.options.checksum_params(data, crc32c),
            **self.options.write_params,
        )

    async def start_upload(self, key: str, metadata: Mapping[str, str] | None = None) -> Upload:
        response = await self.call(
            "create_multipart_upload",
            f"start upload of {self.where(key)}",
            Key=key,
            Metadata=user_metadata(metadata),
            **self.options.multipart_params,
            **self.options.write_params,
        )
        return BotoUpload(self, key, response["UploadId"])

    async def get_range(self, key: str, start: int, end: int) -> list[Buffer]:
        if start < 0 or end < start:
            raise InputError(f"bad range [{start}, {end}) of {self.where(key)}")
        if start == end:
            return []
        what = f"get bytes [{start}, {end}) of {self.where(key)}"
        return list(await self.get_range_from(key, start, end, what, None))

    async def get_range_from(
        self, key: str, start: int, end: int, what: str, etag: str | None
    ) -> list[bytes]:
        """Bytes [start, end), resuming after cut bodies; If-Match etag when given (the
        lean path hands a read over here mid-way, e.g. for a chunked response)."""
        chunks: list[bytes] = []
        pos, failures = start, 0
        while pos < end:
            params: dict[str, Any] = {
                "Key": key,
                "Range": f"bytes={pos}-{end - 1}",
                **self.options.read_params,
            }
            if etag:
                params["IfMatch"] = etag  # a resumed read must see the same object
            response = await self.call("get_object", what, **params)
            body = response["Body"]
            failure: BaseException | None = None
            try:
                check_range(
                    response.get("ContentRange"), response.get("ContentLength"), pos, end, what
                )
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
            failures = await after_attempt(
                self.config.max_retries, what, start, pos, end, failures, failure
            )
        return chunks

    async def stat(self, key: str) -> ObjectInfo:
        response = await self.call(
            "head_object", f"stat {self.where(key)}", Key=key, **self.options.read_params
        )
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
            raise self.translate(exc, what) from exc

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
                code = bad.get("Code", "error")
                error = AccessDenied if code == "AccessDenied" else StorageError
                raise error(
                    f"cannot delete {len(errors)} objects, e.g. {self.where(bad.get('Key', '?'))}: "
                    f"{code}"
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
            raise self.translate(exc, what) from exc
        for key, upload_id in uploads:
            await BotoUpload(self, key, upload_id).abort()
        return len(uploads)

    async def check_bucket(self, write: bool) -> None:
        await probe.check(self, self.config.folder, write)

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()
