"""Writing an analysis directory: CSV tables, markdown tables and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def markdown_table(df: pd.DataFrame, digits: int = 4) -> str:
    """``df`` as a GitHub markdown table, floats rounded to ``digits`` significant digits."""
    def fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "nan" if np.isnan(v) else f"{v:.{digits}g}"
        return str(v)

    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


class AnalysisDirectory:
    """An output directory for one analysis; files are written whole (temp file, then rename)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.sections: list[str] = []

    def _replace(self, name: str, text: str) -> Path:
        target = self.path / name
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(target)
        return target

    def table(self, df: pd.DataFrame, name: str, title: str) -> Path:
        """Write ``<name>.csv`` and add ``df`` to the markdown report under ``title``."""
        self.sections.append(f"## {title}\n\n{markdown_table(df)}")
        return self._replace(f"{name}.csv", df.to_csv(index=False))

    def figure(self, fig: Any, name: str) -> Path:
        """Save a matplotlib figure as ``<name>.png`` and close it."""
        import matplotlib.pyplot as plt

        target = self.path / f"{name}.png"
        tmp = self.path / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        plt.close(fig)
        tmp.replace(target)
        self.sections.append(f"![{name}]({name}.png)\n")
        return target

    def finish(self, title: str, notes: str, info: dict[str, Any]) -> Path:
        """Write ``report.md`` (notes + tables + plots) and ``info.json``; returns the report path."""
        self._replace("info.json", json.dumps(info, indent=2, default=str) + "\n")
        return self._replace("report.md", f"# {title}\n\n{notes.strip()}\n\n" + "\n".join(self.sections))


def new_figure(n_panels: int, width: float = 4.2, height: float = 3.4) -> tuple[Any, Any]:
    """A row of ``n_panels`` matplotlib axes on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n_panels, figsize=(width * n_panels, height), squeeze=False)
    return fig, axes[0]
