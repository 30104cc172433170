"""The S3 calls that move data, signed here and sent over http1's small client.

Why not aiobotocore for these: importing it costs ~0.45 CPU-s per process and each
call ~2 ms of CPU (endpoint rules, signing, parsing); a 1 GiB backup makes 128
UploadPart calls. Here a call is one SigV4 signature (sigv4.py, checked against
botocore's signer in the tests), one write and one header parse.

Calls: HeadObject, ranged GetObject, PutObject, CreateMultipartUpload, UploadPart,
CompleteMultipartUpload, AbortMultipartUpload. Every other call, and any call when a
proxy is configured, goes through aiobotocore (s3boto.py); the facade in s3.py decides.
Credentials are static keys, or come from the AWS chain through botocore's resolver
(credentials.py), refreshed before they expire.

Retries match botocore's standard mode plus our 429 rule: no response (connect
errors, resets, timeouts), 5xx, 429 and throttling codes are retried with jittered
backoff up to max_retries; other error statuses are raised at once, translated by
the same table as the botocore path (s3common.translate). A certificate that fails
verification is not retried (tls.py). A region redirect is followed once, as botocore
does (endpoints.py): the request goes again, signed for the bucket's region, to that
region's endpoint (or the configured endpoint), and every later request goes there.
"""

from __future__ import annotations

import contextlib
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlsplit

import botocore.exceptions as bce

from asyncplug.config import Config
from asyncplug.errors import ObjectNotFound, StorageError
from asyncplug.storage import endpoints, http1, tls
from asyncplug.storage.base import Buffer, HttpSource, ObjectInfo, Upload
from asyncplug.storage.credentials import ChainCredentials
from asyncplug.storage.retry import backoff
from asyncplug.storage.s3common import (
    after_attempt,
    check_range,
    endpoint_settings,
    retryable,
    status_error,
    translate,
)
from asyncplug.storage.s3options import ObjectOptions
from asyncplug.storage.sigv4 import Credentials, Signer, canonical_query, quote_path

_UPLOAD_ID = re.compile(rb"<UploadId>([^<]{1,1024})</UploadId>")
_ERROR = re.compile(rb"<Error>")
META = "x-amz-meta-"

# get_range hands a read over to aiobotocore from here (e.g. a chunked response).
Fallback = Callable[[str, int, int, str, "str | None"], Awaitable[list[bytes]]]


# xml.sax.saxutils' escape and unescape, the same mapping in the same order: importing
# it brings urllib.request, http.client and email into every multipart backup.
def xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;")


def xml_unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


