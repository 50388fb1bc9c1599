"""Waterbirds (Sagawa et al., group DRO): ``metadata.csv`` with ``img_filename, y, split, place``.

``root`` is the ``waterbird_complete95_forest2water2`` folder: ``metadata.csv`` next to the image
folders it lists. ``y``: 0 landbird, 1 waterbird; ``place``: 0 land, 1 water; ``split``: 0 train,
1 val, 2 test. Groups ``g = 2 y + place`` as in group DRO's code.
"""

from __future__ import annotations

from pathlib import Path

from grouprobust.data.readers.table import BenchmarkTable
from grouprobust.data.readers.validate import (
    check_files_exist, check_nonempty_groups, find_file, map_values, read_csv,
)

SPLIT_CODES = {0: "train", 1: "val", 2: "test"}


def split_names(codes, path: Path, column: str = "split") -> list[str]:
    """Group DRO's split codes 0/1/2 as train/val/test names."""
    return [SPLIT_CODES[c] for c in map_values(codes, {k: k for k in SPLIT_CODES}, path, column)]


def read_waterbirds(root: Path, *, check_files: bool = True, allow_empty_groups: bool = False) -> BenchmarkTable:
    """The Waterbirds table (``path, y, a, split``); raises `GroupRobustError` on a malformed copy."""
    import pandas as pd

    root = Path(root)
    path = find_file(root, ["metadata.csv"], "Waterbirds metadata (img_filename, y, split, place)")
    df = read_csv(path, ["img_filename", "y", "split", "place"])
    table = pd.DataFrame({
        "path": [str(root / f) for f in df["img_filename"]],
        "y": map_values(df["y"], {0: 0, 1: 1}, path, "y"),
        "a": map_values(df["place"], {0: 0, 1: 1}, path, "place"),
        "split": split_names(df["split"], path),
    })
    if check_files:
        check_files_exist(table["path"], path, "img_filename")
    out = BenchmarkTable("waterbirds", table, 2, 2, ["landbird", "waterbird"], ["land", "water"], path)
    check_nonempty_groups(out, path, allow_empty_groups)
    return out
