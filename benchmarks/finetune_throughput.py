"""End-to-end fine-tuning: one ERM epoch through grouprobust's loop from the files vs a bare PyTorch loop on the
same batches already in memory.

Images: writes a Waterbirds-format folder of generated JPEG files (``examples/synthetic_waterbirds.py``,
``--n-images`` training images of ``--source-size`` px), reads it with the library's ``waterbirds`` reader
(decoded once into the uint8 cache) and fine-tunes ``--model`` at ``--image-size`` px: ``small_cnn`` (the
example's factory) or ``resnet50`` (a transformers ResNet-50 saved with random weights, read as ``hf:DIR``;
nothing is downloaded). Texts: a table of generated comments through a tiny BERT (random weights, its own
WordPiece tokenizer), tokenized once into the token cache.

For each, in the same run:

- ``cold``: reading the dataset with an empty cache (decoding or tokenizing every split) and the first epoch;
- ``pairs``: ``--pairs`` interleaved pairs (the order alternates) of one epoch of `Trainer.run_epochs` with
  ERM (the product: the host gather from the cache, the copy to the device, the loop) and one epoch of a
  bare loop (forward, ``cross_entropy``, backward, step) over the same batches, already on the device as
  the float tensors the product's gather produces, with the same freshly seeded model, batch size and
  recipe (`make_optimizer`, `make_scheduler`, gradient clipping); prints the median of each, images
  (texts) per second and the median of the pairs' time ratios (target: <= 1.15 on 2 CPU cores), and of
  their ratios of this process's CPU time (less sensitive to other processes on a shared machine);
- ``eval``: the evaluation of validation and test after an epoch, reported apart (not in either epoch).

``--amp`` both (the default on CUDA) runs the pairs in float32 and under ``torch.autocast`` (bfloat16 where
the device has it), as ``--set amp=true`` runs them.

Run:  PYTHONPATH=src python benchmarks/finetune_throughput.py                      # small CNN + tiny BERT, CPU
      PYTHONPATH=src python benchmarks/finetune_throughput.py --device cuda --model resnet50 --image-size 224 \\
          --texts off --n-images 4096
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

# the tiny BERT is the tests' (which also put examples/ on the path: the small CNN is synthetic_waterbirds:small_cnn)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from finetune_fixtures import tiny_bert_folder, write_synthetic_waterbirds  # noqa: E402
from grouprobust.config import RunConfig, resolve_config  # noqa: E402
from grouprobust.data import load_dataset  # noqa: E402
from grouprobust.methods.base import TrainData  # noqa: E402
from grouprobust.methods.erm import ERM  # noqa: E402
from grouprobust.models import autocast_dtype  # noqa: E402
from grouprobust.training import Trainer, evaluate, make_optimizer, make_scheduler, seed_everything  # noqa: E402

WORDS = {0: ["good", "nice", "great", "fine", "kind"], 1: ["awful", "terrible", "bad", "rude", "nasty"]}
FILLER = ["the", "a", "is", "was", "it", "they", "we", "comment", "about", "this", "very", "really", "so"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- the inputs ----------------------------------------------------------------------------------------------

def resnet50_folder(folder: Path) -> str:
    """A transformers ResNet-50 (its default config: bottleneck stages 3-4-6-3, 2048 features) with random
    weights saved in ``folder``; returns its backbone spec."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    transformers.ResNetModel(transformers.ResNetConfig()).save_pretrained(str(folder))
    return f"hf:{folder}"


