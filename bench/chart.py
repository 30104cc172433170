"""The PNG chart: throughput and plugin CPU per GiB, one bar per result row.

Rows are grouped by direction (backup, then restore) so that each plugin scenario
sits next to the baselines it is measured against, with a dashed line at the ceiling
(curl, or cat on a directory); colours tell asyncplug, the
baselines and compared executables apart. matplotlib's Agg backend: no display.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench import scenarios as sc

COLORS = {"plugin": "#1f77b4", "baseline": "#7f7f7f", "compared": "#ff7f0e"}
NAMES = {"plugin": "asyncplug", "baseline": "baseline (curl, awscli, cat)", "compared": "compared"}


def bar_label(row: dict[str, Any], many_kinds: bool) -> str:
    label = str(row["label"])
    if row["kind"] == "compared":
        label += f" · {row['executable']}"
    if many_kinds:
        label += f" · {row['data']}"
    return label


def write_chart(rows: Sequence[dict[str, Any]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    # Subsets are judged by wall time against curl --parallel (the summary's table), not MB/s.
    shown = [r for r in rows if r["mb_per_s"] and r["operation"] != sc.RESTORE_SUBSET]
    shown.sort(key=lambda r: r["direction"] != "backup")  # stable: run order within each
    many_kinds = len({r["data"] for r in shown}) > 1
    labels = [bar_label(r, many_kinds) for r in shown]
    colors = [COLORS[r["kind"]] for r in shown]
    height = max(3.0, 0.32 * len(shown) + 1.6)
    fig, (speed, cpu) = plt.subplots(1, 2, figsize=(13, height), sharey=True)
    y = list(range(len(shown)))
    speed.barh(y, [r["mb_per_s"] for r in shown], color=colors)
    cpu.barh(y, [r["cpu_s_per_gib"] or 0 for r in shown], color=colors)
    for i, row in enumerate(shown):
        speed.text(row["mb_per_s"], i, f" {row['mb_per_s']:,.0f}", va="center", fontsize=7)
        if row["cpu_s_per_gib"] is not None:
            cpu.text(
                row["cpu_s_per_gib"], i, f" {row['cpu_s_per_gib']:.2f}", va="center", fontsize=7
            )
    _mark_ceilings(speed, shown, many_kinds)
    first_restore = next((i for i, r in enumerate(shown) if r["direction"] == "restore"), 0)
    if first_restore:  # a rule between the backup and the restore bars
        for axis in (speed, cpu):
            axis.axhline(first_restore - 0.5, color="black", linewidth=0.6)
    speed.set_yticks(y, labels, fontsize=8)
    speed.invert_yaxis()
    speed.set_xlabel("MB/s of logical data (higher is better)")
    cpu.set_xlabel("CPU seconds per GiB, user + system of the process (lower is better)")
    cpus = [r["cpu_s_per_gib"] for r in shown if r["cpu_s_per_gib"]]
    if cpus and max(cpus) > 30 * min(cpus):
        # small subsets and baselines sit orders of magnitude apart: keep both readable
        cpu.set_xscale("log")
        cpu.set_xlabel(cpu.get_xlabel() + ", log scale")
    for axis in (speed, cpu):
        axis.grid(axis="x", alpha=0.3)
        axis.margins(x=0.15)
    kinds = [k for k in COLORS if any(r["kind"] == k for r in shown)]
    fig.legend(
        handles=[Patch(color=COLORS[k], label=NAMES[k]) for k in kinds],
        loc="upper right",
        fontsize=8,
    )
    fig.suptitle(title, fontsize=10, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _mark_ceilings(axis: Any, shown: Sequence[dict[str, Any]], many_kinds: bool) -> None:
    """A dashed line at the ceiling (curl or cat) across each direction's bars; the
    streams rows (N processes at once) have their own, curl x N."""
    ceilings = set(sc.CEILING.values())
    for direction in ("backup", "restore"):
        for streams in (False, True):
            group = [(i, r) for i, r in enumerate(shown)
                     if r["direction"] == direction and ("streams" in r) == streams]  # fmt: skip
            top = [
                r for _, r in group
                if r["kind"] == "baseline" and (streams or r["scenario"] in ceilings)
            ]  # fmt: skip
            if group and len(top) == 1 and not many_kinds:
                axis.vlines(top[0]["mb_per_s"], group[0][0] - 0.45, group[-1][0] + 0.45,
                            colors="black", linestyles="dashed", linewidth=0.8)  # fmt: skip
