"""CivilComments in the WILDS layout: toxicity x identity mentions, with overlapping evaluation groups.

``root`` holds ``all_data_with_identities.csv`` (directly or under ``civilcomments_v1.0/``, as WILDS
downloads it) with ``comment_text``, ``split`` (train / val / test), ``toxicity`` (fraction of raters,
0..1) and the identity columns ``male, female, LGBTQ, christian, muslim, other_religions, black,
white`` (fraction of raters who saw the identity mentioned; empty cells read as 0).
As WILDS does: ``y = toxicity >= 0.5``, an identity is mentioned when its value is >= 0.5.

Training groups (the 4 groups of group DRO / JTT / DFR / GSR on CivilComments): ``y`` x
``identity_any`` (any of the 8 identities mentioned; the file's ``identity_any`` column when present,
else computed). ``attribute`` picks another column instead. Evaluation groups (WILDS' metric): ``y`` x
each of the 8 identities, 16 overlapping groups (a comment may mention several identities).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from grouprobust.data.readers.table import EVAL_PREFIX, BenchmarkTable
from grouprobust.data.readers.validate import _show, check_nonempty_groups, find_file, map_values, read_csv
from grouprobust.errors import GroupRobustError

IDENTITIES = ["male", "female", "LGBTQ", "christian", "muslim", "other_religions", "black", "white"]
CLASSES = ["non-toxic", "toxic"]


def _fractions(df: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    values = pd.to_numeric(df[column], errors="coerce")
    bad = values.isna() & df[column].notna()
    if bad.any() or ((values < 0) | (values > 1)).any():
        i = int(np.flatnonzero((bad | (values < 0) | (values > 1)).to_numpy())[0])
        raise GroupRobustError(f"{path}: column {column!r} has unexpected value {_show(df[column].iloc[i])} (row {i}); "
                               "expected a fraction between 0 and 1")
    return values.fillna(0.0).to_numpy()


def read_civilcomments(root: Path, *, attribute: str = "identity_any",
                       allow_empty_groups: bool = False) -> BenchmarkTable:
    """The CivilComments table (``text, y, a, split`` and 16 ``eval:`` columns)."""
    root = Path(root)
    path = find_file(root, ["all_data_with_identities.csv", "civilcomments_v1.0/all_data_with_identities.csv"],
                     "WILDS CivilComments file")
    df = read_csv(path, ["comment_text", "split", "toxicity", *IDENTITIES], low_memory=False)
    y = (_fractions(df, "toxicity", path) >= 0.5).astype(np.int64)
    mentions = {c: _fractions(df, c, path) >= 0.5 for c in IDENTITIES}
    if attribute == "identity_any" and "identity_any" not in df.columns:
        a = np.any(np.column_stack(list(mentions.values())), axis=1)
    elif attribute in df.columns:
        a = _fractions(df, attribute, path) >= 0.5
    else:
        raise GroupRobustError(f"{path}: missing column {attribute!r} chosen as the attribute; use identity_any or "
                               f"one of {', '.join(IDENTITIES)}")
    table = pd.DataFrame({
        "text": df["comment_text"].fillna("").astype(str).to_numpy(),
        "y": y, "a": a.astype(np.int64),
        "split": np.array(["train", "val", "test"])[map_values(df["split"], {"train": 0, "val": 1, "test": 2},
                                                             path, "split")],
    })
    for identity in IDENTITIES:
        for c, cname in enumerate(CLASSES):
            table[f"{EVAL_PREFIX}{identity},{cname}"] = mentions[identity] & (y == c)
    no_attr = "no identity" if attribute == "identity_any" else f"not {attribute}"
    yes_attr = "identity" if attribute == "identity_any" else attribute
    out = BenchmarkTable("civilcomments", table, 2, 2, CLASSES, [no_attr, yes_attr], path, input_kind="text",
                         meta={"attribute": attribute})
    check_nonempty_groups(out, path, allow_empty_groups)
    return out
