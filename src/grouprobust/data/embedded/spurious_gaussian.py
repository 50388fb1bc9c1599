"""`spurious-gaussian`: a linear toy problem with a core and a spurious direction."""

from __future__ import annotations

from typing import Annotated

import numpy as np

from grouprobust.data.dataset import DatasetSplits, GroupDataset
from grouprobust.data.registry import register_dataset
from grouprobust.params import DIMS, FRACTION, MAX_DIMS, NON_NEGATIVE, SAMPLES, Interval



def _draw(rng: np.random.Generator, n: int, p_agree: float, core_dims: int, spurious_dims: int, noise_dims: int,
          core_strength: float, spurious_strength: float, core_noise: float, spurious_noise: float,
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = rng.integers(0, 2, size=n)
    agree = rng.random(n) < p_agree
    a = np.where(agree, y, 1 - y)
    ys, as_ = 2.0 * y - 1.0, 2.0 * a - 1.0
    # Means sit on the unit diagonal of each block, so `strength` is the distance of each class mean from 0.
    core = ys[:, None] * core_strength / np.sqrt(core_dims) + core_noise * rng.standard_normal((n, core_dims))
    spur = as_[:, None] * spurious_strength / np.sqrt(spurious_dims) + spurious_noise * rng.standard_normal((n, spurious_dims))
    noise = rng.standard_normal((n, noise_dims))
    return np.concatenate([core, spur, noise], axis=1).astype(np.float32), y, a


@register_dataset(
    "spurious-gaussian",
    "Gaussian toy: an easy spurious feature agrees with y w.p. p in train; balanced val/test",
    train_defaults={"model": "mlp", "epochs": 30, "lr": 1e-3, "optimizer": "adam", "batch_size": 64},
)
def spurious_gaussian(seed: int = 0, *,
                      n: Annotated[int, SAMPLES, "training samples"] = 2000,
                      n_val: Annotated[int, SAMPLES, "validation samples"] = 1000,
                      n_test: Annotated[int, SAMPLES, "test samples"] = 2000,
                      p: Annotated[float, FRACTION, "P(a == y) in train"] = 0.95,
                      core_dims: Annotated[int, DIMS] = 5, spurious_dims: Annotated[int, DIMS] = 5,
                      noise_dims: Annotated[int, Interval(0, MAX_DIMS)] = 10,
                      core_strength: float = 1.0, spurious_strength: float = 2.0,
                      core_noise: Annotated[float, NON_NEGATIVE] = 1.0,
                      spurious_noise: Annotated[float, NON_NEGATIVE] = 0.5) -> DatasetSplits:
    """Train/val/test splits; ``meta`` holds the unit ``core_direction`` and ``spurious_direction``.

    x = [core (core_dims) | spurious (spurious_dims) | noise (noise_dims)]. In train ``a == y`` with
    probability ``p``; in val and test ``a`` is independent of ``y`` (p = 0.5), so all four groups are
    equally likely. The spurious block is the easier feature (larger mean, less noise), which is
    what makes ERM lean on it.
    """
    rng = np.random.default_rng(seed)
    args = (core_dims, spurious_dims, noise_dims, core_strength, spurious_strength, core_noise, spurious_noise)
    d = core_dims + spurious_dims + noise_dims
    core_dir = np.zeros(d)
    core_dir[:core_dims] = 1 / np.sqrt(core_dims)
    spur_dir = np.zeros(d)
    spur_dir[core_dims:core_dims + spurious_dims] = 1 / np.sqrt(spurious_dims)
    meta = {"core_direction": core_dir, "spurious_direction": spur_dir}
    splits = []
    for split, size, prob in (("train", n, p), ("val", n_val, 0.5), ("test", n_test, 0.5)):
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite inputs are refused below, in one line
            x, y, a = _draw(rng, size, prob, *args)
        splits.append(GroupDataset(x, y, a, n_classes=2, n_attrs=2, split=split, name="spurious-gaussian",
                                   meta=dict(meta)))
    return DatasetSplits(*splits, name="spurious-gaussian", meta=dict(meta))
