"""Readers for the public benchmarks in their own file formats (see docs/datasets.md).

`read_benchmark(name, root, **options)` returns a `BenchmarkTable` (paths or texts, labels,
attributes, splits, evaluation groups); `BenchmarkTable.to_splits(features)` turns it into
`DatasetSplits` once features exist. Importing this package also registers each benchmark in the
dataset registry (not embedded): dataset ``waterbirds`` with option ``features=DIR`` trains on a
feature directory written by `grouprobust.data.extract` (the ``grouprobust features`` command).
`check_benchmark(name, root)` reads and validates a copy and returns its group counts per split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from grouprobust.data.dataset import DatasetSplits
from grouprobust.data.feature_store import load_feature_splits
from grouprobust.data.readers.celeba import read_celeba
from grouprobust.data.readers.civilcomments import read_civilcomments
from grouprobust.data.readers.dfa_layout import read_bffhq, read_colored_cifar10, read_colored_mnist
from grouprobust.data.readers.metashift import read_metashift
from grouprobust.data.readers.multinli import load_cached_bert_inputs, read_multinli
from grouprobust.data.readers.table import SPLITS, BenchmarkTable
from grouprobust.data.readers.waterbirds import read_waterbirds
from grouprobust.data.registry import _unknown, builder_options, register_dataset
from grouprobust.errors import GroupRobustError

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
    return {k: p.default for k, p in builder_options(get_reader(name)).items()}


def get_reader(name: str) -> Callable[..., BenchmarkTable]:
    """The reader function of benchmark ``name``; raises listing the known names."""
    if name not in READERS:
        raise _unknown("benchmark", name, list(READERS), "see docs/datasets.md")
    return READERS[name][0]


def read_benchmark(name: str, root: Path | str, **options: Any) -> BenchmarkTable:
    """Read and validate benchmark ``name`` under ``root``; string options are coerced to the defaults' types."""
    space = builder_options(get_reader(name))
    unknown = [k for k in options if k not in space]
    if unknown:
        raise _unknown(f"option for benchmark {name!r}:", unknown[0], list(space), "they are the reader's options",
                       subject="data")
    resolved = {k: space[k].resolve(k, v, "dataset option", f"data:{k}") for k, v in options.items()}
    return get_reader(name)(Path(root), **resolved)


@dataclass
class BenchmarkCheck:
    """What `check_benchmark` found: the table, group counts per split, and sample counts per split.

    ``group_counts`` / ``eval_group_counts``: group x split frames of counts (evaluation groups only
    for benchmarks that have overlapping ones, else None); ``samples``: split -> number of samples.
    """

    table: BenchmarkTable
    group_counts: Any
    eval_group_counts: Any
    samples: dict[str, int]
    splits: tuple[str, ...] = tuple(SPLITS)

    @property
    def name(self) -> str:
        """The benchmark's name."""
        return self.table.name


def check_benchmark(name: str, root: Path | str, **options: Any) -> BenchmarkCheck:
    """Read and validate benchmark ``name`` under ``root``; returns its group counts (raises on a bad copy)."""
    table = read_benchmark(name, root, **options)
    samples = {s: int((table.table["split"] == s).sum()) for s in SPLITS}
    return BenchmarkCheck(table, table.group_counts(), table.eval_group_counts(), samples)


def _feature_builder(name: str) -> Callable[..., DatasetSplits]:
    def build(seed: int = 0, *, features: str = "") -> DatasetSplits:
        if not features:
            raise GroupRobustError(f"{name} is read from your own copy: extract features first with `grouprobust "
                                   "features` (or grouprobust.data.extract.extract_benchmark_features), then set the "
                                   "dataset option features=DIR", subject="data:features")
        splits = load_feature_splits(Path(features))
        if splits.name != name:
            raise GroupRobustError(f"{features} holds features of {splits.name!r}, not {name!r}; set features to "
                                   f"a directory of features extracted from {name}", subject="data:features")
        return splits

    build.__doc__ = f"{name} from a feature directory written by `grouprobust.data.extract` (option ``features``)."
    return build


for _name, (_fn, _description) in READERS.items():
    register_dataset(_name, _description + " (train on extracted features: option features=DIR)",
                     train_defaults={"model": "linear", "epochs": 30, "lr": 1e-2, "optimizer": "adam",
                                     "batch_size": 256},
                     embedded=False, file_options=("features",))(_feature_builder(_name))

__all__ = ["READERS", "BenchmarkCheck", "BenchmarkTable", "check_benchmark", "get_reader", "load_cached_bert_inputs", "read_benchmark", "reader_options"]
