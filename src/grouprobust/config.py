"""The fully resolved configuration of one run, its id, and the one place a config is resolved.

`resolve_config` validates every name (dataset, method, loss, label regime, selection rule) and
every value (hyper-parameters and dataset options, each against its declared type and
constraint), fills in every default, and returns a `RunConfig` whose values are typed. The
command line, sweeps (before anything is written) and the Python API all go through it, so a bad
value is refused the same way everywhere.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import platform
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Mapping

from grouprobust.backbones import check_input_kind, describe_backbone
from grouprobust.data.fingerprint import fingerprints
from grouprobust.data.registry import get_dataset_entry, input_fingerprints, resolve_dataset_options
from grouprobust.errors import GroupRobustError
from grouprobust.losses import get_loss
from grouprobust.methods.base import REGIMES, TwoStageMethod
from grouprobust.methods.registry import get_method
from grouprobust.models import device_environment
from grouprobust.params import LATER_TRAIN_PARAMS, RUN_ONLY_PARAMS, TRAIN_PARAMS, Param, resolve_params, sample_params
from grouprobust.selection import DEFAULT_RULE, DEFAULT_RULE_NO_GROUPS, check_rule_for_regime, get_rule
from grouprobust.threads import thread_environment


@dataclass
class RunConfig:
    """Dataset (with options), method (with every hyper-parameter), seed, label regime, selection rule and
    ``inputs``: the content fingerprints of the input files the dataset options name (option ->
    ``"sha256:..."``; empty for embedded datasets)."""

    dataset: str
    method: str
    seed: int = 0
    data: dict[str, Any] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)
    regime: str = "full"
    select: str = "val_worst_group_acc"
    inputs: dict[str, str] = field(default_factory=dict)

    def dataset_inputs(self) -> dict[str, str]:
        """The fingerprints in ``inputs`` of the dataset's file options (not of file-valued hyper-parameters)."""
        return {k: v for k, v in self.inputs.items() if not k.startswith(HPARAM_INPUT)}

    @property
    def run_id(self) -> str:
        """12 hex characters hashing everything that determines the run's numbers, the contents of its
        input files included."""
        fields_ = asdict(self)
        if not fields_["inputs"]:  # left out when empty: run ids from before input fingerprints stay the same
            del fields_["inputs"]
        for name in LATER_TRAIN_PARAMS:  # likewise for training parameters added later, while at their default
            if name in fields_["hparams"] and (name in RUN_ONLY_PARAMS
                                               or fields_["hparams"][name] == TRAIN_PARAMS[name].default):
                del fields_["hparams"][name]
        entry = get_dataset_entry(self.dataset)
        defaults = entry.option_defaults()
        for name in entry.later_options:  # and for dataset options added later
            if name in fields_["data"] and fields_["data"][name] == defaults.get(name):
                del fields_["data"][name]
        text = json.dumps(fields_, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def to_dict(self, device: Any = None) -> dict[str, Any]:
        """The config as written to ``config.json``: fields, run id, package versions and the environment
        block (torch's thread count and its source and, given the run's ``device``, where it trains:
        `grouprobust.models.device_environment`; not part of the run id)."""
        environment = thread_environment()
        if device is not None:
            environment.update(device_environment(device))
        return {**asdict(self), "run_id": self.run_id, "versions": package_versions(), "environment": environment}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """Inverse of `to_dict` (extra keys ignored)."""
        keys = ("dataset", "method", "seed", "data", "hparams", "regime", "select", "inputs")
        return cls(**{k: d[k] for k in keys if k in d})


def package_versions() -> dict[str, str]:
    """Versions of Python, grouprobust, torch, numpy and scikit-learn (read from metadata, no imports)."""
    out = {"python": platform.python_version()}
    for name in ("grouprobust", "torch", "numpy", "scikit-learn"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def param_space(method_cls: type, loss: str | None = None) -> dict[str, Param]:
    """Every parameter a run of ``method_cls`` takes: training parameters, the two-stage protocol's
    (for a two-stage method), the method's own (which may redeclare a training parameter) and, for
    ``loss``, the loss's."""
    space = dict(TRAIN_PARAMS)
    if issubclass(method_cls, TwoStageMethod):
        space.update(method_cls.protocol_params)
    space.update(getattr(method_cls, "params", {}))
    if loss is not None:
        space.update(get_loss(loss).params)
    return space


def _loss_name(overrides: dict[str, Any], defaults: dict[str, Any]) -> str:
    return str(overrides.get("loss", defaults.get("loss", TRAIN_PARAMS["loss"].default)))


def resolve_hparams(method_cls: type, overrides: dict[str, Any] | None = None,
                    dataset_defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """Typed, checked hyper-parameters: defaults < the dataset's training defaults < ``overrides``.

    Unknown names, values of the wrong type and values outside a parameter's constraint raise a
    one-line error naming the parameter, the value and the allowed range.
    """
    overrides, dataset_defaults = dict(overrides or {}), dict(dataset_defaults or {})
    loss = _loss_name(overrides, dataset_defaults)
    get_loss(loss)
    return resolve_params(param_space(method_cls, loss), overrides, dataset_defaults,
                          owner=f"method {method_cls.name!r}")


def sample_hparams(method_cls: type, sweep_seed: int, trial: int, names: list[str] | None = None,
                   loss: str | None = None) -> dict[str, Any]:
    """Random-search draw of ``names`` (default: every searchable parameter) of ``method_cls`` for one
    trial; each value depends only on (sweep seed, trial, parameter name)."""
    return sample_params(param_space(method_cls, loss), sweep_seed, trial, names)


#: Training recipes for fine-tuning a pretrained backbone, by its family (what SubpopBench and group_DRO use):
#: SGD with momentum for convolutional networks; AdamW with linear warm-up and decay and gradient clipping for
#: transformers. They replace the dataset's defaults for frozen features; ``--set`` overrides them.
FINETUNE_RECIPES: dict[str, dict[str, Any]] = {
    "conv": {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 32},
    "transformer": {"optimizer": "adamw", "lr": 1e-5, "weight_decay": 1e-4, "batch_size": 32,
                    "scheduler": "linear", "warmup_frac": 0.1, "grad_clip": 1.0},
}


def training_defaults(entry: Any, hparams: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """The defaults a run's hyper-parameters start from: the dataset's (for feature vectors), or, with a
    backbone, the recipe of its family (`FINETUNE_RECIPES`) and the dataset's end-to-end defaults. Also fills
    the data options a backbone decides (``image_size``, ``tokenizer``) when they are left unset."""
    spec = str(hparams.get("backbone") or entry.train_defaults.get("backbone") or "")
    if not spec:
        return dict(entry.train_defaults)
    info = describe_backbone(spec, hparams.get("weights") or None)
    options = entry.option_params()
    if "image_size" in options and not data.get("image_size") and info.input.kind == "image":
        data["image_size"] = info.input.image_size
    if "tokenizer" in options and not data.get("tokenizer") and info.input.kind == "text":
        data["tokenizer"] = info.input.tokenizer
    if "max_length" in options and not data.get("max_length") and info.input.kind == "text":
        data["max_length"] = info.input.max_length
    check_input_kind(info, entry.input_kind(data), entry.name)
    return {**FINETUNE_RECIPES[info.family], **entry.finetune_defaults}


def resolve_config(dataset: str, method: str, seed: int = 0, data: dict[str, Any] | None = None,
                   hparams: dict[str, Any] | None = None, regime: str = "full", select: str | None = None, *,
                   backbone: str | None = None, weights: str | Path | None = None, root: str | Path | None = None
                   ) -> RunConfig:
    """Validate names and values and fill in every default; raises `GroupRobustError` for bad input.

    The returned config's ``inputs`` hold the content fingerprint of each input file or directory that
    the dataset's file options name (`grouprobust.data.registry.input_fingerprints`), so editing a
    table or re-extracting features gives a new run id. A missing path is left out here and reported
    by the dataset when it is built.

    ``select`` defaults to the method's own rule (two-stage methods select by validation
    worst-group accuracy on their validation half), else the dataset's, else validation
    worst-group accuracy, or worst-class accuracy when the regime gives no group labels.
    """
    seed = check_seed(seed)
    check_argument_types(dataset=(dataset, str), method=(method, str), data=(data, Mapping),
                         hparams=(hparams, Mapping), regime=(regime, str), select=(select, str))
    hparams, data = dict(hparams or {}), dict(data or {})
    for name, value, into, flag in (("backbone", backbone, hparams, "--set"), ("weights", weights, hparams, "--set"),
                                    ("root", root, data, "--data")):
        if value is None:
            continue
        if name in into and str(into[name]) != str(value):
            raise GroupRobustError(f"{name} is given twice with different values ({into[name]!r} and {str(value)!r}); "
                                   f"give it once, as --{name} or {flag} {name}=...", subject=f"hparam:{name}")
        into[name] = str(value)
    if regime not in REGIMES:
        raise GroupRobustError(f"unknown label regime {regime!r}; use one of: {', '.join(REGIMES)}", subject="regime")
    entry = get_dataset_entry(dataset)
    method_cls = get_method(method)
    inferred = bool((hparams or {}).get("train_groups"))
    if inferred and method_cls.needs == "full" and regime == "val":
        pass  # training groups come from inference: only the validation labels the regime gives are read
    elif REGIMES.index(method_cls.needs) > REGIMES.index(regime):
        raise GroupRobustError(f"method {method!r} needs group labels on {_needs_text(method_cls.needs)} but the regime "
                               f"{regime!r} gives {_needs_text(regime)}; use regime {method_cls.needs!r} or another "
                               "method", subject="regime")
    defaults = training_defaults(entry, hparams, data)
    data_options = resolve_dataset_options(dataset, data)
    resolved = resolve_hparams(method_cls, hparams, defaults)
    fixed_rule = getattr(method_cls, "select", None) if issubclass(method_cls, TwoStageMethod) else None
    if fixed_rule is not None and select is not None and select != fixed_rule:
        raise GroupRobustError(f"method {method!r} selects by {fixed_rule} (on its validation half); selection rule "
                               f"{select!r} is not supported, leave the rule unset", subject="select")
    default_rule = fixed_rule or entry.train_defaults.get("select", DEFAULT_RULE)
    rule = get_rule(select or (default_rule if regime != "none" else DEFAULT_RULE_NO_GROUPS))
    check_rule_for_regime(rule, regime)
    return RunConfig(dataset, method, int(seed), data_options, resolved, regime, rule.name,
                     {**input_fingerprints(dataset, data_options), **hparam_fingerprints(resolved)})


#: Hyper-parameters that name an input, and the file of it whose contents the run depends on (None:
#: the named file itself). ``stage1`` is a run directory: its model file (`grouprobust.trained.MODEL_FILE`;
#: config sits below trained, so the name is repeated here and a test keeps the two equal).
FILE_HPARAMS: dict[str, str | None] = {"train_groups": None, "stage1": "model.pt", "weights": None}
#: Prefix of the `RunConfig.inputs` keys that fingerprint a hyper-parameter's file (the others: dataset options).
HPARAM_INPUT = "hparam:"


def hparam_fingerprints(hparams: dict[str, Any]) -> dict[str, str]:
    """``{"hparam:<name>": "sha256:..."}`` for each set file-valued hyper-parameter (`FILE_HPARAMS`) whose
    file exists; a missing one is left to the method, which reports it in its own words."""
    files = {f"{HPARAM_INPUT}{name}": Path(str(value)).expanduser() / member if member else value
             for name, member in FILE_HPARAMS.items() if (value := hparams.get(name))}
    backbone_file = backbone_path(str(hparams.get("backbone") or ""))
    if backbone_file is not None:  # a TorchScript / exported file or an hf:DIR folder: its contents make the run
        files[f"{HPARAM_INPUT}backbone"] = backbone_file
    return fingerprints(files)


def backbone_path(spec: str) -> Path | None:
    """The file or folder a backbone spec names (``hf:DIR``, a TorchScript or ``.pt2`` file), else None."""
    if spec.startswith("hf:"):
        return Path(spec[3:]).expanduser()
    if spec and ":" not in spec and Path(spec).expanduser().is_file():
        return Path(spec).expanduser()
    return None


MAX_SEED = 2**32 - 1


def check_argument_types(**arguments: tuple[Any, type | tuple[type, ...]]) -> None:
    """Raise a one-line `GroupRobustError` (subject: the argument's name) for the first argument
    ``name=(value, expected type)`` whose value is neither None nor of its type: the public entry points
    check their arguments here instead of failing deep inside with an AttributeError or TypeError."""
    for name, (value, expected) in arguments.items():
        if value is None or isinstance(value, expected):
            continue
        kinds = expected if isinstance(expected, tuple) else (expected,)
        wanted = " or ".join("a mapping (dict)" if k is Mapping else f"a {k.__name__}" for k in kinds)
        shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:37]}..."
        hint = "; build it with grouprobust.resolve_config" if expected is RunConfig else ""
        raise GroupRobustError(f"{name} must be {wanted}, got {type(value).__name__} {shown}{hint}", subject=name)
    for name, (value, expected) in arguments.items():
        if isinstance(value, Mapping) and any(not isinstance(k, str) for k in value):
            bad = next(k for k in value if not isinstance(k, str))
            raise GroupRobustError(f"{name} must map option names (str) to values, got the key {bad!r}", subject=name)


def check_seed(seed: object, subject: str = "seed") -> int:
    """``seed`` as an int if it is a whole number in [0, 2**32 - 1] (what numpy and torch both accept);
    else a one-line error."""
    if isinstance(seed, str):
        try:
            seed = int(seed.strip())
        except ValueError:
            pass
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) <= MAX_SEED:
        raise GroupRobustError(f"seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}; pass a "
                               "non-negative seed", subject=subject)
    return int(seed)


def _needs_text(level: str) -> str:
    return {"none": "no split", "val": "validation only", "full": "train and validation"}[level]
