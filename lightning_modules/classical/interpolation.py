"""Interpolation: the SR methods with nothing to learn. MATLAB bicubic (``imresize``, antialiased, our
``image_ops.imresize``) is every SR table's baseline; nearest neighbour, bilinear and Lanczos-3 are the other rows
of the classical interpolation family.

Nearest and bilinear are torch's ``F.interpolate`` (``align_corners=False``: output pixel centres at
(i + 0.5)/s − 0.5 in input pixels, MATLAB's and OpenCV's convention); Lanczos-3 is MATLAB's
``imresize(x, s, 'lanczos3')``: ``image_ops.imresize`` with the kernel named (the same contribution scheme as its
bicubic).

Every row works on the image in its own colours (``channels = "any"``): interpolation is linear and per channel,
so the Y of the interpolated RGB image is the interpolated Y (up to the 8-bit rounding the protocol applies), and
the colour image in the row is the method's own rather than a Y result with bicubic chroma.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from datamodules.image_ops import bicubic_upsample, imresize
from lightning_modules.restorer import Restorer, pair_scale


class Bicubic(Restorer):
    """MATLAB ``imresize(LR, s)``: the SR baseline (the recipe's ``upsampled`` where it made one, the same
    function on the same LR)."""

    label, task, channels = "Bicubic", "sr", "any"

    def run(self, pair: dict, what: str) -> torch.Tensor:
        return pair["upsampled"] if "upsampled" in pair else bicubic_upsample(pair["degraded"], pair_scale(pair))


class Nearest(Restorer):
    """Nearest-neighbour interpolation: at an integer factor s, pixel replication (every LR pixel becomes an
    s×s block), ``F.interpolate(mode="nearest")``; the block is centred where the bicubic downsampling centred the
    LR pixel, so nothing shifts."""

    label, task, channels = "Nearest neighbour", "sr", "any"

    def run(self, pair: dict, what: str) -> torch.Tensor:
        lr, s = pair["degraded"], pair_scale(pair)
        return F.interpolate(lr, size=(lr.shape[-2] * s, lr.shape[-1] * s), mode="nearest")


class Bilinear(Restorer):
    """Bilinear interpolation: each output pixel the distance-weighted mean of its 2×2 nearest LR pixels (the
    triangle kernel), ``F.interpolate(mode="bilinear", align_corners=False)``, edge pixels repeated outside the
    image. On upscaling this is MATLAB's ``imresize(x, s, 'bilinear')`` too (its mirror padding and torch's
    clamping agree for a kernel of width 2) and OpenCV's ``INTER_LINEAR``."""

    label, task, channels = "Bilinear", "sr", "any"

    def run(self, pair: dict, what: str) -> torch.Tensor:
        lr, s = pair["degraded"], pair_scale(pair)
        return F.interpolate(lr, size=(lr.shape[-2] * s, lr.shape[-1] * s), mode="bilinear", align_corners=False)


# ------------------------------------------------------------------------------ MATLAB imresize, any kernel

class Lanczos(Restorer):
    """Lanczos-3: MATLAB ``imresize(LR, s, 'lanczos3')`` (windowed sinc over 6 LR pixels, weights normalised to sum
    1, mirror padding). It keeps more of the LR's highest frequencies than bicubic, at the cost of more ringing."""

    label, task, channels = "Lanczos-3", "sr", "any"

    def run(self, pair: dict, what: str) -> torch.Tensor:
        lr, s = pair["degraded"], pair_scale(pair)
        return imresize(lr, size=(lr.shape[-2] * s, lr.shape[-1] * s), kernel="lanczos3")
