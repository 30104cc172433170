"""A restore's stdout closed by its reader (gprestore's helper after its last table):
told apart from other EPIPEs, logged at INFO, nothing on stderr, an end by SIGPIPE."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from asyncplug import cli, commands
from asyncplug.config import build_config
from asyncplug.errors import ReaderGone
from asyncplug.pipeline.pipes import reader_gone
from asyncplug.pipeline.restore import restore_stream
from tests.memory_storage import MemoryStorage

KEY = "prod/backups/20250101/20250101123456/gpbackup_0_20250101123456"
DATA_KEY = "/data/seg0/backups/20250101/20250101123456/gpbackup_0_20250101123456"


def test_reader_gone_only_when_the_other_end_is_closed() -> None:
    read_fd, write_fd = os.pipe()
    try:
        assert not reader_gone(write_fd)
        os.close(read_fd)
        assert reader_gone(write_fd)
    finally:
        os.close(write_fd)


def test_restore_stream_tells_a_closed_stdout_from_another_epipe() -> None:
    store = MemoryStorage()
    store.objects[KEY] = (os.urandom(3 * 2**20), {})
    config = build_config({"storage": "file", "path": "/unused", "folder": "prod"})
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    try:
        with pytest.raises(ReaderGone, match="stdout closed by the reader after 0 bytes"):
            asyncio.run(asyncio.wait_for(restore_stream(store, KEY, write_fd, config), 30))
    finally:
        os.close(write_fd)

    async def socket_epipe(*args: Any) -> Any:
        raise BrokenPipeError(32, "Broken pipe")  # e.g. a connection, not our stdout

    store.get_range = socket_epipe  # type: ignore[method-assign]
    read_fd, write_fd = os.pipe()
    try:
        with pytest.raises(BrokenPipeError) as raised:
            asyncio.run(asyncio.wait_for(restore_stream(store, KEY, write_fd, config), 30))
        assert not isinstance(raised.value, ReaderGone)
    finally:
        os.close(read_fd)
        os.close(write_fd)


@pytest.fixture
def config_path(tmp_path: Path) -> str:
    path = tmp_path / "plugin.yaml"
    options = {"storage": "file", "path": str(tmp_path), "folder": "prod"}
    options["log_dir"] = str(tmp_path / "logs")
    path.write_text(yaml.safe_dump({"executablepath": "/x/asyncplug", "options": options}))
    return str(path)


def test_run_logs_it_at_info_and_says_nothing(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    config_path: str,
    tmp_path: Path,
) -> None:
    async def gone(*args: Any) -> int:
        raise ReaderGone(f"stdout closed by the reader after 42 bytes; restore of {KEY} stopped")

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(commands, "restore_data", gone)
    code = cli.run(["restore_data", config_path, DATA_KEY])
    assert code == cli.READER_GONE == 128 + signal.SIGPIPE
    assert capsys.readouterr() == ("", "")
    log = "".join(p.read_text() for p in (tmp_path / "logs").iterdir())
    assert "[ERROR]" not in log
    assert f"-[INFO]:-restore_data {config_path} {DATA_KEY}: stdout closed by the reader" in log


def test_main_ends_the_process_by_sigpipe(tmp_path: Path) -> None:
    """main() turns READER_GONE into a death by SIGPIPE, as `cat` and the Go plugin end."""
    script = (
        "import sys\n"
        "from asyncplug import cli\n"
        "cli.run = lambda argv, watcher=None: cli.READER_GONE\n"
        "cli.main(['restore_data'])\n"
        "print('not reached')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        timeout=60,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (-signal.SIGPIPE, b"", b"")
