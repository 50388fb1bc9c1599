"""Rich tables of a benchmark's group counts per split (for ``grouprobust datasets --check``)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from grouprobust.data.readers.table import SPLITS, BenchmarkTable
from grouprobust.errors import GroupRobustError


def group_count_tables(table: BenchmarkTable) -> list[Table]:
    """The training-group counts per split and, when present, the evaluation-group counts."""
    out = []
    for title, counts in ((f"{table.name}: groups (class, attribute) per split", table.group_counts()),
                          (f"{table.name}: evaluation groups (overlapping) per split", table.eval_group_counts())):
        if counts is None:
            continue
        t = Table(title=title)
        t.add_column("group")
        for split in SPLITS:
            t.add_column(split, justify="right")
        for name, row in counts.iterrows():
            t.add_row(str(name), *(str(int(row[s])) for s in SPLITS))
        t.add_row("[bold]samples[/bold]", *(str(int((table.table["split"] == s).sum())) for s in SPLITS))
        out.append(t)
    return out


def check_benchmark(name: str, root: Path | None, data: list[str], console: Console) -> BenchmarkTable:
    """Read and validate benchmark ``name`` under ``root`` and print its group counts; returns the table."""
    from grouprobust.data.readers import read_benchmark
    from grouprobust.options import parse_assignments

    if root is None:
        raise GroupRobustError(f"--check {name} needs --root PATH, the folder of your copy (see docs/datasets.md)")
    table = read_benchmark(name, root, **parse_assignments(data, "--data"))
    for t in group_count_tables(table):
        console.print(t)
    console.print(f"{name}: {len(table.table)} samples read from {table.source}; the layout is valid.")
    return table
