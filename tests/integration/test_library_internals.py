"""The three places where asyncplug leans on a library's internals (storage/s3boto.py).
pyproject.toml pins the ranges these were checked with; when an upgrade moves one of
them, these tests fail with a message saying what would silently go wrong.
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import aiohttp.http_writer
import pytest

from asyncplug.config import build_config
from asyncplug.crc import crc32c
from asyncplug.storage.s3boto import BotoStorage, lift_retry_quota
from bench.seaweed import SeaweedServer
from tests.conftest import s3_options

KEY = "prod/cluster1/internals"


async def test_aiohttp_sends_buffered_headers_on_request(
    seaweed: SeaweedServer, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BufferBody calls StreamWriter.send_headers() before handing over its memoryview;
    without it aiohttp (>= 3.12) joins the buffered head and the first chunk into a new
    bytes: a copy of every part (+0.4 CPU-s/GiB measured)."""
    writer = aiohttp.http_writer.StreamWriter
    assert callable(getattr(writer, "send_headers", None)), (
        "aiohttp's StreamWriter.send_headers is gone: see BufferBody.write_with_length"
    )
    calls: list[int] = []
    original = writer.send_headers

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(writer, "send_headers", spy)
    data = os.urandom(300_000)
    storage = BotoStorage(build_config(s3_options(seaweed, bucket)))
    try:
        await storage.put(KEY, memoryview(data), crc32c(data))
        assert calls, "BufferBody did not reach StreamWriter.send_headers"
        assert b"".join(await storage.get_range(KEY, 0, len(data))) == data
    finally:
        await storage.close()


async def test_botocore_retry_handler_keeps_its_unique_id(
    seaweed: SeaweedServer, bucket: str
) -> None:
    """lift_retry_quota replaces the handler registered as "retry-config-s3"; under another
    id the quota-limited handler would stay and every call would be retried twice over."""
    storage = BotoStorage(build_config(s3_options(seaweed, bucket, max_retries=3)))
    try:
        client = await storage.client()
        handlers = client.meta.events._emitter._unique_id_handlers
        assert "retry-config-s3" in handlers, "botocore renamed its retry handler's unique id"
        ours = handlers["retry-config-s3"]["handler"]
        assert ours.__self__._retry_quota._quota.available_capacity == 2**62
        lift_retry_quota(client, 4)  # again: one handler under the id, never two
        responders = [
            h
            for h in client.meta.events._emitter._handlers.prefix_search("needs-retry.s3.PutObject")
            if getattr(h, "__name__", "") == "needs_retry"
        ]
        assert len(responders) == 1
    finally:
        await storage.close()


async def test_aiobotocore_body_reads_through_raw_stream_content(
    seaweed: SeaweedServer, bucket: str
) -> None:
    """get_range_from reads Body.raw_stream.content.readany() (no copy into a BytesIO)."""
    data = os.urandom(100_000)
    seaweed.client().put_object(Bucket=bucket, Key=KEY, Body=data)
    storage = BotoStorage(build_config(s3_options(seaweed, bucket)))
    try:
        client = await storage.client()
        response = await client.get_object(Bucket=bucket, Key=KEY)
        body = response["Body"]
        try:
            content = body.raw_stream.content
            assert isinstance(content, aiohttp.StreamReader), type(content)
            assert callable(content.readany)
        finally:
            body.close()
        assert b"".join(await storage.get_range(KEY, 10, len(data))) == data[10:]
    finally:
        await storage.close()
