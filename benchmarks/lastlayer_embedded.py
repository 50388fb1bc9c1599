"""Test worst-group accuracy of ERM, GSR, GSR-HF and DFR heads on the embedded data sets, over seeds.

Stage 1: ERM on 90% of train (features frozen); stage 2 on the other 10% (held-out), with
validation split into target and validation halves (see tests/lastlayer_data.py). DFR is fit on
target + validation (all group-labelled data; C chosen on an internal split). The noisy column
flips 40% of the held-out labels before GSR. Prints a markdown table (mean ± std over seeds).

Usage: ``python benchmarks/lastlayer_embedded.py [--seeds 0 1 2]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np  # noqa: E402

from grouprobust.lastlayer import DFR, GSR  # noqa: E402
from grouprobust.lastlayer import worst_group_accuracy  # noqa: E402
from grouprobust.output import format_mean_std  # noqa: E402
from lastlayer_data import erm_features  # noqa: E402

DATASETS = {
    "spurious-gaussian": dict(epochs=10),
    "colored-digits (binary, conflict 0.02)": dict(epochs=5, data={"variant": "binary", "conflict": 0.02, "copies": 5}),
}
COLUMNS = ["ERM", "uniform head", "GSR", "GSR-HF", "DFR", "GSR, 40% noisy labels"]


def one_seed(dataset: str, seed: int, opts: dict) -> dict[str, float]:
    sets = erm_features(dataset.split(" ")[0], seed=seed, **opts)
    Xs, ys, gs = sets.test

    def wga(model) -> float:
        return worst_group_accuracy(ys, model.predict(Xs), groups=gs)

    def gsr(held, **params) -> GSR:
        (Xt, yt, gt), (Xv, yv, gv) = sets.target, sets.val
        return GSR(**params).fit(*held, X_target=Xt, y_target=yt, groups_target=gt, X_val=Xv, y_val=yv, groups_val=gv)

    exact = gsr(sets.held)
    uniform = gsr(sets.held, n_steps=0)
    X, y, g = sets.held
    flip = np.random.default_rng(seed).random(len(y)) < 0.4
    noisy = gsr((X, np.where(flip, 1 - y, y), g))
    Xd, yd, gd = (np.concatenate(parts) for parts in zip(sets.target, sets.val))
    dfr = DFR(random_state=seed).fit(Xd, yd, gd)
    return {"ERM": sets.erm_test_wga, "uniform head": wga(uniform), "GSR": wga(exact),
            "GSR-HF": wga(gsr(sets.held, hessian="free")), "DFR": wga(dfr), "GSR, 40% noisy labels": wga(noisy)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    print("| data set | " + " | ".join(COLUMNS) + " |")
    print("| --- |" + " --- |" * len(COLUMNS))
    for dataset, opts in DATASETS.items():
        rows = [one_seed(dataset, seed, opts) for seed in args.seeds]
        cells = [format_mean_std(np.mean([r[c] for r in rows]),
                                 np.std([r[c] for r in rows], ddof=1) if len(rows) > 1 else None, 3) for c in COLUMNS]
        print(f"| {dataset} | " + " | ".join(cells) + " |")
        for seed, r in zip(args.seeds, rows):
            print(f"<!-- seed {seed}: " + ", ".join(f"{c} {r[c]:.3f}" for c in COLUMNS) + " -->")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
