"""Full-network influence (GSR Appendix E): time and accuracy of the dense, CG and LiSSA solvers.

Usage: PYTHONPATH=src python benchmarks/full_network_influence.py [--n 300]

A two-hidden-layer tanh MLP on spurious-gaussian is fit to the minimum of the weighted,
L2-regularised objective; then the influence of every training weight on the mean validation loss is
computed with each solver. Prints seconds per solver, the ratio to the dense solve measured in the
same run, and each solver's relative L2 error against dense.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from grouprobust.data import load_dataset
from grouprobust.lastlayer.full_network import fit_weighted_network, full_network_influence

L2 = 5.0


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300, help="training samples whose weights are differentiated")
    parser.add_argument("--hidden", type=int, default=16, help="width of the two tanh hidden layers")
    args = parser.parse_args()
    splits = load_dataset("spurious-gaussian", 0, n=args.n, n_val=200, n_test=10)
    X, y, Xe, ye = splits.train.x, splits.train.y, splits.val.x, splits.val.y
    w = np.ones(len(X))
    torch.manual_seed(0)
    d = X.shape[1]
    model = nn.Sequential(nn.Linear(d, args.hidden), nn.Tanh(), nn.Linear(args.hidden, args.hidden), nn.Tanh(),
                          nn.Linear(args.hidden, 2))
    p = sum(t.numel() for t in model.parameters())
    model, fit_s = _timed(lambda: fit_weighted_network(model, X, y, w, L2, max_iter=200))
    print(f"tanh MLP: {p} parameters, n={len(X)}, l2={L2}; fit {fit_s:.2f} s")
    dense, dense_s = _timed(lambda: full_network_influence(model, X, y, w, Xe, ye, L2, solver="dense"))
    print(f"  dense  {dense_s:7.2f} s   ratio 1.00")
    for name, opts in (("cg", {}), ("lissa", {"lissa_depth": 500}),
                       ("lissa-mb", {"lissa_depth": 500, "lissa_batch_size": 32, "lissa_repeat": 2})):
        solver = name.split("-")[0]
        out, secs = _timed(lambda: full_network_influence(model, X, y, w, Xe, ye, L2, solver=solver, **opts))
        err = np.linalg.norm(out - dense) / np.linalg.norm(dense)
        print(f"  {name:7s}{secs:7.2f} s   ratio {secs / dense_s:5.2f}   relative error vs dense {err:.2e}")


if __name__ == "__main__":
    main()
