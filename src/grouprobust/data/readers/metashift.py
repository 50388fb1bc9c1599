"""MetaShift cat/dog x indoor/outdoor as SubpopBench prepares it (Yang et al. 2023's version).

``root`` is SubpopBench's ``metashift`` folder: ``MetaShift-Cat-Dog-indoor-outdoor/`` with
``train/cat/cat(indoor)``, ``train/dog/dog(outdoor)``, ``test/cat/cat(outdoor)``,
``test/dog/dog(indoor)`` (``.jpg`` images), and optionally ``metadata_metashift.csv``
(``filename, y, a, split``; SubpopBench writes absolute file names, re-rooted here when they moved).
Coding as SubpopBench's: ``y`` 0 dog, 1 cat; ``a`` 0 outdoor, 1 indoor; ``split`` 0/1/2. Without the
csv, the split is drawn as SubpopBench's generator draws it (NumPy ``RandomState(42)``, 25% test,
then 10% val, the rest train, over the images in the order above, each folder sorted by name).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from grouprobust.data.readers.table import BenchmarkTable
from grouprobust.data.readers.validate import find_file, image_table, read_csv
from grouprobust.errors import GroupRobustError

IMAGES = "MetaShift-Cat-Dog-indoor-outdoor"
FOLDERS = {"train/cat/cat(indoor)": (1, 1), "train/dog/dog(outdoor)": (0, 0),
           "test/cat/cat(outdoor)": (1, 0), "test/dog/dog(indoor)": (0, 1)}


def _from_folders(root: Path) -> pd.DataFrame:
    rows = []
    for folder, (y, a) in FOLDERS.items():
        path = find_file(root, [f"{IMAGES}/{folder}"], "MetaShift cat/dog indoor/outdoor folders")
        rows += [{"filename": str(p), "y": y, "a": a} for p in sorted(path.glob("*.jpg"))]
    df = pd.DataFrame(rows, columns=["filename", "y", "a"])
    if df.empty:
        raise GroupRobustError(f"{root / IMAGES}: no .jpg images in the four folders; expected the MetaShift images")
    rng = np.random.RandomState(42)
    n = len(df)
    test = rng.choice(np.arange(n), size=int(n * 0.25), replace=False)
    val = rng.choice(np.setdiff1d(np.arange(n), test), size=int(n * 0.1), replace=False)
    split = np.zeros(n, dtype=int)
    split[val], split[test] = 1, 2
    df["split"] = split
    return df


def _reroot(filename: str, root: Path) -> str:
    path = Path(filename)
    if path.is_file():
        return str(path)
    parts = path.parts
    if IMAGES in parts:  # SubpopBench stores absolute paths of the machine that generated the csv
        return str(root.joinpath(*parts[parts.index(IMAGES):]))
    return str(root / filename)


def read_metashift(root: Path, *, check_files: bool = True, allow_empty_groups: bool = False) -> BenchmarkTable:
    """The MetaShift table (``path, y, a, split``)."""
    root = Path(root)
    csv = root / "metadata_metashift.csv"
    if csv.is_file():
        df = read_csv(csv, ["filename", "y", "a", "split"])
        source = csv
    else:
        df, source = _from_folders(root), root / IMAGES
    return image_table("metashift", df, [_reroot(f, root) for f in df["filename"]], source, y="y", a="a",
                       split="split", file_column="filename", class_names=["dog", "cat"],
                       attr_names=["outdoor", "indoor"], values={0: 0, 1: 1}, check_files=check_files,
                       allow_empty_groups=allow_empty_groups)
