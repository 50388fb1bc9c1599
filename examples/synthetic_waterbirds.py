"""A Waterbirds-format folder of JPEG files with a spurious background, and a small CNN to fine-tune on it.

The images follow group DRO's Waterbirds layout (``metadata.csv`` with ``img_filename, y, split, place``
next to the image folders), so ``grouprobust train --dataset waterbirds --root DIR`` reads them as it
reads the real benchmark. The class (``y``: landbird 0, waterbird 1) is the shape drawn at a random
place (a disc or a cross); the spurious attribute (``place``: land 0, water 1) is the background colour.
In training the background agrees with the class in ``1 - minority`` of the images (95% by default, as
in Waterbirds); validation and test are group-balanced. ERM leans on the background and fails the
minority groups; a group-robust method should not.

    python examples/synthetic_waterbirds.py /tmp/wb            # writes the folder
    PYTHONPATH=examples grouprobust train --dataset waterbirds --root /tmp/wb \\
        --backbone synthetic_waterbirds:small_cnn --data image_size=32 --method groupdro --out runs/wb-gdro
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SPLITS = {"train": 0, "val": 1, "test": 2}


def _image(y: int, place: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """One RGB uint8 image: a noisy background whose colour is the place, the class's shape in white."""
    base = np.array([[110, 140, 60], [60, 110, 170]][place], dtype=np.float64)  # land green-brown, water blue
    img = base + rng.normal(0, 18, size=(size, size, 3))
    r = size // 6
    cy, cx = rng.integers(r + 2, size - r - 2, size=2)
    yy, xx = np.mgrid[:size, :size]
    if y == 0:  # landbird: a disc
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    else:  # waterbird: a cross
        mask = ((abs(yy - cy) <= r) & (abs(xx - cx) <= r // 3)) | ((abs(xx - cx) <= r) & (abs(yy - cy) <= r // 3))
    img[mask] = (235, 235, 235)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_synthetic_waterbirds(root: Path | str, n_train: int = 800, n_eval_per_group: int = 60,
                               minority: float = 0.05, size: int = 48, seed: int = 0) -> Path:
    """Write the folder at ``root`` (created) and return it: ``n_train`` training images whose background
    disagrees with the class in a ``minority`` fraction, and ``n_eval_per_group`` images of each of the four
    groups in validation and in test, as ``size`` px JPEG files."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    plan = []
    for i in range(n_train):
        y = int(rng.integers(2))
        place = y if rng.random() >= minority else 1 - y
        plan.append(("train", y, place))
    for split in ("val", "test"):
        plan += [(split, y, place) for y in (0, 1) for place in (0, 1) for _ in range(n_eval_per_group)]
    for i, (split, y, place) in enumerate(plan):
        folder = root / f"{y:03d}.{'Landbird' if y == 0 else 'Waterbird'}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{folder.name}/img_{i:05d}.jpg"
        Image.fromarray(_image(y, place, rng, size)).save(root / name, quality=92)
        rows.append(f"{i},{name},{y},{SPLITS[split]},{place}")
    (root / "metadata.csv").write_text("img_id,img_filename,y,split,place\n" + "\n".join(rows) + "\n")
    return root


def small_cnn():
    """A small convolutional backbone (about 24k parameters): three conv blocks, global average pooling;
    its output, a 64-vector, is the feature the linear head reads."""
    from torch import nn

    def block(c_in: int, c_out: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(block(3, 16), block(16, 32), block(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--n-train", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_synthetic_waterbirds(args.root, n_train=args.n_train, seed=args.seed))
