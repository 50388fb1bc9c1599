"""Seeded index samplers shared by methods: group-weighted draws with replacement."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch


def per_sample_probabilities(labels: np.ndarray, label_probs: np.ndarray) -> torch.Tensor:
    """Probability of drawing each sample so that label ``k`` (a group or class) has total mass
    ``label_probs[k]``, spread uniformly over its samples. Labels with no sample get no mass
    (the rest is renormalised)."""
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=len(label_probs)).astype(np.float64)
    mass = np.where(counts > 0, np.asarray(label_probs, dtype=np.float64), 0.0)
    mass = mass / mass.sum()
    probs = mass[labels] / counts[labels]
    return torch.as_tensor(probs / probs.sum(), dtype=torch.float64)


def weighted_batches(probs: torch.Tensor, batch_size: int, n_batches: int,
                     generator: torch.Generator) -> Iterator[torch.Tensor]:
    """``n_batches`` index tensors of ``batch_size`` draws with replacement from ``probs``."""
    for _ in range(n_batches):
        yield torch.multinomial(probs, batch_size, replacement=True, generator=generator)


def balanced_probabilities(labels: np.ndarray, n_labels: int) -> torch.Tensor:
    """Per-sample probabilities giving every non-empty label (group or class) equal total mass."""
    return per_sample_probabilities(labels, np.full(n_labels, 1.0 / n_labels))


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Minibatches in one epoch of ``n`` examples: ``ceil(n / batch_size)``."""
    return max(1, -(-int(n) // int(batch_size)))
