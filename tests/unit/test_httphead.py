"""httphead: the strict response parser both HTTP clients use (heads, interim 1xx, chunked
bodies), with a hypothesis fuzz test: it ends on any input and raises only ProtocolError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncplug.storage.httphead import (
    CHUNKED_LIMIT,
    HEAD_LIMIT,
    MAX_INTERIM,
    ProtocolError,
    ResponseParser,
    parse_head,
)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def feed(data: bytes) -> tuple[ResponseParser, int]:
    """Feed a response head to a parser the way http1 does: the whole buffer so far."""
    buffer = bytearray(HEAD_LIMIT)
    buffer[: len(data)] = data
    parser = ResponseParser()
    return parser, parser.feed_head(buffer, len(data))


def test_a_head_is_parsed() -> None:
    parser, end = feed(OK + b"abc")
    assert end == len(OK) and parser.status == 200 and parser.reusable
    assert parser.headers == {"content-length": "3"}


def test_the_head_may_arrive_a_byte_at_a_time() -> None:
    data = b'HTTP/1.1 206 Partial\r\nETag: "e"\r\nContent-Length: 0\r\n\r\n'
    buffer = bytearray(HEAD_LIMIT)
    parser = ResponseParser()
    ends = []
    for fill in range(1, len(data) + 1):
        buffer[fill - 1] = data[fill - 1]
        ends.append(parser.feed_head(buffer, fill))
    assert ends == [-1] * (len(data) - 1) + [len(data)]
    assert parser.status == 206 and parser.headers["etag"] == '"e"'


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 -1 OK\r\n\r\n",
        b"HTTP/1.1 099 Low\r\n\r\n",
        b"HTTP/1.1 600 High\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\r\n folded\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        b'HTTP/1.1 200 OK\r\nETag: "a\nIf-Match: x"\r\nContent-Length: 0\r\n\r\n',
        b"HTTP/1.1 200 OK\r\nETag: a\rb\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nETag: a\x00b\r\nContent-Length: 0\r\n\r\n",
        b'HTTP/1.1 200 OK\r\nETag: "a b"\r\nContent-Length: 0\r\n\r\n',
        b'HTTP/1.1 200 OK\r\nETag: "a"\r\nETag: "b"\r\nContent-Length: 0\r\n\r\n',
        b"HTTP/1.1 200 OK\r\n: x\r\nContent-Length: 0\r\n\r\n",
        b"http/1.1 200 OK\r\n\r\n",
        b"\r\n\r\n",
    ],
    ids=lambda head: head.split(b"\r\n\r\n")[0][-40:].decode("latin-1"),
)
def test_a_head_that_breaks_the_rules_is_refused(head: bytes) -> None:
    with pytest.raises(ProtocolError):
        feed(head)
    with pytest.raises(ProtocolError):  # the splice path's entry
        parse_head(head.split(b"\r\n\r\n")[0])


def test_a_bare_lf_is_refused_before_the_head_ends() -> None:
    with pytest.raises(ProtocolError):
        feed(b"HTTP/1.1 200 OK\nContent-Length: 3\n")


def test_interim_responses_are_skipped_up_to_a_limit() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    processing = b"HTTP/1.1 102 Processing\r\nX: y\r\n\r\n"
    parser, end = feed(interim + processing + OK)
    assert end == len(interim) + len(processing) + len(OK)
    assert parser.status == 200 and parser.interim == 2 and "x" not in parser.headers
    parser, end = feed(interim)
    assert end == -1 and parser.interim == 1
    with pytest.raises(ProtocolError, match="interim"):
        feed(interim * (MAX_INTERIM + 1) + OK)
    with pytest.raises(ProtocolError):
        parse_head(interim[:-4])  # the splice path takes a final head only


def test_a_head_has_a_size_limit() -> None:
    line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    data = b"HTTP/1.1 200 OK\r\n" + line * (HEAD_LIMIT // len(line))
    buffer = bytearray(HEAD_LIMIT)
    buffer[:] = data[:HEAD_LIMIT]
    with pytest.raises(ProtocolError, match="over"):
        ResponseParser().feed_head(buffer, HEAD_LIMIT)


def test_keep_alive() -> None:
    assert parse_head(b"HTTP/1.1 204 No Content")[2]
    assert not parse_head(b"HTTP/1.1 204 No Content\r\nConnection: close")[2]
    assert not parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0")[2]


def chunked(parser: ResponseParser) -> None:
    head = bytearray(CHUNKED)
    assert parser.feed_head(head, len(head)) == len(head)


@pytest.mark.parametrize(
    "body",
    [
        b"-6\r\nabcdef\r\n0\r\n\r\n",  # moved dechunk backwards, for ever
        b"zz\r\nabc\r\n0\r\n\r\n",
        b"0x3\r\nabc\r\n0\r\n\r\n",
        b"+3\r\nabc\r\n0\r\n\r\n",
        b"3 \r\nabc\r\n0\r\n\r\n",
        b"ffffffffffffffffffffff\r\n",
        b"3\nabc\n0\n\n",
        b"3\r\nabcX0\r\n\r\n",
    ],
)
def test_a_bad_chunk_is_refused(body: bytes) -> None:
    parser = ResponseParser()
    chunked(parser)
    with pytest.raises(ProtocolError):
        parser.feed_body(body)


def test_a_chunked_body_has_a_size_limit() -> None:
    parser = ResponseParser()
    chunked(parser)
    assert not parser.feed_body(b"fffffffffff\r\n")  # a size that fits 64 bits: wait...
    with pytest.raises(ProtocolError, match="over"):  # ...but not beyond the limit
        parser.feed_body(bytes(CHUNKED_LIMIT))


def test_bytes_after_a_chunked_body_are_noticed() -> None:
    parser = ResponseParser()
    chunked(parser)
    assert parser.feed_body(b"1\r\nx\r\n0\r\n\r\n")
    assert not parser.trailing
    parser.feed_body(b"HTTP/1.1 200 OK\r\n")
    assert parser.trailing and parser.body == b"x"


TOKENS = [
    *(b"HTTP/1.1 ", b"200 OK", b"100 Continue", b"\r\n", b"\n", b"\r", b": ", b" ", b"\t"),
    *(b"Content-Length", b"Transfer-Encoding", b"chunked", b"ETag", b"-6", b"0", b";"),
    b"ffffffffffffffffff",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(TOKENS),
            st.binary(max_size=40),
        ),
        max_size=40,
    ),
    st.integers(min_value=1, max_value=64),
)
def test_fuzz_heads_and_chunks(pieces: list[bytes], step: int) -> None:
    """Any bytes, fed in any slices: each call returns, and only ProtocolError is raised."""
    data = b"".join(pieces)
    for prefix in (b"", b"HTTP/1.1 200 OK\r\n", CHUNKED):
        stream = prefix + data
        buffer = bytearray(HEAD_LIMIT)
        parser = ResponseParser()
        try:
            end = -1
            for fill in range(step, len(stream) + step, step):
                fill = min(fill, len(stream))
                buffer[:fill] = stream[:fill]
                end = parser.feed_head(buffer, fill)
                if end >= 0:
                    break
            if end >= 0:
                assert 200 <= parser.status <= 599
                for at in range(end, len(stream), step):
                    parser.feed_body(stream[at : at + step])
        except ProtocolError:
            pass
