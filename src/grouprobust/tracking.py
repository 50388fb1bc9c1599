"""Experiment tracking: send a run's config, its ``history.jsonl`` entries and its result to MLflow or TensorBoard.

A `Tracker` receives, through `grouprobust.runs.run`: ``start(config, directory)`` when the run
directory is opened (``directory`` is where the run's files are being written, a temporary
sibling of the final path until the run is published), ``log(entry)`` for every history entry,
and ``finish(result, directory)`` (or ``fail(reason)``) when the run ends. Trackers are built by
`make_tracker` from names (``"mlflow"``, ``"tensorboard"`` or both, comma-separated); the
tracking libraries are imported only there, so nothing is imported when tracking is off.

`guarded` wraps a tracker so that its failure never loses the run: the first exception is logged
as one warning line and the tracker is switched off for the rest of the run.

- **MLflow** (``pip install 'grouprobust[mlflow]'``): one MLflow run per grouprobust run, with the
  config as params (``hparams.lr``, ``data.n`` ...), every epoch's numeric figures as metrics at
  step = epoch (``train_loss``, ``val/worst_group_acc`` ...), the selected epoch's figures as
  ``selected/<split>/<figure>``, and the run directory (plus ``result.json``) as artifacts. The
  store is ``MLFLOW_TRACKING_URI`` when set, else a local file store ``<store_dir>/mlruns``.
- **TensorBoard** (``pip install 'grouprobust[tensorboard]'``): event files written into the run
  directory itself (so ``tensorboard --logdir runs/`` shows every run), scalars per epoch, the
  config as text and the hyper-parameters with the selected figures in the HParams tab.
"""

from __future__ import annotations

import json
import logging
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

from grouprobust.errors import GroupRobustError
from grouprobust.optional import import_optional

logger = logging.getLogger("grouprobust.tracking")

TRACKERS = ("mlflow", "tensorboard")
EXPERIMENT = "grouprobust"


class Tracker(Protocol):
    """What `grouprobust.runs.run` calls on a tracker (see the module docstring)."""

    def start(self, config: dict[str, Any], directory: Path | None) -> None: ...

    def log(self, entry: dict[str, Any]) -> None: ...

    def finish(self, result: dict[str, Any], directory: Path | None) -> None: ...

    def fail(self, reason: str) -> None: ...


