"""Results: ratios between rows, the JSON document (schema in bench/README.md), the table.

`derive` fills the ratios once every row is measured; `document` wraps the rows with
what was run where; `check_document` is the schema, used by the tests and before
writing; `summary` is the Markdown table printed at the end (and pasted in README).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from bench import scenarios as sc
from bench import streams, subsets

SCHEMA_VERSION = 1
# Row fields and their JSON types (None allowed where a value can be missing).
ROW_FIELDS: dict[str, tuple[type, ...]] = {
    "scenario": (str,),
    "variant": (str,),
    "label": (str,),
    "data": (str,),
    "executable": (str,),
    "kind": (str,),
    "direction": (str,),
    "operation": (str,),
    "compression": (str,),
    "bytes_logical": (int,),
    "bytes_stored": (int, type(None)),
    "compression_ratio": (float, int, type(None)),
    "wall_s": (float, int, type(None)),
    "mb_per_s": (float, int, type(None)),
    "cpu_s": (float, int, type(None)),
    "cpu_s_per_gib": (float, int, type(None)),
    "peak_rss_mb": (float, int, type(None)),
    "ratio_to_ceiling": (float, int, type(None)),
    "ratios_to_compared": (dict,),
    "verified": (bool, type(None)),
    "error": (str, type(None)),
}
TOP_FIELDS: dict[str, tuple[type, ...]] = {
    "schema_version": (int,),
    "started_at": (str,),
    "duration_s": (float, int),
    "asyncplug_version": (str,),
    "host": (dict,),
    "target": (dict,),
    "settings": (dict,),
    "data": (list,),
    "compared": (list,),
    "skipped": (list,),
    "ok": (bool,),
    "results": (list,),
}


def derive(rows: Sequence[dict[str, Any]], storage: str) -> None:
    """Ratios to the ceiling baseline, to each compared executable, subset vs full restore."""

    def find(**match: Any) -> dict[str, Any] | None:
        for row in rows:
            if row["mb_per_s"] and all(row[k] == v for k, v in match.items()):
                return row
        return None

    for row in rows:
        if not row["mb_per_s"] or "streams" in row:  # streams.py sets its own ratios
            continue
        ceiling = find(scenario=sc.CEILING[(storage, row["direction"])], data=row["data"])
        if ceiling:
            row["ratio_to_ceiling"] = round(row["mb_per_s"] / ceiling["mb_per_s"], 3)
        if row["kind"] == "plugin":
            for other in rows:
                same = other["label"] == row["label"] and other["data"] == row["data"]
                if same and other["kind"] == "compared" and other["mb_per_s"]:
                    ratio = round(row["mb_per_s"] / other["mb_per_s"], 3)
                    row["ratios_to_compared"][other["executable"]] = ratio
        if row["operation"] == sc.RESTORE_SUBSET:
            full = find(label="restore_data[none]", data=row["data"], executable=row["executable"])
            if full:
                row["wall_vs_full_restore"] = round(row["wall_s"] / full["wall_s"], 3)


def failures(rows: Sequence[dict[str, Any]]) -> list[str]:
    """What makes the run fail: any mismatch, any asyncplug error. A failed baseline or
    compared executable is reported in its row but is not asyncplug's failure."""
    out = []
    for row in rows:
        where = f"{row['label']} ({row['executable']}, {row['data']})"
        if row["verified"] is False:
            out.append(f"{where}: restored bytes do not match")
        elif row["error"] and row["kind"] == "plugin":
            out.append(f"{where}: {row['error']}")
    return out


def check_document(doc: dict[str, Any]) -> list[str]:
    """Schema problems of a results document ([] when it is valid)."""
    problems = _check(doc, TOP_FIELDS, "document")
    for i, row in enumerate(doc.get("results") or []):
        if not isinstance(row, dict):
            problems.append(f"results[{i}] is not an object")
            continue
        problems += _check(row, ROW_FIELDS, f"results[{i}]")
        if row.get("error") is None and row.get("mb_per_s") is None:
            problems.append(f"results[{i}] has neither mb_per_s nor error")
    if doc.get("schema_version") not in (None, SCHEMA_VERSION):
        problems.append(f"schema_version {doc['schema_version']} is not {SCHEMA_VERSION}")
    return problems


def _check(obj: dict[str, Any], fields: dict[str, tuple[type, ...]], where: str) -> list[str]:
    problems = []
    for name, types in fields.items():
        if name not in obj:
            problems.append(f"{where} lacks {name}")
        elif not isinstance(obj[name], types) or (
            isinstance(obj[name], bool) and bool not in types
        ):
            problems.append(f"{where}.{name} has type {type(obj[name]).__name__}")
    return problems


def write_json(doc: dict[str, Any], path: str) -> None:
    problems = check_document(doc)
    if problems:
        raise ValueError("results document breaks its schema: " + "; ".join(problems))
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def _num(value: Any, digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def summary(rows: Sequence[dict[str, Any]], compared: Sequence[str] = ()) -> str:
    """The result table in Markdown (reads fine on a terminal, pastes into the README)."""
    head = ["scenario", "data", "tool", "MB/s", "vs ceiling", "CPU s/GiB", "peak RSS MiB",
            "stored ratio", "wall s", "verified"]  # fmt: skip
    head += [f"vs {name}" for name in compared]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        verified = {True: "yes", False: "**NO**", None: "-"}[row["verified"]]
        if row["error"] and row["verified"] is not False:
            verified = "failed"
        # A subset is judged by its wall time against curl --parallel (table below), not MB/s.
        subset = row["operation"] == sc.RESTORE_SUBSET
        cells = [
            row["label"], row["data"], row["executable"], "" if subset else _num(row["mb_per_s"]),
            "" if subset else _num(row["ratio_to_ceiling"], 2), _num(row["cpu_s_per_gib"], 2),
            _num(row["peak_rss_mb"], 0), _num(row["compression_ratio"], 2),
            _num(row["wall_s"], 2), verified,
        ]  # fmt: skip
        cells += [_num(row["ratios_to_compared"].get(name), 2) for name in compared]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        f"{row['label']} ({row['executable']}, {row['data']}): {row['wall_vs_full_restore']:.2f} x "
        "the wall time of restore_data[none]"
        for row in rows
        if row.get("wall_vs_full_restore") is not None
    ]
    tables = [t for t in (subsets.summary(rows), streams.summary(rows)) if t]
    return "\n".join(lines + (["", *notes] if notes else []) + [f"\n{t}" for t in tables])
