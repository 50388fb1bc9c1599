"""`BenchmarkTable`: a public benchmark read from disk as a light table, before features exist.

Images and texts stay on disk; the table holds one row per sample with its ``path`` (images) or
``text`` (texts), class ``y``, spurious attribute ``a``, ``split`` (train / val / test) and, for
benchmarks with overlapping evaluation groups, boolean columns ``eval:<group name>``.
`BenchmarkTable.to_splits` turns it into `DatasetSplits` once a feature vector exists per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from grouprobust.data.dataset import DatasetSplits, GroupDataset
from grouprobust.errors import GroupRobustError
from grouprobust.grouping import Grouper

SPLITS = ("train", "val", "test")
EVAL_PREFIX = "eval:"


@dataclass
class BenchmarkTable:
    """One benchmark as read from its own files: the table plus class / attribute / group names."""

    name: str
    table: pd.DataFrame
    n_classes: int
    n_attrs: int
    class_names: list[str]
    attr_names: list[str]
    source: Path
    input_kind: str = "image"  # "image": a ``path`` column; "text": a ``text`` column
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def grouper(self) -> Grouper:
        """The (class, attribute) `Grouper` of this benchmark, with its class and attribute names."""
        return Grouper(self.n_classes, self.n_attrs, self.class_names, self.attr_names)

    @property
    def group_names(self) -> list[str]:
        """Names ``"<class>,<attr>"`` of the ``n_classes * n_attrs`` groups, in `grouper` id order."""
        return self.grouper.names

    @property
    def eval_group_names(self) -> list[str] | None:
        """Names of the overlapping evaluation groups, or None when the benchmark has none."""
        names = [c[len(EVAL_PREFIX):] for c in self.table.columns if c.startswith(EVAL_PREFIX)]
        return names or None

    def groups(self) -> np.ndarray:
        """Group id per row, ``y * n_attrs + a`` (`Grouper.group_ids`)."""
        return self.grouper.group_ids(self.table["y"].to_numpy(), self.table["a"].to_numpy())

    def group_counts(self) -> pd.DataFrame:
        """Samples per group (rows, by name) and split (columns)."""
        g = pd.Categorical.from_codes(self.groups(), self.group_names)
        counts = pd.crosstab(g, self.table["split"], dropna=False).reindex(columns=list(SPLITS), fill_value=0)
        counts.index.name = "group"
        return counts.reindex(self.group_names, fill_value=0)

    def eval_group_counts(self) -> pd.DataFrame | None:
        """Samples per evaluation group (rows) and split (columns); None without evaluation groups."""
        names = self.eval_group_names
        if names is None:
            return None
        cols = [EVAL_PREFIX + n for n in names]
        counts = self.table.groupby("split")[cols].sum().T.reindex(columns=list(SPLITS), fill_value=0)
        counts.index = names
        return counts.astype(int)

    def to_splits(self, features: np.ndarray) -> DatasetSplits:
        """`DatasetSplits` whose ``x`` are ``features`` (one row per table row, in table order)."""
        features = np.asarray(features)
        if len(features) != len(self.table):
            raise GroupRobustError(f"{self.name}: {len(features)} feature rows for {len(self.table)} samples; "
                                   "extract features for every row of the table, in its order")
        return self.splits_of(lambda split, mask: features[mask])

    def splits_of(self, inputs: Any, kind: str = "features") -> DatasetSplits:
        """`DatasetSplits` whose ``x`` in each split is ``inputs(split name, boolean row mask of the split)``:
        feature rows, or (``kind`` ``image`` / ``tokens``) a split's images or token ids, usually memory-mapped."""
        eval_names = self.eval_group_names
        parts = []
        for split in SPLITS:
            mask = (self.table["split"] == split).to_numpy()
            rows = self.table[mask]
            eg = rows[[EVAL_PREFIX + n for n in eval_names]].to_numpy(bool) if eval_names else None
            parts.append(GroupDataset(inputs(split, mask), rows["y"].to_numpy(), rows["a"].to_numpy(), self.n_classes,
                                      self.n_attrs, split, self.name, group_names=self.group_names,
                                      eval_groups=eg, eval_group_names=eval_names, inputs=kind))
        return DatasetSplits(*parts, name=self.name, meta={"source": str(self.source)})
