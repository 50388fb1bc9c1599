"""The published protocol files (examples/protocols) made runnable on fixtures: the benchmark folder
replaced by a tiny copy, the backbone by a tiny one, the budget by two steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from readers_fixtures import write_celeba, write_civilcomments, write_multinli, write_waterbirds

PROTOCOLS = Path(__file__).resolve().parents[1] / "examples" / "protocols"
IMAGE_BACKBONE = "backbone_fixtures:tiny_cnn"
WRITERS = {"waterbirds": write_waterbirds, "celeba": write_celeba, "multinli": write_multinli,
           "civilcomments": write_civilcomments}
TEXT_DATASETS = ("multinli", "civilcomments")
#: What the tests change in every protocol: a budget of two optimizer steps, evaluated after each.
TINY_BUDGET = {"max_steps": 2, "eval_every_steps": 1, "batch_size": 4}
WORDS = ["premise", "hyp", "nobody", "comment", "unlabeled", "dropped", *map(str, range(100))]


def protocol(name: str) -> dict[str, Any]:
    """The protocol file ``examples/protocols/<name>.yaml`` as a mapping."""
    return yaml.safe_load((PROTOCOLS / f"{name}.yaml").read_text())


def write_tiny_bert(folder: Path) -> Path:
    """A one-layer BERT (width 16) with a WordPiece vocabulary of the fixture texts' words, saved with its
    fast tokenizer into ``folder`` (the backbone ``hf:<folder>``)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    config = BertConfig(vocab_size=5 + len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder


def fixture_protocol(name: str, tmp_path: Path, text_backbone: Path | None = None,
                     methods: list[str] | None = None) -> Path:
    """``examples/protocols/<name>.yaml`` rewritten into ``tmp_path``: its dataset read from a fixture copy
    written there, the tiny image network or ``hf:<text_backbone>`` as backbone, `TINY_BUDGET`, seed 0,
    JTT's stage 1 one epoch, and only ``methods`` (default: all) with their ``expected`` kept as published.
    Returns the path of the rewritten sweep file."""
    spec = protocol(name)
    (dataset, options), = spec["datasets"].items()
    root = WRITERS[dataset](tmp_path / f"{dataset}-fixture")
    if dataset in TEXT_DATASETS:
        assert text_backbone is not None, f"{name} needs a text backbone"
        backbone, sizes = f"hf:{text_backbone}", {"max_length": 16}
    else:
        backbone, sizes = IMAGE_BACKBONE, {"image_size": 16}
    spec["datasets"] = {dataset: {**options, "root": str(root), **sizes}}
    spec["set"] = {**spec["set"], "backbone": backbone, **TINY_BUDGET}
    spec["seeds"] = [0]
    if methods is not None:
        spec["methods"] = {m: spec["methods"][m] for m in methods}
    jtt = spec["methods"].get("jtt")
    if jtt is not None:
        jtt["set"] = {**jtt.get("set", {}), "stage1_epochs": 1}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
