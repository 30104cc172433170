"""Subsets by wall time: the curl --parallel limit, bytes counted on the wire, sizes."""

from __future__ import annotations

import re
import shutil
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from bench import subset_scale, subsets
from bench.verify import digest_file
from bench.wire import Relay

BODY = bytes(range(256)) * 4096  # 1 MiB


class RangeHandler(BaseHTTPRequestHandler):
    """GET with an optional `Range: bytes=a-b` over BODY, keep-alive, nothing else."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        start, end = (int(match[1]), int(match[2]) + 1) if match else (0, len(BODY))
        self.send_response(206 if match else 200)
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        self.wfile.write(BODY[start:end])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield "127.0.0.1", httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_the_relay_counts_what_comes_back_including_heads(server: tuple[str, int]) -> None:
    with Relay(*server) as relay:
        for _ in range(3):
            with urllib.request.urlopen(f"http://127.0.0.1:{relay.port}/object", timeout=30) as r:
                assert r.read() == BODY
        heads = relay.downstream - 3 * len(BODY)
        assert 0 < heads < 3 * 300  # a status line and a few headers each
        assert relay.connections == 3 and relay.upstream > 0
        relay.reset()
        assert relay.downstream == relay.connections == 0


def test_curl_parallel_fetches_exactly_the_ranges_into_numbered_files(
    server: tuple[str, int], tmp_path: Path
) -> None:
    if not shutil.which("curl"):
        pytest.fail("curl is needed by the bench and this test")
    ranges = [(0, 10), (4096, 70_000), (len(BODY) - 5, len(BODY))]
    url = f"http://{server[0]}:{server[1]}/object"
    source = tmp_path / "body"
    source.write_bytes(BODY)
    want = digest_file(str(source), ranges)[0]
    wall, error = subsets.curl_limit(["curl", "-sS", "--fail"], url, ranges, want, 2,
                                     str(tmp_path))  # fmt: skip
    assert error is None and wall is not None and wall > 0
    assert list(tmp_path.glob("curl-ranges-*")) == []  # cleaned up
    wrong = digest_file(str(source), ranges[:2])[0]
    _, error = subsets.curl_limit(["curl", "-sS"], url, ranges, wrong, 1, str(tmp_path))
    assert error == "curl --parallel fetched different bytes"


def test_the_curl_command_repeats_its_options_for_every_range() -> None:
    base = ["curl", "-sS", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user", "k:s"]
    argv = subsets.curl_ranges_argv(base, "http://h/b/k", [(0, 10), (20, 30)], "/out")
    assert argv[:5] == ["curl", "--parallel", "--parallel-immediate", "--parallel-max", "2"]
    first, second = " ".join(argv[5:]).split(" --next ")
    assert first == "-sS --aws-sigv4 aws:amz:us-east-1:s3 --user k:s -r 0-9 -o /out/0 http://h/b/k"
    assert second.endswith("-r 20-29 -o /out/1 http://h/b/k")


def test_only_plain_http_endpoints_are_relayed(tmp_path: Path) -> None:
    assert subsets.relay_address("http://127.0.0.1:8333") == ("127.0.0.1", 8333)
    assert subsets.relay_address("http://minio") == ("minio", 80)
    assert subsets.relay_address("https://s3.us-east-1.amazonaws.com") is None
    config = tmp_path / "plugin.yaml"
    config.write_text(yaml.safe_dump({"executablepath": "x", "options": {
        "endpoint": "http://127.0.0.1:8333", "bucket": "b", "folder": "f"}}))  # fmt: skip
    relayed = subsets.relayed_config(str(config), 4321, str(tmp_path / "relayed.yaml"))
    options = yaml.safe_load(Path(relayed).read_text())["options"]
    assert options["endpoint"] == "http://127.0.0.1:4321" and options["bucket"] == "b"
    fetched, why = subsets.fetched_bytes("https://s3.amazonaws.com", str(config), None, "")
    assert fetched is None and why is not None and "plain http" in why


def test_bytes_fetched_come_from_the_wire_of_a_verified_run(
    server: tuple[str, int], tmp_path: Path
) -> None:
    """A stand-in 'plugin' that GETs one range through the relayed config's endpoint."""
    config = tmp_path / "plugin.yaml"
    config.write_text(yaml.safe_dump({"options": {"endpoint": f"http://{server[0]}:{server[1]}"}}))
    script = tmp_path / "fetch.py"
    script.write_text(
        "import sys, urllib.request, yaml\n"
        "endpoint = yaml.safe_load(open(sys.argv[1]))['options']['endpoint']\n"
        "request = urllib.request.Request(endpoint + '/o', headers={'Range': 'bytes=100-1123'})\n"
        "sys.stdout.buffer.write(urllib.request.urlopen(request, timeout=30).read())\n"
    )
    source = tmp_path / "body"
    source.write_bytes(BODY)
    want = digest_file(str(source), [(100, 1124)])[0]

    def argv_for(path: str) -> list[str]:
        return [sys.executable, str(script), path]

    endpoint = f"http://{server[0]}:{server[1]}"
    fetched, why = subsets.fetched_bytes(endpoint, str(config), argv_for, want)
    assert why is None and fetched is not None and 1024 < fetched < 1024 + 300
    fetched, why = subsets.fetched_bytes(endpoint, str(config), argv_for, "other digest")
    assert fetched is None and why == "counting run: restored bytes mismatch"


def test_ratio_and_the_scale_sizes() -> None:
    assert subsets.ratio(0.26, 0.2) == 1.3
    assert subsets.ratio(0.26, None) is None
    assert subset_scale.parse_sizes("1GiB, 8GiB") == [2**30, 8 * 2**30]
    with pytest.raises(ValueError, match="'lots'"):
        subset_scale.parse_sizes("1GiB,lots")
    with pytest.raises(ValueError, match="at least"):
        subset_scale.parse_sizes("100")
    assert [subset_scale.label_of(s) for s in (2**30, 64 * 2**20, 1000)] == [
        "1GiB", "64MiB", "1000B"]  # fmt: skip
