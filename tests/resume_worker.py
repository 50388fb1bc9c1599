"""What tests/test_resume.py runs in processes forked from one forkserver (grouprobust and torch imported
once there, so each run starts in milliseconds and can be killed with SIGKILL at any moment)."""

import os
import time

os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402

from grouprobust.config import RunConfig, resolve_config  # noqa: E402
from grouprobust.runs import run  # noqa: E402
from grouprobust.threads import apply_thread_policy  # noqa: E402


def train(config: dict, out: str, pause_s: float = 0.0) -> None:
    """Run ``config`` into ``out`` on one thread; ``pause_s`` after each epoch (only to give a test time to
    kill the run between its checkpoints: it changes nothing the run computes)."""
    torch.set_num_threads(1)
    apply_thread_policy(1)
    run(RunConfig.from_dict(config), out, device="cpu",
        on_epoch=(lambda epoch, loss: time.sleep(pause_s)) if pause_s else None)


def _warm_up() -> None:
    """One tiny run without a directory, so that every module a run imports lazily (the method registry's,
    the dataset's, the metrics') is loaded once here rather than in every forked run."""
    torch.set_num_threads(1)
    apply_thread_policy(1)
    config = resolve_config("spurious-gaussian", "erm", 0, {"n": "100", "n_val": "50", "n_test": "50"}, {"epochs": "1"})
    run(config, device="cpu")


_warm_up()
