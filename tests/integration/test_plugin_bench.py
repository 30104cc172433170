"""gpbackup's plugin test bench (plugins/plugin_test.sh in greenplum-db/gpbackup), step by
step, against the installed executable, on S3 (SeaweedFS) and on a directory.

The script's sections are kept in order and with its data: `echo $data` is 1000
random alphanumerics plus a newline, `$data_large` 1,000,000 plus a newline; the
shell's `$(...)` drops the trailing newline of an output, so comparisons do too.
The restore_data_subset section runs there only for DDBoost; SPEC §1 asks it of us.
The gpbackup/gprestore runs at the end need a Greenplum cluster and are not here.
"""

from __future__ import annotations

import os
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.runner import Plugin, make_plugin

MINIMUM_API_VERSION = (0, 4, 0)
TEXT = "this is some text"


def timestamp() -> str:
    """`expr 99999999999999 - $(od -vAn -N5 -tu < /dev/urandom)`: 14 random-ish digits."""
    return str(99999999999999 - int.from_bytes(os.urandom(5), "little"))


def alnum(count: int) -> bytes:
    """`tr -dc 'A-Za-z0-9' </dev/urandom | head -c COUNT; echo`"""
    return "".join(random.choices(string.ascii_letters + string.digits, k=count)).encode() + b"\n"


def shell(output: bytes) -> bytes:
    """What `output=\\`...\\`` keeps: trailing newlines dropped."""
    return output.rstrip(b"\n")


@dataclass
class Bench:
    plugin: Plugin
    root: Path  # stands for /tmp/testseg

    def testdir(self, ts: str) -> Path:
        path = self.root / "backups" / ts[:8] / ts
        path.mkdir(parents=True, exist_ok=True)
        return path

    def hook(self, command: str, testdir: Path) -> None:
        self.plugin(command, str(testdir), "coordinator", '"-1"')
        self.plugin(command, str(testdir), "segment_host")
        self.plugin(command, str(testdir), "segment", '"0"')

    def cleanup_test_dir(self, testdir: Path) -> None:
        self.hook("cleanup_plugin_for_backup", testdir)
        self.hook("cleanup_plugin_for_restore", testdir)


@pytest.fixture
def bench(
    backend_options: dict[str, Any], write_config: Callable[..., str], tmp_path: Path
) -> Bench:
    return Bench(make_plugin(backend_options, write_config, tmp_path), tmp_path / "testseg")


def test_api_version_and_version(tmp_path: Path) -> None:
    plugin = Plugin(str(tmp_path / "unused.yaml"), tmp_path)  # neither reads a config
    api_version = plugin.raw("plugin_api_version").stdout.decode().strip()
    assert tuple(int(n) for n in api_version.split(".")) >= MINIMUM_API_VERSION
    native_version = plugin.raw("--version").stdout.decode().strip()
    assert re.search(r".* version .*", native_version)
    name, word, version = native_version.split(" ")  # gpbackup reads words 1 and 3
    assert (name, word) == ("asyncplug", "version") and re.fullmatch(r"\d+\.\d+\.\d+", version)


def test_setup_and_file_functions(bench: Bench) -> None:
    ts = timestamp()
    testdir = bench.testdir(ts)
    testfile = testdir / f"testfile_{ts}.txt"
    testfile.write_text(TEXT + "\n")

    bench.hook("setup_plugin_for_backup", testdir)
    bench.plugin("backup_file", str(testfile))
    assert testfile.is_file()  # plugins should leave copies of the files locally
    bench.hook("setup_plugin_for_restore", testdir)

    testfile.unlink()
    bench.plugin("restore_file", str(testfile))
    assert shell(testfile.read_bytes()) == TEXT.encode()

    missing = testdir / "there_is_no_file_to_restore"
    assert bench.plugin("restore_file", str(missing), check=False).returncode != 0
    assert not missing.exists()
    bench.cleanup_test_dir(testdir)


def test_data_functions(bench: Bench) -> None:
    ts = timestamp()
    testdir = bench.testdir(ts)
    data = alnum(1000)

    testdata = str(testdir / f"testdata_{ts}.txt")
    bench.plugin("backup_data", testdata, stdin=data)
    assert shell(bench.plugin("restore_data", testdata).stdout) == shell(data)
    bench.cleanup_test_dir(testdir)

    test_no_data = str(testdir / f"test_no_data_{ts}.txt")
    bench.plugin("backup_data", test_no_data, stdin=b"")
    assert bench.plugin("restore_data", test_no_data).stdout == b""
    bench.cleanup_test_dir(testdir)


def test_restore_subset_functions(bench: Bench) -> None:
    ts = timestamp()
    testdir = bench.testdir(ts)
    offsets = testdir / "offsets"

    data = alnum(1000)
    small = str(testdir / f"testdatasmall_{ts}.txt")
    bench.plugin("backup_data", small, stdin=data)
    offsets.write_text("1 3 10\n")
    output = bench.plugin("restore_data_subset", small, str(offsets)).stdout
    assert shell(output) == data[3:10]  # echo $data | cut -c4-10

    data_large = alnum(1_000_000)
    large = str(testdir / f"testdatalarge_{ts}.txt")
    bench.plugin("backup_data", large, stdin=data_large)
    offsets.write_text("1 900000 900001\n")
    output = bench.plugin("restore_data_subset", large, str(offsets)).stdout
    assert shell(output) == data_large[900000:900001]  # cut -c900001-900001

    offsets.write_text("2 0 700000 900000 900001\n")
    output = bench.plugin("restore_data_subset", large, str(offsets)).stdout
    assert shell(output) == data_large[:700000] + data_large[900000:900001]
    bench.cleanup_test_dir(testdir)


def test_delete_backup_directory(bench: Bench) -> None:
    ts = timestamp()
    ts2 = str(int(ts) + 1)
    data = alnum(1000)
    first, second = bench.testdir(ts), bench.testdir(ts2)
    for when, testdir in ((ts, first), (ts2, second)):
        (testdir / f"testfile_{when}.txt").write_text(TEXT + "\n")
        bench.hook("setup_plugin_for_backup", testdir)
        bench.plugin("backup_data", str(testdir / f"testdata_{when}.txt"), stdin=data)
        bench.plugin("backup_file", str(testdir / f"testfile_{when}.txt"))

    bench.plugin("delete_backup", ts)

    gone = bench.plugin("restore_data", str(first / f"testdata_{ts}.txt"), check=False)
    assert gone.returncode != 0 and shell(gone.stdout) != shell(data)
    assert (
        bench.plugin("restore_file", str(first / f"testfile_{ts}.txt"), check=False).returncode != 0
    )
    sibling = bench.plugin("restore_data", str(second / f"testdata_{ts2}.txt"))
    assert shell(sibling.stdout) == shell(data)  # the sibling backup remains
    bench.cleanup_test_dir(first)

    # the script's last step: cleanup of uploaded test artifacts
    bench.plugin("delete_backup", ts2)
    assert bench.plugin("list_directory").stdout == b""


def test_fails_with_unknown_command(tmp_path: Path) -> None:
    plugin = Plugin(str(tmp_path / "unused.yaml"), tmp_path)
    assert plugin.raw("unknown_command", check=False).returncode != 0
