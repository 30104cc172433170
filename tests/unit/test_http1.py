"""http1: chunked bodies, request bodies from buffers, early answers, and s3lean's reading
of responses, against small local servers."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import botocore.exceptions as bce
import pytest

from asyncplug.storage import http1, httphead, s3lean

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def no_tls() -> ssl.SSLContext:
    raise AssertionError("no TLS here")


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[http1.Target]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> http1.Target:
        async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass  # the client went away
            finally:
                writer.close()

        server = await asyncio.start_server(closing, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return http1.Target.of(f"http://127.0.0.1:{port}/bucket/key?uploadId=1")

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()
    await asyncio.sleep(0.01)  # let the handlers' closes run


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


def whole(response: http1.Response) -> int:
    return int(response.headers.get("content-length", "0"))


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def dechunk(raw: bytes) -> bytes | None:
    """The body of a whole chunked encoding, None while incomplete."""
    parser = httphead.ResponseParser()
    head = bytearray(CHUNKED_HEAD)
    assert parser.feed_head(head, len(head)) == len(head)
    return bytes(parser.body) if parser.feed_body(raw) else None


@pytest.mark.parametrize(
    ("raw", "body"),
    [
        (b"0\r\n\r\n", b""),
        (b"3\r\nabc\r\n0\r\n\r\n", b"abc"),
        (b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", b"abcde"),
        (b"1\r\n \r\nA\r\n<a>x</a>  \r\n0\r\nTrailer: t\r\n\r\n", b" <a>x</a>  "),
        (b"3\r\nab", None),
        (b"3\r\nabc\r\n0\r\n", None),
        (b"", None),
    ],
)
def test_dechunk(raw: bytes, body: bytes | None) -> None:
    assert dechunk(raw) == body


async def test_chunked_answer_arrives_whole(
    serve: Callable[[Handler], Awaitable[http1.Target]],
) -> None:
    """CompleteMultipartUpload's way: 200 at once, whitespace while working, then the XML."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n \r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"F\r\n<Done>ok</Done>\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    target = await serve(handler)
    pool = http1.Pool(2, 5.0, no_tls)
    response, conn = await pool.request(
        "POST", target, "", s3lean._small_sink("POST"), memoryview(b"<x/>")
    )
    pool.release(target, conn, response)
    assert response.status == 200 and b"".join(response.body()) == b" <Done>ok</Done>"
    assert s3lean._error_in(response) is None
    pool.close()


