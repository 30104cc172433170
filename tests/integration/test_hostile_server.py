"""The lean S3 path against a hostile server: a small S3 of our own on 127.0.0.1 that
misbehaves one way per case, driven through the real executable. Each case ends with one
`asyncplug: ` line on stderr, no traceback, the documented exit code, nothing on stdout,
well within the subprocess timeout (request_timeout, connect_timeout: 1 s; 2 attempts)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import crc32c
import pytest

from tests.integration.runner import Plugin, make_plugin, one_line_error

BUCKET = "hostile"
FOLDER = "prod/cluster1"
KEY = "/backups/20250101/20250101123456/gpbackup_0_20250101123456"
OBJECT = f"/{BUCKET}/{FOLDER}{KEY}"
DATA = bytes(range(256)) * 400  # 102,400 bytes: one GET, one PUT
STALL = 300.0  # seconds a misbehaving server holds on at most: past the runner's timeout

# A misbehaviour: gets the connection and the answer a good server would send; returns
# whether the connection goes on serving.
Misbehaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[bool]]


@dataclass
class HostileS3:
    """Path-style S3 in memory (PUT, multipart, HEAD, ranged GET), plus `misbehave`."""

    objects: dict[str, tuple[bytes, dict[str, str]]] = field(default_factory=dict)
    parts: dict[str, dict[int, bytes]] = field(default_factory=dict)
    misbehave: dict[str, Misbehaviour] = field(default_factory=dict)  # method -> how
    seen: list[tuple[str, str]] = field(default_factory=list)
    endpoint: str = ""
    _server: asyncio.Server | None = None

    async def start(self) -> HostileS3:
        self._server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        self.endpoint = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                lines = head.split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.seen.append((method, target))
                answer = self.answer(method, target, headers, body)
                how = self.misbehave.get(method)
                if how is not None and not await how(reader, writer, answer):
                    return
                if how is None:
                    writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # the client went away
        finally:
            writer.close()

    def answer(self, method: str, target: str, headers: dict[str, str], body: bytes) -> bytes:
        path, _, query = target.partition("?")
        params = dict(p.partition("=")[::2] for p in query.split("&") if p)
        if method == "PUT" and "uploadId" in params:
            self.parts.setdefault(path, {})[int(params["partNumber"])] = body
            return response(200, etag=etag(body))
        if method == "PUT":
            meta = {k: v for k, v in headers.items() if k.startswith("x-amz-meta-")}
            self.objects[path] = (body, meta)
            return response(200, etag=etag(body))
        if method == "POST" and "delete" in params:  # DeleteObjects (aiobotocore)
            for key in re.findall(r"<Key>([^<]*)</Key>", body.decode()):
                self.objects.pop(f"/{BUCKET}/{key}", None)
            return response(200, b"<DeleteResult></DeleteResult>")
        if method == "POST" and "uploads" in params:
            xml = b"<UploadId>u1</UploadId>"
            return response(
                200, b"<InitiateMultipartUploadResult>" + xml + b"</InitiateMultipartUploadResult>"
            )
        if method == "POST":
            parts = self.parts.pop(path, {})
            self.objects[path] = (b"".join(parts[n] for n in sorted(parts)), {})
            return response(200, b"<CompleteMultipartUploadResult/>")
        if method == "DELETE":
            return response(204)
        if path not in self.objects:
            return response(
                404, b"<Error><Code>NoSuchKey</Code></Error>" if method == "GET" else b""
            )
        data, meta = self.objects[path]
        if method == "HEAD":
            return response(200, length=len(data), etag=etag(data), **meta)
        first, last = (int(n) for n in headers["range"].split("=")[1].split("-"))
        last = min(last, len(data) - 1)
        piece = data[first : last + 1]
        span = f"bytes {first}-{last}/{len(data)}"
        return response(206, piece, etag=etag(data), **{"content-range": span})


def etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def response(status: int, body: bytes = b"", length: int | None = None, **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers.items()]
    if status != 204:
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# --- misbehaviours ------------------------------------------------------------------


def send(raw: bytes, then: str = "close") -> Misbehaviour:
    """Send `raw` instead of the answer; then close, or hold the connection open."""

    async def act(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: bytes) -> bool:
        writer.write(raw)
        await writer.drain()
        if then == "hold":  # until the client goes away
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(reader.read(), STALL)
        return False

    return act


def before(raw: bytes) -> Misbehaviour:
    """Send `raw`, then the real answer, and go on serving."""

    async def act(_: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: bytes) -> bool:
        writer.write(raw + answer)
        return True

    return act


def edit(change: Callable[[bytes], bytes], then: str = "close") -> Misbehaviour:
    """Send the real answer changed by `change`."""

    async def act(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: bytes
    ) -> bool:
        return await send(change(answer), then)(reader, writer, answer)

    return act


async def endless_head(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: bytes
) -> bool:
    """A status line, then a header line every 50 ms: the head never ends."""
    writer.write(b"HTTP/1.1 206 Partial Content\r\n")
    for number in range(int(STALL / 0.05)):
        await asyncio.sleep(0.05)
        if reader.at_eof():
            break
        writer.write(b"X-Pad-%d: a\r\n" % number)
        await writer.drain()
    return False


def stall_after_head(answer: bytes) -> bytes:
    return answer.split(b"\r\n\r\n")[0] + b"\r\n\r\n"


def short_body(answer: bytes) -> bytes:
    return answer[: len(answer) - 1000]


def wrong_range(answer: bytes) -> bytes:
    return re.sub(rb"content-range: bytes (\d+)", rb"content-range: bytes 1\1", answer)


def header(line: bytes) -> Callable[[bytes], bytes]:
    """Insert a header line (its CRLF included) after the status line."""
    return lambda answer: answer.replace(b"\r\n", b"\r\n" + line, 1)


def status(text: bytes) -> Callable[[bytes], bytes]:
    return lambda answer: re.sub(rb"^HTTP/1.1 \d+", b"HTTP/1.1 " + text, answer)


def error(status: int, code: str, region: str = "eu-west-1") -> bytes:
    xml = f"<Error><Code>{code}</Code><Message>x</Message></Error>".encode()
    return response(status, xml, **{"x-amz-bucket-region": region})


CHUNKED_200 = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
CHUNKED_206 = (
    b"HTTP/1.1 206 Partial Content\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Range: bytes 0-102399/102400\r\n\r\n"
)

BACKUP_CASES: dict[str, tuple[Misbehaviour, int]] = {
    "chunk-size-negative": (send(CHUNKED_200 + b"-6\r\nabcdef\r\n0\r\n\r\n", "hold"), 5),
    "chunk-size-huge": (send(CHUNKED_200 + b"ffffffffffffffffffffff\r\n", "hold"), 5),
    "chunk-size-not-hex": (send(CHUNKED_200 + b"zz\r\nabc\r\n0\r\n\r\n", "hold"), 5),
    "many-interim-1xx": (send(CONTINUE * 20 + response(200), "hold"), 5),
    "200-with-error-document": (send(error(200, "InternalError")), 5),
    "301-bucket-region": (send(error(301, "PermanentRedirect")), 3),
    "307-bucket-region": (send(error(307, "TemporaryRedirect")), 3),
    "400-bucket-region": (send(error(400, "AuthorizationHeaderMalformed")), 3),
}
RESTORE_CASES: dict[str, tuple[Misbehaviour, int]] = {
    "content-length-conflict": (edit(header(b"Content-Length: 7\r\n")), 5),
    "status-2000": (edit(status(b"2000")), 5),
    "status-20": (edit(status(b"20")), 5),
    "status--1": (edit(status(b"-1")), 5),
    "obs-fold": (edit(header(b"X-Folded: a\r\n b\r\n")), 5),
    "space-before-colon": (edit(header(b"X-Space : a\r\n")), 5),
    "bare-lf": (edit(lambda answer: answer.replace(b"\r\n", b"\n")), 5),
    "cr-lf-in-etag": (edit(header(b'ETag: "a\nIf-Match: b"\r\n')), 5),
    "head-never-ends": (endless_head, 5),
    "body-short-then-close": (edit(short_body), 5),
    "stall-after-head": (edit(stall_after_head, "hold"), 5),
    "content-range-mismatch": (edit(wrong_range), 8),
    # A chunked GET body goes to aiobotocore (http1 takes Content-Length bodies only).
    "chunked-get-negative-size": (send(CHUNKED_206 + b"-6\r\nabcdef\r\n0\r\n\r\n", "hold"), 5),
}


@pytest.fixture
async def hostile() -> AsyncIterator[HostileS3]:
    server = await HostileS3().start()
    yield server
    await server.stop()


def plugin_for(endpoint: str, write_config: Any, tmp_path: Path, **extra: Any) -> Plugin:
    options = {
        "endpoint": endpoint,
        "encryption": "off",
        "bucket": BUCKET,
        "folder": FOLDER,
        "aws_access_key_id": "hostile",
        "aws_secret_access_key": "hostile-secret",
        "request_timeout": 1,
        "connect_timeout": 1,
        "max_retries": 1,
        **extra,
    }
    return make_plugin(options, write_config, tmp_path)


async def run(plugin: Plugin, *args: str, stdin: bytes = b"") -> Any:
    """Run the executable off the event loop (the server shares it)."""
    return await asyncio.to_thread(lambda: plugin(*args, stdin=stdin, check=False))


def store_object(server: HostileS3) -> None:
    """DATA as backup_data stores a small raw stream (restore_data then tries the splice
    path first, then the regular one)."""
    meta = {
        "x-amz-meta-asyncplug-format": "raw",
        "x-amz-meta-asyncplug-crc32c": f"{crc32c.crc32c(DATA):08x}",
        "x-amz-meta-asyncplug-size": str(len(DATA)),
    }
    server.objects[OBJECT] = (DATA, meta)


async def test_a_good_server_round_trip(
    hostile: HostileS3, write_config: Any, tmp_path: Path
) -> None:
    """The baseline the cases below break one way each."""
    plugin = plugin_for(hostile.endpoint, write_config, tmp_path, request_timeout=10)
    assert (await run(plugin, "backup_data", data_key(), stdin=DATA)).returncode == 0
    assert hostile.objects[OBJECT][0] == DATA
    restored = await run(plugin, "restore_data", data_key())
    assert restored.returncode == 0 and restored.stdout == DATA


def data_key() -> str:
    return f"/data/gpseg0/backups/20250101/20250101123456/{KEY.rsplit('/', 1)[1]}"


def check_failure(proc: Any, code: int) -> str:
    """The documented exit code, one line; on stdout at most the first bytes of DATA (a
    restore writes what it had before the failure: gprestore fails on the exit code)."""
    assert proc.returncode == code, proc.stderr
    assert DATA.startswith(proc.stdout)
    return one_line_error(proc)


@pytest.mark.parametrize("case", BACKUP_CASES)
async def test_backup_against_a_hostile_server(
    hostile: HostileS3, write_config: Any, tmp_path: Path, case: str
) -> None:
    misbehaviour, code = BACKUP_CASES[case]
    hostile.misbehave["PUT"] = misbehaviour
    plugin = plugin_for(hostile.endpoint, write_config, tmp_path)
    message = check_failure(await run(plugin, "backup_data", data_key(), stdin=DATA), code)
    if code == 3:
        assert "region" in message
    puts = [method for method, _ in hostile.seen if method == "PUT"]
    # 2 attempts (max_retries: 1), no more; a region error is followed once (the same
    # server answers it again: then reported)
    assert len(puts) == 2


@pytest.mark.parametrize("case", RESTORE_CASES)
async def test_restore_against_a_hostile_server(
    hostile: HostileS3, write_config: Any, tmp_path: Path, case: str
) -> None:
    misbehaviour, code = RESTORE_CASES[case]
    store_object(hostile)
    hostile.misbehave["GET"] = misbehaviour
    plugin = plugin_for(hostile.endpoint, write_config, tmp_path)
    check_failure(await run(plugin, "restore_data", data_key()), code)
    gets = [target for method, target in hostile.seen if method == "GET"]
    # The splice path's try, then 2 attempts at most (of each path, for a chunked body).
    assert 1 <= len(gets) <= (4 if case.startswith("chunked") else 3)


async def test_a_redirect_of_the_head_request_names_the_region_problem(
    hostile: HostileS3, write_config: Any, tmp_path: Path
) -> None:
    store_object(hostile)
    hostile.misbehave["HEAD"] = send(response(301, length=0, **{"x-amz-bucket-region": "x"}))
    plugin = plugin_for(hostile.endpoint, write_config, tmp_path)
    message = check_failure(await run(plugin, "restore_data", data_key()), 3)
    assert "region" in message


async def test_an_unsolicited_100_continue_is_skipped(
    hostile: HostileS3, write_config: Any, tmp_path: Path
) -> None:
    hostile.misbehave["PUT"] = before(CONTINUE)
    plugin = plugin_for(hostile.endpoint, write_config, tmp_path, request_timeout=10)
    proc = await run(plugin, "backup_data", data_key(), stdin=DATA)
    assert proc.returncode == 0, proc.stderr
    assert hostile.objects[OBJECT][0] == DATA
    # no retry was needed: one PUT of the object, one of its block index
    assert [(m, t.endswith(".asyncplug-idx")) for m, t in hostile.seen] == [
        ("PUT", False),
        ("PUT", True),
    ]


@contextlib.contextmanager
def black_hole() -> Iterator[str]:
    """An endpoint whose connections never open: a listening socket whose accept queue is
    full, so the kernel drops every new SYN (as a firewall that drops packets does)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for sock in (*fillers, server):
            sock.close()


