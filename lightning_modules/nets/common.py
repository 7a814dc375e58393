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
from collections.abc import Sequence

from torch import nn

from datamodules.errors import AnticipatedError

# how a net's options are written on the command line and in configs (model.init_args.net is the net)
NET_OPTION = "model.init_args.net.init_args"

# MATLAB bicubic ×1/2 (antialiased, 8 taps): a coarse pixel reads fine centres up to 3.5 fine pixels away.
BICUBIC_HALVING_REACH = 3.5


def receptive_width(reach: float) -> int:
    """Full width of the window holding every input pixel centre within ``reach`` of an output pixel centre.

    At most floor(2·reach) + 1 input centres fit in an interval of length 2·reach, wherever the output
    centre falls (for SR nets it falls between input centres).
    """
    return math.floor(2 * reach) + 1


def pyramid_reach(level: int) -> float:
    """Reach of level ``level`` of ``datamodules.image_ops.image_pyramid(x, ·)`` into x, in pixels of x."""
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


# ---------------------------------------------------------------------------------------- option checks
# Every net checks its sizes here, before torch sees them (torch would fail deep inside a conv, or build a net
# that runs but cannot learn): one line naming the option as the user writes it, e.g.
# `model.init_args.net.init_args.filters=[0, 4]: every entry must be an integer >= 1`.
SAME_PADDING = "'same' padding keeps the image size only with odd kernels"


def bad_option(name: str, value, need: str) -> AnticipatedError:
    shown = list(value) if isinstance(value, tuple) else value
    return AnticipatedError(f"{NET_OPTION}.{name}={shown}: {need}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value, minimum: int = 1, net: str = "") -> None:
    """An integer option >= minimum (features, depth, blocks, scales)."""
    if not _is_int(value) or value < minimum:
        raise bad_option(name, value, f"{net + ' needs ' if net else 'must be '}an integer >= {minimum}")


def check_ints(name: str, values, minimum: int = 1, odd: bool = False, net: str = "") -> None:
    """A non-empty list of integers >= minimum (filter counts; kernel sizes with odd=True)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise bad_option(name, values, "must be a non-empty list of integers")
    for v in values:
        if not _is_int(v) or v < minimum or (odd and v % 2 == 0):
            raise bad_option(name, values, f"every entry must be an {'odd ' if odd else ''}integer >= {minimum}"
                             + (f" ({SAME_PADDING})" if odd else "")
                             + (f" for {net}" if net else ""))


def check_kernel(name: str, value, net: str = "", why: str = SAME_PADDING) -> None:
    """An odd size >= 1: kernels (the nets pad by k // 2, which keeps the size only for odd k) and windows
    centred on their pixel."""
    if not _is_int(value) or value < 1 or value % 2 == 0:
        raise bad_option(name, value, f"must be an odd integer >= 1 ({why}){' for ' + net if net else ''}")


def check_channels(value, name: str = "channels") -> None:
    """Image channels: 1 (Y or gray) or 3 (RGB)."""
    if not _is_int(value) or value not in (1, 3):
        raise bad_option(name, value, "must be 1 (Y or gray) or 3 (RGB)")
