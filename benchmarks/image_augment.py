"""Training-time augmentation of stored uint8 squares: `ImageInput` against kornia, in the same run.

Both do a random resized crop (area 0.7-1.0, ratio 3/4-4/3) to the output side and a horizontal
flip with p = 0.5, from uint8 to float, on the CPU: `ImageInput` in one ``affine_grid``/``grid_sample``
over the batch, kornia with ``RandomResizedCrop`` + ``RandomHorizontalFlip`` in an
``AugmentationSequential`` (when kornia imports; ``--kornia-path`` adds a folder it was installed to).
Prints milliseconds per batch (median of ``--repeats``) and kornia / ImageInput for each shape.

Run: PYTHONPATH=src python benchmarks/image_augment.py [--repeats 20] [--kornia-path DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from grouprobust.backbones.image_input import ImageInput

SHAPES = ((64, 3, 37, 37, 32), (32, 3, 256, 256, 224))  # batch, channels, stored side, stored side, output side


def median_ms(step, repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def kornia_step(out_side: int):
    import kornia.augmentation as K

    aug = K.AugmentationSequential(K.RandomResizedCrop((out_side, out_side), scale=(0.7, 1.0), ratio=(3 / 4, 4 / 3)),
                                   K.RandomHorizontalFlip(p=0.5))
    return lambda x: aug(x.float() / 255)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--kornia-path", default=None)
    args = parser.parse_args()
    if args.kornia_path:
        sys.path.insert(0, args.kornia_path)
    try:
        import kornia  # noqa: F401
        have_kornia = True
    except ImportError:
        have_kornia = False
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for batch, channels, height, width, side in SHAPES:
        x = torch.randint(0, 256, (batch, channels, height, width), dtype=torch.uint8)
        ours = ImageInput(side, (0.5,) * channels, (0.25,) * channels, augment=True).train()
        with torch.no_grad():
            ours_ms = median_ms(lambda: ours(x), args.repeats)
            line = f"{tuple(x.shape)} -> {side}: ImageInput {ours_ms:.2f} ms"
            if have_kornia:
                step = kornia_step(side)
                kornia_ms = median_ms(lambda: step(x), args.repeats)
                line += f", kornia {kornia_ms:.2f} ms, kornia / ImageInput {kornia_ms / ours_ms:.2f}"
        print(line)


if __name__ == "__main__":
    main()
