"""Fixtures shared by the integration tests that inject S3 faults."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bench.seaweed import SeaweedServer
from tests.integration.test_s3_faults import FaultProxy


@pytest.fixture
async def proxy(seaweed: SeaweedServer) -> AsyncIterator[FaultProxy]:
    """The fault-injecting proxy in front of the session's SeaweedFS (test_s3_faults)."""
    server = await FaultProxy(seaweed.endpoint).start()
    yield server
    await server.stop()