async def test_a_big_body_goes_out_whole_and_the_connection_is_kept(
    serve: Callable[[Handler], Awaitable[http1.Target]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                _, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            digest = hashlib.sha256(body).hexdigest().encode()
            writer.write(b'HTTP/1.1 200 OK\r\nETag: "%s"\r\nContent-Length: 0\r\n\r\n' % digest)
            await writer.drain()

    target = await serve(handler)
    pool = http1.Pool(2, 5.0, no_tls)
    data = bytearray(range(256)) * (8 * 4096 + 3)  # 8 MiB and a bit: many socket writes
    for _ in range(2):
        response, conn = await pool.request("PUT", target, "", whole, memoryview(data))
        pool.release(target, conn, response)
        assert response.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert pool.opened == 1
    pool.close()


async def test_an_answer_before_the_body_is_sent_drops_the_connection(
    serve: Callable[[Handler], Awaitable[http1.Target]],
) -> None:
    """A server may refuse (403, 400) before reading the body: that connection is not reused,
    so no request can follow the unsent rest of a body."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        error = b"<Error><Code>AccessDenied</Code></Error>"
        writer.write(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\n\r\n%s" % (len(error), error)
        )
        await writer.drain()
        await asyncio.sleep(1)  # read nothing more: the client's send buffer fills
        writer.close()

    target = await serve(handler)
    pool = http1.Pool(2, 5.0, no_tls)
    data = memoryview(bytes(64 * 1024 * 1024))
    response, conn = await pool.request("PUT", target, "", s3lean._small_sink("PUT"), data)
    pool.release(target, conn, response)
    assert response.status == 403 and s3lean._error_in(response) == "AccessDenied"
    assert conn.lost and not any(pool._idle.values())
    pool.close()


def make_response(status: int, body: bytes, **headers: str) -> http1.Response:
    response = http1.Response(status, headers)
    response.pieces = [bytearray(body)]
    response.received = len(body)
    return response


def test_error_in_reads_codes_and_200_errors() -> None:
    assert s3lean._error_in(make_response(200, b"<Result/>")) is None
    assert s3lean._error_in(make_response(204, b"")) is None
    failed = make_response(200, b" \n<Error><Code>InternalError</Code></Error>")
    assert s3lean._error_in(failed) == "InternalError"
    assert s3lean._error_in(make_response(200, b"<Error></Error>")) == "InternalError"
    assert (
        s3lean._error_in(make_response(503, b"<Error><Code>SlowDown</Code></Error>")) == "SlowDown"
    )
    assert s3lean._error_in(make_response(404, b"")) == "404"
    cut = make_response(200, b"<Res")
    cut.error = bce.ConnectionClosedError(endpoint_url="")
    assert s3lean._error_in(cut) == "IncompleteBody"


@pytest.mark.parametrize(
    ("method", "status", "headers", "want"),
    [
        ("HEAD", 200, {"content-length": "1073741824"}, 0),
        ("DELETE", 204, {}, 0),
        ("POST", 200, {"transfer-encoding": "chunked"}, http1.CHUNKED),
        ("POST", 200, {"content-length": "300"}, 300),
        ("PUT", 500, {"content-length": str(10**9)}, http1.ERROR_BODY_LIMIT),
        ("PUT", 400, {}, 0),
    ],
)
def test_small_sink(method: str, status: int, headers: dict[str, str], want: int) -> None:
    assert s3lean._small_sink(method)(http1.Response(status, headers)) == want


@pytest.mark.parametrize("headers", [{}, {"content-length": str(10**9)}])
def test_small_sink_refuses_what_it_cannot_take(headers: dict[str, str]) -> None:
    with pytest.raises(http1.Unsupported):
        s3lean._small_sink("POST")(http1.Response(200, headers))


async def test_interim_responses_before_the_answer_are_skipped(
    serve: Callable[[Handler], Awaitable[http1.Target]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n")
            await writer.drain()
            writer.write(b'HTTP/1.1 200 OK\r\nETag: "e"\r\nContent-Length: 0\r\n\r\n')

    target = await serve(handler)
    pool = http1.Pool(2, 5.0, no_tls)
    for _ in range(2):  # and the connection is kept
        response, conn = await pool.request("PUT", target, "", whole, memoryview(b"x" * 10))
        pool.release(target, conn, response)
        assert response.status == 200 and response.headers["etag"] == '"e"'
    assert pool.opened == 1
    pool.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-6\r\nabcdef\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n" * 9 + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    ],
    ids=["negative-chunk", "nine-interim", "status-2000"],
)
async def test_a_malformed_response_drops_the_connection(
    serve: Callable[[Handler], Awaitable[http1.Target]], answer: bytes
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        await reader.read()

    target = await serve(handler)
    pool = http1.Pool(2, 5.0, no_tls)
    try:
        response, conn = await pool.request("POST", target, "", s3lean._small_sink("POST"))
    except http1.MalformedResponse:
        pass  # refused in the head
    else:
        pool.release(target, conn, response)  # refused in the body: the response says so
        assert isinstance(response.error, http1.MalformedResponse) and conn.lost
    assert not any(pool._idle.values())
    pool.close()


async def test_a_request_body_nobody_reads_times_out(
    serve: Callable[[Handler], Awaitable[http1.Target]],
) -> None:
    """Every write has a deadline: a server that takes the head and then reads nothing."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.transport.pause_reading()  # type: ignore[attr-defined]
        await reader.read()  # returns when the client drops the connection

    target = await serve(handler)
    pool = http1.Pool(2, 0.3, no_tls)
    with pytest.raises(bce.ReadTimeoutError):
        await pool.request("PUT", target, "", whole, memoryview(bytes(64 * 1024 * 1024)))
    pool.close()


async def test_a_host_no_connection_reaches_is_given_up() -> None:
    """Connections that keep failing (refused here) for 6 connect timeouts: Unreachable,
    which s3lean does not retry."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    target = http1.Target.of(f"http://127.0.0.1:{port}/b/k")
    pool = http1.Pool(2, 5.0, no_tls, connect_timeout=0.05)
    failures = 0
    for _ in range(1000):
        try:
            await pool.request("GET", target, "", whole)
        except http1.Unreachable as exc:
            assert "for 0.3 s" in str(exc)
            break
        except bce.EndpointConnectionError:
            failures += 1
            await asyncio.sleep(0.02)
    assert 2 <= failures < 1000
    pool.close()
