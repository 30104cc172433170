"""Every plugin command, run as gpbackup runs it: the installed executable, a config
file and pipes, against a real SeaweedFS (s3) and a directory (file)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from asyncplug import commands
from asyncplug.config import Config, build_config
from asyncplug.errors import ConfigError, InputError, Interrupted, ObjectNotFound, StorageError
from asyncplug.keys import backup_prefix
from asyncplug.pipeline.frames import crc32c
from asyncplug.storage import open_storage
from asyncplug.storage.fs import FileStorage
from tests.integration.runner import EXECUTABLE, Plugin, make_plugin, one_line_error

TS = "20250101123456"
SIBLING = "20250101123457"
FOLDER = "prod/cluster1"


def backup_dir(root: Path, ts: str = TS, seg: str = "seg0") -> Path:
    return root / seg / "backups" / ts[:8] / ts


def data_file(root: Path, ts: str = TS, content: int = 0) -> str:
    return str(backup_dir(root, ts) / f"gpbackup_{content}_{ts}")


@pytest.fixture
def plugin(
    backend_options: dict[str, Any],
    write_config: Callable[..., str],
    tmp_path: Path,
    way: str,
    warm_dir: str,
) -> Iterator[Plugin]:
    """Runs every test both in-process and through the warm server (see conftest.way)."""
    plugin = make_plugin(backend_options, write_config, tmp_path, runtime_dir=way)
    yield plugin
    if way == warm_dir and plugin.clients:
        assert plugin.served(tmp_path / "logs"), "no command went through the warm server"


@pytest.fixture
def config(backend_config: Config) -> Config:
    return backend_config


@pytest.fixture
def file_plugin(write_config: Callable[..., str], tmp_path: Path, way: str) -> Plugin:
    """For checks made before any storage is touched: one backend is enough."""
    options = {"storage": "file", "path": str(tmp_path / "store"), "folder": FOLDER}
    return make_plugin(options, write_config, tmp_path, runtime_dir=way)


async def put_objects(config: Config, keys: list[str], data: bytes = b"x") -> None:
    async with open_storage(config) as storage:
        limit = asyncio.Semaphore(32)

        async def put(key: str) -> None:
            async with limit:
                await storage.put(key, data, crc32c(data))

        await asyncio.gather(*(put(k) for k in keys))


async def count_unfinished(config: Config, prefix: str) -> int:
    """How many unfinished uploads were under prefix (they are gone afterwards)."""
    async with open_storage(config) as storage:
        return await storage.abort_uploads(prefix)


async def start_unfinished(config: Config, key: str) -> None:
    async with open_storage(config) as storage:
        upload = await storage.start_upload(key)
        part = os.urandom(5 * 2**20)
        await upload.put_part(1, 0, part, crc32c(part))


# --- setup and cleanup ------------------------------------------------------------


def test_setup_for_backup_as_gpbackup_calls_it(plugin: Plugin, tmp_path: Path) -> None:
    """gpbackup says `master` at the coordinator (the bench says coordinator)."""
    plugin("setup_plugin_for_backup", str(backup_dir(tmp_path)), "master", '"-1"')
    # the probe leaves nothing behind
    assert plugin("list_directory").stdout == b""


def test_setup_for_backup_fails_fast(
    backend_options: dict[str, Any], write_config: Callable[..., str], tmp_path: Path
) -> None:
    if "bucket" in backend_options:
        broken = {**backend_options, "bucket": "no-such-bucket"}
    else:
        (tmp_path / "a-file").write_text("not a directory")
        broken = {**backend_options, "path": str(tmp_path / "a-file")}
    plugin = Plugin(write_config({**broken, "log_dir": str(tmp_path / "logs")}), tmp_path / "home")
    proc = plugin(
        "setup_plugin_for_backup", str(backup_dir(tmp_path)), "coordinator", '"-1"', check=False
    )
    err = one_line_error(proc)
    assert "no-such-bucket" in err or "a-file" in err


def test_setup_for_restore(plugin: Plugin, tmp_path: Path) -> None:
    where = backup_dir(tmp_path)
    proc = plugin("setup_plugin_for_restore", str(where), "coordinator", '"-1"', check=False)
    assert proc.returncode == ObjectNotFound.exit_code
    assert f"backup {TS} not found" in one_line_error(proc)

    metadata = where / f"gpbackup_{TS}_metadata.sql"
    metadata.write_text("CREATE TABLE t (i int);\n")
    plugin("backup_file", str(metadata))
    restore_root = tmp_path / "other-cluster"
    restore_dir = backup_dir(restore_root, seg="gpseg-1")
    for scope, content in (("coordinator", '"-1"'), ("segment_host", None), ("segment", '"0"')):
        plugin("setup_plugin_for_restore", str(restore_dir), scope, *([content] if content else []))
    assert restore_dir.is_dir()  # the plugin API asks setup to create it


async def test_cleanup_for_backup_aborts_unfinished_uploads(
    plugin: Plugin, config: Config, tmp_path: Path
) -> None:
    mine = backup_prefix(FOLDER, TS)
    sibling = backup_prefix(FOLDER, SIBLING)
    await start_unfinished(config, mine + f"gpbackup_0_{TS}")
    await start_unfinished(config, sibling + f"gpbackup_0_{SIBLING}")
    where = str(backup_dir(tmp_path))
    for scope, content in (("segment", '"0"'), ("segment_host", None), ("coordinator", '"-1"')):
        plugin("cleanup_plugin_for_backup", where, scope, *([content] if content else []))
    plugin("cleanup_plugin_for_restore", where, "coordinator", '"-1"')
    assert await count_unfinished(config, mine) == 0
    assert await count_unfinished(config, sibling) == 1  # a sibling backup's stays
    assert "aborted 1 unfinished upload(s)" in "".join(
        p.read_text() for p in (tmp_path / "logs").iterdir()
    )


# --- files --------------------------------------------------------------------------


def test_backup_file_and_restore_file(plugin: Plugin, tmp_path: Path) -> None:
    local = backup_dir(tmp_path) / f"gpbackup_{TS}_toc.yaml"
    local.parent.mkdir(parents=True)
    content = os.urandom(300_000)
    local.write_bytes(content)
    plugin("backup_file", str(local))
    assert local.read_bytes() == content  # the local file stays

    elsewhere = backup_dir(tmp_path / "restore-host", seg="gpseg-1") / local.name
    plugin("restore_file", str(elsewhere))  # parents created: same last four components
    assert elsewhere.read_bytes() == content


def test_restore_missing_file_fails_and_leaves_nothing(plugin: Plugin, tmp_path: Path) -> None:
    target = backup_dir(tmp_path) / "there_is_no_file_to_restore"
    target.parent.mkdir(parents=True)
    proc = plugin("restore_file", str(target), check=False)
    assert proc.returncode == ObjectNotFound.exit_code
    one_line_error(proc)
    assert list(target.parent.iterdir()) == []


def test_backup_missing_local_file(plugin: Plugin, tmp_path: Path) -> None:
    proc = plugin("backup_file", str(backup_dir(tmp_path) / "nope"), check=False)
    assert proc.returncode == InputError.exit_code
    assert "no such file" in one_line_error(proc)


# --- streams ------------------------------------------------------------------------


def test_backup_data_restore_data_multipart(plugin: Plugin, tmp_path: Path) -> None:
    """Small and empty streams are in the bench; this one takes three parts."""
    data = os.urandom(2 * 8 * 2**20 + 17)
    key = data_file(tmp_path)
    assert plugin("backup_data", key, stdin=data).stdout == b""
    assert plugin("restore_data", key).stdout == data


def test_restore_data_missing(plugin: Plugin, tmp_path: Path) -> None:
    proc = plugin("restore_data", data_file(tmp_path), check=False)
    assert proc.returncode == ObjectNotFound.exit_code and proc.stdout == b""
    one_line_error(proc)


def test_restore_data_subset(plugin: Plugin, tmp_path: Path) -> None:
    data = os.urandom(1_000_001)
    key = data_file(tmp_path)
    plugin("backup_data", key, stdin=data)
    offsets = tmp_path / "offsets"
    # SPEC's examples are in the bench; here: unsorted, empty and adjacent ranges
    offsets.write_text("4 500 600 10 10 100 500 999999 1000001\n")
    expected = data[500:600] + data[100:500] + data[999999:]
    assert plugin("restore_data_subset", key, str(offsets)).stdout == expected


def test_restore_data_subset_bad_offsets(plugin: Plugin, tmp_path: Path) -> None:
    key = data_file(tmp_path)
    plugin("backup_data", key, stdin=os.urandom(1_000_001))
    offsets = tmp_path / "offsets"
    for text, message in (
        ("1 5 1", "ends before it starts"),  # the others are in tests/unit/test_offsets.py
        ("2 0 10 10 1000002", "beyond the end of the object"),
    ):
        offsets.write_text(text)
        proc = plugin("restore_data_subset", key, str(offsets), check=False)
        assert proc.returncode == InputError.exit_code, text
        assert proc.stdout == b"", text  # reported before anything is written
        assert message in one_line_error(proc), text


# --- backups and directories --------------------------------------------------------


async def test_delete_backup_leaves_the_sibling(plugin: Plugin, config: Config) -> None:
    """Restores after a delete are in the bench; here: many objects, unfinished uploads,
    and a sibling whose timestamp shares all but the last digit."""
    mine = backup_prefix(FOLDER, TS)
    sibling = backup_prefix(FOLDER, SIBLING)
    await put_objects(config, [f"{mine}gpbackup_{i}_{TS}" for i in range(1001)])
    await put_objects(config, [f"{sibling}gpbackup_0_{SIBLING}"])
    await start_unfinished(config, f"{mine}gpbackup_9999_{TS}")
    plugin("delete_backup", TS)
    assert plugin("list_directory").stdout.decode() == f"{sibling}gpbackup_0_{SIBLING}\t1\n"
    assert await count_unfinished(config, mine) == 0
    plugin("delete_backup", TS)  # again: nothing left, not an error


def test_delete_backup_wants_a_timestamp(file_plugin: Plugin) -> None:
    for bad in ("2025010112345", "../20250101123456"):
        proc = file_plugin("delete_backup", bad, check=False)
        assert proc.returncode == InputError.exit_code
        assert "14 digits" in one_line_error(proc)


async def test_list_directory_paginates(plugin: Plugin, config: Config) -> None:
    day = f"{FOLDER}/backups/20250102"
    keys = [f"{day}/20250102000000/gpbackup_{i}_20250102000000" for i in range(1001)]
    others = [f"{FOLDER}/backups/2025010/x", f"{FOLDER}/backups/20250102x/y", "prod/cluster2/z"]
    await put_objects(config, keys)
    await put_objects(config, others, b"other")

    lines = plugin("list_directory", "backups/20250102").stdout.decode().splitlines()
    assert lines == [f"{k}\t1" for k in sorted(keys)]
    # the folder may be given in front; a PREFIX is a directory, not a name stem
    assert (
        plugin("list_directory", f"{FOLDER}/backups/20250102/").stdout.decode().splitlines()
        == lines
    )

    everything = plugin("list_directory").stdout.decode().splitlines()
    assert len(everything) == 1003
    assert f"{FOLDER}/backups/2025010/x\t5" in everything
    assert not any(line.startswith("prod/cluster2/") for line in everything)


async def test_delete_directory_refuses_escapes(file_plugin: Plugin, tmp_path: Path) -> None:
    """Refused before any storage is touched, so one backend shows it."""
    plugin = file_plugin
    config = build_config({"storage": "file", "path": str(tmp_path / "store"), "folder": FOLDER})
    keys = [f"{FOLDER}/backups/20250101/{TS}/a", "prod/cluster2/b"]
    await put_objects(config, keys)
    roots = (".", "./", "./.", "//", "/.", "././/", '"."', " . ", "cluster1/..")
    for escape in ("..", "backups/../..", "/etc", "prod/cluster2", "prod", "", "/", *roots):
        proc = plugin("delete_directory", escape, check=False)
        assert proc.returncode == InputError.exit_code, escape
        assert "refusing" in one_line_error(proc), escape
    assert plugin("list_directory").stdout.decode() == f"{keys[0]}\t1\n"
    async with open_storage(config) as storage:
        assert [o.key async for o in storage.list("prod/cluster2/")] == [keys[1]]


async def test_delete_directory_of_the_folder_by_its_name(
    file_plugin: Plugin, tmp_path: Path
) -> None:
    """Every spelling of the folder's own name deletes all of it; `.` did too (exit 0)."""
    config = build_config({"storage": "file", "path": str(tmp_path / "store"), "folder": FOLDER})
    for name in (f"./{FOLDER}/.", f"{FOLDER}/", f'"{FOLDER}"'):
        await put_objects(config, [f"{FOLDER}/backups/20250101/{TS}/a"])
        file_plugin("delete_directory", name)
        assert file_plugin("list_directory").stdout == b"", name


