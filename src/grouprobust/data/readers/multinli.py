"""MultiNLI in group DRO's layout: labels x negation words in the hypothesis.

``root`` is group DRO's ``multinli`` folder:

- ``data/metadata_random.csv`` (or ``metadata_preset.csv`` with ``split_type="preset"``): an unnamed
  index column, ``gold_label`` (0 contradiction, 1 entailment, 2 neutral), ``sentence2_has_negation``
  (0/1: the hypothesis contains nobody / no / never / nothing) and ``split`` (0 train, 1 val, 2 test).
  The index is the row's position in the concatenation train + dev_matched + dev_mismatched of the
  MultiNLI 1.0 jsonl files, before unlabeled rows were dropped.
- text, either ``data/multinli_1.0_{train,dev_matched,dev_mismatched}.jsonl`` (the raw corpus group
  DRO's ``generate_multinli.py`` reads; the table gets ``text = sentence1 + " [SEP] " + sentence2``), or
- group DRO's cached BERT inputs ``glue_data/MNLI/cached_{train,dev}_bert-base-uncased_128_mnli`` and
  ``cached_dev_bert-base-uncased_128_mnli-mm`` (pickled lists of ``InputFeatures`` with ``input_ids``,
  ``input_mask``, ``segment_ids``, ``label_id``; concatenated in that order they align row by row with
  the metadata). Then the table has no ``text`` but a ``row`` column and
  `load_cached_bert_inputs` returns the token arrays for a transformers backbone.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pandas as pd

from grouprobust.data.readers.table import BenchmarkTable
from grouprobust.data.readers.validate import check_nonempty_groups, find_file, map_values, read_csv, split_names
from grouprobust.errors import GroupRobustError

JSONL = ("multinli_1.0_train.jsonl", "multinli_1.0_dev_matched.jsonl", "multinli_1.0_dev_mismatched.jsonl")
CACHED = ("cached_train_bert-base-uncased_128_mnli", "cached_dev_bert-base-uncased_128_mnli",
          "cached_dev_bert-base-uncased_128_mnli-mm")
LABELS = ["contradiction", "entailment", "neutral"]


def _texts(data_dir: Path, index: np.ndarray) -> list[str] | None:
    files = [data_dir / f for f in JSONL]
    if not all(f.is_file() for f in files):
        return None
    corpus = pd.concat([pd.read_json(f, lines=True) for f in files], ignore_index=True)
    if index.max() >= len(corpus):
        raise GroupRobustError(f"{data_dir / 'metadata_random.csv'}: index {index.max()} beyond the {len(corpus)} "
                               f"rows of the jsonl files; expected the metadata built from these files")
    rows = corpus.iloc[index]
    return (rows["sentence1"].astype(str) + " [SEP] " + rows["sentence2"].astype(str)).tolist()


def read_multinli(root: Path, *, split_type: str = "random", allow_empty_groups: bool = False) -> BenchmarkTable:
    """The MultiNLI table (``text`` or ``row``, ``y``, ``a``, ``split``)."""
    if split_type not in ("random", "preset"):
        raise GroupRobustError(f"multinli: unknown split_type {split_type!r}; use random or preset")
    root = Path(root)
    name = f"metadata_{split_type}.csv"
    path = find_file(root, [f"data/{name}", name], "group DRO's MultiNLI metadata")
    df = read_csv(path, ["gold_label", "sentence2_has_negation", "split"], index_col=0)
    table = pd.DataFrame({
        "row": np.arange(len(df)),
        "y": map_values(df["gold_label"], {0: 0, 1: 1, 2: 2}, path, "gold_label"),
        "a": map_values(df["sentence2_has_negation"], {0: 0, 1: 1}, path, "sentence2_has_negation"),
        "split": split_names(df["split"], path),
    })
    texts = _texts(path.parent, df.index.to_numpy())
    if texts is not None:
        table.insert(0, "text", texts)
    else:
        find_file(root, [f"glue_data/MNLI/{CACHED[0]}"], "MultiNLI text: the multinli_1.0_*.jsonl files next to the "
                  "metadata, or group DRO's cached BERT inputs")
    out = BenchmarkTable("multinli", table, 3, 2, LABELS, ["no negation", "negation"], path, input_kind="text",
                         meta={"has_text": texts is not None, "root": str(root)})
    check_nonempty_groups(out, path, allow_empty_groups)
    return out


class _Record:
    """Stand-in for group DRO's ``InputFeatures`` when unpickling its cached inputs."""

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: D401
        if name == "InputFeatures":
            return _Record
        return super().find_class(module, name)


class _PickleModule:
    Unpickler = _Unpickler

    @staticmethod
    def load(fh: io.BufferedReader, **kwargs):
        return _Unpickler(fh, **kwargs).load()


def load_cached_bert_inputs(root: Path) -> dict[str, np.ndarray]:
    """Group DRO's cached BERT inputs: ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64, n x 128)
    and ``labels``, concatenated train + dev matched + dev mismatched (aligned with the metadata rows)."""
    import torch

    records = []
    for name in CACHED:
        path = find_file(Path(root), [f"glue_data/MNLI/{name}"], "group DRO's cached BERT inputs")
        try:
            records += torch.load(path, pickle_module=_PickleModule, weights_only=False)
        except Exception as err:  # the file is a user's pickle: any failure means it is not the expected one
            raise GroupRobustError(f"{path}: cannot be read as group DRO's cached InputFeatures ({err})") from None
    return {
        "input_ids": np.array([r.input_ids for r in records], dtype=np.int64),
        "attention_mask": np.array([r.input_mask for r in records], dtype=np.int64),
        "token_type_ids": np.array([r.segment_ids for r in records], dtype=np.int64),
        "labels": np.array([r.label_id for r in records], dtype=np.int64),
    }
