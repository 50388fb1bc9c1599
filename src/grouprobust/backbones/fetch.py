"""Optional libraries and downloads: one line when a library is missing, the network is absent, or the
Hugging Face libraries would print their own progress bars and loading reports."""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from typing import Any, Iterator

from grouprobust.optional import import_optional

HF_HOST = "huggingface.co"


def require(module: str, extra: str) -> Any:
    """The imported ``module`` a backbone needs, or one line naming the extra that installs it."""
    return import_optional(module, extra, "this backbone", subject="backbone")


def unreachable(host: str, timeout_s: float = 3.0) -> OSError | None:
    """The error of a connection to ``host`` (port 443), or None when it answers: a download from an offline
    machine is then refused at once, instead of after a library's minute of retries."""
    import socket  # only downloads need it

    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError as err:
        return err
    return None


def offline_message(name: str, source: str, err: Exception, fix: str) -> str:
    """The one line for a download that could not reach its server (this machine is offline)."""
    cause = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return (f"cannot download the weights of backbone {name!r} from {source}: this machine is offline or the server "
            f"is unreachable ({cause}); {fix}")


@contextmanager
def quiet_hugging_face() -> Iterator[None]:
    """Hide transformers' and huggingface_hub's progress bars and loading reports (ours say what happens)
    while loading; their settings are restored afterwards."""
    restore = []
    try:
        tr_logging = importlib.import_module("transformers.utils.logging")
        if tr_logging.is_progress_bar_enabled():
            tr_logging.disable_progress_bar()
            restore.append(tr_logging.enable_progress_bar)
        level = tr_logging.get_verbosity()
        tr_logging.set_verbosity_error()
        restore.append(lambda: tr_logging.set_verbosity(level))
    except ImportError:
        pass
    try:
        hub = importlib.import_module("huggingface_hub.utils")
        if not hub.are_progress_bars_disabled():
            hub.disable_progress_bars()
            restore.append(hub.enable_progress_bars)
    except (ImportError, AttributeError):
        pass
    try:
        yield
    finally:
        for undo in reversed(restore):
            undo()


__all__ = ["HF_HOST", "offline_message", "quiet_hugging_face", "require", "unreachable"]