def scalar_figures(entry: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """``(name, value)`` for every finite numeric figure of a history entry or metrics dict.

    Nested dicts give ``/``-joined names (``val/worst_group_acc``); numeric lists give ``name/i``.
    Per-group, per-class and per-attribute tables are left out (they are in the artifacts).
    """
    for key, value in entry.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            if math.isfinite(value):
                yield name, float(value)
        elif isinstance(value, dict):
            if key.startswith("per_"):
                continue
            yield from scalar_figures(value, f"{name}/" if key != "metrics" else prefix)
        elif isinstance(value, (list, tuple)) and value and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            for i, v in enumerate(value):
                if math.isfinite(v):
                    yield f"{name}/{i}", float(v)


def config_params(config: dict[str, Any]) -> dict[str, str]:
    """The config as flat string params: ``dataset``, ``method``, ``seed``, ``hparams.lr``, ``data.n`` ...

    ``run_id`` and package versions are left to tags and artifacts.
    """
    params: dict[str, str] = {}
    for key, value in config.items():
        if key in ("run_id", "versions"):
            continue
        if isinstance(value, dict):
            for sub, v in value.items():
                params[f"{key}.{sub}"] = json.dumps(v) if isinstance(v, (dict, list)) else str(v)
        else:
            params[key] = str(value)
    return params


def _selected_figures(result: dict[str, Any]) -> dict[str, float]:
    return {f"selected/{split}/{name}": value
            for split, metrics in (result.get("metrics") or {}).items() if isinstance(metrics, dict)
            for name, value in scalar_figures(metrics)}


def _tracker_library(name: str) -> Any:
    """The library tracker ``name`` (``mlflow`` or ``tensorboard``) writes with, imported; one line naming
    its extra when it is not installed."""
    return import_optional(name, name, f"tracking with {name}", "track", " or leave track off")


class MLflowTracker:
    """Logs one grouprobust run as one MLflow run (see the module docstring)."""

    def __init__(self, store_dir: Path | None = None, experiment: str = EXPERIMENT):
        mlflow = _tracker_library("mlflow")
        from mlflow.tracking import MlflowClient

        self.mlflow = mlflow
        if os.environ.get("MLFLOW_TRACKING_URI"):
            self.uri = os.environ["MLFLOW_TRACKING_URI"]
            if self.uri.startswith(("http://", "https://")):
                # MLflow's own defaults retry an unreachable server for minutes; a server that is down
                # must cost a run seconds (the guard then switches tracking off). The user's settings win.
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        else:
            root = Path(store_dir if store_dir is not None else ".").resolve() / "mlruns"
            self.uri = root.as_uri()
            # MLflow 3 refuses its file store unless asked for it; it is the one store that needs no
            # database library, and the user asked for it by leaving MLFLOW_TRACKING_URI unset.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
        except Exception as err:  # a malformed URI or a store MLflow cannot open
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise GroupRobustError(f"cannot open the MLflow tracking store {self.uri} ({first[:300]}); check "
                                   "MLFLOW_TRACKING_URI or unset it for a local store", subject="track") from None
        self.experiment = experiment
        self.run_id: str | None = None

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(self.experiment)
        except self.mlflow.exceptions.MlflowException:  # another trial created it meanwhile
            return self.client.get_experiment_by_name(self.experiment).experiment_id

    def start(self, config: dict[str, Any], directory: Path | None) -> None:
        """Create the MLflow run, tagged with the run id, and log the config as params."""
        from mlflow.entities import Param

        tags = {"grouprobust.run_id": str(config.get("run_id")), "grouprobust.method": str(config.get("method")),
                "grouprobust.dataset": str(config.get("dataset"))}
        name = f"{config.get('method')} {config.get('dataset')} seed {config.get('seed')} ({config.get('run_id')})"
        run = self.client.create_run(self._experiment_id(), run_name=name, tags=tags)
        self.run_id = run.info.run_id
        params = [Param(k, v[:6000]) for k, v in config_params(config).items()]
        for start in range(0, len(params), 100):  # MLflow accepts at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[start:start + 100])

    def _log_figures(self, figures: Iterable[tuple[str, float]], step: int) -> None:
        from mlflow.entities import Metric

        now = _now_ms()
        metrics = [Metric(k, v, now, step) for k, v in figures]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[start:start + 1000])

    def log(self, entry: dict[str, Any]) -> None:
        """Log the entry's numeric figures at step = its epoch (or outer step)."""
        step = int(entry.get("epoch", entry.get("step", 0)) or 0)
        self._log_figures(scalar_figures(entry), step)

    def finish(self, result: dict[str, Any], directory: Path | None) -> None:
        """Log the selected figures, ``result.json`` and the run directory's files; end the run FINISHED."""
        epoch = (result.get("selected") or {}).get("epoch")
        self._log_figures(_selected_figures(result).items(), int(epoch) if isinstance(epoch, int) else 0)
        self.client.log_dict(self.run_id, result, "result.json")
        if directory is not None and Path(directory).is_dir():
            self.client.log_artifacts(self.run_id, str(directory))
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, reason: str) -> None:
        """End the MLflow run FAILED, with the reason as a tag."""
        if self.run_id is not None:
            self.client.set_tag(self.run_id, "grouprobust.failure", reason[:5000])
            self.client.set_terminated(self.run_id, "FAILED")