async def test_a_dead_endpoint_fails_within_the_bound(write_config: Any, tmp_path: Path) -> None:
    """With 50 retries the attempts alone would take minutes (connect_timeout each, plus
    backoffs up to 20 s); the dead-host rule ends them after 6 connect timeouts."""
    with black_hole() as endpoint:
        plugin = plugin_for(endpoint, write_config, tmp_path, connect_timeout=0.3, max_retries=50)
        proc = await run(plugin, "restore_data", data_key())
    message = check_failure(proc, 5)
    assert "no connection for 1.8 s" in message and "cannot connect to endpoint" in message


async def test_a_dead_endpoint_fails_within_the_bound_on_aiobotocore(
    write_config: Any, tmp_path: Path
) -> None:
    """The listing goes through aiobotocore: the same dead-host rule ends its retries
    (without it, 51 attempts of 0.3 s plus backoffs up to 20 s: past the runner's 120 s)."""
    with black_hole() as endpoint:
        plugin = plugin_for(endpoint, write_config, tmp_path, connect_timeout=0.3, max_retries=50)
        proc = await run(plugin, "list_directory")
    assert "connecting" in check_failure(proc, 5)


@pytest.mark.parametrize("case", ["head-never-ends", "stall-after-head", "status-2000"])
async def test_the_splice_path_hands_over_within_its_bound(hostile: HostileS3, case: str) -> None:
    """restore's zero-copy path (its own sockets) stops at the first byte it cannot take:
    a head that never ends has a deadline there too."""
    from asyncplug.pipeline import splice
    from asyncplug.storage.base import HttpSource

    store_object(hostile)
    hostile.misbehave["GET"] = RESTORE_CASES[case][0]
    port = int(hostile.endpoint.rsplit(":", 1)[1])

    def request(start: int, end: int, etag: str | None) -> bytes:
        return f"GET {OBJECT} HTTP/1.1\r\nRange: bytes={start}-{end - 1}\r\n\r\n".encode()

    read, write = os.pipe()
    try:
        splicer = splice.Splicer(
            HttpSource("127.0.0.1", port, request, 0.5), write, len(DATA), 1, 0.5, False
        )
        try:
            reached = await asyncio.wait_for(
                asyncio.to_thread(splicer.run, 0, len(DATA)), STALL / 5
            )
        finally:
            splicer.stopped.set()
        assert reached == 0
    finally:
        os.close(read)
        os.close(write)