class LeanS3:
    """One bucket's data calls. Keys are full keys; `what` names a call in messages."""

    def __init__(
        self, config: Config, credentials: Credentials | ChainCredentials, fallback: Fallback
    ) -> None:
        self.config = config
        self.options = ObjectOptions(config)
        self.max_retries = config.max_retries
        region = endpoints.learnt_region(config.bucket) or config.region or "us-east-1"
        self._place(region)
        if isinstance(credentials, ChainCredentials):
            self.chain: ChainCredentials | None = credentials
            self.signer = Signer(endpoints.signing_region(region), credentials.current)
        else:
            self.chain = None
            self.signer = Signer(endpoints.signing_region(region), lambda: credentials)
        size = max(config.backup_max_concurrent_requests, config.restore_max_concurrent_requests)
        self.pool = http1.Pool(
            size + 4, config.request_timeout, self._ssl_context, config.connect_timeout
        )
        self._fallback = fallback
        self._tls: ssl.SSLContext | None = None
        self._trust: tls.Trust | None = None

    def _place(self, region: str) -> None:
        """Address the bucket for `region`: the configured endpoint, else S3's in that region."""
        url, use_ssl, style = endpoint_settings(self.config)
        if url is None:
            url = f"{'https' if use_ssl else 'http'}://{endpoints.aws_host(region)}"
        parts = urlsplit(url)
        self.region = region
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.netloc = parts.netloc.rpartition("@")[2]
        base = parts.path.rstrip("/")
        if style == "virtual":
            self.host = f"{self.config.bucket}.{self.host}"
            self.netloc = f"{self.config.bucket}.{self.netloc}"
            self.prefix = base
        else:
            self.prefix = f"{base}/{self.config.bucket}"

    async def _redirect(
        self, method: str, response: http1.Response, code: str, again: bool
    ) -> tuple[bool, str | None]:
        """(follow, the bucket's region) for an error response. A "wrong region" error is
        followed once per request (`again`: it was), to the region it names, else the one
        a HEAD of the bucket names (as botocore's S3RegionRedirectorv2 does)."""
        region = endpoints.region_named(response.headers, response.body())
        if again or not endpoints.is_region_error(method, response.status, code, region):
            return False, region
        if region is None:
            region = await self._bucket_region()
        if region is None or region == self.region:
            return False, region
        endpoints.learn_region(self.config.bucket, region)
        self._place(region)
        self.signer = self.signer.for_region(endpoints.signing_region(region))
        return True, region

    async def _bucket_region(self) -> str | None:
        """x-amz-bucket-region of a HEAD of the bucket (S3 sends it whatever the status)."""
        path = quote_path(self.prefix or "/")
        target = http1.Target(self.scheme, self.host, self.port, self.netloc, path)
        try:
            response, conn = await self.pool.request(
                "HEAD", target, self._headers("HEAD", path, "", {}), _small_sink("HEAD")
            )
        except (bce.BotoCoreError, OSError):
            return None
        self.pool.release(target, conn, response)
        return endpoints.region_named(response.headers)

    @property
    def trust(self) -> tls.Trust:
        if self._trust is None:
            self._trust = tls.trust_for(self.config)
        return self._trust

    def _ssl_context(self) -> ssl.SSLContext:
        """One context for every connection: loading the trust store costs 24 ms of CPU."""
        if self._tls is None:
            self._tls = tls.context(self.trust)
        return self._tls

    def close(self) -> None:
        self.pool.close()

    def _refused_cached_credentials(self) -> bool:
        """A 403 to credentials from the cache (credentials.py): try again, once, with
        credentials resolved afresh."""
        return self.chain is not None and self.chain.discard_cached()

    # --- one call, with retries --------------------------------------------------------

    def _target(self, key: str, query: str) -> tuple[http1.Target, str]:
        path = quote_path(f"{self.prefix}/{key}")
        full = f"{path}?{query}" if query else path
        return http1.Target(self.scheme, self.host, self.port, self.netloc, full), path

    def _headers(self, method: str, path: str, query: str, headers: Mapping[str, str]) -> str:
        signed = self.signer.sign(method, self.netloc, path, query, headers)
        return "".join(f"{k}: {v}\r\n" for k, v in (*headers.items(), *signed.items()))

    async def send(
        self,
        method: str,
        key: str,
        what: str,
        operation: str,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: Buffer | None = None,
    ) -> http1.Response:
        """A call whose response body (if any) is a small document; a 2xx response."""
        query = canonical_query(params) if params else ""
        target, path = self._target(key, query)
        view = _view(body) if body is not None else None
        failures, redirected = 0, False
        while True:
            if self.chain is not None:
                await self.chain.ready()
            text = self._headers(method, path, query, headers or {})
            failure: BaseException
            try:
                response, conn = await self.pool.request(
                    method, target, text, _small_sink(method), view
                )
            except http1.Unreachable as exc:  # down for a while: retries would only wait
                raise translate(exc, exc.during(what)) from exc
            except (bce.BotoCoreError, OSError) as exc:  # no response: connect, reset, timeout
                refused = tls.certificate_error(exc, what, self.trust)
                if refused is not None:
                    raise refused from exc
                failure = exc
            except http1.Unsupported as exc:  # e.g. a big body of unknown length
                raise StorageError(f"{what}: unexpected response from the server ({exc})") from exc
            else:
                self.pool.release(target, conn, response)
                code = _error_in(response)
                if code is None:
                    return response
                follow, region = await self._redirect(method, response, code, redirected)
                if follow:
                    redirected = True
                    target, path = self._target(key, query)
                    continue
                error = status_error(
                    response.status, code, failures, operation, response.headers, region
                )
                if response.error is None and not retryable(response.status, code):
                    if response.status == 403 and self._refused_cached_credentials():
                        continue
                    raise translate(error, what) from error
                failure = response.error or error
            failures += 1
            if failures > self.max_retries:
                if isinstance(failure, bce.ClientError):
                    raise translate(failure, what) from failure
                raise translate(failure, f"{what} (after {failures} attempts)") from failure
            await backoff(failures)

    def http_source(self, key: str) -> HttpSource | None:
        """Signed GETs of `key` for restore's splice path; None over https (a TLS body is
        decrypted in user space, so there is nothing to splice)."""
        if self.scheme != "http":
            return None

        def request(start: int, end: int, etag: str | None) -> bytes:
            target, path = self._target(key, "")  # after a redirect: signed for the new region
            headers = {"range": f"bytes={start}-{end - 1}", **self.options.read_headers}
            if etag:
                headers["if-match"] = etag
            return http1.request_head("GET", target, self._headers("GET", path, "", headers))

        return HttpSource(self.host, self.port, request, self.config.connect_timeout)

    # --- the calls ---------------------------------------------------------------------

    async def stat(self, key: str, what: str) -> ObjectInfo:
        response = await self.send(
            "HEAD", key, what, "HeadObject", headers=self.options.read_headers
        )
        length = response.headers.get("content-length", "")
        if not length.isdigit():
            raise StorageError(f"{what}: no Content-Length in the response")
        metadata = {
            name[len(META) :]: value
            for name, value in response.headers.items()
            if name.startswith(META)
        }
        return ObjectInfo(key, int(length), metadata)

    async def put(
        self, key: str, data: Buffer, crc32c: int, metadata: Mapping[str, str] | None, what: str
    ) -> None:
        headers = {
            **await self.options.checksum_headers(data, crc32c),
            **self.options.write_headers,
            **_meta_headers(metadata),
        }
        await self.send("PUT", key, what, "PutObject", headers=headers, body=data)

    async def start_upload(
        self, key: str, metadata: Mapping[str, str] | None, what: str
    ) -> LeanUpload:
        headers = {
            **self.options.multipart_headers,
            **self.options.write_headers,
            **_meta_headers(metadata),
        }
        response = await self.send(
            "POST", key, what, "CreateMultipartUpload", {"uploads": ""}, headers
        )
        for view in response.body():
            found = _UPLOAD_ID.search(view)
            if found:
                return LeanUpload(self, key, xml_unescape(found.group(1).decode("utf-8")))
        raise StorageError(f"{what}: no UploadId in the response")

    async def delete(self, key: str, what: str) -> None:
        """DeleteObject (a missing key is not an error: S3 answers 204)."""
        await self.send("DELETE", key, what, "DeleteObject")

    async def get_range(self, key: str, start: int, end: int, what: str) -> list[Buffer]:
        """Bytes [start, end) (start < end): Content-Range checked, cut reads resumed."""
        chunks: list[Buffer] = []
        pos, failures, etag, redirected = start, 0, None, False
        while pos < end:
            target, path = self._target(key, "")
            headers = {"range": f"bytes={pos}-{end - 1}", **self.options.read_headers}
            if etag:
                headers["if-match"] = etag  # a resumed read must see the same object
            failure: BaseException | None = None
            if self.chain is not None:
                await self.chain.ready()
            try:
                response, conn = await self.pool.request(
                    "GET",
                    target,
                    self._headers("GET", path, "", headers),
                    _range_sink(pos, end, what),
                )
            except http1.Unsupported:  # e.g. a chunked body: botocore reads it
                chunks += await self._fallback(key, pos, end, what, etag)
                return chunks
            except http1.Unreachable as exc:
                raise translate(exc, exc.during(what)) from exc
            except (bce.BotoCoreError, OSError) as exc:  # no response: connect, reset, timeout
                refused = tls.certificate_error(exc, what, self.trust)
                if refused is not None:
                    raise refused from exc
                failure = exc
            else:
                self.pool.release(target, conn, response)
                if response.status in (200, 206):
                    etag = etag or response.headers.get("etag")
                    chunks += response.body()
                    pos += response.received
                    failure = response.error
                else:
                    code = http1.error_code(response)
                    follow, region = await self._redirect("GET", response, code, redirected)
                    if follow:
                        redirected = True
                        continue
                    error = status_error(
                        response.status, code, failures, "GetObject", response.headers, region
                    )
                    if not retryable(response.status, code):
                        if response.status == 403 and self._refused_cached_credentials():
                            continue
                        raise translate(error, what) from error
                    failure = error
            failures = await after_attempt(
                self.max_retries, what, start, pos, end, failures, failure
            )
        return chunks


