"""The lean S3 path (own SigV4 signing + http1) against SeaweedFS behind a fault proxy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import crc32c
import pytest
import uvloop
from aiohttp import web

from asyncplug.config import build_config
from asyncplug.errors import AccessDenied, InputError, IntegrityError, ObjectNotFound, StorageError
from asyncplug.storage import http1
from asyncplug.storage.s3 import S3Storage
from bench.seaweed import SeaweedServer
from tests.conftest import s3_options
from tests.integration.runner import make_plugin
from tests.integration.test_s3_faults import Fault, FaultProxy

KEY = "prod/cluster1/backups/20250101/20250101123456/gpbackup_0_20250101123456"


class CountingProxy(FaultProxy):
    """Also counts client connections, and can rewrite the next GET's Content-Range."""

    peers: set[object]
    bad_range: str = ""
    chunked: bool = False  # send the next GET's body with chunked encoding

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        self.peers.add(request.transport.get_extra_info("peername"))
        response = await super().handle(request)
        if request.method != "GET" or response.status != 206:
            return response
        if self.bad_range:
            response.headers["Content-Range"] = self.bad_range
            self.bad_range = ""
        if self.chunked and isinstance(response, web.Response):
            self.chunked = False
            headers = {k: v for k, v in response.headers.items() if k != "Content-Length"}
            stream = web.StreamResponse(status=206, headers=headers)
            stream.enable_chunked_encoding()
            await stream.prepare(request)
            assert isinstance(response.body, bytes)
            await stream.write(response.body)
            await stream.write_eof()
            return stream
        return response


@pytest.fixture
async def proxy(seaweed: SeaweedServer) -> AsyncIterator[CountingProxy]:
    server = CountingProxy(seaweed.endpoint)
    server.peers = set()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def store(
    proxy: CountingProxy, seaweed: SeaweedServer, bucket: str
) -> AsyncIterator[S3Storage]:
    options = s3_options(seaweed, bucket, endpoint=proxy.endpoint, max_retries=3)
    async with S3Storage(build_config(options)) as storage:
        assert isinstance(storage, S3Storage)
        storage.direct = S3Storage(build_config(s3_options(seaweed, bucket)))  # type: ignore[attr-defined]
        yield storage
        await storage.direct.close()  # type: ignore[attr-defined]


async def put(store: S3Storage, data: bytes) -> None:
    """Stored around the proxy (which would buffer big bodies)."""
    direct: S3Storage = store.direct  # type: ignore[attr-defined]
    await direct.put(KEY, data, crc32c.crc32c(data))


async def test_many_ranges_exact_over_few_connections(
    store: S3Storage, proxy: CountingProxy
) -> None:
    data = random.Random(1).randbytes(9 * 1024 * 1024 + 123)  # several http1 pieces
    await put(store, data)
    rng = random.Random(2)
    ranges = [(0, len(data)), (0, 1), (len(data) - 1, len(data))]
    ranges += [(n * 2**20 - 1, n * 2**20 + 1) for n in (1, 4)]  # across piece edges
    for _ in range(40):
        a, b = sorted(rng.sample(range(len(data) + 1), 2))
        ranges.append((a, b))
    proxy.peers.clear()
    results = await asyncio.gather(*(store.get_range(KEY, a, b) for a, b in ranges))
    for (a, b), chunks in zip(ranges, results, strict=True):
        assert b"".join(chunks) == data[a:b]
        assert all(isinstance(c, memoryview) for c in chunks)  # received in place
    gets = [m for m, _, _ in proxy.seen if m == "GET"]
    assert len(gets) == len(ranges)
    assert store.lean is not None
    pool = store.lean.pool
    assert pool is not None and pool.opened <= pool.size == 10  # max(6, 4) + 4 concurrent
    assert len(proxy.peers) == pool.opened
    assert all(c.response is None for idle in pool._idle.values() for c in idle)  # no body kept
    first = len(proxy.peers)
    for a, b in ranges[:10]:  # one at a time: one kept-alive connection serves them all
        assert b"".join(await store.get_range(KEY, a, b)) == data[a:b]
    assert len(proxy.peers) == first


