"""`check_splits`: the group counts per split of a loaded dataset (what ``grouprobust datasets --check NAME``
prints for a registered dataset that is not a benchmark reader, e.g. ``table``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from grouprobust.data.dataset import DatasetSplits
from grouprobust.data.tabular import TableEncoding

SPLITS = ("train", "val", "test")


@dataclass
class DatasetCheck:
    """Group counts per split of a loaded dataset (what ``grouprobust datasets --check`` prints).

    ``group_counts``: group x split frame of counts; ``samples``: split -> number of rows; ``inputs``:
    how a table's columns became inputs (empty for other datasets).
    """

    name: str
    group_counts: pd.DataFrame
    samples: dict[str, int]
    source: str = ""
    inputs: str = ""
    eval_group_counts: Any = None
    splits: tuple[str, ...] = SPLITS


def check_splits(splits: DatasetSplits) -> DatasetCheck:
    """The group counts per split of ``splits`` (raises if a split carries no group labels)."""
    counts = pd.DataFrame({d.split: d.group_counts() for d in splits}, index=splits.train.group_names)
    source = (splits.meta.get("source") or {}).get("path", "")
    encoding = splits.meta.get("table")
    inputs = ""
    if isinstance(encoding, TableEncoding):
        inputs = (f"inputs: {len(encoding.numeric)} numeric column(s) standardised ({', '.join(encoding.numeric) or '-'}), "
                  f"{len(encoding.categorical)} categorical one-hot ({', '.join(encoding.categorical) or '-'}) "
                  f"-> {len(encoding.feature_names)} features")
    return DatasetCheck(splits.name, counts, {d.split: len(d) for d in splits}, str(source), inputs)


__all__ = ["DatasetCheck", "check_splits"]
