"""CPU per response head: asyncplug's parser (httptools/llhttp and its own checks) against
a plain split on CRLF (the parser before it) and h11, on the head of a ranged GET.

Usage:
    .venv/bin/python -m bench.head_parsers [--count 20000] [--repeat 5]

Prints, for each, the lowest of --repeat runs of microseconds of CPU (user + system,
getrusage) per head. h11 is measured when it is installed (it is not a dependency).
"""

from __future__ import annotations

import argparse
import resource
from collections.abc import Callable

from asyncplug.storage.httphead import ResponseParser

HEAD = (
    b"HTTP/1.1 206 Partial Content\r\nAccept-Ranges: bytes\r\nContent-Length: 12582912\r\n"
    b"Content-Range: bytes 0-12582911/1073741824\r\nContent-Type: application/octet-stream\r\n"
    b'ETag: "6d3b7c0f2e5b8a1c9e4f7a2b3c4d5e6f-128"\r\n'
    b"Last-Modified: Tue, 01 Dec 2026 18:00:00 GMT\r\nServer: SeaweedFS\r\n"
    b"X-Amz-Request-Id: 1234567890abcdef\r\nDate: Tue, 01 Dec 2026 18:00:00 GMT\r\n\r\n"
)


def split_on_crlf() -> int:
    """The parser before httptools: split, partition, int() of three characters."""
    lines = HEAD[:-4].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].partition(" ")[2][:3]) + len(headers)


BUFFER = bytearray(HEAD)


def asyncplug_parser() -> int:
    """What http1 does per response: a parser, the head fed, the checks."""
    parser = ResponseParser()
    parser.feed_head(BUFFER, len(BUFFER))
    return parser.status + len(parser.headers)


def h11_parser() -> Callable[[], int] | None:
    try:
        import h11
    except ImportError:
        return None
    request = h11.Request(method="GET", target="/b/k", headers=[("Host", "x")])

    def parse() -> int:
        conn = h11.Connection(h11.CLIENT)
        conn.send(request)
        conn.send(h11.EndOfMessage())
        conn.receive_data(HEAD)
        event = conn.next_event()
        assert isinstance(event, h11.Response)
        return int(event.status_code) + len(event.headers)

    return parse


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(parse: Callable[[], int], count: int, repeat: int) -> list[float]:
    runs = []
    for _ in range(repeat):
        start = cpu()
        for _ in range(count):
            parse()
        runs.append((cpu() - start) / count * 1e6)
    return runs


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--count", type=int, default=20000)
    args.add_argument("--repeat", type=int, default=5)
    options = args.parse_args()
    candidates: list[tuple[str, Callable[[], int] | None]] = [
        ("split on CRLF (before)", split_on_crlf),
        ("httphead.ResponseParser (httptools)", asyncplug_parser),
        ("h11", h11_parser()),
    ]
    for name, parse in candidates:
        if parse is None:
            print(f"{name}: not installed")
            continue
        runs = measure(parse, options.count, options.repeat)
        shown = ", ".join(f"{run:.1f}" for run in runs)
        print(f"{name}: {min(runs):.1f} us CPU per head (lowest of {shown})")


if __name__ == "__main__":
    main()