def bert_folder(folder: Path) -> str:
    """A tiny BERT (2 layers of width 64, random weights) and a WordPiece tokenizer over the generated words."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    return tiny_bert_folder(folder, SPECIALS + FILLER + WORDS[0] + WORDS[1] + ["person", "people"], hidden=64, layers=2)


def comments_table(path: Path, n: int, seed: int = 0) -> Path:
    """A CSV of ``n`` comments of 6-40 words: ``toxic`` follows the words, ``group`` agrees with it in 90%."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        toxic = int(rng.integers(2))
        group = toxic if rng.random() < 0.9 else 1 - toxic
        words = list(rng.choice(FILLER, size=int(rng.integers(4, 38))))
        words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(WORDS[toxic])))
        words.insert(int(rng.integers(len(words) + 1)), ["person", "people"][group])
        split = "train" if i % 10 < 8 else ("val" if i % 10 == 8 else "test")
        rows.append({"comment": " ".join(words), "toxic": toxic, "group": ["person", "people"][group], "split": split})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# -- one workload ----------------------------------------------------------------------------------------------

@dataclass
class Workload:
    """What one measurement trains: a resolved config (ERM, one epoch) and what its inputs are called."""

    label: str
    config: RunConfig
    unit: str


def bare_epoch(model: torch.nn.Module, hparams: dict[str, Any], batches: list[tuple[torch.Tensor, torch.Tensor]],
               precision: Callable[[], Any]) -> None:
    """Forward, cross-entropy, backward and step over ``batches`` (already on the device), with the recipe's
    optimizer (`make_optimizer`), learning-rate schedule (`make_scheduler`) and gradient clipping."""
    optimizer = make_optimizer(model, hparams)
    scheduler = make_scheduler(optimizer, hparams, len(batches))
    clip = hparams.get("grad_clip", 0.0)
    model.train()
    for x, y in batches:
        with precision():
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)


