"""Pixel losses by name, so a config or a sweep picks one with a string."""
from __future__ import annotations

import torch
from torch import nn


class CharbonnierLoss(nn.Module):
    """sqrt((x - y)^2 + eps^2): the smooth L1 that LapSRN and many deblurring papers train with."""

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((pred - target) ** 2 + self.eps**2).mean()


PIXEL_LOSSES = {"mse": nn.MSELoss, "l1": nn.L1Loss, "charbonnier": CharbonnierLoss}


def pixel_loss(name: str) -> nn.Module:
    if name not in PIXEL_LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(PIXEL_LOSSES)}")
    return PIXEL_LOSSES[name]()
