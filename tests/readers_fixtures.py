"""Tiny copies of the public benchmarks in their own layouts, written by the reader tests."""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def write_image(path: Path, value: int = 0, size: int = 8) -> Path:
    """A tiny RGB image whose pixels all equal ``value`` (so features can be told apart)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value % 256, dtype=np.uint8)).save(path)
    return path


def write_waterbirds(root: Path, per_group: int = 2) -> Path:
    rows = []
    for i, (split, y, place, k) in enumerate(product(SPLIT_CODES, (0, 1), (0, 1), range(per_group))):
        name = f"{'001.Albatross' if y else '002.Sparrow'}/img_{i}.jpg"
        write_image(root / name, 40 * y + 20 * place)
        rows.append({"img_id": i, "img_filename": name, "y": y, "split": SPLIT_CODES[split], "place": place,
                     "place_filename": "/x/y.jpg"})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root


ATTRS = ["5_o_Clock_Shadow", "Blond_Hair", "Male", "Smiling"]


def write_celeba(root: Path, fmt: str = "csv", per_group: int = 2) -> Path:
    rows, parts = [], []
    for i, (split, y, a, k) in enumerate(product(SPLIT_CODES, (0, 1), (0, 1), range(per_group))):
        name = f"{i + 1:06d}.jpg"
        write_image(root / "img_align_celeba" / name, i)
        rows.append([name, -1, 2 * y - 1, 2 * a - 1, 1 if k else -1])
        parts.append([name, SPLIT_CODES[split]])
    if fmt == "csv":
        pd.DataFrame(rows, columns=["image_id", *ATTRS]).to_csv(root / "list_attr_celeba.csv", index=False)
        pd.DataFrame(parts, columns=["image_id", "partition"]).to_csv(root / "list_eval_partition.csv", index=False)
    else:
        lines = [str(len(rows)), " ".join(ATTRS)] + [" ".join(map(str, r)) for r in rows]
        (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
        (root / "list_eval_partition.txt").write_text("\n".join(f"{n} {p}" for n, p in parts) + "\n")
    return root


def write_multinli(root: Path, per_group: int = 2, text: bool = True) -> Path:
    data = root / "data"
    data.mkdir(parents=True)
    corpus, meta = [], []
    labels = ["contradiction", "entailment", "neutral"]
    for i, (split, y, a, k) in enumerate(product(SPLIT_CODES, (0, 1, 2), (0, 1), range(per_group))):
        corpus.append({"sentence1": f"premise {i}", "sentence2": ("nobody " if a else "") + f"hyp {i}",
                       "gold_label": labels[y]})
        meta.append((2 * i, y, a, SPLIT_CODES[split]))
        corpus.append({"sentence1": "unlabeled", "sentence2": "dropped", "gold_label": "-"})
    thirds = np.array_split(np.arange(len(corpus)), 3)
    if text:
        from grouprobust.data.readers.multinli import JSONL
        for name, idx in zip(JSONL, thirds):
            (data / name).write_text("\n".join(json.dumps(corpus[j]) for j in idx) + "\n")
    df = pd.DataFrame([m[1:] for m in meta], index=[m[0] for m in meta],
                      columns=["gold_label", "sentence2_has_negation", "split"])
    df.to_csv(data / "metadata_random.csv")
    return root


def write_civilcomments(root: Path, per_group: int = 3) -> Path:
    from grouprobust.data.readers.civilcomments import IDENTITIES

    rows = []
    for i, (split, y, a, k) in enumerate(product(("train", "val", "test"), (0, 1), (0, 1), range(per_group))):
        row = {"id": i, "comment_text": f"comment {i}", "split": split, "toxicity": 0.8 if y else 0.1}
        for j, ident in enumerate(IDENTITIES):
            row[ident] = 0.0
        if a:  # mention one identity, and a second one every other comment (overlap)
            row[IDENTITIES[i % len(IDENTITIES)]] = 1.0
            if k % 2 == 0:
                row[IDENTITIES[(i + 1) % len(IDENTITIES)]] = 0.6
        rows.append(row)
    df = pd.DataFrame(rows)
    df.loc[0, "black"] = np.nan  # unannotated cells read as "not mentioned"
    (root / "civilcomments_v1.0").mkdir(parents=True)
    df.to_csv(root / "civilcomments_v1.0" / "all_data_with_identities.csv", index=False)
    return root


def write_metashift(root: Path, per_folder: int = 12, csv: bool = False) -> Path:
    from grouprobust.data.readers.metashift import FOLDERS, IMAGES

    rows = []
    for folder, (y, a) in FOLDERS.items():
        for k in range(per_folder):
            p = write_image(root / IMAGES / folder / f"{k:03d}.jpg", 10 * y + a)
            rows.append({"filename": "/home/someone/Datasets/metashift/" + str(p.relative_to(root)), "y": y, "a": a,
                         "split": k % 3})
    if csv:
        pd.DataFrame(rows).to_csv(root / "metadata_metashift.csv", index=False)
    return root


def write_dfa(root: Path, kind: str = "cmnist", pct: str = "1pct") -> Path:
    """DFA's layout: train has 3 aligned (a = y) and 1 conflicting image per class, val/test every group."""
    n_classes = 2 if kind == "bffhq" else 10
    def put(folder: Path, y: int, a: int, i: int, nested: bool) -> None:
        write_image((folder / str(y) if nested else folder) / f"{i}_{y}_{a}.png", 25 * a)

    i = 0
    for y in range(n_classes):
        for k in range(3):
            put(root / pct / "align", y, y, i := i + 1, True)
        put(root / pct / "conflict", y, (y + 1) % n_classes, i := i + 1, True)
    val = root / "valid" if kind == "bffhq" else root / pct / "valid"
    for y, a in product(range(n_classes), range(n_classes)):
        put(val, y, a, i := i + 1, kind == "cifar10c")
        put(root / "test", y, a, i := i + 1, kind != "bffhq")
    return root


def write_cached_bert_inputs(root: Path, ids: list[int], labels: list[int]) -> Path:
    """Group DRO's cached MultiNLI inputs: pickled ``utils_glue.InputFeatures``, split over its three files.

    Row ``i`` has ``input_ids == [101, ids[i], 102]`` and ``label_id == labels[i]``.
    """
    import sys
    import types

    import torch

    from grouprobust.data.readers.multinli import CACHED

    class InputFeatures:  # what pytorch-transformers' utils_glue pickled
        def __init__(self, token: int, label: int):
            self.input_ids, self.input_mask, self.segment_ids, self.label_id = [101, token, 102], [1, 1, 1], [0, 0, 0], label

    InputFeatures.__module__, InputFeatures.__qualname__ = "utils_glue", "InputFeatures"
    glue = root / "glue_data" / "MNLI"
    glue.mkdir(parents=True, exist_ok=True)
    sys.modules["utils_glue"] = types.SimpleNamespace(InputFeatures=InputFeatures)
    try:
        for part, name in zip(np.array_split(np.arange(len(ids)), 3), CACHED):
            torch.save([InputFeatures(int(ids[r]), int(labels[r])) for r in part], glue / name)
    finally:
        del sys.modules["utils_glue"]
    return glue
