"""Expanding a sweep into trials: datasets x methods x hyper-parameter points x seeds, each validated."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from grouprobust.config import RunConfig, param_space, resolve_config, sample_hparams, training_defaults
from grouprobust.data.registry import get_dataset_entry, load_dataset, resolve_dataset_options
from grouprobust.errors import GroupRobustError
from grouprobust.methods.base import REGIMES
from grouprobust.methods.registry import get_method
from grouprobust.selection import check_rule_for_split, get_rule
from grouprobust.sweep.expected import Expected, expected_for
from grouprobust.sweep.spec import MethodSpec, SweepSpec
from grouprobust.training import validation_set


@dataclass(frozen=True)
class Trial:
    """One run of a sweep: its fully resolved config, the hyper-parameter point it belongs to, and the
    published result it is compared with (the method's ``expected`` for this dataset; not part of the
    config, so it never changes the run id)."""

    config: RunConfig
    point: str
    expected: Expected | None = None

    @property
    def run_id(self) -> str:
        """The run id (hash of the resolved config), also the run directory's name."""
        return self.config.run_id


def _random_names(spec: SweepSpec, method: MethodSpec, dataset: str, fixed: dict[str, Any]) -> list[str]:
    loss = fixed.get("loss", get_dataset_entry(dataset).train_defaults.get("loss", "ce"))
    space = param_space(get_method(method.name), str(loss))
    if method.random_params is None:
        return [k for k, p in space.items() if p.search is not None and k not in fixed and k not in method.grid]
    unknown = [k for k in method.random_params if k not in space]
    if unknown:
        raise GroupRobustError(f"{spec.where(f'methods.{method.name}.random.params')}: unknown hyper-parameter "
                               f"{unknown[0]!r}; valid: {', '.join(sorted(space))}")
    fixed_only = [k for k in method.random_params if space[k].search is None]
    if fixed_only:
        raise GroupRobustError(f"{spec.where(f'methods.{method.name}.random.params')}: {fixed_only[0]!r} has no search "
                               "range in the registry; give it grid values instead")
    return list(method.random_params)


def _backbone_filled_options(spec: SweepSpec, dataset: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    """The distinct option sets ``dataset`` is read with: ``options`` with what each method's fixed backbone
    decides when the file leaves it unset (image size, tokenizer, text length), as `resolve_config` fills it."""
    entry = get_dataset_entry(dataset)
    filled: list[dict[str, Any]] = []
    for method in spec.methods or [MethodSpec("erm")]:
        data = dict(options)
        training_defaults(entry, {**spec.fixed, **method.fixed}, data)
        if data not in filled:
            filled.append(data)
    return filled


def _check_names(spec: SweepSpec) -> None:
    """Datasets, their options, methods, regime and rule, each checked under its own key."""
    def check(key: str, fn, *args) -> None:
        try:
            fn(*args)
        except GroupRobustError as err:
            raise GroupRobustError(f"{spec.where(key)}: {err}") from None

    for name, options in spec.datasets.items():
        check(f"datasets.{name}", resolve_dataset_options, name, options)
        if not get_dataset_entry(name).embedded:  # read from files the options name: read them once, now
            check(f"datasets.{name}", lambda: [load_dataset(name, spec.seeds[0], **filled)
                                               for filled in _backbone_filled_options(spec, name, options)])
    for method in spec.methods:
        check(f"methods.{method.name}", get_method, method.name)
    if spec.regime not in REGIMES:
        raise GroupRobustError(f"{spec.where('regime')}: unknown label regime {spec.regime!r}; use one of: {', '.join(REGIMES)}")
    if spec.select is not None:
        check("select", get_rule, spec.select)


def hparam_points(spec: SweepSpec, method: MethodSpec, dataset: str) -> list[tuple[str, dict[str, Any]]]:
    """``(label, overrides)`` for each hyper-parameter point of ``method``: grid x random draws.

    Draw ``j`` of a random search is `grouprobust.config.sample_hparams` with trial ``j``, so each
    value depends only on (sweep seed, j, parameter name); it is the same for every seed and dataset.
    """
    fixed = {**spec.fixed, **method.fixed}
    names = list(method.grid)
    grid_points = [dict(zip(names, values)) for values in itertools.product(*(method.grid[n] for n in names))]
    if not method.random_count:
        return [(f"{method.name}#{i}", {**fixed, **g}) for i, g in enumerate(grid_points)]
    random_names = _random_names(spec, method, dataset, fixed)
    loss = fixed.get("loss")
    points = []
    for i, g in enumerate(grid_points):
        for j in range(method.random_count):
            draw = sample_hparams(get_method(method.name), spec.sweep_seed, j, random_names,
                                  loss=None if loss is None else str(loss))
            points.append((f"{method.name}#{i}.r{j}", {**fixed, **g, **draw}))
    return points


def expand(spec: SweepSpec) -> list[Trial]:
    """Every trial of the sweep, validated with `resolve_config`; duplicates (same run id) appear once.

    Raises `GroupRobustError` naming the file and key of the first invalid trial, before anything runs.
    """
    _check_names(spec)
    trials: list[Trial] = []
    seen: set[str] = set()
    for dataset, options in spec.datasets.items():
        for method in spec.methods:
            try:
                points = hparam_points(spec, method, dataset)
            except GroupRobustError as err:
                if str(err).startswith(str(spec.path)):
                    raise
                raise GroupRobustError(f"{spec.where(f'methods.{method.name}')}: {err}") from None
            for label, overrides in points:
                for seed in spec.seeds:
                    try:
                        config = resolve_config(dataset, method.name, seed, options, overrides, spec.regime, spec.select)
                    except GroupRobustError as err:
                        raise GroupRobustError(f"{spec.where(f'methods.{method.name}')} on dataset {dataset!r}: {err} "
                                               "(edit the sweep file)") from None
                    if config.run_id not in seen:
                        seen.add(config.run_id)
                        trials.append(Trial(config, label, expected_for(method.expected, dataset)))
    return trials


def check_rule_labels(spec: SweepSpec, trials: list[Trial]) -> None:
    """Refuse, before anything runs, a selection rule that reads labels an embedded dataset's split lacks.

    Each trial would otherwise fail on its own with the same message. Only embedded datasets are built
    here (seconds); a user's files are checked by each trial, as their loading can be costly.
    """
    checked: set[str] = set()
    for trial in trials:
        config = trial.config
        key = json.dumps([config.dataset, config.data, config.regime, config.select], sort_keys=True, default=str)
        if key in checked or not get_dataset_entry(config.dataset).embedded:
            continue
        checked.add(key)
        splits = load_dataset(config.dataset, seed=config.seed, **config.data)
        rule = get_rule(config.select)
        try:
            check_rule_for_split(rule, splits.test if rule.split == "test" else validation_set(splits, config.regime))
        except GroupRobustError as err:
            raise GroupRobustError(f"{spec.where('select')}: {err} (edit the sweep file)") from None
