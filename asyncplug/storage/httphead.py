"""The head of an HTTP/1.1 response, parsed once for both clients that read one:
http1.py (uvloop) and pipeline/splice.py (its own sockets). No imports beyond the
standard library: restores of any backend import splice.py."""

from __future__ import annotations


def parse_head(raw: bytes) -> tuple[int, dict[str, str], bool]:
    """(status, headers with lower-case names, keep-alive) of a response head, without
    its blank line. ValueError on a bad status line."""
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    status = int(rest[:3])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    reusable = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    return status, headers, reusable
