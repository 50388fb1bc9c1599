"""A tiny image network the backbone tests build (and load as the factory ``backbone_fixtures:tiny_cnn``)."""

from __future__ import annotations

import torch
from torch import nn


class TinyCNN(nn.Module):
    """conv -> relu -> pool (4 x 2 x 2) -> body (16 -> 6) -> relu -> head (6 -> n_classes)."""

    def __init__(self, n_classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.body = nn.Linear(16, 6)
        self.head = nn.Linear(6, n_classes)
        self.seen: list[tuple[int, ...]] = []

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(self.pool(torch.relu(self.conv(x))).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape))
        return self.head(self.penultimate(x))


class ScriptableCNN(TinyCNN):
    """TinyCNN without the shape record (TorchScript cannot compile it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.penultimate(x))


def tiny_cnn() -> TinyCNN:
    """The factory the tests name: a TinyCNN with fixed initial weights (seed 0)."""
    torch.manual_seed(0)
    return TinyCNN()


def not_a_module() -> str:
    return "no network here"
