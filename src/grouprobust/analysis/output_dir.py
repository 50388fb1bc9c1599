"""Writing an analysis directory: CSV tables, markdown tables and PNG plots, through the output layer."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pandas as pd

from grouprobust.errors import GroupRobustError
from grouprobust.outdir import OutputDirectory, check_output_path, files_in_the_way
from grouprobust.output import format_mean_std, frame_markdown, save_figure_atomic, write_atomic

# Files whose presence shows the directory already holds an analysis (or a user's own report).
MARKERS = ("report.md", "info.json")


def check_analysis_out(path: Path, force: bool = False) -> Path:
    """``path`` (checked by `grouprobust.outdir.check_output_path`) if an analysis may be written there:
    unless ``force`` holding no ``report.md`` or ``info.json`` (an earlier analysis, or a user's own
    files). Raises a one-line `GroupRobustError` otherwise; call it before any work."""
    path = check_output_path(path, "analysis directory")
    _refuse_analysis_files(path, force)
    return path


def _refuse_analysis_files(path: Path, force: bool) -> None:
    """Unless ``force``, a one-line error when ``path`` holds an earlier analysis's (or a user's) report files."""
    present = files_in_the_way(path, MARKERS)
    if present and not force:
        raise GroupRobustError(f"{path} already holds {' and '.join(present)}; choose another output directory, "
                               "or set force to replace the analysis files there", subject="force")


def markdown_table(df: pd.DataFrame, digits: int = 4) -> str:
    """``df`` as a GitHub markdown table, floats rounded to ``digits`` significant digits."""
    return frame_markdown(df, digits)


class AnalysisDirectory(OutputDirectory):
    """An output directory for one analysis, used as a context manager: claimed (`grouprobust.outdir`)
    while it is written, every file staged and the whole set moved into place by `finish`; an analysis
    that fails on the way (a full disk included) leaves the folder as it was.

    Nothing already there is replaced unless ``force``: the directory is checked by
    `check_analysis_out` when it is opened, and each file before it is written (a file of the same
    name that this analysis did not write raises a one-line error, leaving it intact)."""

    def __init__(self, path: Path, force: bool = False):
        super().__init__(check_analysis_out(Path(path), force), "analysis directory")
        self.force = force
        self.sections: list[str] = []
        self.written: list[str] = []
        self._open = ExitStack()

    def __enter__(self) -> "AnalysisDirectory":
        with ExitStack() as opening:
            opening.enter_context(self.claim())
            _refuse_analysis_files(self.path, self.force)  # again under the claim
            self.remove_stale_stages()
            self._stage = opening.enter_context(self.staging())
            self._open = opening.pop_all()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._open.__exit__(*exc)

    def _target(self, name: str) -> Path:
        """``stage/name``, refused if a file of that name is in the folder that this analysis did not write."""
        if not self.force and files_in_the_way(self.path, [name], ours=self.written):
            raise GroupRobustError(f"{self.path / name} already exists and this analysis did not write it; choose "
                                   "another output directory, or set force to replace it", subject="force")
        if name not in self.written:
            self.written.append(name)
        return self._stage / name

    def table(self, df: pd.DataFrame, name: str, title: str, in_report: bool = True) -> Path:
        """Write ``<name>.csv``; add ``df`` to the markdown report under ``title`` (or just point to the CSV)."""
        body = markdown_table(df) if in_report else f"{len(df)} rows in `{name}.csv`.\n"
        self.sections.append(f"## {title}\n\n{body}")
        return write_atomic(self._target(f"{name}.csv"), df.to_csv(index=False))

    def figure(self, fig: Any, name: str) -> Path:
        """Save a matplotlib figure as ``<name>.png`` and close it."""
        import matplotlib.pyplot as plt  # matplotlib's pyplot is slow to import; only figures need it

        target = save_figure_atomic(fig, self._target(f"{name}.png"), dpi=110, bbox_inches="tight")
        plt.close(fig)
        self.sections.append(f"![{name}]({name}.png)\n")
        return target

    def finish(self, title: str, notes: str, info: dict[str, Any]) -> Path:
        """Write ``report.md`` (notes + tables + plots) and ``info.json`` and move every file into place;
        returns the report's path."""
        info_path, report_path = self._target("info.json"), self._target("report.md")
        write_atomic(info_path, json.dumps(info, indent=2, default=str) + "\n")
        write_atomic(report_path, f"# {title}\n\n{notes.strip()}\n\n" + "\n".join(self.sections))
        self.publish(self._stage, self.written)
        return self.path / "report.md"


def new_figure(n_panels: int, width: float = 4.2, height: float = 3.4, sharey: bool = False) -> tuple[Any, Any]:
    """A row of ``n_panels`` matplotlib axes on the Agg backend."""
    import matplotlib  # matplotlib is slow to import; only figures need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n_panels, figsize=(width * n_panels, height), squeeze=False, sharey=sharey)
    return fig, axes[0]


def summarize(df: pd.DataFrame, by: list[str], columns: list[str]) -> pd.DataFrame:
    """Mean and sample standard deviation (ddof = 1, over seeds) of ``columns`` per ``by`` group, plus
    ``n_seeds``. Columns come out as ``<col>_mean`` and ``<col>_std`` (std is NaN for a single seed)."""
    columns = [c for c in columns if c in df.columns]
    grouped = df.groupby(by, sort=False)
    out = grouped[columns].agg(["mean", "std"])
    out.columns = [f"{c}_{stat}" for c, stat in out.columns]
    out["n_seeds"] = grouped.size()
    return out.reset_index()


def mean_std_table(summary: pd.DataFrame, by: list[str], columns: list[str], digits: int = 3) -> pd.DataFrame:
    """``summary`` (from `summarize`) with each column shown as ``mean ± std`` text (`format_mean_std`)."""
    table = summary[by].copy()
    for c in columns:
        if f"{c}_mean" in summary:
            table[c] = [format_mean_std(m, s, digits) for m, s in zip(summary[f"{c}_mean"], summary[f"{c}_std"])]
    table["n_seeds"] = summary["n_seeds"]
    return table
