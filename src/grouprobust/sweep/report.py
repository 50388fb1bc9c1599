"""Reports over a directory of runs: hyper-parameter choice on validation, then test mean ± std over seeds.

The rule: for each dataset (with its options) and method, the hyper-parameter points (configs that
differ only by seed) are ranked by the **mean over seeds** of the selection rule's validation metric
(taken at each run's own selected epoch); ties go to the higher mean validation average accuracy.
The chosen point's test accuracies are reported as mean ± sample standard deviation (ddof=1) over
its seeds. Failed runs are listed with their reasons and never enter the means.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from grouprobust.errors import GroupRobustError
from grouprobust.methods.registry import get_method
from grouprobust.outdir import OutputDirectory, check_output_path, files_in_the_way
from grouprobust.output import format_mean_std, read_json, write_atomic, write_json_atomic
from grouprobust.selection import SelectionRule
from grouprobust.sweep.choice import chosen_points
from grouprobust.sweep.collect import COPY, UNREADABLE, canonical_json, metric_column
from grouprobust.sweep.expected import expected_cells, has_expected, latex_notes, summary_expected
from grouprobust.sweep.frames import load_runs
from grouprobust.sweep.store import read_manifest

REPORTED = (("worst_group_acc", "worst-group"), ("group_balanced_acc", "group-balanced"), ("avg_acc", "average"))
TABLES = ("summary.csv", "per_group.csv", "failures.csv", "summary.tex", "report.md")
REPORT_FILES = "report.json"  # the report's list of the files it wrote into its folder
WRITTEN_BY = "grouprobust report"


def _variant_label(df: pd.DataFrame) -> pd.Series:
    """The dataset name, with its options appended where one name appears with several option sets."""
    labels = df["dataset"].copy()
    for name, group in df.groupby("dataset"):
        variants = group["data"].unique()
        if len(variants) < 2:
            continue
        dicts = {v: json.loads(v) for v in variants}
        differing = sorted({k for d in dicts.values() for k in d
                            if len({canonical_json(x.get(k)) for x in dicts.values()}) > 1})
        for v, d in dicts.items():
            labels[(df["dataset"] == name) & (df["data"] == v)] = f"{name}[{','.join(f'{k}={d.get(k)}' for k in differing)}]"
    return _label_inputs(df, labels)


def _label_inputs(df: pd.DataFrame, labels: pd.Series) -> pd.Series:
    """``labels`` with the input fingerprints appended (``table[path@1a2b3c4d]``) where one dataset with
    one option set appears with several contents of its input files (runs before and after an edit)."""
    labels = labels.copy()
    for (name, data), group in df.groupby(["dataset", "data"]):
        variants = group["inputs"].unique()
        if len(variants) < 2:
            continue
        for v in variants:
            short = ",".join(f"{k}@{str(f).removeprefix('sha256:')[:8]}" for k, f in sorted(json.loads(v).items()))
            rows = (df["dataset"] == name) & (df["data"] == data) & (df["inputs"] == v)
            labels[rows] = f"{labels[rows].iloc[0]}[{short or 'inputs not recorded'}]"
    return labels


def _varying_hparams(hparams: pd.Series) -> list[str]:
    dicts = [json.loads(h) for h in hparams.unique()]
    keys = sorted({k for d in dicts for k in d})
    return [k for k in keys if len({canonical_json(d.get(k)) for d in dicts}) > 1]


@dataclass
class Report:
    """The aggregated results: ``summary`` (one row per dataset and method), ``per_group``, ``failures``."""

    runs: pd.DataFrame
    summary: pd.DataFrame
    per_group: pd.DataFrame
    failures: pd.DataFrame
    chosen: pd.DataFrame
    rule_override: str | None = None
    unreadable: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["run_id", "path", "reason"]))
    copies: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["run_id", "path", "reason"]))


def select_and_aggregate(runs: pd.DataFrame, rule: str | None = None) -> Report:
    """Choose each (dataset, method)'s hyper-parameters on validation and aggregate test metrics over seeds.

    ``rule`` overrides the selection rule stored in the runs' configs. Returns a `Report` whose
    ``summary`` has ``test_<metric>_mean`` / ``_std`` columns (fractions), ``n_seeds`` and the
    chosen values of the hyper-parameters that vary across the sweep.
    """
    runs = runs.copy()
    runs["variant"] = _variant_label(runs)
    summary_rows, chosen_rows, group_rows = [], [], []
    for key, group, sel, best, n_points in chosen_points(runs, rule):
        _, _, _, method, regime, _ = key
        metric = metric_column(sel)
        runs_best = group[group["point"] == best].sort_values("seed")
        varying = _varying_hparams(group["hparams"])
        chosen = json.loads(runs_best["hparams"].iloc[0])
        row: dict[str, Any] = {
            "dataset": runs_best["variant"].iloc[0], "method": method, "regime": regime, "rule": sel.name,
            "labels": label_use(method, regime, bool(runs_best["train_groups"].fillna(False).any()), sel),
            "n_points": n_points, "n_seeds": len(runs_best),
            "hparams": ", ".join(f"{k}={chosen[k]}" for k in varying) or "(one point)",
            "selection_figure": runs_best[metric].mean(),
            f"val_{sel.metric}_mean": runs_best[metric].mean(),
        }
        for name, _ in REPORTED:
            row[f"test_{name}_mean"] = runs_best[f"test_{name}"].mean()
            row[f"test_{name}_std"] = runs_best[f"test_{name}"].std(ddof=1)
            row[f"test_{name}_per_seed"] = ";".join(f"{v:.4f}" for v in runs_best[f"test_{name}"])
        row["seeds"] = ";".join(str(int(v)) for v in runs_best["seed"])
        row["test_worst_group_acc_ci95_half_mean"] = runs_best["test_worst_group_acc_ci95_half"].mean()
        row["time_s_mean"] = runs_best["time_s"].mean()
        row["higher_is_better"] = sel.higher_is_better
        row.update(summary_expected(group))
        summary_rows.append(row)
        chosen_rows.append(runs_best.assign(variant=row["dataset"]))
        per_group = pd.DataFrame(list(runs_best["test_per_group"])).mean(axis=0)
        group_rows += [{"dataset": row["dataset"], "method": method, "group": g, "test_acc_mean": acc}
                       for g, acc in per_group.items()]
    failures = runs[runs["status"] == "failed"][["run_id", "variant", "method", "seed", "hparams", "reason"]]
    summary = _by_selection_figure(pd.DataFrame(summary_rows))
    unreadable = runs[runs["status"] == UNREADABLE][["run_id", "path", "reason"]].reset_index(drop=True)
    copies = runs[runs["status"] == COPY][["run_id", "path", "reason"]].reset_index(drop=True)
    return Report(runs, summary, pd.DataFrame(group_rows),
                  failures.rename(columns={"variant": "dataset"}).reset_index(drop=True),
                  pd.concat(chosen_rows) if chosen_rows else runs.iloc[:0], rule, unreadable, copies)


#: Which group labels a method reads, by its ``needs`` (`grouprobust.methods.base.MethodDeclaration`).
LABEL_USE = {"none": "none", "val": "val only", "full": "train + val"}


def label_use(method: str, regime: str, inferred: bool, rule: SelectionRule) -> str:
    """The group labels a method's runs read: ``train + val``, ``val only`` or ``none`` (``inferred train +
    val`` on inferred training groups; a label-free method selected by a rule that reads groups: ``val only``)."""
    try:
        needs = get_method(method).needs
    except GroupRobustError:  # a method this version does not know: what the regime gave
        needs = regime
    if needs == "full" and inferred:
        return "inferred train + val"
    if needs == "none" and rule.needs != "none" and regime != "none":
        return "val only"
    return LABEL_USE.get(needs, needs)


def _by_selection_figure(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with each dataset's rows ordered best first by the selection figure (the mean over seeds
    of the rule's validation metric, in the rule's own direction)."""
    if summary.empty:
        return summary
    order = summary["selection_figure"].where(summary["higher_is_better"], -summary["selection_figure"])
    return (summary.assign(_order=-order).sort_values(["dataset", "_order", "method"], kind="stable")
            .drop(columns="_order").reset_index(drop=True))


