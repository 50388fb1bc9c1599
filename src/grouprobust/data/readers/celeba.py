"""CelebA as group DRO reads it: attributes and partition files next to ``img_align_celeba/``.

``root`` holds ``list_attr_celeba.csv`` (Kaggle form: ``image_id`` then 40 attribute columns of
-1/1) or the original ``list_attr_celeba.txt`` (a count line, a header line of attribute names, then
``<file> <40 values>``), and ``list_eval_partition.csv`` (``image_id, partition``) or ``.txt``
(``<file> <partition>``); partition 0 train, 1 val, 2 test. Defaults: target ``Blond_Hair``,
attribute ``Male`` (group DRO's setting); both can be any attribute name.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from grouprobust.data.readers.table import BenchmarkTable
from grouprobust.data.readers.validate import find_file, image_table, read_csv, require_columns, split_names
from grouprobust.errors import GroupRobustError

SIGNS = {-1: 0, 1: 1, 0: 0}


def _read_attributes(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return read_csv(path, ["image_id"])
    try:
        lines = path.read_text().splitlines()
        names = lines[1].split()
        rows = [line.split() for line in lines[2:] if line.strip()]
    except (IndexError, UnicodeDecodeError):
        raise GroupRobustError(f"{path}: expected a count line, a line of attribute names, then one line per "
                               "image (the original CelebA list_attr_celeba.txt)") from None
    bad = next((i for i, r in enumerate(rows) if len(r) != len(names) + 1), None)
    if bad is not None:
        raise GroupRobustError(f"{path}: line {bad + 3} has {len(rows[bad])} fields; expected the file name "
                               f"and {len(names)} attribute values")
    return pd.DataFrame(rows, columns=["image_id", *names])


def _read_partition(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return read_csv(path, ["image_id", "partition"])
    df = read_csv(path, [], sep=r"\s+", header=None, names=["image_id", "partition"], dtype=str)
    return df


def read_celeba(root: Path, *, target: str = "Blond_Hair", attribute: str = "Male", check_files: bool = True,
                allow_empty_groups: bool = False) -> BenchmarkTable:
    """The CelebA table (``path, y, a, split``) for ``target`` x ``attribute``."""
    root = Path(root)
    attr_path = find_file(root, ["list_attr_celeba.csv", "list_attr_celeba.txt"], "CelebA attribute list")
    part_path = find_file(root, ["list_eval_partition.csv", "list_eval_partition.txt"], "CelebA partition list")
    attrs = _read_attributes(attr_path)
    require_columns(attrs, [target, attribute], attr_path)
    parts = _read_partition(part_path)
    merged = attrs.merge(parts, on="image_id", how="left")
    missing = merged["partition"].isna()
    if missing.any():
        raise GroupRobustError(f"{part_path}: no partition for image {merged['image_id'][missing].iloc[0]!r}; "
                               f"expected one row per image of {attr_path.name}")
    split_names(merged["partition"], part_path, "partition")  # so a bad code names the partition file
    images = find_file(root, ["img_align_celeba"], "CelebA images folder") if check_files else root / "img_align_celeba"
    return image_table("celeba", merged, [str(images / f) for f in merged["image_id"]], attr_path, y=target,
                       a=attribute, split="partition", file_column="image_id",
                       class_names=[f"not {target}", target], attr_names=[f"not {attribute}", attribute],
                       values=SIGNS, check_files=check_files, allow_empty_groups=allow_empty_groups,
                       meta={"target": target, "attribute": attribute})