async def test_content_range_mismatch_is_rejected(store: S3Storage, proxy: CountingProxy) -> None:
    await put(store, bytes(range(256)) * 100)
    proxy.bad_range = "bytes 11-20/25600"
    with pytest.raises(IntegrityError, match="Content-Range"):
        await store.get_range(KEY, 10, 20)
    assert b"".join(await store.get_range(KEY, 10, 20)) == bytes(range(10, 20))


async def test_chunked_body_falls_back_to_botocore(store: S3Storage, proxy: CountingProxy) -> None:
    data = random.Random(7).randbytes(100_000)
    await put(store, data)
    proxy.seen.clear()
    proxy.chunked = True
    assert b"".join(await store.get_range(KEY, 5, 90_000)) == data[5:90_000]
    agents = [h.get("User-Agent", "") for m, _, h in proxy.seen if m == "GET"]
    assert len(agents) == 2 and agents[0] == "asyncplug" and "Botocore" in agents[1]


@pytest.mark.parametrize(
    ("status", "code", "error", "gets"),
    [
        (404, "NoSuchKey", ObjectNotFound, 1),
        (403, "AccessDenied", AccessDenied, 1),
        (416, "InvalidRange", InputError, 1),
        (412, "PreconditionFailed", IntegrityError, 1),
        (503, "SlowDown", StorageError, 4),  # max_retries=3
        (500, "InternalError", StorageError, 4),
    ],
)
async def test_error_statuses_map_like_botocore(
    store: S3Storage,
    proxy: CountingProxy,
    status: int,
    code: str,
    error: type[Exception],
    gets: int,
) -> None:
    await put(store, b"x" * 1000)
    proxy.seen.clear()
    proxy.faults = [Fault("GET", "status", status, code) for _ in range(gets)]
    with pytest.raises(error) as raised:
        await store.get_range(KEY, 0, 1000)
    assert code in str(raised.value)
    assert len([m for m, _, _ in proxy.seen if m == "GET"]) == gets
    if status >= 500:
        assert f"after {gets} attempts" in str(raised.value)


async def test_transient_failures_are_retried(store: S3Storage, proxy: CountingProxy) -> None:
    data = random.Random(3).randbytes(500_000)
    await put(store, data)
    proxy.faults = [
        Fault("GET", "status", 503, "SlowDown"),
        Fault("GET", "reset"),
        Fault("GET", "cut"),
        Fault("GET", "status", 429, "TooManyRequests"),
    ]
    assert b"".join(await store.get_range(KEY, 7, 499_000)) == data[7:499_000]
    assert not proxy.faults