def best_lines(summary: pd.DataFrame) -> list[str]:
    """One line per dataset: the method that the selection rule puts first, with its figures (percent)."""
    lines = []
    for dataset, rows in summary.groupby("dataset", sort=True):
        top = rows.iloc[0]
        rules = sorted(set(rows["rule"]))
        lines.append(f"best method on {dataset} by {', '.join(rules)}: {top['method']} (validation "
                     f"{100 * top['selection_figure']:.1f}; test worst-group "
                     f"{format_mean_std(top['test_worst_group_acc_mean'], top['test_worst_group_acc_std'], 1, 100)} %)")
    return lines


def display_table(summary: pd.DataFrame, pm: str = " ± ", per_seed: bool = False) -> pd.DataFrame:
    """The summary with test accuracies as ``mean ± std`` strings in percent (std "—" for one seed), the labels
    each method reads, the selection figure rows are ordered by, the mean 95% Wilson half-width of the
    worst-group accuracy, wall time per run and, with ``per_seed``, the worst-group accuracy of every seed;
    where a row carries a published result, an ``expected worst-group %`` column beside the measured one, its
    values marked with the number of their source (`expected_notes` lists them)."""
    out = summary[["dataset", "method", "labels", "rule", "n_seeds", "hparams"]].copy()
    out["selection %"] = [f"{100 * v:.1f}" for v in summary["selection_figure"]]
    for name, label in REPORTED:
        out[f"{label} %"] = [format_mean_std(m, s, 1, 100, pm)
                             for m, s in zip(summary[f"test_{name}_mean"], summary[f"test_{name}_std"])]
        if name == "worst_group_acc":
            if has_expected(summary):
                out["expected worst-group %"] = expected_cells(summary)[0]
            out["worst-group 95% CI ±"] = ["—" if np.isnan(h) else f"{100 * h:.1f}"
                                           for h in summary["test_worst_group_acc_ci95_half_mean"]]
            if per_seed:
                out["worst-group per seed %"] = [" / ".join(f"{100 * float(v):.1f}" for v in cell.split(";"))
                                                 for cell in summary["test_worst_group_acc_per_seed"]]
    out["time s"] = ["—" if np.isnan(t) else f"{t:.1f}" for t in summary["time_s_mean"]]
    return out

