"""`RunResult`: the typed result of one run, the one place that defines ``result.json``.

Loop runs (`grouprobust.training.Trainer.fit`) and two-stage runs (`grouprobust.two_stage`) both
build a `RunResult`; `grouprobust.runs.run` writes it. It reads like the dict it serialises to
(``result["metrics"]["test"]["worst_group_acc"]``), so code written against ``result.json`` works
on it unchanged. Accuracies are fractions in [0, 1]; ``time_s`` is wall-clock seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Iterator

from grouprobust.config import RunConfig


@dataclass
class RunResult(Mapping):
    """What ``result.json`` holds.

    ``selected``: ``{"rule", "epoch", "oracle", ...}`` (a two-stage method adds what its estimator
    chose, e.g. ``step`` or ``C``); ``metrics``: ``{"val": M, "test": M}`` at the selected point (a
    two-stage run adds ``target``); ``final``: the last epoch's validation figures (loop runs);
    ``extra``: method-family fields written at the top level (a two-stage run's ``stage1``,
    ``features``, ``val_halves``, ``n_heldout``, ``weights``); ``resumed_at``: ``{"epoch", "step"}``,
    the epochs finished and optimizer steps done before the last restart from a checkpoint (written
    only for a resumed run); ``reused``: read back from a finished run directory instead of trained
    (never written). ``notes``: one line each on how the data was read (e.g. which column gave the
    splits); ``warnings``: one line each on figures to distrust (groups too small for the selection or
    the last-layer fit, `grouprobust.intervals`).
    """

    dataset: str
    method: str
    seed: int
    regime: str
    selected: dict[str, Any]
    metrics: dict[str, Any]
    hparams: dict[str, Any]
    time_s: float = 0.0
    run_id: str | None = None
    final: dict[str, Any] | None = None
    train_group_counts: list[int] | None = None
    train_empty_groups: list[str] = field(default_factory=list)
    method_info: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    resumed_at: dict[str, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    reused: bool = False

    @classmethod
    def of(cls, config: RunConfig, **fields_: Any) -> "RunResult":
        """A result for ``config`` (dataset, method, seed, regime, hyper-parameters, run id from it)."""
        return cls(dataset=config.dataset, method=config.method, seed=config.seed, regime=config.regime,
                   hparams=config.hparams, run_id=config.run_id, **fields_)

    def to_dict(self) -> dict[str, Any]:
        """The ``result.json`` document (``extra`` flattened into the top level; ``reused`` only when set)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("extra", "reused"):
                continue
            value = getattr(self, f.name)
            if f.name in ("final", "resumed_at") and value is None:
                continue
            out[f.name] = value
        out.update(self.extra)
        if self.reused:
            out["reused"] = True
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunResult":
        """Inverse of `to_dict` (keys that are not fields go to ``extra``)."""
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        known.setdefault("hparams", {})
        return cls(**known, extra={k: v for k, v in d.items() if k not in names})

    # Mapping interface: a result reads like its JSON document.
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())