def test_data_calls_never_import_aiobotocore(seaweed: SeaweedServer, bucket: str) -> None:
    """A backup and a restore with static keys load neither aiobotocore nor aiohttp."""
    script = """
import asyncio, json, sys, crc32c
from asyncplug.config import build_config
from asyncplug.storage import open_storage

async def main(options):
    data = bytes(range(256)) * 40000
    five = 5 * 2**20
    async with open_storage(build_config(options)) as storage:
        await storage.put("k/single", data, crc32c.crc32c(data))
        upload = await storage.start_upload("k/multi", {"asyncplug-format": "raw"})
        await upload.put_part(1, 0, data[:five], crc32c.crc32c(data[:five]))
        await upload.put_part(2, five, data[five:], crc32c.crc32c(data[five:]))
        await upload.complete()
        info = await storage.stat("k/multi")
        assert info.size == len(data) and info.metadata == {"asyncplug-format": "raw"}, info
        assert b"".join(await storage.get_range("k/multi", 3, len(data))) == data[3:]
        assert b"".join(await storage.get_range("k/single", 0, 9)) == data[:9]
        aborted = await storage.start_upload("k/aborted")
        await aborted.abort()
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("aiobotocore", "aiohttp"))
    print(",".join(loaded) or "none")

asyncio.run(main(json.loads(sys.argv[1])))
"""
    options = json.dumps(s3_options(seaweed, bucket))
    result = subprocess.run(
        [sys.executable, "-c", script, options], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "none"


# Loaded only when needed: compression libraries, the crc32c package's version lookup
# (importlib.metadata), proxy support, the multipart XML escaper and aiobotocore.
NOT_AT_START = ("importlib.metadata", "zstandard", "lz4", "urllib.request", "xml", "aiobotocore")


def test_raw_backup_and_restore_import_only_what_they_use(
    seaweed: SeaweedServer, bucket: str, write_config: Callable[..., str], tmp_path: Path
) -> None:
    """Start-up is most of the cost of a small restore (one process per table without
    --single-data-file): the real commands must not import what a raw stream never uses."""
    plugin = make_plugin(s3_options(seaweed, bucket), write_config, tmp_path)
    key = "/backups/20250101/20250101123456/gpbackup_0_20250101123456_16384"
    data = bytes(range(256)) * 4100  # over restore.SPLICE_MIN: restore_data splices it
    offsets = tmp_path / "offsets"
    offsets.write_text("2 10 20 300 400")
    runs = [("backup_data", key), ("restore_data", key), ("restore_data_subset", key, str(offsets))]
    for command, *args in runs:
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "asyncplug", command, plugin.config, *args],
            input=data if command == "backup_data" else b"",
            capture_output=True,
            env=plugin.env,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        if command == "restore_data":
            assert proc.stdout == data
        imported = {
            line.rsplit("|", 1)[1].strip()
            for line in proc.stderr.decode().splitlines()
            if line.startswith("import time:") and "|" in line
        }
        assert "asyncplug.pipeline.frames" in imported  # the parse found the imports
        unwanted = sorted(m for m in imported if m.startswith(NOT_AT_START))
        assert not unwanted, f"{command} imported {unwanted}"
        # The splice path (ctypes, libc) loads only for a whole restore it can serve.
        spliced = command == "restore_data"
        assert ("asyncplug.pipeline.splice" in imported) == spliced, command


