"""A byte flipped in a stored backup must make gprestore's restore fail, never load
wrong rows: shown through the real gpbackup_helper and PostgreSQL.

The helper never waits for restore_data's exit status once it has the bytes it asked
for (helper/restore_helper.go), so a plugin that finds the damage only after writing the
stream, as a whole-stream checksum does, is not heard: the helper and COPY load the
damaged row and report success. The restore can only fail if the plugin stops before
it writes a damaged byte; then the helper's read comes up short, it leaves its
`<pipe>_error` file (what gprestore checks) and exits non-zero.

Expected to fail until block verification (restore stops before a corrupt block, exit 8)
is merged: that is the defect this test exists for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.seaweed import SeaweedServer
from tests.e2e.conftest import Lab
from tests.e2e.dataset import Table
from tests.e2e.gpbackup import Segment, backup_single_file, restore_single_file

HEX = b"0123456789abcdef"


def flip_a_hex_digit(data: bytearray, start: int, end: int) -> int:
    """Change one md5 hex digit in the middle of [start, end) to another: the CSV stays
    valid, so only a check of the bytes can tell the row is wrong."""
    at = (start + end) // 2
    while data[at] not in HEX:
        at += 1
    data[at] = HEX[(HEX.index(data[at]) + 1) % 16]
    return at


def table_range(seg: Segment, table: Table) -> tuple[int, int]:
    toc = yaml.safe_load(seg.toc.read_text())
    entry = toc["dataentries"][table.oid]
    return entry["startbyte"], entry["endbyte"]


def row_hashes(lab: Lab, db: str, table: Table) -> Counter[str]:
    out = lab.pg.psql(db, f"COPY (SELECT md5(t::text) FROM {table.fqn} AS t) TO STDOUT")
    return Counter(out.stdout.decode().split())


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_a_flipped_byte_fails_the_restore_and_loads_no_wrong_row(
    request: pytest.FixtureRequest,
    lab: Lab,
    e2e_options: Callable[[str], dict[str, Any]],
    backend: str,
) -> None:
    options = e2e_options(backend)
    config, log = lab.config(options)
    seg = lab.segment("corrupt")
    assert backup_single_file(lab.pg, "src", seg, lab.tables, config, lab.env).ok
    big = lab.table("public.big_table")
    key = "prod/cluster1/" + "/".join(seg.data_file.parts[-4:])
    if backend == "file":
        stored = Path(options["path"]) / key
        data = bytearray(stored.read_bytes())
        flip_a_hex_digit(data, *table_range(seg, big))
        with open(stored, "r+b") as f:  # in place: everything else about the object stays
            f.write(data)
    else:
        seaweed: SeaweedServer = request.getfixturevalue("seaweed")
        client = seaweed.client()
        head = client.head_object(Bucket=options["bucket"], Key=key)
        data = bytearray(client.get_object(Bucket=options["bucket"], Key=key)["Body"].read())
        flip_a_hex_digit(data, *table_range(seg, big))
        client.put_object(  # the same object, metadata included, one byte changed
            Bucket=options["bucket"], Key=key, Body=bytes(data), Metadata=head["Metadata"]
        )

    target = lab.new_db()
    run = restore_single_file(lab.pg, target, seg, lab.tables, config, lab.env)
    wrong = {
        str(t): sum((row_hashes(lab, target, t) - row_hashes(lab, "src", t)).values())
        for t in lab.tables
    }
    loaded_wrong = {name: count for name, count in wrong.items() if count}
    # asyncplug finds the damage either way (README "Exit codes"); the question is when
    log.wait_for(r"-\[ERROR\]:-restore_data .*: failed after [\d.]+ s, exit 8: ", 1)
    assert not loaded_wrong, f"wrong rows loaded: {loaded_wrong}; helper run: {run}"
    assert not run.ok, "the restore of a corrupt backup was reported as a success"
    assert run.returncode != 0 and run.error_file, run
