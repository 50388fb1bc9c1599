"""Sweeps: grids and random draws of hyper-parameters x seeds, run locally or on Ray, and their reports."""

from grouprobust.sweep.collect import collect_runs
from grouprobust.sweep.frames import load_runs
from grouprobust.sweep.report import select_and_aggregate, write_report
from grouprobust.sweep.runner import SweepSummary, prepare, run_sweep
from grouprobust.sweep.spec import SweepSpec, load_sweep
from grouprobust.sweep.trials import Trial, expand

__all__ = ["SweepSpec", "SweepSummary", "Trial", "collect_runs", "expand", "load_runs", "load_sweep", "prepare", "run_sweep",
           "select_and_aggregate", "write_report"]
