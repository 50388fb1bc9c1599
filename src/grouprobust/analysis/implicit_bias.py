"""The implicit-bias experiment of the GRW paper (its Section 4.1 and Appendix C) on scikit-learn's digits.

Six 8x8 digit images (five of digit 0, one of digit 1; the two classes are the two groups), a
linear model without bias started at zero, full-batch gradient descent. ERM weights every image
1/6; importance weighting (IW) weights each group 1/2 in total; GroupDRO keeps group weights
``q`` updated by ``q_g ∝ q_g exp(group_lr · L_g)`` each step and minimises ``Σ_g q_g L_g``.
All three minimise their weighted loss ``+ l2/2 ||W||²`` with the same per-example loss from
`grouprobust.losses`. The quantity tracked is how far the reweighted weights end up from ERM's.
"""

from __future__ import annotations

import math

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_digits

from grouprobust.errors import GroupRobustError
from grouprobust.losses import get_loss

METHODS = ("erm", "iw", "groupdro")


@dataclass(frozen=True)
class ImplicitBiasSetting:
    """One run: per-example loss name, L2 strength, number of GD steps, step size, GroupDRO's step size."""

    loss: str = "ce"
    l2: float = 0.0
    steps: int = 20000
    lr: float = 0.1
    group_lr: float = 0.01
    seed: int = 0
    n_major: int = 5
    n_minor: int = 1

    def check(self) -> None:
        """Raise `GroupRobustError` for settings the experiment cannot run."""
        get_loss(self.loss)
        finite = all(math.isfinite(v) for v in (self.lr, self.l2, self.group_lr))
        if self.steps < 1 or not finite or self.lr <= 0 or self.l2 < 0 or self.group_lr < 0:
            raise GroupRobustError("implicit-bias: need steps >= 1 and finite lr > 0, l2 >= 0 and group_lr >= 0; fix the options")
        if self.n_major < 1 or self.n_minor < 1:
            raise GroupRobustError("implicit-bias: need at least one image of each digit (--n-major/--n-minor >= 1)")


def six_digits(seed: int = 0, n_major: int = 5, n_minor: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``n_major`` images of digit 0 and ``n_minor`` of digit 1 (drawn with ``seed``), pixels scaled to [0, 1].

    Returns ``x`` (n × 64, float64) and the labels ``y`` (0 or 1), which also serve as groups.
    """
    digits = load_digits()
    rng = np.random.default_rng(seed)
    idx0 = rng.choice(np.flatnonzero(digits.target == 0), n_major, replace=False)
    idx1 = rng.choice(np.flatnonzero(digits.target == 1), n_minor, replace=False)
    idx = np.concatenate([idx0, idx1])
    return digits.data[idx].astype(np.float64) / 16.0, digits.target[idx].astype(np.int64)


def log_steps(steps: int, n: int = 60) -> np.ndarray:
    """About ``n`` log-spaced step numbers from 1 to ``steps`` (always including ``steps``)."""
    return np.unique(np.concatenate([np.geomspace(1, steps, n).astype(int), [steps]]))


def run_implicit_bias(setting: ImplicitBiasSetting, log_at: np.ndarray | None = None,
                      on_steps: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Train ERM, IW and GroupDRO side by side; one row per logged step and reweighting method.

    Columns: ``step``, ``method`` (iw or groupdro), ``rel_dist`` = ‖W − W_erm‖ / ‖W_erm‖,
    ``dir_dist`` = ‖W/‖W‖ − W_erm/‖W_erm‖‖ (distance of the normalised weights, the paper's
    measure for classification losses), ``norm`` = ‖W‖, ``erm_norm``, ``train_loss`` and
    ``erm_train_loss`` (unweighted mean loss), ``minor_weight`` (the share of the objective on
    the minority digit) and the setting's fields. ``on_steps(k)``, if given, is called with the number of
    steps done since its last call, about 100 times over the run (for a progress display).
    """
    setting.check()
    x_np, y_np = six_digits(setting.seed, setting.n_major, setting.n_minor)
    x, y = torch.as_tensor(x_np), torch.as_tensor(y_np)
    n, n_classes, n_methods = len(y), 2, len(METHODS)
    spec = get_loss(setting.loss)
    counts = np.bincount(y_np, minlength=n_classes)
    loss_fn = spec.factory({k: p.default for k, p in spec.params.items()}, counts)
    groups = torch.nn.functional.one_hot(y, n_classes).double()  # n × groups (group = class)
    group_size = groups.sum(0)
    static = torch.stack([torch.full((n,), 1.0 / n), groups @ (1.0 / (n_classes * group_size))])
    q = torch.full((n_classes,), 1.0 / n_classes, dtype=torch.float64)
    weight = torch.zeros(n_methods, n_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    y_all = y.repeat(n_methods)
    wanted = set(int(s) for s in (log_at if log_at is not None else log_steps(setting.steps)))
    rows: list[dict] = []
    every, reported = max(1, setting.steps // 100), 0
    for step in range(1, setting.steps + 1):
        logits = torch.einsum("nd,mkd->mnk", x, weight).reshape(-1, n_classes)
        per_example = loss_fn(logits, y_all).reshape(n_methods, n)
        with torch.no_grad():
            group_loss = (per_example[2] @ groups) / group_size
            q = q * torch.exp(setting.group_lr * group_loss)
            q = q / q.sum()
            example_weight = torch.cat([static, (groups @ (q / group_size))[None]])
        objective = (example_weight * per_example).sum() + 0.5 * setting.l2 * (weight ** 2).sum()
        if not torch.isfinite(objective):
            raise GroupRobustError(f"implicit-bias: loss {setting.loss} diverged at step {step}; lower --lr")
        (grad,) = torch.autograd.grad(objective, weight)
        with torch.no_grad():
            weight -= setting.lr * grad
        if step in wanted:
            rows += _log_rows(step, weight.detach(), per_example.detach(), example_weight, y, setting)
        if on_steps is not None and (step % every == 0 or step == setting.steps):
            on_steps(step - reported)
            reported = step
    return pd.DataFrame(rows)


def _log_rows(step: int, weight: torch.Tensor, per_example: torch.Tensor, example_weight: torch.Tensor,
              y: torch.Tensor, setting: ImplicitBiasSetting) -> list[dict]:
    flat = weight.reshape(len(METHODS), -1)
    norms = flat.norm(dim=1)
    erm, erm_norm = flat[0], float(norms[0])
    rows = []
    for m in range(1, len(METHODS)):
        rel = float((flat[m] - erm).norm()) / erm_norm if erm_norm > 0 else float("nan")
        direction = float((flat[m] / norms[m] - erm / norms[0]).norm()) if erm_norm > 0 else float("nan")
        rows.append({"step": step, "method": METHODS[m], "rel_dist": rel, "dir_dist": direction,
                     "norm": float(norms[m]), "erm_norm": erm_norm,
                     "train_loss": float(per_example[m].mean()), "erm_train_loss": float(per_example[0].mean()),
                     "minor_weight": float(example_weight[m][y == 1].sum()), **asdict(setting)})
    return rows