class LeanUpload(Upload):
    def __init__(self, s3: LeanS3, key: str, upload_id: str) -> None:
        self.key = key
        self.upload_id = upload_id
        self._s3 = s3
        self._parts: dict[int, tuple[str, str]] = {}  # number -> (ETag, CRC32C header or "")
        self._finished = False
        self.where = f"s3://{s3.config.bucket}/{key}"

    async def put_part(self, number: int, offset: int, data: Buffer, crc32c: int) -> None:
        options = self._s3.options
        headers = {**await options.checksum_headers(data, crc32c), **options.read_headers}
        response = await self._s3.send(
            "PUT",
            self.key,
            f"upload part {number} of {self.where}",
            "UploadPart",
            {"partNumber": str(number), "uploadId": self.upload_id},
            headers,
            data,
        )
        etag = response.headers.get("etag")
        if not etag:
            raise StorageError(f"upload part {number} of {self.where}: no ETag in the response")
        self._parts[number] = (etag, headers.get("x-amz-checksum-crc32c", ""))

    async def complete(self) -> None:
        if not self._parts:  # S3 needs at least one part: an empty object has one empty part
            await self.put_part(1, 0, b"", 0)
        body = "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{xml_escape(etag)}</ETag>"
            + (f"<ChecksumCRC32C>{checksum}</ChecksumCRC32C>" if checksum else "")
            + "</Part>"
            for n, (etag, checksum) in sorted(self._parts.items())
        )
        document = f"<CompleteMultipartUpload>{body}</CompleteMultipartUpload>".encode()
        await self._s3.send(
            "POST",
            self.key,
            f"complete upload of {self.where}",
            "CompleteMultipartUpload",
            {"uploadId": self.upload_id},
            {"content-type": "application/xml", **self._s3.options.read_headers},
            document,
        )
        self._finished = True

    async def abort(self) -> None:
        if self._finished:
            return
        with contextlib.suppress(ObjectNotFound):  # NoSuchUpload: already gone
            await self._s3.send(
                "DELETE",
                self.key,
                f"abort upload of {self.where}",
                "AbortMultipartUpload",
                {"uploadId": self.upload_id},
            )
        self._finished = True


