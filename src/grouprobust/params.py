"""Declarative parameters: each declared once with its type, default, search range and constraint.

A `Param` is the single source of truth for one hyper-parameter or option: its default (which
fixes its type), its random-search distribution, and the constraint every value must satisfy (an
`Interval` or a `Choice`). `resolve_params` turns user values (often strings from a command line
or a sweep file) into typed values and checks each against its constraint, once, when a config is
resolved; after that, code receives typed values and never re-casts them.

Method classes and losses declare their parameters in a ``params`` mapping; training parameters
live in `TRAIN_PARAMS`; dataset builders declare their options in their signature, with a
constraint as ``typing.Annotated`` metadata (see `grouprobust.data.registry`). Random draws are
seeded by (sweep seed, trial, parameter name): adding a parameter never changes the draws of the
others. This is a leaf module (it imports only numpy and `grouprobust.errors`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from grouprobust.errors import GroupRobustError


def _num(v: float) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}".replace(",", "_") if abs(v) >= 100_000 else str(v)  # 1_048_576 reads as it is written
    return "inf" if v == math.inf else ("-inf" if v == -math.inf else f"{v:g}")


@dataclass(frozen=True)
class Interval:
    """Values ``lo <= v <= hi`` (``<`` on an open end); ``None`` ends are unbounded."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, value: Any) -> bool:
        """Whether the number ``value`` lies in the interval (NaN never does)."""
        try:
            v = float(value)
        except (TypeError, ValueError):
            return False
        if math.isnan(v):
            return False
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        if self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)):
            return False
        return True

    def __str__(self) -> str:
        lo = "(-inf" if self.lo is None else ("(" if self.lo_open else "[") + _num(self.lo)
        hi = "inf)" if self.hi is None else _num(self.hi) + (")" if self.hi_open else "]")
        return f"{lo}, {hi}"

    def describe(self, name: str) -> str:
        """The interval as an inequality on ``name``: ``lr > 0``, ``0 <= p <= 1``, ``epochs >= 1``."""
        lo = "" if self.lo is None else f"{_num(self.lo)} {'<' if self.lo_open else '<='} "
        hi = "" if self.hi is None else f" {'<' if self.hi_open else '<='} {_num(self.hi)}"
        if self.lo is not None and self.hi is None:
            return f"{name} {'>' if self.lo_open else '>='} {_num(self.lo)}"
        return f"{lo}{name}{hi}"


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of values."""

    values: tuple

    def __init__(self, values: Iterable[Any]):
        object.__setattr__(self, "values", tuple(values))

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one of the choices."""
        return value in self.values

    def __str__(self) -> str:
        return "one of: " + ", ".join(map(str, self.values))

    def describe(self, name: str) -> str:
        """``one of: a, b`` (the name is implied)."""
        return str(self)


Constraint = Interval | Choice


def admits(constraint: Constraint, value: Any) -> bool:
    """Whether ``value`` satisfies ``constraint``; a list, tuple or array does when it has at least one
    element and every element does. The one constraint check of hyper-parameters, dataset options and
    the last-layer estimators' parameters."""
    items = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
    return bool(items) and all(constraint.contains(v) for v in items)

#: Common constraints.
POSITIVE = Interval(0, None, lo_open=True)
NON_NEGATIVE = Interval(0, None)
FRACTION = Interval(0, 1)
AT_LEAST_ONE = Interval(1, None)
#: Upper bounds on sizes, beyond which no machine could allocate the data or the weights (a size above
#: them is refused when it is resolved, naming the bound, instead of failing in an allocation).
MAX_SAMPLES = 10_000_000  # rows of a generated split
MAX_DIMS = 4096  # columns of a generated feature vector
MAX_WIDTH = 16_384  # hidden units of one layer (two such layers hold 2.7e8 weights, about 1 GB)
MAX_BATCH = 1_048_576  # examples per step
SAMPLES = Interval(1, MAX_SAMPLES)
DIMS = Interval(1, MAX_DIMS)