def test_offsets_numbers_are_plain_decimals(file_plugin: Plugin, tmp_path: Path) -> None:
    """Checked before storage is touched: exit 4, one line; a 5000-digit number was exit 1."""
    offsets = tmp_path / "offsets"
    for text in ("1 0 " + "9" * 5000, "1 0 1_0", "1 +5 10", "1 0 123456789012345678901"):
        offsets.write_text(text + "\n")
        proc = file_plugin("restore_data_subset", data_file(tmp_path), str(offsets), check=False)
        assert proc.returncode == InputError.exit_code, text[:30]
        assert proc.stdout == b""
        assert "is not an integer" in one_line_error(proc)


async def test_delete_directory(plugin: Plugin, config: Config) -> None:
    gone = [f"{FOLDER}/backups/20250101/{TS}/f{i}" for i in range(30)]
    kept = [f"{FOLDER}/backups/20250101/{SIBLING}/f", f"{FOLDER}/backups/2025010/f"]
    await put_objects(config, gone + kept)
    plugin("delete_directory", "backups/20250101/" + TS)
    assert plugin("list_directory").stdout.decode().splitlines() == [
        f"{k}\t1" for k in sorted(kept)
    ]
    plugin("delete_directory", FOLDER)  # the folder itself, named explicitly
    assert plugin("list_directory").stdout == b""


