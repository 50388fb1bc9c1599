"""The dataset registry: names → builders that return train/val/test splits (`grouprobust.registry`)."""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from grouprobust.data.dataset import DatasetSplits
from grouprobust.data.fingerprint import fingerprints
from grouprobust.params import Choice, Interval, Param, resolve_params
from grouprobust.registry import Registry


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: its builder, description, the training defaults that suit it and the
    options that name input files or directories (``file_options``: their contents enter the run id)."""

    name: str
    builder: Callable[..., DatasetSplits]
    description: str
    train_defaults: dict[str, Any] = field(default_factory=dict)
    embedded: bool = True
    file_options: tuple[str, ...] = ()
    #: Options added after run ids were first published: left out of a run id while at their default.
    later_options: tuple[str, ...] = ()
    #: Training defaults when fine-tuning a backbone end to end (over the backbone family's recipe).
    finetune_defaults: dict[str, Any] = field(default_factory=dict)
    #: What the dataset gives the model with the given options: "image", "text" or "features" (None: features).
    inputs_of: Callable[[dict[str, Any]], str] | None = None

    def input_kind(self, options: dict[str, Any]) -> str:
        """``image``, ``text`` or ``features``: what a split's inputs are with ``options`` (checked against a
        backbone before anything is read)."""
        return self.inputs_of(options) if self.inputs_of is not None else "features"

    def option_params(self) -> dict[str, Param]:
        """The builder's options (its keyword-only arguments) as `Param` declarations."""
        return builder_options(self.builder)

    def option_defaults(self) -> dict[str, Any]:
        """The builder's options with their defaults."""
        return {k: p.default for k, p in self.option_params().items()}


def builder_options(builder: Callable[..., Any]) -> dict[str, Param]:
    """The keyword-only arguments of ``builder`` as `Param` declarations: the default (which fixes the
    type) and, from ``typing.Annotated`` metadata, an `Interval` or `Choice` constraint and a help text
    (a string)::

        def build(seed: int = 0, *, p: Annotated[float, Interval(0, 1), "agreement in train"] = 0.95): ...
    """
    hints = typing.get_type_hints(builder, include_extras=True)
    out = {}
    for name, arg in inspect.signature(builder).parameters.items():
        if arg.kind != arg.KEYWORD_ONLY:
            continue
        meta = getattr(hints.get(name), "__metadata__", ())
        constraint = next((m for m in meta if isinstance(m, (Interval, Choice))), None)
        text = next((m for m in meta if isinstance(m, str)), "")
        out[name] = Param(arg.default, None, text, constraint)
    return out


#: Every dataset by name; importing the modules that define datasets registers them.
DATASETS: Registry[DatasetEntry] = Registry(
    "dataset", subject="dataset", discover=("grouprobust.data.embedded", "grouprobust.data.feature_files",
                                            "grouprobust.data.readers", "grouprobust.data.tabular"))


def register_dataset(name: str, description: str, train_defaults: dict[str, Any] | None = None,
                     embedded: bool = True, file_options: tuple[str, ...] = (),
                     later_options: tuple[str, ...] = (), finetune_defaults: dict[str, Any] | None = None,
                     inputs_of: Callable[[dict[str, Any]], str] | None = None) -> Callable:
    """Decorator registering ``builder(seed, *, **options) -> DatasetSplits`` under ``name``;
    ``file_options`` names the options that hold a path to an input file or directory."""

    def wrap(builder: Callable[..., DatasetSplits]) -> Callable[..., DatasetSplits]:
        unknown = set(file_options) - set(builder_options(builder))
        if unknown:
            raise ValueError(f"dataset {name!r}: file_options {sorted(unknown)} are not options of its builder")
        DATASETS.add(name, DatasetEntry(name, builder, description, dict(train_defaults or {}), embedded,
                                        tuple(file_options), tuple(later_options), dict(finetune_defaults or {}),
                                        inputs_of))
        return builder

    return wrap


def get_dataset_entry(name: str) -> DatasetEntry:
    """The registry entry for ``name``; raises a one-line error listing the known names."""
    return DATASETS.get_entry(name)


def list_datasets() -> list[DatasetEntry]:
    """All registered datasets, sorted by name."""
    return [DATASETS[k] for k in sorted(DATASETS)]


def resolve_dataset_options(name: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The builder's full option dict: defaults overridden by ``options``, each converted to its type and
    checked against its constraint (one-line errors name the option, the value and the allowed range)."""
    entry = get_dataset_entry(name)
    return resolve_params(entry.option_params(), options, what="dataset option", owner=f"dataset {name!r}",
                          subject_prefix="data")


def input_fingerprints(name: str, options: dict[str, Any]) -> dict[str, str]:
    """``{option: "sha256:..."}`` for each of dataset ``name``'s file options that names a readable file or
    directory in the resolved ``options``; empty for a dataset without file options. A missing path
    is left out: building the dataset reports it with the dataset's own message."""
    return fingerprints({option: options.get(option) for option in get_dataset_entry(name).file_options})


def load_dataset(name: str, seed: int = 0, **options: Any) -> DatasetSplits:
    """Build dataset ``name`` deterministically for ``seed``; returns its train/val/test splits."""
    entry = get_dataset_entry(name)
    resolved = resolve_dataset_options(name, options)
    splits = entry.builder(seed, **resolved)
    splits.name = name
    splits.description = splits.description or entry.description
    splits.meta.setdefault("options", resolved)
    return splits
