"""grouprobust: train, compare and diagnose classifiers that must work for every group.

The main entry points are importable from here (loaded on first use, so ``import grouprobust``
stays cheap): `resolve_config` (a validated, typed `RunConfig`), `run` (train one config into a run
directory; returns a `RunResult`), `load_trained_run` (read a finished run back), `load_runs` (every
run under a directory as a pandas DataFrame) and `load_history` (one run's ``history.jsonl`` as one). The last-layer
estimators live in `grouprobust.lastlayer`, sweeps in `grouprobust.sweep`, analyses in
`grouprobust.analysis`; `docs/architecture.md` draws the layers.
"""

from __future__ import annotations

import importlib
from typing import Any

from grouprobust.errors import GroupRobustError

__version__ = "0.1.0"

_LAZY = {"resolve_config": "grouprobust.config", "RunConfig": "grouprobust.config", "run": "grouprobust.runs",
         "RunResult": "grouprobust.result", "load_trained_run": "grouprobust.trained",
         "load_runs": "grouprobust.sweep.frames", "load_history": "grouprobust.history"}

__all__ = ["GroupRobustError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'grouprobust' has no attribute {name!r}")
