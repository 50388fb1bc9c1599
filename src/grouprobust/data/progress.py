"""How long data preparation (decoding images into the cache, tokenizing texts) reports its progress.

The data layer knows nothing of terminals: a command installs a reporter with `set_progress_reporter`
(the CLI draws a bar), and `task_progress(description)` hands the preparing code a
``progress(done, total)`` callback that moves it; without a reporter the callback does nothing.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Callable, ContextManager, Iterator

Progress = Callable[[int, int], None]
Reporter = Callable[[str], ContextManager[Progress]]

_reporter: Reporter | None = None


def set_progress_reporter(reporter: Reporter | None) -> Reporter | None:
    """Install ``reporter(description)`` (a context manager yielding ``progress(done, total)``); returns the
    previous one, so a caller can restore it."""
    global _reporter
    previous, _reporter = _reporter, reporter
    return previous


@contextmanager
def task_progress(description: str) -> Iterator[Progress]:
    """The installed reporter's ``progress(done, total)`` callback for one task, or one that does nothing."""
    with (_reporter(description) if _reporter is not None else nullcontext(lambda done, total: None)) as progress:
        yield progress