@dataclass(frozen=True)
class Param:
    """A parameter: ``default`` (its type is the parameter's type), a search distribution, a help
    text and a ``constraint``.

    ``search`` is ``None`` (fixed), ``("log_uniform", lo, hi)``, ``("uniform", lo, hi)``,
    ``("int", lo, hi)`` (inclusive) or ``("choice", [values...])``. A string parameter searched
    over choices is constrained to them unless a constraint is given; numeric choices are only a
    search grid. ``kind`` overrides the type taken from the default (e.g. ``str`` for an empty path).
    """

    default: Any
    search: tuple | None = None
    help: str = ""
    constraint: Constraint | None = None
    kind: type | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.kind is None:
            object.__setattr__(self, "kind", _kind_of(self.default))
        if self.constraint is None and self.search is not None and self.search[0] == "choice" and self.kind is str:
            object.__setattr__(self, "constraint", Choice(self.search[1]))

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

    def search_values(self) -> list[Any]:
        """The end points (or choices) of the search distribution; empty when fixed."""
        if self.search is None:
            return []
        return list(self.search[1]) if self.search[0] == "choice" else [self.search[1], self.search[2]]

    def check(self, name: str, value: Any, what: str = "hyper-parameter", subject: str | None = None) -> Any:
        """``value`` itself if it satisfies the constraint (a list or tuple: every element, and at least
        one); else a one-line error naming the parameter, the value and the allowed range."""
        if self.constraint is not None and not admits(self.constraint, value):
            if isinstance(self.constraint, Choice):
                raise GroupRobustError(f"{what} {name}={value} is not {self.constraint}", subject=subject)
            raise GroupRobustError(f"{what} {name} must lie in {self.constraint}, got {value}: "
                                   f"{self.constraint.describe(name)} is required", subject=subject)
        return value

    def resolve(self, name: str, value: Any, what: str = "hyper-parameter", subject: str | None = None) -> Any:
        """``value`` converted to the parameter's type, refused if it is or holds NaN or an infinity,
        and checked against its constraint."""
        value = coerce(value, self.kind, name, what, subject)
        if not _finite(value):
            raise GroupRobustError(f"{what} {name} must be a finite number, got {value!r}; NaN and infinities are "
                                   "never valid values", subject=subject)
        return self.check(name, value, what, subject)


