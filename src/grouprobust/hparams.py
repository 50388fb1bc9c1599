"""Hyper-parameters: each declared once with its default and its random-search distribution.

Training parameters live in `TRAIN_PARAMS`; each method class and each loss declares its own in a
``params`` mapping, and `param_space` collects them, so there is no central ``if method == ...`` table.
Random draws are seeded by (sweep seed, trial, parameter name): adding a parameter never changes the
draws of the others.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from grouprobust.errors import GroupRobustError
from grouprobust.options import coerce


@dataclass(frozen=True)
class Param:
    """A hyper-parameter: ``default`` and a search distribution.

    ``search`` is ``None`` (fixed), ``("log_uniform", lo, hi)``, ``("uniform", lo, hi)``,
    ``("int", lo, hi)`` (inclusive) or ``("choice", [values...])``.
    """

    default: Any
    search: tuple | None = None
    help: str = ""

    def sample(self, rng: np.random.Generator) -> Any:
        """One draw from the search distribution (the default when the parameter is fixed)."""
        if self.search is None:
            return self.default
        kind = self.search[0]
        if kind == "log_uniform":
            return float(math.exp(rng.uniform(math.log(self.search[1]), math.log(self.search[2]))))
        if kind == "uniform":
            return float(rng.uniform(self.search[1], self.search[2]))
        if kind == "int":
            return int(rng.integers(self.search[1], self.search[2] + 1))
        if kind == "choice":
            values = self.search[1]
            return values[int(rng.integers(len(values)))]
        raise ValueError(f"unknown search kind {kind!r}")


TRAIN_PARAMS: dict[str, Param] = {
    "model": Param("mlp", ("choice", ["linear", "mlp", "cnn"]), "network: linear, mlp or cnn (about 5k parameters)"),
    "hidden": Param(64, ("choice", [32, 64, 128]), "width of the MLP's hidden layers"),
    "optimizer": Param("adam", ("choice", ["sgd", "adam", "adamw"]), "sgd (with momentum), adam or adamw"),
    "lr": Param(1e-3, ("log_uniform", 1e-4, 1e-1), "learning rate"),
    "momentum": Param(0.9, None, "SGD momentum"),
    "weight_decay": Param(0.0, ("choice", [0.0, 1e-4, 1e-3, 1e-2, 1e-1]), "L2 penalty through the optimizer"),
    "batch_size": Param(64, ("choice", [32, 64, 128, 256]), "examples per step"),
    "epochs": Param(20, None, "passes over the training set"),
    "loss": Param("ce", None, "per-example loss; see grouprobust.losses.LOSSES"),
    "eval_every": Param(1, None, "evaluate val/test every this many epochs (and always at the last)"),
}


def param_space(method_cls: type, loss: str | None = None) -> dict[str, Param]:
    """All parameters a run of ``method_cls`` takes: training, method and (for ``loss``) loss parameters."""
    from grouprobust.losses import get_loss

    space = dict(TRAIN_PARAMS)
    space.update(getattr(method_cls, "params", {}))
    if loss is not None:
        space.update(get_loss(loss).params)
    return space


def resolve_hparams(method_cls: type, overrides: dict[str, Any] | None = None,
                    dataset_defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults < dataset's training defaults < ``overrides`` (coerced to each default's type).

    Unknown names raise a one-line error listing the valid ones.
    """
    overrides = dict(overrides or {})
    dataset_defaults = dict(dataset_defaults or {})
    loss_name = str(overrides.get("loss", dataset_defaults.get("loss", TRAIN_PARAMS["loss"].default)))
    space = param_space(method_cls, loss_name)
    unknown = [k for k in overrides if k not in space]
    if unknown:
        raise GroupRobustError(
            f"unknown hyper-parameter {unknown[0]!r} for method {method_cls.name!r}; valid: {', '.join(sorted(space))}")
    resolved = {k: p.default for k, p in space.items()}
    for k, v in dataset_defaults.items():
        if k in space:
            resolved[k] = v
    for k, v in overrides.items():
        resolved[k] = coerce(v, space[k].default, f"--set {k}")
        search = space[k].search
        # Named options (strings) must be one of their choices; numeric choices are only a search grid.
        if search and search[0] == "choice" and isinstance(space[k].default, str) and resolved[k] not in search[1]:
            raise GroupRobustError(f"--set {k}={resolved[k]} is not one of: {', '.join(map(str, search[1]))}")
    return resolved


def draw_seed(sweep_seed: int, trial: int, name: str) -> int:
    """A 32-bit seed that depends only on (sweep seed, trial, parameter name)."""
    digest = hashlib.sha256(f"{sweep_seed}:{trial}:{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def sample_hparams(method_cls: type, sweep_seed: int, trial: int, names: list[str] | None = None,
                   loss: str | None = None) -> dict[str, Any]:
    """Random-search draw of ``names`` (default: every searchable parameter) for one trial."""
    space = param_space(method_cls, loss)
    names = names if names is not None else [k for k, p in space.items() if p.search is not None]
    return {k: space[k].sample(np.random.default_rng(draw_seed(sweep_seed, trial, k))) for k in names}
