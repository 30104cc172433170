"""Fixtures shared by the integration tests that inject S3 faults."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator

import pytest

from asyncplug import client, server
from bench.seaweed import SeaweedServer
from tests.integration.test_s3_faults import FaultProxy
from tests.server_support import private_dir


@pytest.fixture
async def proxy(seaweed: SeaweedServer) -> AsyncIterator[FaultProxy]:
    """The fault-injecting proxy in front of the session's SeaweedFS (test_s3_faults)."""
    server = await FaultProxy(seaweed.endpoint).start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
def warm_dir() -> Iterator[str]:
    """The runtime directory of a warm server started as setup_plugin_for_backup starts
    it (a detached `python -I -m asyncplug.server`), stopped at the end of the session."""
    directory = private_dir()
    yield directory
    server.stop(os.path.join(directory, os.path.basename(client.socket_path())))
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(params=["in-process", "server"])
def way(request: pytest.FixtureRequest, warm_dir: str) -> Iterator[str]:
    """ASYNCPLUG_RUNTIME_DIR for a test that runs both ways: the test's own empty one (every
    command runs in its own process), or the session's warm server (started again if a
    cleanup at segment_host scope stopped it)."""
    if request.param == "server":
        path = os.path.join(warm_dir, os.path.basename(client.socket_path()))
        assert server.start(idle=600, path=path) is not None, "the warm server did not start"
        yield warm_dir
        return
    yield os.environ["ASYNCPLUG_RUNTIME_DIR"]  # the test's own, empty (tests/conftest.py)
