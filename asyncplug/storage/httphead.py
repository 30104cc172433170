"""HTTP/1.1 responses parsed strictly, for both clients that read them: http1.py (uvloop)
and pipeline/splice.py (its own sockets).

The parser is httptools (llhttp, Node's parser, in C), in its default strict mode: a
status code of exactly three digits, CRLF line ends only (no bare LF), no obs-fold, no
space before a header's colon, no control character in a value, one Content-Length of
digits only (llhttp refuses a second one, equal or not: RFC 9110 section 8.6 lets a
recipient refuse a list), never Content-Length with Transfer-Encoding, chunk sizes in hex
that fit 64 bits. On top of it: a final status 200-599 of HTTP/1.0 or 1.1, interim 1xx
responses skipped up to MAX_INTERIM, heads and chunked bodies of bounded size, no
Transfer-Encoding but `chunked`, and an ETag made of visible characters (it is sent back
in If-Match). Why httptools: it refuses all of the above by itself and costs a few
microseconds per head more than a split on CRLF; h11 is ten times slower and accepts
obs-fold, bare LF and Content-Length with chunked (bench/head_parsers.py, bench/README).

Only the head and chunked bodies (small XML documents) go through the parser: a
Content-Length body is received by the caller straight into its own buffers.
"""

from __future__ import annotations

import re

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

HEAD_LIMIT = 64 * 1024  # a response's heads (interim ones included)
MAX_INTERIM = 8  # 1xx responses before the final one (a PUT may get one 100 Continue)
CHUNKED_LIMIT = 1024 * 1024  # a chunked body as received (S3 sends small XML documents)
# entity-tag (RFC 9110 section 8.8.3), or the bare token some stores send: no space,
# no control character, nothing that could end a header line when it is sent back.
_ETAG = re.compile(r'(?:W/)?"[\x21\x23-\x7e\x80-\xff]{0,1024}"|[\x21\x23-\x7e\x80-\xff]{1,1024}')


class ProtocolError(ValueError):
    """A response that breaks HTTP/1.1's rules: the connection cannot be trusted."""


class ResponseParser:
    """One response: its head fed as bytes arrive (interim 1xx heads skipped), then, for a
    chunked body, the body. Raises ProtocolError, and nothing else, on a bad response."""

    def __init__(self) -> None:
        self._parser = HttpResponseParser(self)
        self.status = 0
        self.headers: dict[str, str] = {}  # lower-case names; repeated ones joined by ", "
        self.reusable = False  # HTTP/1.1 without Connection: close
        self.body = bytearray()  # a chunked body, as it is decoded
        self.complete = False  # the message is whole (a chunked body's last chunk came)
        self.trailing = False  # bytes came after the message: the connection is not reused
        self.interim = 0  # 1xx responses skipped
        self._head_done = False
        self._fed = 0  # bytes of the head buffer fed to the parser
        self._start = 0  # where the head being parsed starts in it
        self._raw = 0  # chunked body bytes fed

    # --- llhttp's callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete:
            self.trailing = True

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1").strip(" \t")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self._head_done = True

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True

    # --- feeding ------------------------------------------------------------------------
    def _feed(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self._parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade) as exc:
            raise ProtocolError(f"malformed response ({exc})") from None

    def feed_head(self, buffer: bytearray, fill: int) -> int:
        """Parse buffer[:fill], every byte received on this response so far (more at each
        call, at the same place): the offset just past the final head once it is whole,
        else -1. Nothing after that offset is fed."""
        while True:
            # The head ends at the first CRLF CRLF: no header value may hold a CR.
            end = buffer.find(b"\r\n\r\n", max(self._fed - 3, self._start), fill)
            stop = fill if end < 0 else end + 4
            if stop > self._fed:
                self._feed(memoryview(buffer)[self._fed : stop])
                self._fed = stop
            if end < 0:
                if fill >= HEAD_LIMIT:
                    raise ProtocolError(f"response head over {HEAD_LIMIT} bytes")
                return -1
            if not self._head_done:  # llhttp stopped short of it: cannot happen when strict
                raise ProtocolError("malformed response head")
            status = self._parser.get_status_code()
            if 100 <= status < 200 and status != 101:
                self.interim += 1
                if self.interim > MAX_INTERIM:
                    raise ProtocolError(f"more than {MAX_INTERIM} interim responses")
                self.headers, self._head_done, self.complete = {}, False, False
                self._start = stop
                continue
            self._final(status)
            return stop

    def _final(self, status: int) -> None:
        if not 200 <= status <= 599:
            raise ProtocolError(f"status {status}")
        version = self._parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise ProtocolError(f"HTTP version {version}")
        coding = self.headers.get("transfer-encoding")
        if coding is not None and coding.lower() != "chunked":
            raise ProtocolError(f"Transfer-Encoding {coding!r}")
        etag = self.headers.get("etag")
        if etag is not None and not _ETAG.fullmatch(etag):
            raise ProtocolError(f"ETag {etag!r}")
        self.status = status
        connection = self.headers.get("connection", "").lower()
        self.reusable = version == "1.1" and "close" not in connection

    def feed_body(self, data: bytes | bytearray | memoryview) -> bool:
        """Feed chunked body bytes (after the head); True once the body is whole."""
        self._raw += len(data)
        if self._raw > CHUNKED_LIMIT:
            raise ProtocolError(f"chunked body over {CHUNKED_LIMIT} bytes")
        self._feed(data)
        return self.complete


def parse_head(raw: bytes) -> tuple[int, dict[str, str], bool]:
    """(status, headers with lower-case names, keep-alive) of one whole response head,
    without its blank line. ProtocolError (a ValueError) on a bad or an interim head."""
    data = bytearray(raw)
    data += b"\r\n\r\n"
    parser = ResponseParser()
    if parser.feed_head(data, len(data)) != len(data):
        raise ProtocolError("an interim response")
    return parser.status, parser.headers, parser.reusable
