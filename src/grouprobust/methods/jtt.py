"""Just Train Twice (Liu et al. 2021): upsample the examples an early-stopped ERM model gets wrong."""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from grouprobust.data.dataset import GroupDataset
from grouprobust.methods.base import Method
from grouprobust.methods.context import MethodContext
from grouprobust.methods.registry import register_method
from grouprobust.models import predict_logits
from grouprobust.params import AT_LEAST_ONE, Interval, Param


@register_method
class JTT(Method):
    """Stage 1: ERM for ``stage1_epochs`` epochs; its misclassified training examples form the error set.
    Stage 2 (the run's own training, from a fresh model): each epoch is a shuffle of the training set in
    which every error-set example appears ``lambda_up`` times (upsampling, as in the JTT paper, rather
    than loss weights). Group labels are used only on validation, for model selection.

    ``lambda_up=0`` (the default) sets the copies from the error set's size, as the JTT repository's
    ``--up_weight -1`` does: `auto_lambda_up`, so that the error set and the rest of the training set
    get about as many draws. A fixed factor tuned for one dataset's error set is wrong for another's:
    20 copies of an error set of 15 % of a census table (mostly rows whose label the features do not
    determine) make it 78 % of the draws, and the second model learns the noise.
    """

    name = "jtt"
    distributed = "its first stage and error set are not checked across processes yet"
    needs = "val"
    same_as = "SubpopBench JTT (lambda_up counts total copies: official --up_weight U = lambda_up - 1)"
    summary = "just train twice: ERM for stage1_epochs, then retrain from scratch with its errors upsampled lambda_up x"
    params = {
        "stage1_epochs": Param(2, ("int", 1, 10), "epochs of the stage-1 ERM model that finds the error set",
                               AT_LEAST_ONE),
        "lambda_up": Param(0, ("int", 2, 100), "how many times each stage-1 error appears per stage-2 epoch "
                           "(total copies, as in the paper; the official code's --up_weight U is lambda_up = U + 1); "
                           "0: from the error set's size, so that errors and the rest get about as many draws "
                           "(the official code's --up_weight -1)", Interval(0)),
    }

    def setup(self, context: MethodContext) -> None:
        """Train the stage-1 ERM model through the shared loop and build the upsampled index list."""
        epochs = self.hparams["stage1_epochs"]
        model = context.train_stage1(self.data, epochs, "jtt stage 1", dict(self.hparams, epochs=epochs))
        #: The stage-1 ERM model (kept for inspection).
        self.stage1_model = model
        pred = predict_logits(model, self.data.dataset.x, context.device).argmax(dim=1)
        wrong = (pred != self.data.y.cpu()).numpy()
        #: Indices of the training examples the stage-1 model misclassifies (CPU, sorted).
        self.error_set = torch.as_tensor(np.flatnonzero(wrong))
        #: Copies of each error-set example per stage-2 epoch (the set value, or `auto_lambda_up`).
        self.lambda_up = self.hparams["lambda_up"] or auto_lambda_up(int(wrong.sum()), len(wrong))
        extra = self.error_set.repeat(self.lambda_up - 1)
        #: One stage-2 epoch before shuffling: every index once, error-set indices ``lambda_up`` times.
        self.epoch_indices = torch.cat([torch.arange(self.data.n), extra])
        self._report = {**context.true_group_report(error_set_report, wrong), "lambda_up": self.lambda_up,
                        "error_set_draw_share": float(len(extra) + len(self.error_set)) / len(self.epoch_indices)}

    def batches(self) -> Iterator[torch.Tensor]:
        perm = torch.randperm(len(self.epoch_indices), generator=self.generator)
        return iter(self.epoch_indices[perm].to(self.data.index_device).split(self.batch_size))

    def batches_per_epoch(self) -> int:
        return -(-len(self.epoch_indices) // self.batch_size)

    def run_info(self) -> dict[str, Any]:
        return self._report


def auto_lambda_up(n_errors: int, n_train: int) -> int:
    """Total copies of each error-set example that give the error set about as many draws as the rest of the
    training set: ``max(1, round((n_train - n_errors) / n_errors))`` (1, no upsampling, without errors).

    The JTT repository's ``--up_weight -1`` gives ``floor((n - e) / e)`` copies in all; rounding instead keeps
    a large error set (a third of train: 1.9 -> 2 copies, not 1) from going without upsampling.
    """
    if n_errors == 0:
        return 1
    return max(1, round((n_train - n_errors) / n_errors))


def error_set_report(wrong: np.ndarray, full_train: GroupDataset) -> dict[str, Any]:
    """Size of the error set and, when the train split has true groups, how it overlaps the minority groups.

    Minority groups are the non-empty groups smaller than an equal share (``n / non-empty groups``).
    Reporting only: the method never reads these labels. Returns ``error_set_size``,
    ``error_set_fraction`` and, with groups, ``minority_groups``, ``error_set_minority_precision``
    (fraction of the error set in minority groups), ``minority_recall`` (fraction of minority examples
    in the error set) and ``error_set_per_group`` (counts).
    """
    report: dict[str, Any] = {"error_set_size": int(wrong.sum()), "error_set_fraction": float(wrong.mean())}
    if full_train.g is None:
        return report
    counts = full_train.group_counts()
    nonempty = counts > 0
    minority = nonempty & (counts < len(full_train) / nonempty.sum())
    in_minority = minority[full_train.g]
    report.update({
        "minority_groups": [full_train.group_names[i] for i in np.flatnonzero(minority)],
        "error_set_minority_precision": float(in_minority[wrong].mean()) if wrong.any() else None,
        "minority_recall": float(wrong[in_minority].mean()) if in_minority.any() else None,
        "error_set_per_group": np.bincount(full_train.g[wrong], minlength=full_train.n_groups).tolist(),
    })
    return report