# --- responses ---------------------------------------------------------------------


def _view(data: Buffer) -> memoryview:
    view = data if isinstance(data, memoryview) else memoryview(data)
    return view if view.ndim == 1 and view.format == "B" else view.cast("B")


def _meta_headers(metadata: Mapping[str, str] | None) -> dict[str, str]:
    return {f"{META}{name.lower()}": str(value) for name, value in (metadata or {}).items()}


def _small_sink(method: str) -> http1.Sink:
    """Receive a small document (an XML result or error), or nothing for HEAD / 204."""

    def sink(response: http1.Response) -> int:
        if method == "HEAD" or response.status in (204, 304):
            return 0
        headers = response.headers
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return http1.CHUNKED
        length = headers.get("content-length", "")
        if not 200 <= response.status < 300:
            return _error_body(response, length)
        if not length.isdigit():
            response.reusable = False  # the body ends when the server closes
            raise http1.Unsupported("no Content-Length")
        if int(length) > http1.ERROR_BODY_LIMIT:
            raise http1.Unsupported("a large response to a small call")
        return int(length)

    return sink


def _error_body(response: http1.Response, length: str) -> int:
    """Bytes of an error document to read (enough for its code). A connection whose body
    is not read to the end is not kept."""
    if not length.isdigit():
        response.reusable = False
        return 0
    if int(length) > http1.ERROR_BODY_LIMIT:
        response.reusable = False
    return min(int(length), http1.ERROR_BODY_LIMIT)


def _error_in(response: http1.Response) -> str | None:
    """The error code of a failed response; None for a success. A 200 whose body is an
    <Error> document is a failure (CompleteMultipartUpload answers 200, then fails)."""
    if response.error is not None:
        return "IncompleteBody"
    if 200 <= response.status < 300:
        if any(_ERROR.search(view) for view in response.body()):
            code = http1.error_code(response)
            return code if code != str(response.status) else "InternalError"
        return None
    return http1.error_code(response)


def _range_sink(pos: int, end: int, what: str) -> http1.Sink:
    """Decides, from a ranged GET's head, how many body bytes to receive."""

    def sink(response: http1.Response) -> int:
        headers = response.headers
        length_text = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if response.status in (200, 206):
            if chunked or length_text is None or not length_text.isdigit():
                raise http1.Unsupported("no Content-Length")
            length = int(length_text)
            check_range(headers.get("content-range"), length, pos, end, what)
            return length
        if chunked:
            response.reusable = False  # an error body we do not read
            return 0
        return _error_body(response, length_text or "")

    return sink