# --- the runner: errors, signals, pipes ---------------------------------------------


def test_bad_config_is_one_line(file_plugin: Plugin, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "executablepath: /x\noptions:\n  folder: f\n  storage: file\n  path: /tmp\n  buckt: b\n"
    )
    proc = file_plugin.raw("backup_data", str(bad), data_file(tmp_path), stdin=b"data", check=False)
    assert proc.returncode == ConfigError.exit_code
    assert (
        one_line_error(proc)
        == "asyncplug: unknown option 'buckt' in the plugin config (see README for the list)\n"
    )


def test_unknown_command(file_plugin: Plugin) -> None:
    proc = file_plugin.raw("unknown_command", check=False)
    assert proc.returncode != 0 and "unknown command" in one_line_error(proc)


def test_sigterm_aborts_backup_data(plugin: Plugin, config: Config, tmp_path: Path) -> None:
    key = data_file(tmp_path)
    proc = plugin.popen("backup_data", key, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stderr is not None
    # Once these writes return the plugin has read ~12 MiB: parts are being uploaded.
    proc.stdin.write(os.urandom(12 * 2**20))
    proc.stdin.flush()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    err = proc.stderr.read().decode()
    proc.stdin.close()
    proc.stderr.close()
    assert code == Interrupted.exit_code
    assert err == "asyncplug: backup_data interrupted by SIGTERM; nothing was stored\n"
    assert plugin("restore_data", key, check=False).returncode == ObjectNotFound.exit_code
    assert asyncio.run(count_unfinished(config, backup_prefix(FOLDER, TS))) == 0


def test_closed_stdout_is_a_quiet_end_by_sigpipe(plugin: Plugin, tmp_path: Path) -> None:
    """gprestore's helper closes restore_data's stdout after the last table it needs: the
    plugin ends as the Go plugin does, by SIGPIPE, with nothing on stderr and no ERROR."""
    key = data_file(tmp_path)
    plugin("backup_data", key, stdin=os.urandom(8 * 2**20))
    proc = plugin.popen("restore_data", key, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(1000)
    proc.stdout.close()  # the reader goes away, as `| head -c 1000` would
    code = proc.wait(timeout=60)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert code == -signal.SIGPIPE
    assert err == ""
    log = "".join(p.read_text() for p in (tmp_path / "logs").iterdir())
    assert "[ERROR]" not in log
    assert re.search(r"-\[INFO\]:-restore_data .*: stdout closed by the reader after \d+", log)


def test_isolated_mode_ignores_greenplum_python_env(
    write_config: Callable[..., str], tmp_path: Path
) -> None:
    """Hosts whose greenplum_path.sh exports PYTHONHOME/PYTHONPATH: the compiled executable
    runs Python in isolated mode, as the README's wrapper for the Python client does."""
    plugin = make_plugin(
        {"storage": "file", "path": str(tmp_path / "store"), "folder": FOLDER},
        write_config,
        tmp_path,
    )
    shadow = tmp_path / "gp-lib"
    shadow.mkdir()
    (shadow / "yaml.py").write_text("raise ImportError('the Greenplum copy')\n")
    env = {**plugin.env, "PYTHONHOME": str(tmp_path / "ext/python"), "PYTHONPATH": str(shadow)}
    run = [sys.executable, "-I", "-m", "asyncplug", "list_directory", plugin.config]
    proc = subprocess.run(run, env=env, capture_output=True, timeout=60)
    assert (proc.returncode, proc.stderr) == (0, b"")
    compiled = subprocess.run(
        [EXECUTABLE, "list_directory", plugin.config], env=env, capture_output=True, timeout=60
    )
    assert (compiled.returncode, compiled.stderr) == (0, b"")
    console_script = [sys.executable, "-c", "from asyncplug.client import main; main()"]
    plain = subprocess.run([*console_script, "list_directory", plugin.config], env=env,
                           capture_output=True, timeout=60)  # fmt: skip
    assert plain.returncode != 0  # why the Python client alone needs the wrapper


async def test_delete_in_rounds(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """delete_backup lists and deletes DELETE_ROUND keys at a time until none are left."""
    mine = backup_prefix(FOLDER, TS)
    keep = f"{backup_prefix(FOLDER, SIBLING)}f"
    await put_objects(config, [f"{mine}f{i:02d}" for i in range(23)] + [keep])
    monkeypatch.setattr(commands, "DELETE_ROUND", 5)
    await commands.delete_backup(config, TS)
    async with open_storage(config) as storage:
        assert [o.key async for o in storage.list(f"{FOLDER}/")] == [keep]


class UndeletableStorage(FileStorage):
    """A directory whose deletes report success and do nothing (a broken backend)."""

    async def delete(self, keys: Sequence[str]) -> int:
        return len(keys)


async def test_delete_stops_when_objects_stay(tmp_path: Path) -> None:
    config = build_config({"storage": "file", "path": str(tmp_path), "folder": FOLDER})
    await put_objects(config, [f"{backup_prefix(FOLDER, TS)}f"])
    async with UndeletableStorage(config) as storage:
        with pytest.raises(StorageError, match="still listed after being deleted"):
            await commands._delete_all(storage, backup_prefix(FOLDER, TS))
