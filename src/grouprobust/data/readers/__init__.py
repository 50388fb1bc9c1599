"""Readers for the public benchmarks in their own file formats (see docs/datasets.md).

`read_benchmark(name, root, **options)` returns a `BenchmarkTable` (paths or texts, labels,
attributes, splits, evaluation groups); `BenchmarkTable.to_splits(features)` turns it into
`DatasetSplits` once features exist. Importing this package also registers each benchmark in the
dataset registry (not embedded): dataset ``waterbirds`` with option ``features=DIR`` trains on a
feature directory written by `grouprobust.data.extract` (the ``grouprobust features`` command).
`check_benchmark(name, root)` reads and validates a copy and returns its group counts per split.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable

from grouprobust.data.dataset import DatasetSplits
from grouprobust.data.feature_store import load_feature_splits
from grouprobust.data.raw_inputs import ImageSizeOption, MaxLengthOption, TokenizerOption, input_splits
from grouprobust.data.readers.celeba import read_celeba
from grouprobust.data.readers.civilcomments import read_civilcomments
from grouprobust.data.readers.dfa_layout import read_bffhq, read_colored_cifar10, read_colored_mnist
from grouprobust.data.readers.metashift import read_metashift
from grouprobust.data.readers.multinli import load_cached_bert_inputs, read_multinli
from grouprobust.data.readers.table import SPLITS, BenchmarkTable
from grouprobust.data.readers.waterbirds import read_waterbirds
from grouprobust.data.registry import builder_options, register_dataset
from grouprobust.errors import GroupRobustError
from grouprobust.registry import unknown_name

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
        raise unknown_name("benchmark", name, list(READERS), "see docs/datasets.md")
    return READERS[name][0]


def read_benchmark(name: str, root: Path | str, **options: Any) -> BenchmarkTable:
    """Read and validate benchmark ``name`` under ``root``; string options are coerced to the defaults' types."""
    space = builder_options(get_reader(name))
    unknown = [k for k in options if k not in space]
    if unknown:
        raise unknown_name(f"option for benchmark {name!r}:", unknown[0], list(space), "they are the reader's options",
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


def _benchmark_builder(name: str) -> Callable[..., DatasetSplits]:
    reader_params = builder_options(get_reader(name))

    def build(seed: int = 0, *,
              features: Annotated[str, "a feature directory written by `grouprobust features`"] = "",
              root: Annotated[str, "the benchmark's own folder, trained end to end through a backbone"] = "",
              image_size: ImageSizeOption = 0, max_length: MaxLengthOption = 0, tokenizer: TokenizerOption = "",
              **reader_options: Any) -> DatasetSplits:
        if features and root:
            raise GroupRobustError(f"{name}: give either features=DIR (extracted features) or root=DIR (the files, "
                                   "trained end to end), not both", subject="root")
        if root:
            table = read_benchmark(name, root, **reader_options)
            return input_splits(table, image_size=image_size, tokenizer=tokenizer, max_length=max_length,
                                source=root)
        if not features:
            raise GroupRobustError(f"{name} is read from your own copy: give its folder with --root PATH and a "
                                   "--backbone to fine-tune end to end, or extract features first with `grouprobust "
                                   "features` and set --data features=DIR", subject="root")
        splits = load_feature_splits(Path(features))
        if splits.name != name:
            raise GroupRobustError(f"{features} holds features of {splits.name!r}, not {name!r}; set features to "
                                   f"a directory of features extracted from {name}", subject="data:features")
        return splits

    # The builder's options, for the registry: the source options above and the reader's own.
    own = [p for p in inspect.signature(build).parameters.values() if p.kind != p.VAR_KEYWORD]
    reader = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=p.default,
                                annotation=_annotated(p)) for k, p in reader_params.items()]
    build.__signature__ = inspect.Signature(own + reader)  # type: ignore[attr-defined]
    build.__annotations__ = {**{p.name: p.annotation for p in own}, **{p.name: p.annotation for p in reader}}
    build.__doc__ = f"{name} from a feature directory (``features``) or its own files (``root``, end to end)."
    return build


def _annotated(param: Any) -> Any:
    """``param``'s type with its constraint and help as ``typing.Annotated`` metadata (what the registry reads)."""
    meta = [m for m in (param.constraint, param.help) if m]
    return Annotated[((param.kind or str), *meta)] if meta else (param.kind or str)


#: Whether training images are augmented (random resized crop + flip) by default end to end, as the reference
#: code of each benchmark does: off for Waterbirds and CelebA (group DRO's and SubpopBench's default) and for
#: MetaShift (SubpopBench), on for corrupted CIFAR-10 and bFFHQ (DFA's code, GERNE's protocol), off for colored
#: MNIST (DFA). Texts are never augmented.
TEXT_BENCHMARKS = ("multinli", "civilcomments")
AUGMENTED = {"colored-cifar10": True, "bffhq": True}

for _name, (_fn, _description) in READERS.items():
    register_dataset(_name, _description + " (end to end: --root DIR --backbone SPEC; on extracted features: "
                     "--data features=DIR)",
                     train_defaults={"model": "linear", "epochs": 30, "lr": 1e-2, "optimizer": "adam",
                                     "batch_size": 256},
                     embedded=False, file_options=("features", "root"),
                     later_options=tuple(builder_options(_benchmark_builder(_name))),
                     finetune_defaults={"augment": AUGMENTED.get(_name, False)},
                     inputs_of=lambda options, kind=("text" if _name in TEXT_BENCHMARKS else "image"):
                     "features" if options.get("features") else kind)(_benchmark_builder(_name))

__all__ = ["READERS", "BenchmarkCheck", "BenchmarkTable", "check_benchmark", "get_reader", "load_cached_bert_inputs", "read_benchmark", "reader_options"]
