"""gpbackup's default mode (and what --jobs uses): one plugin process per table, started
by PostgreSQL's `COPY ... TO/FROM PROGRAM` as the server's user, behind gzip, exactly as
backup/data.go and restore/data.go write the commands. Here PostgreSQL checks each
program's exit status, and the programs' stderr goes to the server's log.

On S3 only: each table costs two plugin starts, and the directory backend shares every
line of this path but the storage calls, which the single-data-file tests cover.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.e2e.conftest import Lab
from tests.e2e.gpbackup import backup_multi_file, restore_multi_file


def test_every_table_through_copy_program(
    lab: Lab, e2e_options: Callable[[str], dict[str, Any]]
) -> None:
    config, log = lab.config(e2e_options("s3"))
    seg = lab.segment("mdf")
    backup_multi_file(lab.pg, "src", seg, lab.tables, config)
    target = lab.new_db()
    restore_multi_file(lab.pg, target, seg, lab.tables, config)
    lab.assert_restored(target)

    tables = len(lab.tables)
    assert log.count(r"-\[INFO\]:-backup_data .*: ok") == tables, log.text()
    assert log.count(r"-\[INFO\]:-restore_data .*: ok") == tables, log.text()
    assert log.count(r"-\[ERROR\]") == 0, log.text()
    assert "asyncplug: " not in lab.pg.log.read_text()  # nothing on the programs' stderr
