"""gpbackup --single-data-file and gprestore on one segment, with the real gpbackup_helper
calling asyncplug and a real PostgreSQL running the COPY commands (tests/e2e/gpbackup.py
says what is taken from the gpbackup source).

One backup per backend and compression, then the three restores gprestore can make of
it, each into fresh tables compared with the source table by table: a full restore; a
filtered one with `restore_subset: "on"` (the helper calls restore_data_subset with its
own offsets file); and a filtered one without (the helper reads restore_data's stream up
to the last table it needs and closes it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.conftest import Lab
from tests.e2e.dataset import SELECTED
from tests.e2e.gpbackup import backup_single_file, restore_single_file


@pytest.mark.parametrize("compression", ["none", "zstd"])
@pytest.mark.parametrize("backend", ["s3", "file"])
def test_backup_then_full_and_filtered_restores(
    lab: Lab, e2e_options: Callable[[str], dict[str, Any]], backend: str, compression: str
) -> None:
    config, log = lab.config(e2e_options(backend), compression=compression)
    seg = lab.segment("sdf")
    backup = backup_single_file(lab.pg, "src", seg, lab.tables, config, lab.env)
    assert backup.ok, backup

    full = lab.new_db()
    run = restore_single_file(lab.pg, full, seg, lab.tables, config, lab.env)
    assert run.ok, run
    lab.assert_restored(full)

    subset_config = config.with_options("asyncplug_subset.yaml", restore_subset="on")
    lab.configs.append(subset_config)
    selected = [lab.table(name) for name in SELECTED]
    subset = lab.new_db()
    run = restore_single_file(lab.pg, subset, seg, selected, subset_config, lab.env, filtered=True)
    assert run.ok, run
    lab.assert_restored(subset, SELECTED)

    early = lab.new_db()
    run = restore_single_file(lab.pg, early, seg, selected, config, lab.env, filtered=True)
    assert run.ok, run
    lab.assert_restored(early, SELECTED)

    log.wait_for(r"-restore_data_subset .*: ok", 1)
    # The helper closes restore_data's stdout after its last table, a normal end (unless
    # the rest of the stream fitted in the pipe first): test_caller_needs.py shows it.
    log.wait_for(r"-restore_data .*: (ok|stdout closed by the reader after)", 2)
    assert log.count(r"-\[ERROR\]") == 0, log.text()
