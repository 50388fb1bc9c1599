"""A benchmark's own files as model inputs for end-to-end fine-tuning: images or token ids, per split.

`input_splits(table, ...)` turns a `BenchmarkTable` (paths or texts per row) into `DatasetSplits`
whose ``x`` the training loop feeds to a backbone: each split's images decoded and resized once into
the shared on-disk cache (`grouprobust.data.image_cache`: uint8, memory-mapped), or every text
tokenized once with the backbone's tokenizer (`grouprobust.data.token_cache`). Both caches are
keyed by the content fingerprint of the benchmark's folder, so every run, method and seed on the
same files and resolution (or tokenizer and length) shares one entry. The first pass over new files
reports its progress through `grouprobust.data.progress`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Sequence

import numpy as np

from grouprobust import backbones
from grouprobust.data.dataset import DatasetSplits
from grouprobust.data.fingerprint import fingerprint_path
from grouprobust.data.progress import task_progress
from grouprobust.data.rows import IndexedRows
from grouprobust.data.token_cache import cached_tokens
from grouprobust.errors import GroupRobustError
from grouprobust.params import Interval

if TYPE_CHECKING:  # the readers package imports this module
    from grouprobust.data.readers.table import BenchmarkTable

#: Most tokens per text when neither the option nor the backbone sets a limit.
DEFAULT_MAX_LENGTH = 512

#: The dataset options of every dataset that reads raw inputs end to end (declared once, used in builders'
#: signatures): the resolution, the most tokens per text, where the tokenizer is read from.
ImageSizeOption = Annotated[int, Interval(0, 4096), "input resolution in px end to end (0: the backbone's own)"]
MaxLengthOption = Annotated[int, Interval(0, 65536), "most tokens per text end to end (0: the backbone's own limit)"]
TokenizerOption = Annotated[str, "where the texts' tokenizer is read from (empty: the backbone's own)"]


def input_splits(table: "BenchmarkTable", *, image_size: int, tokenizer: str, max_length: int,
                 source: Path | str) -> DatasetSplits:
    """The splits of ``table`` with images at ``image_size`` px or texts tokenized by ``tokenizer`` (a model
    folder or name the backbone's tokenizer loads from) to at most ``max_length`` tokens; ``source`` is the
    folder whose contents key the caches."""
    key = fingerprint_path(source) or f"path:{Path(source).resolve()}"
    if table.input_kind == "image":
        return _image_splits(table, image_size, key)
    return _token_splits(table, tokenizer, max_length, key)


def _image_splits(table: "BenchmarkTable", image_size: int, key: str) -> DatasetSplits:
    # Imported here: the image cache imports torch and Pillow, which listing or loading a dataset of features
    # (every reader imports this module) must not load.
    from grouprobust.data.image_cache import cached_images

    if image_size < 1:
        raise GroupRobustError(f"{table.name}: the image size is unknown; set it with --data image_size=N (the "
                               "backbone's own resolution is used when the backbone declares one)",
                               subject="data:image_size")
    arrays: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        paths = table.table.loc[table.table["split"] == split, "path"].astype(str).tolist()
        with task_progress(f"decoding {table.name} {split} images at {image_size} px (once; cached)") as progress:
            arrays[split] = cached_images(paths, image_size, key=key, progress=progress)
    return table.splits_of(lambda split, mask: arrays[split], kind="image")


def _token_splits(table: "BenchmarkTable", tokenizer: str, max_length: int, key: str) -> DatasetSplits:
    if "text" not in table.table.columns:
        raise GroupRobustError(f"{table.name}: this copy has no texts to tokenize (only cached model inputs); put the "
                               "original text files next to the metadata (see docs/datasets.md)", subject="root")
    if not tokenizer:
        raise GroupRobustError(f"{table.name} holds texts: give a text backbone (--backbone), whose tokenizer reads "
                               "them", subject="hparam:backbone")
    texts: Sequence[str] = table.table["text"].astype(str).tolist()
    rows = IndexedRows(tokenized(texts, tokenizer, max_length, key, table.name))
    return table.splits_of(lambda split, mask: rows.take(np.flatnonzero(mask)), kind="tokens")


def tokenized(texts: Sequence[str], tokenizer: str, max_length: int, key: str, name: str) -> np.ndarray:
    """``texts`` as int32 ``(n, 2, L)`` token ids and attention masks (`grouprobust.data.token_cache`), read by the
    tokenizer in ``tokenizer`` (a model folder or name), at most ``max_length`` tokens (0: `DEFAULT_MAX_LENGTH`);
    ``key`` fingerprints the texts' source for the cache, ``name`` names the dataset in the progress bar."""
    max_length = max_length or DEFAULT_MAX_LENGTH

    with task_progress(f"tokenizing {len(texts)} {name} texts (once; cached)") as progress:
        spec = f"hf:{tokenizer}" if Path(tokenizer).expanduser().is_dir() else tokenizer
        return cached_tokens(texts, backbones.load_tokenizer(spec), max_length, key=key, progress=progress)
