"""Interpolation: the SR methods with nothing to learn. MATLAB bicubic (``imresize``, antialiased, our
``image_ops.imresize``) is every SR table's baseline; nearest neighbour, bilinear and Lanczos-3 are the other rows
of the classical interpolation family.

Nearest and bilinear are torch's ``F.interpolate`` (``align_corners=False``: output pixel centres at
(i + 0.5)/s − 0.5 in input pixels, MATLAB's and OpenCV's convention); Lanczos-3 is MATLAB's
``imresize(x, s, 'lanczos3')``, built here on the same contribution scheme as ``image_ops.imresize`` (which knows
only the cubic kernel): ``imresize_kernel`` takes any MATLAB kernel, and with the cubic one it reproduces
``image_ops.imresize`` exactly (tests/test_classical_sr.py checks it).

Every row works on the image in its own colours (``channels = "any"``): interpolation is linear and per channel,
so the Y of the interpolated RGB image is the interpolated Y (up to the 8-bit rounding the protocol applies), and
the colour image in the row is the method's own rather than a Y result with bicubic chroma.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import torch
import torch.nn.functional as F

from datamodules.image_ops import bicubic_upsample
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

EPS = 2.220446049250313e-16  # MATLAB's eps, which its lanczos kernels add to avoid 0/0 at x = 0


def lanczos3(x: torch.Tensor) -> torch.Tensor:
    """MATLAB's ``lanczos3``: sinc(x)·sinc(x/3) on |x| < 3, written as MATLAB writes it."""
    f = (torch.sin(math.pi * x) * torch.sin(math.pi * x / 3) + EPS) / (math.pi ** 2 * x * x / 3 + EPS)
    return f * (x.abs() < 3)


def lanczos2(x: torch.Tensor) -> torch.Tensor:
    """MATLAB's ``lanczos2``: sinc(x)·sinc(x/2) on |x| < 2."""
    f = (torch.sin(math.pi * x) * torch.sin(math.pi * x / 2) + EPS) / (math.pi ** 2 * x * x / 2 + EPS)
    return f * (x.abs() < 2)


def cubic(x: torch.Tensor) -> torch.Tensor:
    """MATLAB's ``cubic`` (Keys, a = -0.5)."""
    ax = x.abs()
    return ((1.5 * ax ** 3 - 2.5 * ax ** 2 + 1) * (ax <= 1)
            + (-0.5 * ax ** 3 + 2.5 * ax ** 2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def triangle(x: torch.Tensor) -> torch.Tensor:
    """MATLAB's ``triangle`` (bilinear)."""
    return (x + 1) * ((-1 <= x) & (x < 0)) + (1 - x) * ((0 <= x) & (x <= 1))


KERNELS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], float]] = {
    "lanczos3": (lanczos3, 6.0), "lanczos2": (lanczos2, 4.0), "cubic": (cubic, 4.0), "triangle": (triangle, 2.0)}


@lru_cache(maxsize=64)
def _contributions(in_len: int, out_len: int, scale: float, kernel: str, antialias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """MATLAB ``imresize``'s ``contributions`` for a named kernel: (indices into the unpadded input, weights),
    both out_len×P, mirror padding folded into the indices."""
    h, width = KERNELS[kernel]
    widen = antialias and scale < 1
    width = width / scale if widen else width
    u = torch.arange(1, out_len + 1, dtype=torch.float64) / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - width / 2)
    idx = left[:, None] + torch.arange(math.ceil(width) + 2, dtype=torch.float64)[None, :]
    dist = u[:, None] - idx
    weights = scale * h(dist * scale) if widen else h(dist)
    weights = weights / weights.sum(dim=1, keepdim=True)
    keep = weights.abs().sum(dim=0) > 0
    idx, weights = idx[:, keep], weights[:, keep]
    zero_based = (idx - 1).long() % (2 * in_len)
    zero_based = torch.where(zero_based < in_len, zero_based, 2 * in_len - 1 - zero_based)
    return zero_based, weights


def _resize_dim(x: torch.Tensor, dim: int, out_len: int, scale: float, kernel: str, antialias: bool) -> torch.Tensor:
    idx, w = _contributions(x.shape[dim], out_len, scale, kernel, antialias)
    taps = x.index_select(dim, idx.flatten().to(x.device))
    w = w.to(device=x.device, dtype=x.dtype)
    if dim == -2:
        return torch.einsum("...opw,op->...ow", taps.unflatten(-2, idx.shape), w)
    return torch.einsum("...hop,op->...ho", taps.unflatten(-1, idx.shape), w)


def imresize_kernel(x: torch.Tensor, scale: float | None = None, size: tuple[int, int] | None = None,
                    kernel: str = "lanczos3", antialias: bool = True) -> torch.Tensor:
    """MATLAB ``imresize(x, scale, kernel)`` on the last two dimensions (height first, then width, as MATLAB does
    for equal factors); ``kernel`` one of ``KERNELS``. No clipping or rounding."""
    if kernel not in KERNELS:
        raise ValueError(f"imresize_kernel: kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
    if (scale is None) == (size is None):
        raise ValueError("imresize_kernel needs exactly one of scale= or size=")
    in_h, in_w = x.shape[-2:]
    if size is None:
        size, scale_h, scale_w = (math.ceil(in_h * scale), math.ceil(in_w * scale)), float(scale), float(scale)
    else:
        scale_h, scale_w = size[0] / in_h, size[1] / in_w
    out = x if x.is_floating_point() else x.float()
    out = _resize_dim(out, -2, size[0], scale_h, kernel, antialias)
    return _resize_dim(out, -1, size[1], scale_w, kernel, antialias)


class Lanczos(Restorer):
    """Lanczos-3: MATLAB ``imresize(LR, s, 'lanczos3')`` (windowed sinc over 6 LR pixels, weights normalised to sum
    1, mirror padding). It keeps more of the LR's highest frequencies than bicubic, at the cost of more ringing."""

    label, task, channels = "Lanczos-3", "sr", "any"

    def run(self, pair: dict, what: str) -> torch.Tensor:
        lr, s = pair["degraded"], pair_scale(pair)
        return imresize_kernel(lr, size=(lr.shape[-2] * s, lr.shape[-1] * s), kernel="lanczos3")
