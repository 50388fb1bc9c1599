"""Colored MNIST, corrupted CIFAR-10 and bFFHQ in the folder layout GERNE's experiments use.

GERNE follows the LfF / DFA protocol and its released data (Lee et al. 2021, "Learning Debiased
Representation via Disentangled Feature Augmentation"). Assumed layout, ``root`` being the
``cmnist``, ``cifar10c`` or ``bffhq`` folder and ``pct`` the bias-conflicting ratio folder
(``0.5pct``, ``1pct``, ``2pct``, ``5pct``; bFFHQ ships only ``0.5pct``)::

    cmnist/  <pct>/align/<class>/*.png   <pct>/conflict/<class>/*.png   <pct>/valid/...   test/<class>/*.png
    cifar10c/ same as cmnist
    bffhq/   <pct>/align/...   <pct>/conflict/...   valid/*.png   test/*.png

Every image file is named ``<id>_<y>_<a>.<ext>``: the last two underscore-separated fields are the
class and the bias attribute (DFA parses ``split('_')[-2]`` and ``[-1]``). Folders are searched
recursively, so flat and per-class sub-folders both work. Classes x attributes: colored MNIST 10
digits x 10 colors, corrupted CIFAR-10 10 classes x 10 corruption types, bFFHQ age (0 young, 1 old)
x gender (0/1). Validation and test must hold every group; a bias-conflicting training group may be
empty (`grouprobust.data.readers.check_benchmark` shows it). DFA evaluates bFFHQ's test set on its bias-conflicting samples only; here the whole
test set is kept and the per-group table reports those groups.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from grouprobust.data.readers.table import BenchmarkTable
from grouprobust.data.readers.validate import check_nonempty_groups
from grouprobust.errors import GroupRobustError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
NAME = re.compile(r"_(-?\d+)_(-?\d+)$")
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PCTS = ("0.5pct", "1pct", "2pct", "5pct")


def _images(folder: Path, expected: str) -> list[Path]:
    if not folder.is_dir():
        raise GroupRobustError(f"{folder} not found; expected the {expected} folder of the DFA layout "
                               "(see docs/datasets.md)")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise GroupRobustError(f"{folder}: no .png/.jpg images; expected the {expected} images there")
    return files


def _rows(files: list[Path], split: str, n_classes: int, n_attrs: int) -> pd.DataFrame:
    ys, as_ = [], []
    for f in files:
        m = NAME.search(f.stem)
        if not m:
            raise GroupRobustError(f"{f}: file name does not end in _<class>_<attribute>; expected DFA's "
                                   "<id>_<y>_<a>.png naming")
        y, a = int(m.group(1)), int(m.group(2))
        if not (0 <= y < n_classes and 0 <= a < n_attrs):
            raise GroupRobustError(f"{f}: class {y} / attribute {a} out of range; expected class 0..{n_classes - 1} "
                                   f"and attribute 0..{n_attrs - 1}")
        ys.append(y)
        as_.append(a)
    return pd.DataFrame({"path": [str(f) for f in files], "y": np.array(ys, dtype=np.int64),
                         "a": np.array(as_, dtype=np.int64), "split": split})


def _read(name: str, root: Path, pct: str, class_names: list[str], attr_names: list[str], val_dir: Path,
          test_dir: Path, allow_empty_groups: bool) -> BenchmarkTable:
    root = Path(root)
    if not root.is_dir():
        raise GroupRobustError(f"{root} is not a directory; the root must be the {name} folder (see docs/datasets.md)",
                               subject="root")
    if not (root / pct).is_dir():
        raise GroupRobustError(f"{root / pct} not found; expected the bias-conflicting ratio folder, one of "
                               f"{', '.join(PCTS)} (choose it with pct=...)")
    k, m = len(class_names), len(attr_names)
    train = _images(root / pct / "align", "bias-aligned training") + _images(root / pct / "conflict",
                                                                              "bias-conflicting training")
    table = pd.concat([_rows(train, "train", k, m), _rows(_images(val_dir, "validation"), "val", k, m),
                       _rows(_images(test_dir, "test"), "test", k, m)], ignore_index=True)
    out = BenchmarkTable(name, table, k, m, class_names, attr_names, root / pct, meta={"pct": pct})
    # Few bias-conflicting training images (0.5% of ~50k over 90 groups) can leave a training group
    # empty in the released data; that is reported by the per-group counts, not an error. Val and
    # test must hold every group.
    check_nonempty_groups(out, root / pct, allow_empty_groups, splits=("val", "test"))
    return out


def read_colored_mnist(root: Path, *, pct: str = "0.5pct", allow_empty_groups: bool = False) -> BenchmarkTable:
    """Colored MNIST (10 digits x 10 colors) in DFA's layout."""
    root = Path(root)
    return _read("colored-mnist", root, pct, [f"digit {i}" for i in range(10)], [f"color {i}" for i in range(10)],
                 root / pct / "valid", root / "test", allow_empty_groups)


def read_colored_cifar10(root: Path, *, pct: str = "0.5pct", allow_empty_groups: bool = False) -> BenchmarkTable:
    """Corrupted CIFAR-10 (10 classes x 10 corruption types) in DFA's layout."""
    root = Path(root)
    return _read("colored-cifar10", root, pct, CIFAR10, [f"corruption {i}" for i in range(10)],
                 root / pct / "valid", root / "test", allow_empty_groups)


def read_bffhq(root: Path, *, pct: str = "0.5pct", allow_empty_groups: bool = False) -> BenchmarkTable:
    """bFFHQ (age x gender) in DFA's layout: ``valid`` and ``test`` sit next to ``<pct>``."""
    root = Path(root)
    return _read("bffhq", root, pct, ["young", "old"], ["gender 0", "gender 1"], root / "valid", root / "test",
                 allow_empty_groups)
