from grouprobust.threads import apply_thread_policy, prefer_passive_wait

# What the CLI entry does before torch is imported; the suite then uses the product's own thread policy
# (for the tests that call Trainer directly rather than an entry point).
prefer_passive_wait()

import pytest  # noqa: E402

apply_thread_policy()


@pytest.fixture
def tiny_gaussian() -> dict:
    """Dataset options for a small, fast spurious-gaussian."""
    return {"n": 400, "n_val": 200, "n_test": 400}
