"""Building the image decode cache: decoding processes (0, 1, 2) and JPEG draft decoding, in one run.

Writes N JPEG files of 500x375 (Waterbirds' typical size; smooth colour fields plus noise, so that
they compress like photographs) to a temporary folder, then builds `cached_images` from them into a
fresh cache root with ``workers`` = 0, 1 and 2 at image_size 224 (stored 256) and 32 (stored 37),
and times the serial decode with and without ``Image.draft``. Prints seconds, images/s and each time
relative to ``workers=0`` in the same run.

Run: PYTHONPATH=src python benchmarks/image_cache_build.py [--n 256] [--workers 0,1,2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from grouprobust.data.image_cache import SquareArray, cached_images, stored_size
from grouprobust.data.image_loader import load_image


def write_jpegs(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:375, 0:500]
    paths = []
    for i in range(n):
        a, b, c = rng.uniform(0, 0.05, 3)
        base = np.stack([128 + 100 * np.sin(a * xx + b * yy + k + c) for k in range(3)], -1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"img_{i:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(str(path))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--workers", default="0,1,2")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_jpegs(Path(tmp) / "files", args.n)
        for image_size in (224, 32):
            side = stored_size(image_size)
            square = SquareArray(side)
            start = time.perf_counter()
            for p in paths:
                square(load_image(p))
            whole = time.perf_counter() - start
            start = time.perf_counter()
            for p in paths:
                square(load_image(p, draft=side))
            drafted = time.perf_counter() - start
            print(f"image_size {image_size} (stored {side}): serial decode {whole:.2f} s whole, {drafted:.2f} s with "
                  f"draft ({whole / drafted:.2f}x)")
            base = None
            for workers in counts:
                root = Path(tmp) / f"cache-{image_size}-{workers}"
                start = time.perf_counter()
                cached_images(paths, image_size, key="bench", root=root, workers=workers)
                seconds = time.perf_counter() - start
                base = base or seconds
                print(f"  build with workers={workers}: {seconds:.2f} s, {len(paths) / seconds:.0f} images/s, "
                      f"{seconds / base:.2f} of workers={counts[0]}")


if __name__ == "__main__":
    main()
