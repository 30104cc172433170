"""What the real caller needs from the plugin, shown through the real gpbackup_helper.

- Nothing on stderr when a command succeeds: the restore helper aborts when the plugin
  writes anything to stderr as it starts, and it shows stderr as the error otherwise.
- A reader that closes stdout early is a normal end. The helper closes restore_data's
  stdout once it has the last table of a filtered restore and never waits for the
  plugin's status; the plugin then ends as the Go plugin does, killed by SIGPIPE (a
  shell reports 141), with an INFO line in its log, no ERROR and nothing on stderr.
- The config file as gpbackup rewrites it for each host is accepted.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Lab
from tests.e2e.dataset import SELECTED
from tests.e2e.gpbackup import (
    PluginConfig,
    backup_single_file,
    plugin,
    restore_single_file,
)
from tests.integration.runner import EXECUTABLE

SIGPIPE_STATUS = 141  # 128 + SIGPIPE, as sh reports a death by SIGPIPE


def recording_wrapper(directory: Path, real: str) -> Path:
    """An executablepath that runs `real` and records what the helper never shows: each
    run's stderr and its exit status. It execs nothing: the status is the shell's."""
    script = directory / "plugin"
    script.write_text(
        f'#!/bin/sh\n"{real}" "$@" 2>"{directory}/$$.err"\necho "$? $1" >"{directory}/$$.status"\n'
    )
    script.chmod(0o755)
    return script


def recorded(directory: Path, runs: int, timeout: float = 60) -> list[tuple[int, str, str]]:
    """(status, command, stderr) of `runs` finished runs (the helper does not wait for a
    restore plugin, so its status file may come after the helper has exited)."""
    deadline = time.monotonic() + timeout
    while len(list(directory.glob("*.status"))) < runs:
        assert time.monotonic() < deadline, f"fewer than {runs} plugin runs finished"
        time.sleep(0.1)
    out = []
    for status in sorted(directory.glob("*.status"), key=lambda p: p.stat().st_mtime_ns):
        code, command = status.read_text().split()
        out.append((int(code), command, status.with_suffix(".err").read_text()))
    return out


def test_through_the_helper_stderr_stays_empty_and_an_early_close_is_quiet(
    lab: Lab, e2e_options: Callable[[str], dict[str, Any]]
) -> None:
    # A directory, so restore_data writes through a 1 MiB pipe and the ~6 MB that follow
    # the selected tables cannot all fit in it before the helper leaves.
    config, log = lab.config(e2e_options("file"))
    records = lab.directory("records")
    wrapped = PluginConfig.write(
        recording_wrapper(records, EXECUTABLE),
        {k: v for k, v in config.options.items() if k not in ("pgport", "backup_plugin_version")},
        "recorded.yaml",
    )
    lab.configs.append(wrapped)
    subset = wrapped.with_options("recorded_subset.yaml", restore_subset="on")
    lab.configs.append(subset)
    seg = lab.segment("needs")
    selected = [lab.table(name) for name in SELECTED]

    assert backup_single_file(lab.pg, "src", seg, lab.tables, wrapped, lab.env).ok
    full, early, ranged = lab.new_db(), lab.new_db(), lab.new_db()
    assert restore_single_file(lab.pg, full, seg, lab.tables, wrapped, lab.env).ok
    runs = recorded(records, 4)  # backup_data, backup_file, restore_file, restore_data
    assert restore_single_file(lab.pg, early, seg, selected, wrapped, lab.env, True).ok
    runs = recorded(records, 6)
    assert restore_single_file(lab.pg, ranged, seg, selected, subset, lab.env, True).ok
    runs = recorded(records, 8)
    lab.assert_restored(full)
    lab.assert_restored(early, SELECTED)
    lab.assert_restored(ranged, SELECTED)

    assert [(code, command) for code, command, _ in runs] == [
        (0, "backup_data"), (0, "backup_file"),
        (0, "restore_file"), (0, "restore_data"),
        (0, "restore_file"), (SIGPIPE_STATUS, "restore_data"),
        (0, "restore_file"), (0, "restore_data_subset"),
    ]  # fmt: skip
    assert [err for _, _, err in runs] == [""] * 8
    text = log.text()
    assert "[ERROR]" not in text and "[WARNING]" not in text, text
    assert re.search(r"-\[INFO\]:-restore_data .*: stdout closed by the reader after \d+", text)


def test_the_config_as_gpbackup_rewrites_it(
    lab: Lab, e2e_options: Callable[[str], dict[str, Any]]
) -> None:
    """gpbackup marshals options as strings with yaml.v2 (quoting what would read back as
    a number, a boolean or nothing), adds pgport and backup_plugin_version (empty when
    gprestore finds no version in its history), and writes /tmp/<name>_<nanotime>_<content>."""
    options = {
        **e2e_options("s3"),
        "backup_max_concurrent_requests": 2,
        "restore_multipart_chunksize": "12MB",
        "restore_subset": "on",
    }
    config = PluginConfig.write(EXECUTABLE, options, "s3_config.yaml", plugin_version="")
    lab.configs.append(config)
    text = config.path.read_text()
    assert re.fullmatch(r"/tmp/s3_config\.yaml_\d{19}_0", str(config.path))
    for line in (
        'encryption: "off"', 'restore_subset: "on"', 'pgport: "5432"', 'max_retries: "5"',
        'backup_max_concurrent_requests: "2"', "restore_multipart_chunksize: 12MB",
        'backup_plugin_version: ""', f"executablepath: {EXECUTABLE}",
    ):  # fmt: skip
        assert f"\n  {line}\n" in f"\n  {text}", text
    seg = lab.segment("rewritten")
    seg.prepare()
    data = b"gpbackup's own config\n" * 1000
    for run in (
        plugin(
            config, lab.env, "setup_plugin_for_backup", str(seg.backup_dir), "coordinator", '"-1"'
        ),
        plugin(config, lab.env, "backup_data", str(seg.data_file), stdin=data),
        plugin(config, lab.env, "setup_plugin_for_restore", str(seg.backup_dir), "segment_host"),
    ):
        assert (run.returncode, run.stderr) == (0, b"")
    restored = plugin(config, lab.env, "restore_data", str(seg.data_file))
    assert (restored.returncode, restored.stdout, restored.stderr) == (0, data, b"")
