from grouprobust.threads import apply_thread_policy, prefer_passive_wait

# What the CLI entry does before torch is imported; the suite then uses the product's own thread policy
# (for the tests that call Trainer directly rather than an entry point).
prefer_passive_wait()

import os  # noqa: E402
import tempfile  # noqa: E402

import pytest  # noqa: E402

apply_thread_policy()

# The caches (decoded images, tokens, stage-1 models, features) of the suite's runs go to a folder of the
# session's own, never the user's ~/.cache/grouprobust; tests of the cache's location set their own.
_SESSION_CACHE = None if os.environ.get("GROUPROBUST_CACHE") else tempfile.mkdtemp(prefix="grouprobust-test-cache-")
if _SESSION_CACHE is not None:
    os.environ["GROUPROBUST_CACHE"] = _SESSION_CACHE


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the session's cache folder (made above) when the suite ends."""
    if _SESSION_CACHE is not None:
        import shutil

        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


@pytest.fixture
def tiny_gaussian() -> dict:
    """Dataset options for a small, fast spurious-gaussian."""
    return {"n": 400, "n_val": 200, "n_test": 400}