def in_memory_batches(data: TrainData, order: torch.Tensor, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The epoch's batches as the product's gather produces them (float images in [0, 1], int64 token ids),
    already on the device."""
    return [(data.host_rows(idx), data.y[idx.to(data.device)]) for idx in order.split(batch_size)]


def measure(work: Workload, device: torch.device, pairs: int, amp_modes: list[bool]) -> None:
    cfg = work.config
    start = time.perf_counter()
    splits = load_dataset(cfg.dataset, cfg.seed, **cfg.data)
    read = time.perf_counter() - start
    trainer = Trainer(cfg, splits, device)
    data = TrainData(trainer.train_set, device)
    seed_everything(0)
    model = trainer.new_model()
    start = time.perf_counter()
    trainer.run_epochs(trainer.new_method(ERM, data), model, 1)
    sync(device)
    first = time.perf_counter() - start
    start = time.perf_counter()
    evaluate(model, trainer.val_set, device)
    evaluate(model, trainer.test_set, device)
    sync(device)
    evaluation = time.perf_counter() - start
    n, n_eval = data.n, len(trainer.val_set) + len(trainer.test_set)
    print(f"{work.label}: {n} training {work.unit}, batch {cfg.hparams['batch_size']}, device {device}")
    print(f"  cold: reading the dataset (empty cache, every split) {read:.2f} s + first epoch {first:.2f} s "
          f"= {read + first:.2f} s ({n / (read + first):.1f} {work.unit}/s)")
    print(f"  eval: validation + test, {n_eval} {work.unit}, {evaluation:.2f} s ({n_eval / evaluation:.1f} {work.unit}/s)"
          " (apart from the epochs below)")
    batch_size = int(cfg.hparams["batch_size"])
    for amp in amp_modes:
        hparams = {**cfg.hparams, "amp": amp}
        ours, bare, ratios, cpu_ratios = [], [], [], []
        for r in range(pairs):
            times, cpu = {}, {}
            for which in (("ours", "bare") if r % 2 == 0 else ("bare", "ours")):
                seed_everything(r)
                model = trainer.new_model()
                method = trainer.new_method(ERM, data, hparams)
                method.generator.manual_seed(r)
                if which == "ours":
                    sync(device)
                    start, cpu_start = time.perf_counter(), time.process_time()
                    trainer.run_epochs(method, model, 1)
                else:
                    batches = in_memory_batches(data, method.epoch_order(), batch_size)

                    def precision() -> Any:
                        return torch.autocast(device.type, dtype=autocast_dtype(device), enabled=amp)

                    sync(device)
                    start, cpu_start = time.perf_counter(), time.process_time()
                    bare_epoch(model, hparams, batches, precision)
                sync(device)
                times[which] = time.perf_counter() - start
                cpu[which] = time.process_time() - cpu_start
            ours.append(times["ours"])
            bare.append(times["bare"])
            ratios.append(times["ours"] / times["bare"])
            cpu_ratios.append(cpu["ours"] / cpu["bare"])
        mode = "amp" if amp else "float32"
        print(f"  warm {mode:<8} grouprobust {statistics.median(ours):7.3f} s/epoch ({n / statistics.median(ours):8.1f} "
              f"{work.unit}/s)  bare {statistics.median(bare):7.3f} s/epoch ({n / statistics.median(bare):8.1f} "
              f"{work.unit}/s)")
        print(f"    median ratio {statistics.median(ratios):.3f} (pairs: {', '.join(f'{x:.2f}' for x in ratios)}); "
              f"in this process's CPU time {statistics.median(cpu_ratios):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--model", choices=("small_cnn", "resnet50"), default="small_cnn", help="image backbone")
    parser.add_argument("--image-size", type=int, default=32, help="the backbone's input side in px")
    parser.add_argument("--n-images", type=int, default=2048, help="training images (plus 4 x 32 in val and test)")
    parser.add_argument("--source-size", type=int, default=160, help="side of the generated JPEG files in px")
    parser.add_argument("--n-texts", type=int, default=2500, help="comments (80%% train, 10%% val, 10%% test)")
    parser.add_argument("--images", choices=("on", "off"), default="on")
    parser.add_argument("--texts", choices=("on", "off"), default="on")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=5, help="interleaved (grouprobust, bare) epoch pairs")
    parser.add_argument("--amp", choices=("off", "on", "both"), default=None,
                        help="float32, autocast, or both (default: both on CUDA, else off)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the library's policy)")
    args = parser.parse_args()

    from grouprobust.models import pick_device
    from grouprobust.threads import apply_thread_policy

    choice = apply_thread_policy(args.threads)
    device = pick_device(args.device)
    amp = args.amp or ("both" if device.type == "cuda" else "off")
    amp_modes = {"off": [False], "on": [True], "both": [False, True]}[amp]
    print(f"torch {torch.__version__}, threads {choice.threads} ({choice.source}), load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    start = time.perf_counter()  # a process's first optimizer imports torch._dynamo: once, for any PyTorch loop
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    print(f"first optimizer of the process (imports torch._dynamo; not in the figures below): "
          f"{time.perf_counter() - start:.2f} s")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["GROUPROBUST_CACHE"] = str(folder / "cache")  # empty: the first read decodes / tokenizes
        hparams = {"epochs": 1, "batch_size": args.batch_size}
        if args.images == "on":
            start = time.perf_counter()
            root = write_synthetic_waterbirds(folder / "wb", n_train=args.n_images, n_eval_per_group=32,
                                              size=args.source_size)
            print(f"wrote {args.n_images + 256} JPEG files of {args.source_size} px in {time.perf_counter() - start:.1f} s")
            spec = "synthetic_waterbirds:small_cnn" if args.model == "small_cnn" else resnet50_folder(folder / "resnet50")
            cfg = resolve_config("waterbirds", "erm", 0, {"image_size": args.image_size}, {**hparams, "backbone": spec},
                                 root=root)
            measure(Workload(f"images ({args.model}, {args.image_size} px)", cfg, "images"), device, args.pairs,
                    amp_modes)
        if args.texts == "on":
            table = comments_table(folder / "comments.csv", args.n_texts)
            data = {"path": str(table), "label": "toxic", "attribute": "group", "split": "split", "text": "comment"}
            cfg = resolve_config("table", "erm", 0, data, {**hparams, "backbone": bert_folder(folder / "bert")})
            measure(Workload("texts (tiny BERT)", cfg, "texts"), device, args.pairs, amp_modes)
    print("target: median ratio grouprobust / bare <= 1.15 with a warm cache on 2 CPU cores")


if __name__ == "__main__":
    main()
