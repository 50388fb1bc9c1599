"""A worker for tests/test_concurrency.py: ``python concurrent_worker.py sweep SWEEP OUT MARKERS GO`` or
``python concurrent_worker.py train EPOCHS OUT MARKERS GO``.

It counts every real execution of a trial (a line ``<run_id> <pid>`` appended to MARKERS before
`grouprobust.runs.run` is entered), waits until the file GO exists so that all workers start at
once, then runs the sweep (printing its summary as one JSON line) or trains one small run into OUT
(printing ``{"error": message}`` if it was refused).
"""

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from grouprobust.config import resolve_config  # noqa: E402
from grouprobust.errors import GroupRobustError  # noqa: E402
from grouprobust.runs import run  # noqa: E402

torch.set_num_threads(1)
mode = sys.argv[1]
sweep, out, markers, go = (Path(a) for a in sys.argv[2:6])


def counted_run(cfg, path, *args, **kwargs):
    fd = os.open(markers, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{cfg.run_id} {os.getpid()}\n".encode())
    os.close(fd)
    return run(cfg, path, *args, **kwargs)


if mode == "sweep":  # the sweep machinery imports pandas and matplotlib: only this mode pays for them
    import grouprobust.sweep.executors as executors
    from grouprobust.sweep import run_sweep

    executors.run = counted_run
Path(f"{go}.ready-{os.getpid()}").touch()
while not go.exists():
    time.sleep(0.01)
if mode == "train":
    cfg = resolve_config("spurious-gaussian", "erm", data={"n": 400, "n_val": 100, "n_test": 100},
                         hparams={"epochs": int(str(sweep)), "model": "linear"})
    try:
        run(cfg, out)
        print(json.dumps({"error": None}))
    except GroupRobustError as err:
        print(json.dumps({"error": str(err)}))
else:
    summary = run_sweep(sweep, out)
    print(json.dumps({"ran": summary.ran, "finished": summary.finished, "failed": len(summary.failed),
                      "elsewhere": summary.elsewhere, "total": summary.total}))
