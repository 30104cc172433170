"""asyncplug.cli: dispatch, argument counts, exit codes, one line on stderr, the log line."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from asyncplug import API_VERSION, __version__, cli, commands
from asyncplug.errors import (
    AccessDenied,
    ConfigError,
    InputError,
    IntegrityError,
    Interrupted,
    ObjectNotFound,
    PluginError,
    StorageError,
    UsageError,
)
from tests.server_support import ForkedServer

HOOK_DIR = "/data/seg0/backups/20250101/20250101123456"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Errors before the config is read log to ~/gpAdminLogs: keep that inside tmp."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def config_path(tmp_path: Path) -> str:
    path = tmp_path / "plugin.yaml"
    options = {
        "storage": "file",
        "path": str(tmp_path / "store"),
        "folder": "prod/cluster1",
        "log_dir": str(tmp_path / "logs"),
        "pgport": 5432,
    }
    path.write_text(yaml.safe_dump({"executablepath": "/x/asyncplug", "options": options}))
    return str(path)


SERVED: list[ForkedServer] = []  # the warm server of the running test, if it goes through one


@pytest.fixture(autouse=True, params=["in-process", "server"])
def way(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test runs both ways: in this process, and through the warm server (forked
    from this process at the test's first command, so its monkeypatches apply)."""
    if request.param == "server":
        SERVED.append(ForkedServer())
    yield request.param
    while SERVED:
        SERVED.pop().stop()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    if SERVED:
        return SERVED[0].run(list(argv))
    code = cli.run(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    assert err.startswith("asyncplug: ")
    assert err.endswith("\n") and err.count("\n") == 1
    assert "Traceback" not in err
    return err


def log_text(tmp_path: Path) -> str:
    return "".join(p.read_text() for p in (tmp_path / "logs").glob("asyncplug_*.log"))


def test_version_is_exactly_three_words(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--version")
    assert (code, err) == (0, "")
    assert out == f"asyncplug version {__version__}\n"
    assert re.fullmatch(r"asyncplug version \d+\.\d+\.\d+\n", out)


def test_plugin_api_version_is_at_least_0_4_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plugin_api_version")
    assert code == 0 and out == f"{API_VERSION}\n"
    assert tuple(int(n) for n in out.split(".")) >= (0, 4, 0)


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for name in cli.COMMANDS:
        assert f"  {name} CONFIG_PATH" in out


def test_every_command_has_a_function() -> None:
    for name in cli.COMMANDS:
        assert callable(getattr(commands, name))


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "unknown_command")
    assert (code, out) == (2, "")
    assert "unknown command 'unknown_command'" in one_line(err)
    assert "usage: asyncplug COMMAND CONFIG_PATH" in err


def test_no_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys)
    assert code == 2 and "usage:" in one_line(err)


@pytest.mark.parametrize(
    "argv",
    [
        ["backup_data"],
        ["backup_data", "cfg"],
        ["backup_data", "cfg", "a", "b"],
        ["restore_data_subset", "cfg", "key"],
        ["setup_plugin_for_backup", "cfg", HOOK_DIR],
        ["setup_plugin_for_backup", "cfg", HOOK_DIR, "segment", '"0"', "extra"],
        ["list_directory"],
        ["list_directory", "cfg", "a", "b"],
        ["delete_directory", "cfg"],
        ["delete_backup", "cfg"],
        ["plugin_api_version", "cfg", "extra"],
    ],
)
def test_wrong_argument_counts(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert f"usage: asyncplug {argv[0]}" in one_line(err) or "takes no arguments" in err


def test_usage_comes_before_the_config(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "restore_file", "/no/such/config.yaml")
    assert code == 2 and "usage: asyncplug restore_file CONFIG_PATH FILE" in err


@pytest.mark.parametrize("content_id", ['"-1"', "-1", "'-1'"])
def test_quoted_content_id(
    capsys: pytest.CaptureFixture[str], config_path: str, tmp_path: Path, content_id: str
) -> None:
    code, _, err = run(
        capsys, "cleanup_plugin_for_restore", config_path, HOOK_DIR, "coordinator", content_id
    )
    assert (code, err) == (0, "")
    assert "cleanup_plugin_for_restore" in log_text(tmp_path)


def test_bad_content_id(capsys: pytest.CaptureFixture[str], config_path: str) -> None:
    code, _, err = run(
        capsys, "cleanup_plugin_for_restore", config_path, HOOK_DIR, "segment", '"zero"'
    )
    assert code == 2 and "content id" in one_line(err)


def test_bad_scope(capsys: pytest.CaptureFixture[str], config_path: str) -> None:
    code, _, err = run(capsys, "setup_plugin_for_backup", config_path, HOOK_DIR, "cluster", '"0"')
    assert code == 2
    assert "scope 'cluster' is not one of coordinator, master, segment_host, segment" in one_line(
        err
    )


def test_bad_config_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, home: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("options:\n  bucket: b\n  folder: f\n  region: r\n  chunksize: 5MB\n")
    code, out, err = run(capsys, "backup_data", str(bad), f"{HOOK_DIR}/gpbackup_0_20250101123456")
    assert (code, out) == (ConfigError.exit_code, "")
    assert "unknown option 'chunksize'" in one_line(err)
    # no config, so the default log dir (~/gpAdminLogs) gets the line
    assert "unknown option 'chunksize'" in "".join(
        p.read_text() for p in home.glob("gpAdminLogs/*")
    )


def test_missing_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "delete_backup", str(tmp_path / "nope.yaml"), "20250101123456")
    assert code == ConfigError.exit_code and "cannot read plugin config" in one_line(err)