def expected_notes(summary: pd.DataFrame) -> list[str]:
    """The numbered sources of the ``expected worst-group %`` column (``[1] paper, table (backbone)``)."""
    return expected_cells(summary)[1] if has_expected(summary) else []


def missing_trials(directory: Path, runs: pd.DataFrame) -> int:
    """Trials listed in the sweep manifest that have no finished or failed run directory yet."""
    try:
        manifest = read_manifest(Path(directory))
    except GroupRobustError:  # a damaged manifest costs this count, never the report
        return 0
    if manifest is None:
        return 0
    listed = {t["run_id"] for t in manifest["trials"]}
    return len(listed - set(runs["run_id"]))


def _written_before(out: Path) -> set[str]:
    """The names of the files that earlier reports wrote into ``out`` (listed in ``out/report.json``)."""
    path = out / REPORT_FILES
    if not os.path.lexists(path):
        return _legacy_report_files(out)
    try:
        listing = read_json(path) if path.is_file() else None
    except GroupRobustError:
        listing = None
    files = listing.get("files") if isinstance(listing, dict) and listing.get("written_by") == WRITTEN_BY else None
    if not isinstance(files, list):
        raise GroupRobustError(f"{path} already exists and is not a report's list of its files; give another "
                               "out, or remove that file", subject="out")
    return {str(name) for name in files}


def _legacy_report_files(out: Path) -> set[str]:
    """The files a report written before ``report.json`` existed left in ``out``: recognised by its
    ``report.md``'s generated first line, so re-running ``report`` on an older sweep keeps working."""
    try:
        with open(out / "report.md", encoding="utf-8") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError):
        return set()
    if not first.startswith("# Sweep report: "):
        return set()
    return {p.name for p in out.iterdir() if p.is_file() and (p.name in TABLES or p.suffix == ".png")}


def check_report_out(out: Path, names: Iterable[str]) -> set[str]:
    """The files in ``out`` that earlier reports wrote; raises a one-line error if one of ``names`` (the
    files a report is about to write besides ``report.json``) is there and no earlier report wrote it (a
    user's own file), or if ``report.json`` is there and is not a report's list of its files."""
    if not out.is_dir():
        return set()
    earlier = _written_before(out)
    foreign = files_in_the_way(out, names, ours=earlier)
    if foreign:
        raise GroupRobustError(f"{out / foreign[0]} already exists and no earlier report wrote it; give another "
                               "out, or remove that file", subject="out")
    return {name for name in earlier if (out / name).is_file()}


def claim_report_dir(out: Path, wait: bool = False) -> Any:
    """The claim on the report folder ``out`` (`grouprobust.outdir.OutputDirectory.claim`): one report
    process writes a folder at a time; another is refused at once (or waits, with ``wait``)."""
    return OutputDirectory(out, "report folder").claim(wait)


