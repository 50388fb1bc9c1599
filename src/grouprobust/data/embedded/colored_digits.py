"""`colored-digits`: scikit-learn's bundled 8x8 handwritten digits, colored spuriously by class."""

from __future__ import annotations

from typing import Annotated

import numpy as np

from grouprobust.data.dataset import DatasetSplits, GroupDataset
from grouprobust.data.registry import register_dataset
from grouprobust.errors import GroupRobustError
from grouprobust.params import FRACTION, Choice, Interval
from grouprobust.grouping import Grouper

# Ten well separated RGB colors, one per class (GERNE's colored-MNIST uses one color per digit).
PALETTE = np.array([
    [1.00, 0.00, 0.00], [0.00, 0.80, 0.00], [0.00, 0.20, 1.00], [1.00, 0.85, 0.00], [1.00, 0.00, 1.00],
    [0.00, 0.90, 0.90], [1.00, 0.50, 0.00], [0.55, 0.00, 1.00], [0.55, 0.35, 0.15], [0.60, 0.60, 0.60],
], dtype=np.float32)


def _shift(images: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Shift each (8, 8) image by (dy, dx) pixels, filling with zeros."""
    out = np.zeros_like(images)
    for i, (sx, sy) in enumerate(zip(dx, dy)):
        src = np.roll(np.roll(images[i], sy, axis=0), sx, axis=1)
        if sy > 0:
            src[:sy] = 0
        elif sy < 0:
            src[sy:] = 0
        if sx > 0:
            src[:, :sx] = 0
        elif sx < 0:
            src[:, sx:] = 0
        out[i] = src
    return out


def _colorize(images: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """(n, 8, 8) intensities in [0, 1] and (n,) color ids → (n, 3, 8, 8) images."""
    return images[:, None, :, :] * PALETTE[colors][:, :, None, None]


@register_dataset(
    "colored-digits",
    "sklearn digits colored by class in train (`conflict` off-color); every digit in every color in val/test",
    train_defaults={"model": "cnn", "epochs": 10, "lr": 1e-2, "optimizer": "adam", "batch_size": 128,
                    "select": "val_group_balanced_acc"},
)
def colored_digits(seed: int = 0, *,
                   conflict: Annotated[float, FRACTION, "fraction of training copies colored against the class"] = 0.01,
                   variant: Annotated[str, Choice(("multiclass", "binary"))] = "multiclass",
                   copies: Annotated[int, Interval(1, 1000), "shifted copies of each training image"] = 20,
                   train_frac: Annotated[float, Interval(0, 1, lo_open=True, hi_open=True)] = 0.6,
                   val_frac: Annotated[float, Interval(0, 1, lo_open=True, hi_open=True)] = 0.2) -> DatasetSplits:
    """Train/val/test splits of colored digits.

    The 1,797 images are split (stratified by digit, seeded) into train/val/test fractions.
    Train: each image appears ``copies`` times, each copy randomly shifted by up to one pixel
    (augmentation that makes the small set give stable numbers); a copy takes its class's color,
    except with probability ``conflict`` a uniformly drawn other color (bias-conflicting).
    Val/test: every image appears once in *every* color, so color is exactly independent of the
    label and every group has the same size.
    ``variant="multiclass"``: 10 classes x 10 colors = 100 groups (GERNE's colored-MNIST).
    ``variant="binary"``: digits 0-5 only, ``y = digit >= 3``, two colors (red, green); ``conflict``
    is the fraction colored against the class (GSR's ColoredMNIST-S uses 0.1).
    """
    from sklearn.datasets import load_digits

    if train_frac + val_frac >= 1:  # a joint constraint: each fraction alone is checked by its declaration
        raise GroupRobustError(f"colored-digits: train_frac + val_frac must be < 1 (the rest is test), got "
                               f"{train_frac} + {val_frac}", subject="data:val_frac")
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    target = digits.target.astype(np.int64)
    if variant == "binary":
        keep = target < 6
        images, target = images[keep], target[keep]
        labels, n_classes, palette_ids = (target >= 3).astype(np.int64), 2, np.array([0, 1])
    else:
        labels, n_classes, palette_ids = target, 10, np.arange(10)
    n_colors = len(palette_ids)

    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for digit in np.unique(target):
        idx = rng.permutation(np.flatnonzero(target == digit))
        n_tr, n_va = int(round(train_frac * len(idx))), int(round(val_frac * len(idx)))
        parts["train"] += idx[:n_tr].tolist()
        parts["val"] += idx[n_tr:n_tr + n_va].tolist()
        parts["test"] += idx[n_tr + n_va:].tolist()

    group_names = Grouper(n_classes, n_colors, attr_names=[f"color={c}" for c in range(n_colors)]).names  # y=0,color=1
    meta = {"palette": PALETTE[palette_ids], "variant": variant}

    tr = np.repeat(np.array(sorted(parts["train"])), copies)
    y_tr = labels[tr]
    off = rng.integers(1, n_colors, size=len(tr))  # a uniformly drawn *other* color
    a_tr = np.where(rng.random(len(tr)) < conflict, (y_tr + off) % n_colors, y_tr)
    shifts = rng.integers(-1, 2, size=(2, len(tr)))
    shifts[:, ::copies] = 0  # the first copy of every image is unshifted
    x_tr = _colorize(_shift(images[tr], shifts[0], shifts[1]), palette_ids[a_tr])
    train = GroupDataset(x_tr, y_tr, a_tr, n_classes, n_colors, "train", "colored-digits", group_names=group_names,
                         meta=dict(meta))

    def balanced(split: str) -> GroupDataset:
        idx = np.array(sorted(parts[split]))
        idx_all = np.repeat(idx, n_colors)
        a = np.tile(np.arange(n_colors), len(idx))
        x = _colorize(images[idx_all], palette_ids[a])
        return GroupDataset(x, labels[idx_all], a, n_classes, n_colors, split, "colored-digits",
                            group_names=group_names, meta=dict(meta))

    return DatasetSplits(train, balanced("val"), balanced("test"), name="colored-digits", meta=dict(meta))
