"""ResNet-18 feature pass: the model alone on random tensors, and grouprobust's image-file path.

Mode ``forward``: N random 224x224 images through a randomly initialised ResNet-18 (torchvision's when
it imports, else the one below; no weights are downloaded) on the device `grouprobust.models.pick_device`
picks, read at its penultimate layer, in float32 and, on CUDA, under ``torch.autocast`` as
``--set amp=true`` runs it; prints images/s and seconds. Mode ``files``: writes N random JPEG (or PNG)
files to a temporary folder and encodes them through the library's own path (`load_encoder` with this
file's ``resnet18`` factory, `encode_inputs`), loading in this process (``workers=0``) and with the
workers the library chooses (or ``--workers``), in the same run, with the model and without it (the
loader alone); prints both times and their ratio.

Run: PYTHONPATH=src python benchmarks/feature_pass.py [--mode forward|files|both] [--n N] [--batch-size B]
Defaults: N = 10,000 with CUDA, else 256 (``--files-n``: N with CUDA, else 128).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection (1x1 projection when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016): 7x7 stem, four stages of two basic blocks (64-512 channels), pool, fc."""

    def __init__(self, n_classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        widths, blocks, cin = (64, 128, 256, 512), [], 64
        for i, cout in enumerate(widths):
            blocks += [BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)]
            cin = cout
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


def resnet18() -> nn.Module:
    """torchvision's ResNet-18 without weights when torchvision imports, else `ResNet18`; seed 0."""
    torch.manual_seed(0)
    try:
        from torchvision.models import resnet18 as tv_resnet18
    except Exception:  # not installed, or built for another torch
        return ResNet18()
    return tv_resnet18(weights=None)


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """``torch.autocast`` in the library's reduced precision for ``device`` when ``amp``, else a null context."""
    from grouprobust.models import autocast_dtype

    return torch.autocast(device.type, dtype=autocast_dtype(device)) if amp else contextlib.nullcontext()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def forward_pass(n: int, batch_size: int, device: torch.device, amp: bool) -> float:
    """Seconds for ``n`` random images through the penultimate layer of ResNet-18 (after one warm-up batch).

    One random host batch (pinned on CUDA) is copied to the device for every batch, as a loader would.
    """
    from grouprobust.data.backbone_modules import LayerReader

    reader = LayerReader(resnet18().to(device).eval(), None, False)
    host = torch.randn(batch_size, 3, 224, 224)
    host = host.pin_memory() if device.type == "cuda" else host
    with autocast(device, amp):
        reader(host.to(device))
        sync(device)
        start = time.perf_counter()
        for done in range(0, n, batch_size):
            reader(host[:min(batch_size, n - done)].to(device, non_blocking=True))
        sync(device)
    return time.perf_counter() - start


def write_files(folder: Path, n: int, fmt: str, width: int, height: int) -> list[str]:
    """``n`` files of random pixels (``width`` x ``height``) in ``folder``; returns their paths."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"img_{i:06d}.{'jpg' if fmt == 'jpeg' else 'png'}"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def files_pass(paths: list[str], batch_size: int, device: torch.device, workers: int) -> float:
    """Seconds for `encode_inputs` over ``paths`` with this file's ResNet-18 factory and ``workers``."""
    from grouprobust.data.encoders import load_encoder
    from grouprobust.data.extract import encode_inputs

    encoder = load_encoder("feature_pass:resnet18", "image", device=device)
    encoder.encode(paths[:2])  # warm-up, outside the timing
    sync(device)
    start = time.perf_counter()
    features = encode_inputs(paths, encoder, batch_size, workers=workers)
    sync(device)
    assert features.shape == (len(paths), 512)
    return time.perf_counter() - start


def loading_pass(paths: list[str], batch_size: int, device: torch.device, workers: int) -> float:
    """Seconds to load, transform and copy ``paths`` to ``device`` through the library's loader, no model."""
    from grouprobust.data.backbone_modules import image_transform
    from grouprobust.data.image_loader import image_batches

    start = time.perf_counter()
    for _ in image_batches(paths, image_transform(), batch_size, device, workers):
        pass
    sync(device)
    return time.perf_counter() - start


def ratio_line(label: str, n: int, serial: float, loaded: float, workers: int) -> str:
    """One line: both times, images/s, and the time ratio of ``workers`` to ``workers=0``."""
    return (f"{label}: workers=0 {serial:.2f} s ({n / serial:.1f} images/s); workers={workers} {loaded:.2f} s "
            f"({n / loaded:.1f} images/s); time ratio workers={workers} / workers=0: {loaded / serial:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("forward", "files", "both"), default="both")
    parser.add_argument("--n", type=int, default=None, help="images of the forward pass (default: 10000 on CUDA, else 256)")
    parser.add_argument("--files-n", type=int, default=None, help="files of the files mode (default: N on CUDA, else 128)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when present)")
    parser.add_argument("--workers", type=int, default=None, help="files mode: loader workers (default: the library's choice)")
    parser.add_argument("--format", choices=("jpeg", "png"), default="jpeg")
    parser.add_argument("--size", default="320x240", help="files mode: WIDTHxHEIGHT of each file")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the library's policy)")
    args = parser.parse_args()

    from grouprobust.data.image_loader import choose_workers
    from grouprobust.models import autocast_dtype, pick_device
    from grouprobust.threads import apply_thread_policy

    choice = apply_thread_policy(args.threads)
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    n = args.n or (10_000 if cuda else 256)
    model = "torchvision" if type(resnet18()).__module__.startswith("torchvision") else "own"
    print(f"device {device}, torch {torch.__version__}, threads {choice.threads} ({choice.source}), "
          f"ResNet-18 ({model}, random init), batch {args.batch_size}")
    if args.mode in ("forward", "both"):
        for amp in ((False, True) if cuda else (False,)):
            seconds = forward_pass(n, args.batch_size, device, amp)
            label = f"amp {str(autocast_dtype(device)).removeprefix('torch.')}" if amp else "float32"
            print(f"forward {label:<14} {n:>6} images  {seconds:8.2f} s  {n / seconds:9.1f} images/s")
        if not cuda:
            print("forward amp: not run (autocast is for GPUs; on a CPU it is bfloat16 and rarely faster)")
    if args.mode in ("files", "both"):
        files_n = args.files_n or (n if cuda else 128)
        width, height = (int(v) for v in args.size.lower().split("x"))
        workers = choose_workers(args.workers)
        with tempfile.TemporaryDirectory() as folder:
            paths = write_files(Path(folder), files_n, args.format, width, height)
            loading = [loading_pass(paths, args.batch_size, device, w) for w in (0, workers)]
            serial = files_pass(paths, args.batch_size, device, 0)
            loaded = files_pass(paths, args.batch_size, device, workers)
        what = f"{files_n} {args.format} {width}x{height}"
        print(ratio_line(f"files {what}, loading only (no model)", files_n, *loading, workers))
        print(ratio_line(f"files {what}, through encode_inputs", files_n, serial, loaded, workers))

if __name__ == "__main__":
    main()
