"""ERM and GroupDRO fine-tuned end to end on the generated Waterbirds-format folder, over several seeds:
test worst-group and average accuracy per seed, then mean and spread.

    python examples/synthetic_waterbirds_seeds.py --folder /tmp/wb --out runs/wb-seeds [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the small_cnn factory of synthetic_waterbirds

from synthetic_waterbirds import write_synthetic_waterbirds  # noqa: E402

from grouprobust.config import resolve_config  # noqa: E402
from grouprobust.runs import run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True, help="the generated folder (written if missing)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    if not (args.folder / "metadata.csv").is_file():
        write_synthetic_waterbirds(args.folder)
    print(f"{'method':10s} {'seed':>4s} {'test worst-group':>17s} {'test average':>13s}")
    for method in ("erm", "groupdro"):
        worst = []
        for seed in [int(s) for s in args.seeds.split(",")]:
            config = resolve_config("waterbirds", method, seed, {"image_size": 32}, {"epochs": args.epochs},
                                    backbone="synthetic_waterbirds:small_cnn", root=str(args.folder))
            test = run(config, args.out / f"{method}-{seed}")["metrics"]["test"]
            worst.append(test["worst_group_acc"])
            print(f"{method:10s} {seed:4d} {test['worst_group_acc']:17.3f} {test['avg_acc']:13.3f}")
        print(f"{method:10s} mean {np.mean(worst):17.3f}  (std {np.std(worst, ddof=1):.3f})")


if __name__ == "__main__":
    main()
