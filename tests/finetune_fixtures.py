"""What the end-to-end tests fine-tune: tiny transformers models saved in folders (a ResNet for images, a BERT
with its tokenizer for texts), a Waterbirds-format folder of JPEG files and a table of texts."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
if str(EXAMPLES) not in sys.path:  # the example's small CNN factory is named as synthetic_waterbirds:small_cnn
    sys.path.insert(0, str(EXAMPLES))

from synthetic_waterbirds import write_synthetic_waterbirds  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "the", "is", "was", "bird", "water", "land", "good",
         "bad", "awful", "great", "person", "people", "they", "we", "it", "comment", "nice", "terrible"]


def tiny_resnet_folder(folder: Path) -> str:
    """A tiny transformers ResNet (random weights, 16 features) saved in ``folder``; returns its spec."""
    import transformers

    torch.manual_seed(0)
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], image_size=16)
    transformers.ResNetModel(config).save_pretrained(str(folder))
    return f"hf:{folder}"


def tiny_bert_folder(folder: Path, vocab: list[str] = VOCAB, hidden: int = 32, layers: int = 1) -> str:
    """A tiny transformers BERT (random weights, ``hidden`` features, ``layers`` layers, sequences up to 64
    tokens) and its WordPiece tokenizer over ``vocab`` (the special tokens first) saved in ``folder``."""
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                                     intermediate_size=2 * hidden, vocab_size=len(vocab), max_position_embeddings=64)
    transformers.BertModel(config).save_pretrained(str(folder))
    transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(str(folder))
    return f"hf:{folder}"


def small_waterbirds(folder: Path, n_train: int = 64, per_group: int = 8, size: int = 24) -> Path:
    """A small Waterbirds-format folder (95% of training images with the spurious background)."""
    return write_synthetic_waterbirds(folder, n_train=n_train, n_eval_per_group=per_group, size=size)


def text_table(path: Path, n: int = 96, seed: int = 0) -> Path:
    """A CSV of short comments: ``toxic`` (the class) follows the words ``awful``/``terrible``; ``group``
    (people or person) agrees with it in 90% of the rows; a ``split`` column of train/val/test."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        toxic = int(rng.integers(2))
        group = toxic if rng.random() < 0.9 else 1 - toxic
        word = ["good", "nice", "great"][i % 3] if not toxic else ["awful", "terrible", "bad"][i % 3]
        who = ["person", "people"][group]
        split = ["train", "train", "val", "test"][i % 4]
        rows.append({"comment": f"the {who} is {word} a comment", "toxic": toxic, "group": who, "split": split})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path