class TensorBoardTracker:
    """Writes TensorBoard event files into the run directory (see the module docstring)."""

    def __init__(self) -> None:
        _tracker_library("tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.summary_writer = SummaryWriter
        self.writer: Any = None
        self.config: dict[str, Any] = {}

    def start(self, config: dict[str, Any], directory: Path | None) -> None:
        """Open an event file in ``directory`` and write the config as text."""
        if directory is None:
            raise GroupRobustError("tracking with tensorboard writes into the run directory; give the run an out "
                                   "directory", subject="track")
        self.config = config
        self.writer = self.summary_writer(log_dir=str(directory))
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", 0)

    def log(self, entry: dict[str, Any]) -> None:
        """Add the entry's numeric figures as scalars at step = its epoch (or outer step)."""
        step = int(entry.get("epoch", entry.get("step", 0)) or 0)
        for name, value in scalar_figures(entry):
            self.writer.add_scalar(name, value, step)

    def finish(self, result: dict[str, Any], directory: Path | None) -> None:
        """Add the hyper-parameters with the selected figures (HParams tab) and close the event file."""
        hparams = {k: _hparam_value(v) for k, v in config_params(self.config).items()}
        self.writer.add_hparams(hparams, _selected_figures(result), run_name=".")
        self.writer.close()

    def fail(self, reason: str) -> None:
        """Close the event file; what was logged stays."""
        if self.writer is not None:
            self.writer.add_text("failure", reason, 0)
            self.writer.close()


class CompositeTracker:
    """Several trackers called in turn."""

    def __init__(self, trackers: list[Any]):
        self.trackers = trackers

    def start(self, config: dict[str, Any], directory: Path | None) -> None:
        for t in self.trackers:
            t.start(config, directory)

    def log(self, entry: dict[str, Any]) -> None:
        for t in self.trackers:
            t.log(entry)

    def finish(self, result: dict[str, Any], directory: Path | None) -> None:
        for t in self.trackers:
            t.finish(result, directory)

    def fail(self, reason: str) -> None:
        for t in self.trackers:
            t.fail(reason)


class GuardedTracker:
    """A tracker whose failures are logged once as a warning and then switch it off; the run goes on."""

    def __init__(self, tracker: Any):
        self.tracker = tracker
        self.broken = False

    def _call(self, method: str, *args: Any) -> None:
        if self.broken:
            return
        try:
            getattr(self.tracker, method)(*args)
        except Exception as err:  # noqa: BLE001 - tracking must never lose the run
            self.broken = True
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            logger.warning("experiment tracking failed in %s (%s: %s); tracking is off for the rest of this run, "
                           "the run itself goes on", method, type(err).__name__, first[:200])

    def start(self, config: dict[str, Any], directory: Path | None) -> None:
        self._call("start", config, directory)

    def log(self, entry: dict[str, Any]) -> None:
        self._call("log", entry)

    def finish(self, result: dict[str, Any], directory: Path | None) -> None:
        self._call("finish", result, directory)

    def fail(self, reason: str) -> None:
        self._call("fail", reason)


def guarded(tracker: Any | None) -> GuardedTracker | None:
    """``tracker`` wrapped in a `GuardedTracker` (None stays None)."""
    if tracker is None or isinstance(tracker, GuardedTracker):
        return tracker
    return GuardedTracker(tracker)


def parse_track(track: str | Iterable[str] | None) -> list[str]:
    """The tracker names in ``track`` (``"mlflow"``, ``"mlflow,tensorboard"``, a list, or None/"" for none)."""
    if track is None:
        return []
    items = [part for item in ([track] if isinstance(track, str) else track) for part in str(item).split(",")]
    names: list[str] = []
    for item in items:
        name = str(item).strip().lower()
        if not name or name == "none":
            continue
        if name not in TRACKERS:
            raise GroupRobustError(f"unknown tracker {item!r} in track; use mlflow, tensorboard or both "
                                   "(mlflow,tensorboard)", subject="track")
        if name not in names:
            names.append(name)
    return names


def check_trackers(track: str | Iterable[str] | None) -> list[str]:
    """The tracker names in ``track``, each one's library imported (a `GroupRobustError` names the extra to
    install otherwise); builds nothing and writes nothing."""
    names = parse_track(track)
    for name in names:
        _tracker_library(name)
    return names


def make_tracker(track: str | Iterable[str] | None, store_dir: Path | str | None = None,
                 experiment: str = EXPERIMENT) -> Tracker | None:
    """The tracker for ``track`` (see `parse_track`), or None when tracking is off.

    ``store_dir`` is where MLflow's default local store (``<store_dir>/mlruns``) goes when
    ``MLFLOW_TRACKING_URI`` is not set; ``experiment`` the MLflow experiment's name. Raises a
    `GroupRobustError` (subject ``track``) when a tracker's library is not installed.
    """
    names = parse_track(track)
    if not names:
        return None
    built: list[Any] = [MLflowTracker(Path(store_dir) if store_dir is not None else None, experiment)
                        if name == "mlflow" else TensorBoardTracker() for name in names]
    return built[0] if len(built) == 1 else CompositeTracker(built)


def _hparam_value(value: str) -> Any:
    try:
        number = float(value)
    except ValueError:
        return value
    return number if math.isfinite(number) else value


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)




class TrackedWriting:
    """What `track_run` yields: ``log`` (history file, then tracker) and ``finish`` (tracker only)."""

    def __init__(self, tracker: GuardedTracker | None, writer: Any):
        self.tracker, self.writer = tracker, writer

    def log(self, entry: dict[str, Any]) -> None:
        """Append ``entry`` to ``history.jsonl``, then hand it to the tracker."""
        self.writer.log(entry)
        if self.tracker is not None:
            self.tracker.log(entry)

    def finish(self, result: dict[str, Any]) -> None:
        """Hand the result and the run's files (before they are published) to the tracker."""
        if self.tracker is not None:
            self.tracker.finish(result, self.writer.tmp)


@contextmanager
def track_run(tracker: Any | None, config: dict[str, Any], writer: Any) -> Iterator[TrackedWriting]:
    """Track the run being written by ``writer`` (a `grouprobust.rundir.RunDirectory`, opened).

    Starts the (guarded) tracker on the run's temporary directory; if the block raises, the
    tracker's ``fail`` is called and the exception goes on. With ``tracker`` None nothing is called.
    """
    guard = guarded(tracker)
    if guard is not None:
        guard.start(config, writer.tmp)
    try:
        yield TrackedWriting(guard, writer)
    except BaseException as err:
        if guard is not None:
            guard.fail(str(err) or type(err).__name__)
        raise


__all__ = ["TRACKERS", "CompositeTracker", "GuardedTracker", "MLflowTracker", "TensorBoardTracker", "Tracker",
           "TrackedWriting", "check_trackers", "config_params", "guarded", "make_tracker", "parse_track", "scalar_figures", "track_run"]
