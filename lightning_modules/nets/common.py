"""Pieces shared by several nets: the no-BN residual block, He initialisation, and the bookkeeping
behind every net's ``receptive_field``.

Receptive fields are computed as a *reach*: the largest distance, in input pixels between pixel
centres, from an output pixel to an input pixel it depends on. A 'same' k×k conv working at a
resolution f times coarser than the input adds f·(k//2); a resampling step adds the largest offset
between a pixel centre and the centres it reads at the other resolution. Summing these along the
longest path through the net bounds the reach from above, so the claimed window is conservative.
"""
from __future__ import annotations

import math

from torch import nn

# MATLAB bicubic ×1/2 (antialiased, 8 taps): a coarse pixel reads fine centres up to 3.5 fine pixels away.
BICUBIC_HALVING_REACH = 3.5


def receptive_width(reach: float) -> int:
    """Full width of the window holding every input pixel centre within ``reach`` of an output pixel centre.

    At most floor(2·reach) + 1 input centres fit in an interval of length 2·reach, wherever the output
    centre falls (for SR nets it falls between input centres).
    """
    return math.floor(2 * reach) + 1


def pyramid_reach(level: int) -> float:
    """Reach of level ``level`` of ``datamodules.degradations.image_pyramid(x, ·)`` into x, in pixels of x."""
    return BICUBIC_HALVING_REACH * (2**level - 1)


def pixel_shuffle_reach(factor: int) -> float:
    """Reach of ``nn.PixelShuffle(factor)`` in coarse pixels: a fine pixel comes from the coarse pixel it lies in."""
    return (factor - 1) / (2 * factor)


def he_init_(net: nn.Module) -> None:
    """He-normal weights and zero biases for every conv: what VDSR and DnCNN train from (plain ReLU stacks)."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ResBlock(nn.Module):
    """x + conv(ReLU(conv(x))), no normalisation: the block of DeepDeblur and SRN-DeblurNet."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2),
        )

    def forward(self, x):
        return x + self.body(x)