def test_input_error_exit_code(capsys: pytest.CaptureFixture[str], config_path: str) -> None:
    code, _, err = run(capsys, "delete_backup", config_path, "2025")
    assert code == InputError.exit_code and "14 digits" in one_line(err)


@pytest.mark.parametrize(
    "error",
    [
        PluginError("plain"),
        UsageError("usage"),
        ConfigError("config"),
        InputError("input"),
        StorageError("storage"),
        ObjectNotFound("missing"),
        AccessDenied("denied"),
        IntegrityError("corrupt"),
        Interrupted("stop"),
    ],
)
def test_error_mapping(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    config_path: str,
    error: PluginError,
) -> None:
    async def fail(*args: Any) -> int:
        raise error

    monkeypatch.setattr(commands, "delete_backup", fail)
    code, _, err = run(capsys, "delete_backup", config_path, "20250101123456")
    assert code == error.exit_code
    assert one_line(err) == f"asyncplug: {error}\n"


def test_multi_line_messages_become_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, config_path: str
) -> None:
    async def fail(*args: Any) -> int:
        raise StorageError("first line\nsecond line")

    monkeypatch.setattr(commands, "delete_backup", fail)
    _, _, err = run(capsys, "delete_backup", config_path, "20250101123456")
    assert one_line(err) == "asyncplug: first line second line\n"


def test_unexpected_exception_is_one_line_and_logged(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    config_path: str,
    tmp_path: Path,
) -> None:
    async def fail(*args: Any) -> int:
        raise ValueError("boom\nwith detail")

    monkeypatch.setattr(commands, "delete_backup", fail)
    code, _, err = run(capsys, "delete_backup", config_path, "20250101123456")
    assert code == 1
    assert "internal error: ValueError: boom with detail" in one_line(err)
    log = log_text(tmp_path)
    assert "Traceback (most recent call last)" in log and "ValueError: boom" in log


def test_broken_pipe_is_interrupted(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, config_path: str
) -> None:
    async def fail(*args: Any) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(commands, "restore_data", fail)
    code, _, err = run(capsys, "restore_data", config_path, f"{HOOK_DIR}/gpbackup_0_20250101123456")
    assert code == Interrupted.exit_code
    assert "stdout was closed" in one_line(err)


def test_log_line_per_command(
    capsys: pytest.CaptureFixture[str], config_path: str, tmp_path: Path
) -> None:
    local = tmp_path / "seg0/backups/20250101/20250101123456/gpbackup_20250101123456_report"
    local.parent.mkdir(parents=True)
    local.write_bytes(b"x" * 1234)
    code, out, err = run(capsys, "backup_file", config_path, str(local))
    assert (code, out, err) == (0, "", "")
    line = next(ln for ln in log_text(tmp_path).splitlines() if "backup_file" in ln)
    assert re.search(
        r"-\[INFO\]:-backup_file \S+plugin.yaml \S+_report: ok, 1234 bytes in [\d.]+ s", line
    )


def test_log_never_holds_secrets(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "secret.yaml"
    options = {
        "storage": "file",
        "path": str(tmp_path / "store"),
        "folder": "f",
        "aws_access_key_id": "AKIAVISIBLE",
        "aws_secret_access_key": "very-secret-value",
        "log_dir": str(tmp_path / "logs"),
        "log_level": "debug",
    }
    path.write_text(yaml.safe_dump({"options": options}))
    code, _, _ = run(capsys, "list_directory", str(path))
    assert code == 0
    log = log_text(tmp_path)
    assert "options:" in log and "***" in log
    assert "very-secret-value" not in log and "AKIAVISIBLE" not in log


def test_unwritable_log_dir_does_not_fail_the_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the log directory should be")
    path = tmp_path / "plugin.yaml"
    options = {
        "storage": "file",
        "path": str(tmp_path / "s"),
        "folder": "f",
        "log_dir": str(blocker),
    }
    path.write_text(yaml.safe_dump({"options": options}))
    code, out, err = run(capsys, "list_directory", str(path))
    assert (code, out, err) == (0, "", "")