async def test_silent_server_times_out(seaweed: SeaweedServer, bucket: str) -> None:
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read(65536)  # and never answer

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    options = s3_options(
        seaweed, bucket, endpoint=f"127.0.0.1:{port}", max_retries=0, request_timeout=0.3
    )
    try:
        async with S3Storage(build_config(options)) as storage:
            with pytest.raises(StorageError, match=r"timed out waiting for http://127\.0\.0\.1"):
                await storage.get_range(KEY, 0, 10)
    finally:
        server.close()
        for writer in writers:
            writer.close()
            await writer.wait_closed()


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for localhost (and its key) made with openssl."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key),
         "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_lean_path_over_tls_trusts_aws_ca_bundle(
    seaweed: SeaweedServer, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Multipart upload, stat and ranged reads over https, verified against AWS_CA_BUNDLE."""
    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    proxy = await FaultProxy(seaweed.endpoint).start(server_tls)
    data = random.Random(6).randbytes(6 * 1024 * 1024 + 11)
    five = 5 * 1024 * 1024
    try:
        options = s3_options(seaweed, bucket, endpoint=proxy.endpoint)
        monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
        async with S3Storage(build_config(options)) as untrusted:
            with pytest.raises(StorageError, match=r"TLS certificate of localhost:.* not trusted"):
                await untrusted.stat(KEY)
        monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))
        async with S3Storage(build_config(options)) as store:
            assert store.lean is not None
            upload = await store.start_upload(KEY, {"asyncplug-format": "raw"})
            await upload.put_part(1, 0, data[:five], crc32c.crc32c(data[:five]))
            await upload.put_part(2, five, data[five:], crc32c.crc32c(data[five:]))
            await upload.complete()
            assert (await store.stat(KEY)).size == len(data)
            assert b"".join(await store.get_range(KEY, 9, len(data))) == data[9:]
        agents = {h.get("User-Agent") for _, _, h in proxy.seen}
        assert agents == {"asyncplug"}  # every call took the lean path
    finally:
        await proxy.stop()


def test_credentials_decide_the_path(
    seaweed: SeaweedServer, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Static keys (config or environment) and the credential chain (here a shared
    credentials file, resolved by botocore) take the lean path; proxies take aiobotocore."""
    options = s3_options(seaweed, bucket)
    keys = {k: options.pop(k) for k in ("aws_access_key_id", "aws_secret_access_key")}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    shared = tmp_path / "credentials"
    shared.write_text(
        f"[default]\naws_access_key_id = {keys['aws_access_key_id']}\n"
        f"aws_secret_access_key = {keys['aws_secret_access_key']}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))

    async def round_trip(store: S3Storage) -> None:
        async with store:
            await store.put(KEY, b"chain", crc32c.crc32c(b"chain"))
            assert b"".join(await store.get_range(KEY, 1, 5)) == b"hain"

    chain = S3Storage(build_config(options))
    assert chain.lean is not None and chain.lean.chain is not None
    asyncio.run(round_trip(chain))
    assert chain._boto is None and chain.lean.chain.method == "shared-credentials-file"

    assert S3Storage(build_config({**options, **keys})).lean is not None
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys["aws_secret_access_key"])
    assert S3Storage(build_config(options)).lean is not None
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    assert S3Storage(build_config(options)).lean is None


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_buffered_protocol_over_tls(tmp_path: Path, loop_name: str) -> None:
    """Bodies received in place and connections kept alive over each loop's SSL transport."""
    cert, key = self_signed(tmp_path)
    body = random.Random(4).randbytes(3 * 1024 * 1024 + 5)

    served: list[asyncio.Task[None]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.append(asyncio.current_task())  # type: ignore[arg-type]
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(head + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    async def scenario() -> int:
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_tls.load_cert_chain(cert, key)
        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_tls)
        port = server.sockets[0].getsockname()[1]
        pool = http1.Pool(2, 5.0, lambda: ssl.create_default_context(cafile=str(cert)))
        target = http1.Target.of(f"https://localhost:{port}/b/k?x=1")
        try:
            for _ in range(3):
                response, conn = await pool.request(
                    "GET", target, "", lambda r: int(r.headers["content-length"])
                )
                pool.release(target, conn, response)
                assert response.status == 200 and b"".join(response.body()) == body
            return pool.opened
        finally:
            pool.close()
            server.close()
            await asyncio.wait(served)  # each handler sees the close and closes its end

    loop = uvloop.new_event_loop() if loop_name == "uvloop" else asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(scenario()) == 1  # one connection, kept alive
    finally:
        loop.close()


async def test_recycled_pieces_take_the_next_reads(store: S3Storage) -> None:
    data = random.Random(5).randbytes(3 * 1024 * 1024 + 7)
    await put(store, data)
    first = await store.get_range(KEY, 0, len(data))
    pieces = [view.obj for view in first if isinstance(view, memoryview)]
    assert b"".join(first) == data and len(pieces) == 4
    store.recycle(first)
    store.recycle(first)  # twice: kept once, or two reads would share a piece
    assert store.lean is not None and len(store.lean.pool.spare) == 3  # full pieces only
    second = await store.get_range(KEY, 1, len(data))
    assert b"".join(second) == data[1:]
    reused = [view.obj for view in second if isinstance(view, memoryview)]
    assert {id(p) for p in reused[:3]} == {id(p) for p in pieces[:3]}
    assert not store.lean.pool.spare