def _finite(value: Any) -> bool:
    """False if ``value`` is, or (in a list, tuple or dict) holds, a NaN or infinite float."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def _kind_of(default: Any) -> type | None:
    if default is None:
        return None
    if isinstance(default, bool):
        return bool
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    if isinstance(default, (list, tuple)):
        return tuple if isinstance(default, tuple) else list
    return type(default)


def coerce(value: Any, kind: type | None, name: str, what: str = "hyper-parameter",
           subject: str | None = None) -> Any:
    """``value`` (often a string from a command line or sweep file) converted to ``kind``.

    ``kind`` None accepts JSON text or leaves the value as it is. Raises a one-line
    `GroupRobustError` naming ``what`` and ``name`` when the value cannot be converted; a bool is
    never an int or a float (``True`` for an int parameter is refused, not read as 1).
    """
    def bad() -> GroupRobustError:
        label = "true/false" if kind is bool else ("a list" if kind in (list, tuple) else
                                                   (kind.__name__ if kind else "a value"))
        return GroupRobustError(f"{what} {name} must be {label}, got {value!r}", subject=subject)

    if kind is None:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                return value
        return value
    if not isinstance(value, str) or kind is str:
        if isinstance(value, np.generic):
            value = value.item()  # a numpy scalar (a grid built with numpy): its Python value, np.bool_ as bool
        if kind is bool:
            if isinstance(value, bool):
                return value
            raise bad()
        if kind in (int, float) and isinstance(value, bool):
            raise bad()  # bool is an int subclass: true would pass as 1 and be stored (and hashed) as true
        if kind is int:
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise bad()
        if kind is float:
            if isinstance(value, (int, float)):
                return float(value)
            raise bad()
        if kind in (list, tuple) and isinstance(value, (list, tuple)):
            return kind(value)
        if kind is str:
            return value if isinstance(value, str) else str(value)
        if isinstance(value, kind):
            return value
        raise bad()
    text = value.strip()
    try:
        if kind is bool:
            low = text.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind in (list, tuple):
            parsed = json.loads(text) if text.startswith("[") else [_scalar(t) for t in text.split(",") if t.strip()]
            return kind(parsed)
    except ValueError:
        raise bad() from None
    return text


def refuse_repeats(values: list[Any], name: str, noun: str, subject: str | None = None) -> list[Any]:
    """``values`` if none repeats; else a one-line error naming ``name`` (a repeated seed would count twice
    in a mean and std over seeds). ``noun`` names one value: ``seed``, ``method``."""
    if len(set(values)) != len(values):
        raise GroupRobustError(f"{name}: lists a {noun} twice; list each {noun} once", subject=subject)
    return values


def _scalar(text: str) -> Any:
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def resolve_params(space: Mapping[str, Param], values: Mapping[str, Any] | None = None,
                   defaults: Mapping[str, Any] | None = None, *, what: str = "hyper-parameter",
                   owner: str = "", subject_prefix: str = "hparam") -> dict[str, Any]:
    """Typed, checked values of every parameter in ``space``: its default < ``defaults`` < ``values``.

    ``defaults`` (e.g. a dataset's training defaults) may name parameters outside ``space``; they
    are ignored. An unknown name in ``values`` raises a one-line error listing the valid ones
    (``owner`` says whose parameters they are); a value of the wrong type or outside its
    constraint raises naming the parameter, the value and the allowed range.
    """
    values = dict(values or {})
    unknown = [k for k in values if k not in space]
    if unknown:
        where = f" for {owner}" if owner else ""
        close = difflib.get_close_matches(unknown[0], list(space), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        noun = "option" if what == "dataset option" else what
        raise GroupRobustError(f"unknown {noun} {unknown[0]!r}{where}{hint}; valid: {', '.join(sorted(space))}",
                               subject=f"{subject_prefix}:{unknown[0]}", lists_choices=True)
    resolved = {}
    for name, param in space.items():
        if name in values:
            raw = values[name]
        elif defaults is not None and name in defaults:
            raw = defaults[name]
        else:
            raw = param.default
        resolved[name] = param.resolve(name, raw, what, f"{subject_prefix}:{name}")
    return resolved


def draw_seed(sweep_seed: int, trial: int, name: str) -> int:
    """A 32-bit seed that depends only on (sweep seed, trial, parameter name)."""
    digest = hashlib.sha256(f"{sweep_seed}:{trial}:{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def sample_params(space: Mapping[str, Param], sweep_seed: int, trial: int,
                  names: list[str] | None = None) -> dict[str, Any]:
    """Random-search draw of ``names`` (default: every searchable parameter of ``space``) for one trial."""
    names = names if names is not None else [k for k, p in space.items() if p.search is not None]
    return {k: space[k].sample(np.random.default_rng(draw_seed(sweep_seed, trial, k))) for k in names}


#: Training parameters every loop method takes (a method may redeclare one with other defaults).
TRAIN_PARAMS: dict[str, Param] = {
    "model": Param("mlp", ("choice", ["linear", "mlp", "cnn"]), "network: linear, mlp or cnn (about 5k parameters)"),
    "hidden": Param(64, ("choice", [32, 64, 128]), "width of the MLP's hidden layers",
                    Interval(1, MAX_WIDTH)),
    "optimizer": Param("adam", ("choice", ["sgd", "adam", "adamw"]), "sgd (with momentum), adam or adamw"),
    "lr": Param(1e-3, ("log_uniform", 1e-4, 1e-1), "learning rate", POSITIVE),
    "momentum": Param(0.9, None, "SGD momentum", Interval(0, 1, hi_open=True)),
    "weight_decay": Param(0.0, ("choice", [0.0, 1e-4, 1e-3, 1e-2, 1e-1]), "L2 penalty through the optimizer",
                          NON_NEGATIVE),
    "batch_size": Param(64, ("choice", [32, 64, 128, 256]), "examples per step", Interval(1, MAX_BATCH)),
    "epochs": Param(20, None, "passes over the training set", AT_LEAST_ONE),
    "loss": Param("ce", None, "per-example loss; see `grouprobust losses` (grouprobust.losses.LOSSES)"),
    "eval_every": Param(1, None, "evaluate val/test every this many epochs (and always at the last)", AT_LEAST_ONE),
    "amp": Param(False, None, "mixed precision: each step's forward pass under torch.autocast (bfloat16; float16 "
                              "with loss scaling on GPUs without bfloat16)"),
    "train_groups": Param("", None, "inferred-groups file (`grouprobust infer-groups`) whose (class, inferred "
                          "attribute) groups replace the training groups; empty: the dataset's own", kind=str),
    # -- end-to-end fine-tuning of a pretrained backbone (docs/finetuning.md) --
    "backbone": Param("", None, "pretrained backbone fine-tuned end to end (torchvision name, timm:NAME, hf:DIR, a "
                      "transformers name, all-MiniLM-L6-v2, package.module:callable, a TorchScript or .pt2 file); "
                      "empty: the network named by model", kind=str),
    "weights": Param("", None, "the backbone's weights: a state-dict file or a model folder; empty: the backbone's "
                     "own local weights", kind=str),
    "finetune": Param("full", None, "what trains: full (every weight), head (linear probe on frozen features) or "
                      "lora (low-rank adapters on the backbone's linear layers, through peft)",
                      Choice(["full", "head", "lora"])),
    "lora_rank": Param(8, None, "rank of the LoRA adapters (finetune=lora)", Interval(1, 1024)),
    "lora_alpha": Param(16.0, None, "LoRA scaling numerator (the update is scaled by lora_alpha / lora_rank)", POSITIVE),
    "augment": Param(False, None, "random resized crop and horizontal flip of training images, on the device"),
    "max_steps": Param(0, None, "optimizer steps to train for instead of epochs (0: count epochs)", Interval(0, 10**9)),
    "eval_every_steps": Param(0, None, "evaluate val/test every this many optimizer steps (and at the last); 0: "
                              "every eval_every epochs", Interval(0, 10**9)),
    "accumulate": Param(1, None, "minibatches whose gradients are summed before each optimizer step (the effective "
                        "batch is batch_size x accumulate)", Interval(1, 4096)),
    "grad_clip": Param(0.0, None, "clip the gradient's global L2 norm to this before each step (0: no clipping)",
                       NON_NEGATIVE),
    "scheduler": Param("none", None, "learning-rate schedule over the run: none, linear (warm-up then linear "
                       "decay to 0) or cosine (warm-up then cosine decay to 0)", Choice(["none", "linear", "cosine"])),
    "warmup_frac": Param(0.0, None, "fraction of the run's steps over which the learning rate rises linearly "
                         "from 0 (linear and cosine schedules)", Interval(0, 1, hi_open=True)),
    # -- checkpoints inside a run (docs/long-runs.md); they never change a run's numbers --
    "checkpoint_every": Param(1, None, "write a resumable checkpoint every this many epochs (0: only when "
                              "interrupted by SIGTERM or SIGINT)", Interval(0, 10**9)),
    "checkpoint_every_steps": Param(0, None, "write a resumable checkpoint every this many optimizer steps instead "
                                    "of every checkpoint_every epochs (0: count epochs)", Interval(0, 10**9)),
}

#: Training parameters added after run ids were first published: left out of the run id while they hold their
#: default, so that a run (or sweep) written before they existed keeps its id and is reused.
LATER_TRAIN_PARAMS = ("backbone", "weights", "finetune", "lora_rank", "lora_alpha", "augment", "max_steps",
                      "eval_every_steps", "accumulate", "grad_clip", "scheduler", "warmup_frac", "checkpoint_every",
                      "checkpoint_every_steps")

#: Training parameters that say how a run is carried out, not what it computes (a resumed run is identical to
#: an uninterrupted one): never part of a run id, at any value, so that changing them resumes or reuses the run.
RUN_ONLY_PARAMS = ("checkpoint_every", "checkpoint_every_steps")
