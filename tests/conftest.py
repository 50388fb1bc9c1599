import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def tiny_gaussian() -> dict:
    """Dataset options for a small, fast spurious-gaussian."""
    return {"n": 400, "n_val": 200, "n_test": 400}
