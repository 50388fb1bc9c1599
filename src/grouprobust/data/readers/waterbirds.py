"""Waterbirds (Sagawa et al., group DRO): ``metadata.csv`` with ``img_filename, y, split, place``.

``root`` is the ``waterbird_complete95_forest2water2`` folder: ``metadata.csv`` next to the image
folders it lists. ``y``: 0 landbird, 1 waterbird; ``place``: 0 land, 1 water; ``split``: 0 train,
1 val, 2 test. Groups ``g = 2 y + place`` as in group DRO's code.
"""

from __future__ import annotations

from pathlib import Path

from grouprobust.data.readers.table import BenchmarkTable
from grouprobust.data.readers.validate import find_file, image_table, read_csv


def read_waterbirds(root: Path, *, check_files: bool = True, allow_empty_groups: bool = False) -> BenchmarkTable:
    """The Waterbirds table (``path, y, a, split``); raises `GroupRobustError` on a malformed copy."""
    root = Path(root)
    path = find_file(root, ["metadata.csv"], "Waterbirds metadata (img_filename, y, split, place)")
    df = read_csv(path, ["img_filename", "y", "split", "place"])
    return image_table("waterbirds", df, [str(root / f) for f in df["img_filename"]], path, y="y", a="place",
                       split="split", file_column="img_filename", class_names=["landbird", "waterbird"],
                       attr_names=["land", "water"], values={0: 0, 1: 1}, check_files=check_files,
                       allow_empty_groups=allow_empty_groups)