def write_report(directory: Path, out: Path | None = None, rule: str | None = None, plots: bool = True,
                 per_seed: bool = False) -> tuple[Report, Path]:
    """Write ``report.md``, ``summary.csv``, ``summary.tex``, ``per_group.csv``, ``failures.csv`` and plots.

    Files go to ``out`` (default ``directory/report``; a link to a folder writes into that folder);
    returns the `Report` and that folder. The files written are listed in ``out/report.json``: a later
    report replaces them (and only them), and a file of the same name that no report wrote is refused
    with a one-line error before anything is written. The folder is claimed with a file lock while the
    report is written (a second report process on it is refused), and every file is written to a
    staging folder first and moved into place when all are written: on a full disk the earlier report
    stays whole. A folder whose every run is unreadable is refused: there is nothing to report.
    """
    directory = Path(directory)
    report = select_and_aggregate(load_runs(directory), rule)
    if len(report.unreadable) and len(report.unreadable) == len(report.runs):
        first = report.unreadable["reason"].iloc[0]
        raise GroupRobustError(f"every run under {directory} is unreadable ({len(report.unreadable)} damaged run "
                               f"directories, e.g. {first}); nothing to report: run the sweep again with those "
                               "run directories removed")
    out = check_output_path(Path(out) if out is not None else directory / "report", "report folder")
    with claim_report_dir(out) as claim:
        claim.remove_stale_stages()
        plans = {}
        if plots and len(report.summary):
            from grouprobust.sweep.plots import plan_plots  # imports matplotlib: only when figures are asked for

            plans = plan_plots(report, out)
        names = [*TABLES, *(path.name for path, _ in plans.values())]
        earlier = check_report_out(out, names)
        with claim.staging() as stage:
            _write_report_files(report, directory, stage, plan_plots(report, stage) if plans else {},
                                sorted(earlier | set(names)), per_seed)
            claim.publish(stage, [*names, REPORT_FILES])  # the list last: it names only files in place
    return report, out


def _write_report_files(report: Report, directory: Path, folder: Path, plans: dict[str, Any],
                        listed: list[str], per_seed: bool = False) -> None:
    """Write every file of the report into ``folder`` (the staging folder), ``report.json`` listing ``listed``."""
    write_json_atomic(folder / REPORT_FILES, {"written_by": WRITTEN_BY, "sweep": str(directory), "files": listed})
    write_atomic(folder / "summary.csv", report.summary.to_csv(index=False))
    write_atomic(folder / "per_group.csv", report.per_group.to_csv(index=False))
    write_atomic(folder / "failures.csv", report.failures.to_csv(index=False))
    table = display_table(report.summary, per_seed=per_seed) if len(report.summary) else report.summary
    latex = display_table(report.summary, r" $\pm$ ", per_seed) if len(report.summary) else report.summary
    text_cols = [c for c in ("dataset", "method", "rule", "hparams") if c in latex]
    styler = latex.style.hide(axis="index").format(escape="latex", subset=text_cols).format_index(escape="latex", axis=1)
    notes = expected_notes(report.summary) if len(report.summary) else []
    write_atomic(folder / "summary.tex", styler.to_latex(hrules=True) + latex_notes(notes))
    figures = {title: draw() for title, (_, draw) in plans.items()}
    missing = missing_trials(directory, report.runs)
    lines = [f"# Sweep report: {directory}", "",
             f"{int((report.runs['status'] == 'finished').sum())} finished runs, {len(report.failures)} failed"
             + (f", {len(report.unreadable)} unreadable" if len(report.unreadable) else "")
             + (f", {missing} not run yet" if missing else "") + ".", "",
             "Hyper-parameters are chosen for each dataset and method by the mean over seeds of the validation "
             "metric of the selection rule (column `rule`; each run at its own selected epoch). Test accuracies "
             "are mean ± sample std (ddof=1) over the seeds of the chosen configuration, in %; `worst-group 95% CI ±` "
             "is the mean half-width of each run's 95% Wilson interval of its test worst-group accuracy; rows are "
             "ordered by the selection figure (`selection %`, validation); `labels` says which group labels each "
             "method read; `time s` is the wall time of one run. Per-seed values: summary.csv "
             "(`*_per_seed`, seeds in `seeds`).", ""]
    if len(report.summary):
        lines += [*best_lines(report.summary), "", table.to_markdown(index=False), ""]
        if notes:
            lines += ["Expected worst-group: the test worst-group accuracy the literature reports, in %; "
                      "sources:", "", *(f"- {note}" for note in notes), ""]
    for title, path in figures.items():
        lines += [f"![{title}]({path.name})", ""]
    if len(report.failures):
        lines += ["## Failed runs", "", report.failures[["run_id", "dataset", "method", "seed", "reason"]]
                  .to_markdown(index=False), ""]
    if len(report.unreadable):
        lines += ["## Unreadable runs", "", "Damaged run directories, left out of every figure above.", "",
                  report.unreadable.to_markdown(index=False), ""]
    if len(report.copies):
        lines += ["## Copies counted once", "", "Run directories holding a run already listed (the same run id); "
                  "each run is counted once.", "", report.copies.to_markdown(index=False), ""]
    write_atomic(folder / "report.md", "\n".join(lines))
