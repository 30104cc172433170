"""S3 under faults: a small reverse proxy on 127.0.0.1 in front of SeaweedFS injects them.

The proxy forwards requests unchanged (Host header included, so SigV4 signatures
still match) and, for the next requests that match a queued fault, answers with an
error status, drops the connection, or sends only half of the response body.
"""

from __future__ import annotations

import asyncio
import base64
import io
import random
import socket
import ssl
from dataclasses import dataclass, field

import aiohttp
import crc32c
import pytest
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from asyncplug.config import build_config
from asyncplug.errors import IntegrityError, StorageError
from asyncplug.storage.s3 import S3Storage
from bench.seaweed import SeaweedServer
from tests.conftest import s3_options

KEY = "prod/cluster1/backups/20250101/20250101123456/gpbackup_0_20250101123456"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}
ERROR_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
    "<Message>injected</Message></Error>"
)


@dataclass
class Fault:
    method: str  # which requests it hits: GET, PUT, ...
    kind: str  # "status", "reset" or "cut"
    status: int = 0
    code: str = ""
    min_body: int = 0  # only requests with at least this many body bytes


@dataclass
class FaultProxy:
    upstream: str
    faults: list[Fault] = field(default_factory=list)
    seen: list[tuple[str, str, CIMultiDict[str]]] = field(default_factory=list)
    endpoint: str = ""
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    async def start(self, tls: ssl.SSLContext | None = None) -> FaultProxy:
        """Listen on 127.0.0.1 (https://localhost:PORT with a TLS context)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        port = self._runner.addresses[0][1]
        self.endpoint = f"https://localhost:{port}" if tls else f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession(auto_decompress=False)
        return self

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _take(self, method: str, body: int = 0) -> Fault | None:
        for i, fault in enumerate(self.faults):
            if fault.method == method and body >= fault.min_body:
                return self.faults.pop(i)
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append((request.method, request.raw_path, request.headers.copy()))
        fault = self._take(request.method, len(body))
        if fault is not None and fault.kind == "status":
            text = ERROR_BODY.format(code=fault.code)
            return web.Response(status=fault.status, text=text, content_type="application/xml")
        if fault is not None and fault.kind == "reset":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Host"] = request.headers["Host"]  # signed by the client: keep it
        assert self._session is not None
        # As a forward proxy (http_proxy) the request line holds the absolute URL.
        target = request.raw_path if "://" in request.raw_path else self.upstream + request.raw_path
        url = URL(target, encoded=True)
        # aiohttp warns (an error under pytest) about big bytes bodies: hand it a BytesIO.
        data = io.BytesIO(body) if len(body) > 2**20 else body
        async with self._session.request(
            request.method, url, headers=headers, data=data, allow_redirects=False
        ) as upstream:
            content = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        if request.method == "HEAD":  # the object's length, with no body
            response = web.StreamResponse(status=upstream.status, headers=out)
            response.content_length = int(upstream.headers.get("Content-Length", 0))
            await response.prepare(request)
            return response
        if fault is None or fault.kind != "cut" or len(content) < 2:
            return web.Response(status=upstream.status, headers=out, body=content)
        response = web.StreamResponse(status=upstream.status, headers=out)
        response.content_length = len(content)
        await response.prepare(request)
        await response.write(content[: len(content) // 2])
        assert request.transport is not None
        request.transport.close()  # the client sees a body cut short
        return response


@pytest.fixture
async def through_proxy(proxy: FaultProxy, seaweed: SeaweedServer, bucket: str):  # type: ignore[no-untyped-def]
    options = s3_options(seaweed, bucket, endpoint=proxy.endpoint, max_retries=3)
    async with S3Storage(build_config(options)) as store:
        yield store


async def test_get_range_resumes_after_a_cut_body(
    through_proxy: S3Storage, proxy: FaultProxy
) -> None:
    data = random.Random(5).randbytes(300_000)
    await through_proxy.put(KEY, data, crc32c.crc32c(data))
    proxy.faults = [Fault("GET", "cut"), Fault("GET", "cut")]
    chunks = await through_proxy.get_range(KEY, 1000, 290_000)
    assert b"".join(chunks) == data[1000:290_000]
    ranges = [h.get("Range") for m, _, h in proxy.seen if m == "GET"]
    assert ranges[0] == "bytes=1000-289999"
    assert len(ranges) == 3 and ranges[1] != ranges[0]  # resumed after what arrived
    assert all(h.get("If-Match") for m, _, h in proxy.seen[-2:] if m == "GET")


async def test_get_range_gives_up_after_max_retries(
    through_proxy: S3Storage, proxy: FaultProxy
) -> None:
    data = b"y" * 100_000
    await through_proxy.put(KEY, data, crc32c.crc32c(data))
    proxy.faults = [Fault("GET", "cut") for _ in range(4)]  # max_retries=3: 4 attempts
    with pytest.raises(StorageError, match="cut short"):
        await through_proxy.get_range(KEY, 0, 100_000)


@pytest.mark.parametrize(
    ("fault", "times"),
    [
        (Fault("PUT", "status", 503, "SlowDown"), 1),
        (Fault("PUT", "status", 500, "InternalError"), 1),
        (Fault("PUT", "status", 429, "TooManyRequests"), 2),  # botocore leaves 429 to us
        (Fault("PUT", "reset"), 2),
    ],
    ids=["503-SlowDown", "500", "429", "reset"],
)
async def test_put_of_a_memoryview_is_retried(
    through_proxy: S3Storage, proxy: FaultProxy, fault: Fault, times: int
) -> None:
    buffer = bytearray(random.Random(6).randbytes(200_000))
    view = memoryview(buffer)[100:150_100]
    proxy.faults = [Fault(fault.method, fault.kind, fault.status, fault.code)] * times
    await through_proxy.put(KEY, view, crc32c.crc32c(view), {"codec": "none"})
    assert b"".join(await through_proxy.get_range(KEY, 0, 150_000)) == bytes(view)
    puts = [h for m, _, h in proxy.seen if m == "PUT"]
    assert len(puts) == times + 1  # the same body sent again after each fault
    assert {h["Content-Length"] for h in puts} == {"150000"}


async def test_requests_carry_our_crc_and_no_payload_hash(
    through_proxy: S3Storage, proxy: FaultProxy
) -> None:
    data = b"z" * 10_000
    await through_proxy.put(KEY, data, crc32c.crc32c(data))
    upload = await through_proxy.start_upload(KEY + ".multi")
    await upload.put_part(1, 0, data, crc32c.crc32c(data))
    await upload.complete()
    puts = [h for m, _, h in proxy.seen if m == "PUT"]
    assert [h["x-amz-content-sha256"] for h in puts] == ["UNSIGNED-PAYLOAD"] * 2
    expected = crc32c.crc32c(data).to_bytes(4, "big")
    assert {h["x-amz-checksum-crc32c"] for h in puts} == {base64.b64encode(expected).decode()}
    assert all("Expect" not in h for h in puts)  # no 100-continue round trip


async def test_server_errors_beyond_max_retries_are_storage_errors(
    proxy: FaultProxy, seaweed: SeaweedServer, bucket: str
) -> None:
    options = s3_options(seaweed, bucket, endpoint=proxy.endpoint, max_retries=1)
    proxy.faults = [Fault("HEAD", "status", 503, "SlowDown") for _ in range(3)]
    async with S3Storage(build_config(options)) as store:
        with pytest.raises(StorageError, match="kept failing"):
            await store.stat(KEY)
    assert len(proxy.seen) == 2  # max_retries=1: one request and one retry, no more


async def test_corrupt_part_is_rejected_by_the_server(
    through_proxy: S3Storage, proxy: FaultProxy
) -> None:
    upload = await through_proxy.start_upload(KEY)
    data = b"a" * 1000
    with pytest.raises(IntegrityError):
        await upload.put_part(1, 0, data, crc32c.crc32c(b"b" * 1000))
    await upload.abort()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_unreachable_endpoint_is_named(seaweed: SeaweedServer, bucket: str) -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    options = s3_options(seaweed, bucket, endpoint=endpoint, max_retries=0)
    async with S3Storage(build_config(options)) as store:
        with pytest.raises(StorageError, match=f"cannot connect to endpoint http://{endpoint}"):
            await store.check_bucket(write=True)


async def test_http_proxy_carries_the_requests(
    proxy: FaultProxy, seaweed: SeaweedServer, bucket: str
) -> None:
    options = s3_options(seaweed, bucket, http_proxy=proxy.endpoint)
    async with S3Storage(build_config(options)) as store:
        await store.put(KEY, b"via proxy", crc32c.crc32c(b"via proxy"))
        assert await store.get_range(KEY, 4, 9) == [b"proxy"]
    assert [(method, path.startswith(seaweed.endpoint)) for method, path, _ in proxy.seen] == [
        ("PUT", True),
        ("GET", True),
    ]


async def test_every_request_gets_all_its_retries(
    proxy: FaultProxy, seaweed: SeaweedServer, bucket: str
) -> None:
    # botocore's retry quota alone would allow 100 retries here (160 requests), not 120.
    options = s3_options(seaweed, bucket, endpoint=proxy.endpoint, max_retries=2)
    proxy.faults = [Fault("HEAD", "status", 500, "InternalError") for _ in range(180)]
    async with S3Storage(build_config(options)) as store:
        results = await asyncio.gather(
            *(store.stat(KEY) for _ in range(60)), return_exceptions=True
        )
    assert {str(r).rsplit(": ", 1)[-1] for r in results} == {
        "the server kept failing (500) after 3 attempts"
    }
    assert len(proxy.seen) == 180
