"""Pixel losses by name, so a config or a sweep picks one with a string."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

# elementwise penalty of the difference pred - target
PENALTIES = {
    "mse": torch.square,
    "l1": torch.abs,
    # the smooth L1 that LapSRN and many deblurring papers train with
    "charbonnier": lambda d: torch.sqrt(d * d + 1e-6),
}
Reduction = Literal["mean", "sum"]


class PixelLoss(nn.Module):
    """``reduction="mean"``: the mean over every pixel (PyTorch's convention). ``"sum"``: summed over each
    sample's pixels and averaged over the batch, halved for mse: Caffe's EuclideanLoss and the 1/(2N) Σ‖·‖²
    that VDSR and DnCNN wrote their learning rates for (the mean is patch-area times smaller)."""

    def __init__(self, name: str = "mse", reduction: Reduction = "mean"):
        super().__init__()
        if name not in PENALTIES:
            raise ValueError(f"unknown loss {name!r}; choose one of {sorted(PENALTIES)}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"loss reduction {reduction!r} must be 'mean' or 'sum'")
        self.name, self.reduction = name, reduction

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        penalty = PENALTIES[self.name](pred - target)
        if self.reduction == "mean":
            return penalty.mean()
        return penalty.flatten(1).sum(1).mean() * (0.5 if self.name == "mse" else 1.0)

