"""A small S3 of our own on 127.0.0.1, for what real servers cannot be made to do.

It keeps one bucket in memory, in one region, and answers the calls a backup, a
restore, setup and list_directory make (objects, multipart uploads, HeadBucket,
ListObjectsV2, DeleteObjects), path-style or virtual-hosted (told apart by the Host
header). Every request's SigV4 signature is checked with botocore's signer, so both
transports are verified on the wire, virtual-host Host headers included. A request
signed for another region gets S3's answer for it (301, 307 or 400 naming the bucket's
region, or not); queued faults answer the next matching requests. It also serves as a
forward proxy (absolute-form request targets): pointing http_proxy at it puts every
call on the aiobotocore path with the same server behind.

It runs in a thread with its own event loop, so tests can run the plugin executable
with blocking calls while it serves.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ssl
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit
from xml.sax.saxutils import escape

from aiohttp import web
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ACCESS_KEY = "AKIDFAKES3EXAMPLE"
SECRET_KEY = "fake/s3+secret"


@dataclass
class Fault:
    method: str  # GET, PUT, HEAD, POST, DELETE, or "*"
    status: int
    code: str
    times: int = 1


@dataclass
class Seen:
    method: str
    host: str
    path: str  # path-style: /bucket/key, whatever the addressing
    region: str  # the region the request was signed for
    virtual: bool


@dataclass
class FakeS3:
    bucket: str
    region: str = "us-east-1"
    tls: ssl.SSLContext | None = None
    wrong_region: str = "301"  # answer to a request signed for another region: 301, 307, 400
    name_region: bool = True  # that answer names the bucket's region (HeadBucket always does)
    always_redirect: bool = False  # answer every request that way (a redirect loop)
    faults: list[Fault] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    objects: dict[str, tuple[bytes, dict[str, str]]] = field(default_factory=dict)
    uploads: dict[str, tuple[dict[str, str], dict[int, bytes]]] = field(default_factory=dict)
    handshakes: int = 0  # TLS handshakes begun (counted by the SNI callback)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"https://localhost:{self.port}" if self.tls else f"http://127.0.0.1:{self.port}"

    def options(self, **extra: object) -> dict[str, object]:
        return {
            "endpoint": self.endpoint,
            "bucket": self.bucket,
            "folder": "prod/cluster1",
            "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET_KEY,
            **extra,
        }

    # --- life cycle -------------------------------------------------------------------
    def __enter__(self) -> FakeS3:
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), loop).result(30)
        return self

    def __exit__(self, *_: object) -> None:
        assert self._loop is not None and self._thread is not None
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    async def _start(self) -> None:
        if self.tls is not None:
            self.tls.sni_callback = self._count_handshake
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.tls)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _count_handshake(self, *_: object) -> None:
        self.handshakes += 1

    # --- requests ---------------------------------------------------------------------
    def requests(self, method: str | None = None) -> list[Seen]:
        return [s for s in self.seen if method is None or s.method == method]

    def _fault(self, method: str) -> Fault | None:
        for fault in self.faults:
            if fault.method in (method, "*"):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        raw = request.raw_path
        if "://" in raw:  # a forward proxy's request: the absolute URL
            parts = urlsplit(raw)
            raw = parts.path + ("?" + parts.query if parts.query else "")
        host = request.headers.get("Host", "")
        path, _, query = raw.partition("?")
        virtual = host.startswith(self.bucket + ".")
        full = f"/{self.bucket}{path}" if virtual else path
        signed_region = self._check_signature(request, host, raw, body)
        if signed_region is None:
            return error(403, "SignatureDoesNotMatch", request.method)
        self.seen.append(Seen(request.method, host, unquote(full), signed_region, virtual))
        if signed_region != self.region or self.always_redirect:
            if request.method == "HEAD" and full.strip("/") == self.bucket:
                # HeadBucket: S3 names the region whatever the answer
                headers = {"x-amz-bucket-region": self.region}
                return error(301, "PermanentRedirect", "HEAD", headers)
            return self._wrong_region(request.method)
        fault = self._fault(request.method)
        if fault is not None:
            return error(fault.status, fault.code, request.method)
        bucket, _, key = unquote(full).lstrip("/").partition("/")
        if bucket != self.bucket:
            return error(404, "NoSuchBucket", request.method)
        params = dict(parse_qsl(query, keep_blank_values=True))
        if request.method == "HEAD" and key in self.objects:  # the length, with no body
            data, meta = self.objects[key]
            response = web.StreamResponse(headers={"ETag": etag(data), **meta})
            response.content_length = len(data)
            await response.prepare(request)
            return response
        return self._serve(request, key, params, body)

    def _check_signature(
        self, request: web.Request, host: str, raw: str, body: bytes
    ) -> str | None:
        """The region the request was signed for when the signature is right, else None."""
        auth = request.headers.get("Authorization", "")
        try:
            credential = auth.split("Credential=")[1].split(",")[0]
            access, date, region, _, _ = credential.split("/")
            names = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
            signature = auth.split("Signature=")[1].strip()
        except (IndexError, ValueError):
            return None
        payload = request.headers.get("x-amz-content-sha256", "")
        if payload != "UNSIGNED-PAYLOAD" and payload != hashlib.sha256(body).hexdigest():
            return None
        headers = {name: request.headers.get(name, "") for name in names}
        headers["host"] = host
        scheme = "https" if self.tls else "http"
        aws = AWSRequest(request.method, f"{scheme}://{host}{raw}", headers=headers)
        aws.context["timestamp"] = request.headers.get("x-amz-date", "")
        signer = S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", region)
        canonical = signer.canonical_request(aws)
        expected = signer.signature(signer.string_to_sign(aws, canonical), aws)
        ok = access == ACCESS_KEY and hmac.compare_digest(expected, signature)
        return region if ok and date == aws.context["timestamp"][:8] else None

    def _wrong_region(self, method: str) -> web.Response:
        named = {"x-amz-bucket-region": self.region} if self.name_region else {}
        if self.wrong_region == "400":
            code, status = "AuthorizationHeaderMalformed", 400
        elif self.wrong_region == "307":
            code, status = "TemporaryRedirect", 307
        else:
            code, status = "PermanentRedirect", 301
        extra = f"<Region>{self.region}</Region>" if self.name_region and status == 400 else ""
        return error(status, code, method, named, extra)

    def _serve(
        self, request: web.Request, key: str, params: dict[str, str], body: bytes
    ) -> web.Response:
        method = request.method
        if not key:
            return self._bucket_call(method, params, body)
        if method == "PUT" and "partNumber" in params:
            upload = self.uploads.get(params["uploadId"])
            if upload is None:
                return error(404, "NoSuchUpload", method)
            upload[1][int(params["partNumber"])] = body
            return web.Response(headers={"ETag": etag(body)})
        meta = {k: v for k, v in request.headers.items() if k.lower().startswith("x-amz-meta-")}
        if method == "PUT":
            self.objects[key] = (body, meta)
            return web.Response(headers={"ETag": etag(body)})
        if method == "POST" and "uploads" in params:
            upload_id = f"upload-{len(self.uploads) + 1}"
            self.uploads[upload_id] = (meta, {})
            return xml(
                f"<InitiateMultipartUploadResult><Bucket>{self.bucket}</Bucket><Key>"
                f"{escape(key)}</Key><UploadId>{upload_id}</UploadId>"
                "</InitiateMultipartUploadResult>"
            )
        if method == "POST" and "uploadId" in params:
            upload = self.uploads.pop(params["uploadId"], None)
            if upload is None:
                return error(404, "NoSuchUpload", method)
            meta, parts = upload
            data = b"".join(parts[n] for n in sorted(parts))
            self.objects[key] = (data, meta)
            return xml(
                f"<CompleteMultipartUploadResult><ETag>{etag(data)}</ETag>"
                "</CompleteMultipartUploadResult>"
            )
        if method == "DELETE" and "uploadId" in params:
            self.uploads.pop(params["uploadId"], None)
            return web.Response(status=204)
        if key not in self.objects:
            return error(404, "NoSuchKey", method)
        data, meta = self.objects[key]
        headers = {"ETag": etag(data), **meta}
        if method == "GET":
            spec = request.headers.get("Range", "")
            if not spec:
                return web.Response(body=data, headers=headers)
            first, _, last = spec.removeprefix("bytes=").partition("-")
            start, end = int(first), min(int(last) + 1, len(data))
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
            return web.Response(status=206, body=data[start:end], headers=headers)
        if method == "DELETE":
            self.objects.pop(key, None)
            return web.Response(status=204)
        return error(405, "MethodNotAllowed", method)

    def _bucket_call(self, method: str, params: dict[str, str], body: bytes) -> web.Response:
        if method == "HEAD":
            return web.Response(headers={"x-amz-bucket-region": self.region})
        if method == "GET" and params.get("list-type") == "2":
            prefix = params.get("prefix", "")
            contents = "".join(
                f"<Contents><Key>{escape(k)}</Key><Size>{len(v[0])}</Size></Contents>"
                for k, v in sorted(self.objects.items())
                if k.startswith(prefix)
            )
            return xml(
                f"<ListBucketResult><Name>{self.bucket}</Name><Prefix>{escape(prefix)}</Prefix>"
                f"<KeyCount>{contents.count('<Contents>')}</KeyCount><IsTruncated>false"
                f"</IsTruncated>{contents}</ListBucketResult>"
            )
        if method == "GET" and "uploads" in params:
            return xml(
                "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated>"
                "</ListMultipartUploadsResult>"
            )
        if method == "POST" and "delete" in params:
            text = body.decode()
            for chunk in text.split("<Key>")[1:]:
                self.objects.pop(unescape_xml(chunk.split("</Key>")[0]), None)
            return xml("<DeleteResult></DeleteResult>")
        return error(405, "MethodNotAllowed", method)


def unescape_xml(text: str) -> str:
    from xml.sax.saxutils import unescape

    return unescape(text, {"&quot;": '"', "&apos;": "'"})


def etag(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest() + '"'


def xml(document: str) -> web.Response:
    return web.Response(
        text='<?xml version="1.0" encoding="UTF-8"?>' + document, content_type="application/xml"
    )


def error(
    status: int, code: str, method: str, headers: dict[str, str] | None = None, extra: str = ""
) -> web.Response:
    if method == "HEAD":  # no body, as S3 answers a HEAD
        return web.Response(status=status, headers=headers)
    text = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>fake</Message>{extra}<RequestId>1</RequestId></Error>"
    )
    return web.Response(status=status, text=text, content_type="application/xml", headers=headers)
