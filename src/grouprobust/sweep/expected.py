"""Published results a sweep is compared with: the ``expected`` key of a method in a sweep file.

A method entry may carry the test worst-group accuracy the literature reports for it, with its
citation, either for every dataset of the sweep or per dataset::

    methods:
      groupdro:
        expected: {worst_group_acc: 0.914, source: "Sagawa et al. 2020, Table 3 (ResNet-50)"}
      jtt:
        expected:
          waterbirds: {worst_group_acc: 0.867, source: "Liu et al. 2021, Table 1 (ResNet-50)"}
          celeba: {worst_group_acc: 0.811, source: "Liu et al. 2021, Table 1 (ResNet-50)"}

Each trial carries its `Expected` into the sweep's manifest (``sweep.json``, key ``expected`` of
the trial's entry), never into its configuration: a published number is not a hyper-parameter, so
it changes no run id, and correcting a citation re-runs nothing. `grouprobust report` reads it
back (`grouprobust.sweep.collect.collect_runs`, through `manifest_expected` and `attach_expected`) and
shows it beside the measured accuracy. This module is the lowest layer of `grouprobust.sweep`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from grouprobust.errors import GroupRobustError

EXPECTED_KEYS = ("worst_group_acc", "source")
#: The columns `attach_expected` adds to the runs and `select_and_aggregate` carries into the summary.
EXPECTED_COLUMNS = ("expected_worst_group_acc", "expected_source")


@dataclass(frozen=True)
class Expected:
    """A published test worst-group accuracy (a fraction in [0, 1]) and where it is published."""

    worst_group_acc: float
    source: str

    def as_json(self) -> dict[str, Any]:
        """The mapping written to the manifest and read back by `attach_expected`."""
        return {"worst_group_acc": self.worst_group_acc, "source": self.source}


def _fail(path: Path, key: str, problem: str) -> GroupRobustError:
    return GroupRobustError(f"{path}: {key}: {problem}")


def _one(path: Path, key: str, value: Any) -> Expected:
    if not isinstance(value, dict):
        raise _fail(path, key, f"must be a mapping {{worst_group_acc: 0.914, source: \"paper, table (backbone)\"}}, "
                    f"got {value!r}")
    unknown = [k for k in value if k not in EXPECTED_KEYS]
    if unknown:
        raise _fail(path, f"{key}.{unknown[0]}", f"unknown key; allowed here: {', '.join(EXPECTED_KEYS)}")
    missing = [k for k in EXPECTED_KEYS if k not in value]
    if missing:
        raise _fail(path, f"{key}.{missing[0]}", "missing; give both worst_group_acc (a fraction) and source "
                    "(the paper, table and backbone)")
    acc = value["worst_group_acc"]
    if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not math.isfinite(acc) or not 0 <= acc <= 1:
        raise _fail(path, f"{key}.worst_group_acc", f"must be a fraction between 0 and 1 (91.4% is 0.914), got {acc!r}")
    source = value["source"]
    if not isinstance(source, str) or not source.strip():
        raise _fail(path, f"{key}.source", f"must be a non-empty string citing the paper, table and backbone, "
                    f"got {source!r}")
    return Expected(float(acc), source.strip())


def parse_expected(path: Path, key: str, value: Any, datasets: list[str]) -> dict[str | None, Expected]:
    """The ``expected`` entry at ``key`` of the sweep file ``path``: ``{None: Expected}`` when it holds
    one result for every dataset, else ``{dataset: Expected}`` with each name among ``datasets``.

    Raises a one-line `GroupRobustError` naming the file and the key of the first problem.
    """
    if value is None:
        return {}
    if not isinstance(value, dict) or not value:
        raise _fail(path, key, "must be a mapping {worst_group_acc: ..., source: ...}, or one such mapping per "
                    f"dataset, got {value!r}")
    if any(k in value for k in EXPECTED_KEYS):
        return {None: _one(path, key, value)}
    per_dataset: dict[str | None, Expected] = {}
    for name, entry in value.items():
        if name not in datasets:
            raise _fail(path, f"{key}.{name}", f"is neither {' nor '.join(EXPECTED_KEYS)} nor a dataset of this "
                        f"sweep ({', '.join(datasets)})")
        per_dataset[str(name)] = _one(path, f"{key}.{name}", entry)
    return per_dataset


def expected_for(expected: dict[str | None, Expected], dataset: str) -> Expected | None:
    """The published result for ``dataset`` in a parsed ``expected`` entry (None where there is none)."""
    return expected.get(dataset, expected.get(None))


def manifest_expected(manifest: dict[str, Any], path: Path) -> dict[str, Expected]:
    """Run id -> `Expected` for the trials of a sweep manifest (the mapping read from ``path``) that carry
    one; an entry whose ``expected`` is damaged is left out (it costs the comparison, never the report)."""
    trials = manifest.get("trials") if isinstance(manifest, dict) else None
    found = {}
    for entry in trials if isinstance(trials, list) else []:
        value = entry.get("expected") if isinstance(entry, dict) else None
        if isinstance(value, dict) and isinstance(entry.get("run_id"), str):
            try:
                found[entry["run_id"]] = _one(path, f"trials[{entry['run_id']}].expected", value)
            except GroupRobustError:
                continue
    return found


def attach_expected(runs: pd.DataFrame, found: dict[str, Expected]) -> pd.DataFrame:
    """``runs`` with `EXPECTED_COLUMNS` filled from ``found`` (run id -> `Expected`; NaN / None where a run
    has no published result); unchanged when ``found`` is empty."""
    if not found:
        return runs
    runs = runs.copy()
    runs[EXPECTED_COLUMNS[0]] = [found[r].worst_group_acc if r in found else float("nan") for r in runs["run_id"]]
    runs[EXPECTED_COLUMNS[1]] = [found[r].source if r in found else None for r in runs["run_id"]]
    return runs


def summary_expected(runs: pd.DataFrame) -> dict[str, Any]:
    """The published result of one summary row's runs as `EXPECTED_COLUMNS` values: the first one any of
    them carries (all runs of a dataset and method carry the same one); empty when none does."""
    if EXPECTED_COLUMNS[0] not in runs:
        return {}
    carrying = runs[runs[EXPECTED_COLUMNS[0]].notna()]
    if carrying.empty:
        return {}
    first = carrying.iloc[0]
    return {EXPECTED_COLUMNS[0]: float(first[EXPECTED_COLUMNS[0]]), EXPECTED_COLUMNS[1]: first[EXPECTED_COLUMNS[1]]}


def has_expected(summary: pd.DataFrame) -> bool:
    """Whether any row of a report's summary carries a published result."""
    return EXPECTED_COLUMNS[0] in summary and bool(summary[EXPECTED_COLUMNS[0]].notna().any())


def expected_cells(summary: pd.DataFrame) -> tuple[list[str], list[str]]:
    """``(cells, notes)``: per summary row the published worst-group accuracy in % with a note mark
    (``91.4 [1]``; ``—`` where there is none), and the numbered sources the marks refer to (a source
    cited by several rows has one number)."""
    sources: list[str] = []
    cells = []
    for acc, source in zip(summary[EXPECTED_COLUMNS[0]], summary[EXPECTED_COLUMNS[1]]):
        if pd.isna(acc):
            cells.append("—")
            continue
        if source not in sources:
            sources.append(source)
        cells.append(f"{100 * acc:.1f} [{sources.index(source) + 1}]")
    return cells, [f"[{i}] {s}" for i, s in enumerate(sources, 1)]


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_notes(notes: list[str]) -> str:
    """The numbered sources as LaTeX lines to follow the table (special characters escaped)."""
    escaped = ["".join(_LATEX_SPECIAL.get(ch, ch) for ch in note) for note in notes]
    return "".join(f"\\par\\noindent{{\\footnotesize {line}}}\n" for line in escaped)
