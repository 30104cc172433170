"""S3Storage settings from the config (no network) and the zero-copy request body."""

from __future__ import annotations

from typing import Any

import pytest

from asyncplug.config import build_config
from asyncplug.errors import ConfigError
from asyncplug.storage.s3boto import BufferBody, client_config
from asyncplug.storage.s3common import crc_header, endpoint_settings


def config(**options: Any):  # type: ignore[no-untyped-def]
    return build_config({"bucket": "gp-backups", "folder": "prod", **options})


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"region": "eu-west-1"}, (None, True, "virtual")),
        ({"region": "eu-west-1", "addressing_style": "path"}, (None, True, "path")),
        ({"region": "eu-west-1", "bucket": "gp.backups"}, (None, True, "path")),  # dots: path
        (
            {"endpoint": "http://minio.local", "bucket": "gp.b", "addressing_style": "virtual"},
            ("http://minio.local", True, "virtual"),  # dots are labels over plain http
        ),
        (
            {"endpoint": "http://localhost:9000", "addressing_style": "virtual"},
            ("http://localhost:9000", True, "virtual"),
        ),
        (  # an IP address has no name to put the bucket in front of
            {"endpoint": "http://127.0.0.1:9000", "addressing_style": "virtual"},
            ("http://127.0.0.1:9000", True, "path"),
        ),
        ({"endpoint": "http://127.0.0.1:9000"}, ("http://127.0.0.1:9000", True, "path")),
        ({"endpoint": "minio.local:9000"}, ("https://minio.local:9000", True, "path")),
        (
            {"endpoint": "minio.local:9000", "encryption": "off"},
            ("http://minio.local:9000", False, "path"),
        ),
        (
            {"endpoint": "https://gp-backups.s3.example.com", "remove_duplicate_bucket": "on"},
            ("https://s3.example.com", True, "virtual"),
        ),
        (
            {"endpoint": "https://s3.example.com/gp-backups/", "remove_duplicate_bucket": "on"},
            ("https://s3.example.com", True, "path"),
        ),
    ],
)
def test_endpoint_settings(options: dict[str, Any], expected: tuple[Any, ...]) -> None:
    assert endpoint_settings(config(**options)) == expected


def test_remove_duplicate_bucket_needs_the_bucket_in_the_endpoint() -> None:
    with pytest.raises(ConfigError, match="does not name bucket gp-backups"):
        endpoint_settings(config(endpoint="https://s3.example.com", remove_duplicate_bucket="on"))


def test_client_config() -> None:
    cfg = client_config(
        config(
            endpoint="http://127.0.0.1:9000",
            backup_max_concurrent_requests=10,
            restore_max_concurrent_requests=3,
            max_retries=5,
            request_timeout=30,
            connect_timeout=4,
            http_proxy="http://proxy:3128",
        )
    )
    assert cfg.max_pool_connections == 14
    assert cfg.retries == {"mode": "standard", "total_max_attempts": 6}
    assert cfg.s3 == {"addressing_style": "path", "payload_signing_enabled": False}
    assert (cfg.connect_timeout, cfg.read_timeout) == (4, 30)
    assert cfg.region_name == "us-east-1"
    assert cfg.proxies == {"http": "http://proxy:3128", "https": "http://proxy:3128"}
    assert cfg.request_checksum_calculation == "when_required"
    assert cfg.response_checksum_validation == "when_required"


def test_crc_header_is_base64_of_big_endian_crc() -> None:
    assert crc_header(0xE3069283) == "4waSgw=="  # CRC32C("123456789"), RFC 3720 check value


class Writer:
    def __init__(self) -> None:
        self.chunks: list[memoryview] = []

    async def write(self, chunk: memoryview) -> None:
        self.chunks.append(chunk)


async def test_buffer_body_sends_the_callers_memory_and_can_be_resent() -> None:
    buffer = bytearray(b"0123456789" * 1000)
    body = BufferBody(memoryview(buffer)[10:9010])
    assert len(body) == body.size == 9000
    for _ in range(2):  # a retry writes it again after seek(0)
        assert body.seek(0) == 0
        writer = Writer()
        await body.write_with_length(writer, None)  # type: ignore[arg-type]
        (chunk,) = writer.chunks
        assert chunk.obj is buffer and chunk.nbytes == 9000  # a view, not a copy
    writer = Writer()
    await body.write_with_length(writer, 100)  # type: ignore[arg-type]
    assert bytes(writer.chunks[0]) == bytes(buffer[10:110])


def test_buffer_body_flattens_other_formats() -> None:
    import array

    numbers = array.array("i", [1, 2, 3])
    assert len(BufferBody(numbers)) == 3 * numbers.itemsize
