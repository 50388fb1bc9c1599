"""Readers for the public benchmarks in their own file formats (see docs/datasets.md).

`read_benchmark(name, root, **options)` returns a `BenchmarkTable` (paths or texts, labels,
attributes, splits, evaluation groups); `BenchmarkTable.to_splits(features)` turns it into
`DatasetSplits` once features exist. Importing this package also registers each benchmark in the
dataset registry (not embedded): ``--dataset waterbirds --data features=DIR`` trains on a feature
directory written by ``grouprobust features``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

from grouprobust.data.dataset import DatasetSplits
from grouprobust.data.readers.celeba import read_celeba
from grouprobust.data.readers.civilcomments import read_civilcomments
from grouprobust.data.readers.dfa_layout import read_bffhq, read_colored_cifar10, read_colored_mnist
from grouprobust.data.readers.metashift import read_metashift
from grouprobust.data.readers.multinli import load_cached_bert_inputs, read_multinli
from grouprobust.data.readers.table import BenchmarkTable
from grouprobust.data.readers.waterbirds import read_waterbirds
from grouprobust.data.registry import _unknown, register_dataset
from grouprobust.errors import GroupRobustError
from grouprobust.options import coerce

READERS: dict[str, tuple[Callable[..., BenchmarkTable], str]] = {
    "waterbirds": (read_waterbirds, "Waterbirds (group DRO's metadata.csv): landbird/waterbird x land/water"),
    "celeba": (read_celeba, "CelebA attributes + partition: Blond_Hair x Male by default"),
    "multinli": (read_multinli, "MultiNLI, group DRO's layout: 3 labels x negation in the hypothesis"),
    "civilcomments": (read_civilcomments, "CivilComments, WILDS layout: toxic x any identity; 16 overlapping "
                      "identity groups for evaluation"),
    "metashift": (read_metashift, "MetaShift (SubpopBench): cat/dog x indoor/outdoor"),
    "colored-mnist": (read_colored_mnist, "Colored MNIST in DFA's layout (GERNE): 10 digits x 10 colors"),
    "colored-cifar10": (read_colored_cifar10, "Corrupted CIFAR-10 in DFA's layout (GERNE): 10 classes x 10 corruptions"),
    "bffhq": (read_bffhq, "bFFHQ in DFA's layout (GERNE): age x gender"),
}


def reader_options(name: str) -> dict[str, Any]:
    """The options of benchmark ``name``'s reader with their defaults."""
    fn = get_reader(name)
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.kind == p.KEYWORD_ONLY}


def get_reader(name: str) -> Callable[..., BenchmarkTable]:
    """The reader function of benchmark ``name``; raises listing the known names."""
    if name not in READERS:
        raise _unknown("benchmark", name, list(READERS), "see docs/datasets.md")
    return READERS[name][0]


def read_benchmark(name: str, root: Path | str, **options: Any) -> BenchmarkTable:
    """Read and validate benchmark ``name`` under ``root``; options are coerced like ``--data`` values."""
    defaults = reader_options(name)
    resolved = {}
    for key, value in options.items():
        if key not in defaults:
            raise _unknown(f"option for benchmark {name!r}:", key, list(defaults), "pass them as --data key=value")
        resolved[key] = coerce(value, defaults[key], f"--data {key}")
    return get_reader(name)(Path(root), **resolved)


def _feature_builder(name: str) -> Callable[..., DatasetSplits]:
    def build(seed: int = 0, *, features: str = "") -> DatasetSplits:
        from grouprobust.data.feature_store import load_feature_splits

        if not features:
            raise GroupRobustError(f"{name} is read from your own copy: extract features first with `grouprobust "
                                   f"features --dataset {name} --root PATH --backbone NAME --out DIR`, then pass "
                                   "--data features=DIR")
        splits = load_feature_splits(Path(features))
        if splits.name != name:
            raise GroupRobustError(f"{features} holds features of {splits.name!r}, not {name!r}; pass the directory "
                                   f"written by `grouprobust features --dataset {name}`")
        return splits

    build.__doc__ = f"{name} from a feature directory written by `grouprobust features` (option ``features``)."
    return build


for _name, (_fn, _description) in READERS.items():
    register_dataset(_name, _description + " (train on extracted features: --data features=DIR)",
                     train_defaults={"model": "linear", "epochs": 30, "lr": 1e-2, "optimizer": "adam",
                                     "batch_size": 256},
                     embedded=False)(_feature_builder(_name))

__all__ = ["READERS", "BenchmarkTable", "get_reader", "load_cached_bert_inputs", "read_benchmark", "reader_options"]
