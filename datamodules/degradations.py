"""Degradations, batched and device-agnostic: every function takes N×C×H×W float tensors in [0, 1]
on any device and returns tensors on the same device.

The MATLAB-exact ``imresize`` lives here because every SR number in the literature is measured against
it: cubic kernel with a = -0.5, kernel widened by 1/scale when shrinking (antialiasing), symmetric
(mirror) padding, output size ``ceil(in * scale)``.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch


def _cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))


@lru_cache(maxsize=64)
def _contributions(in_len: int, out_len: int, scale: float, antialias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (out_len×P, into the unpadded input) and weights (out_len×P) of MATLAB's
    ``contributions``: mirror padding is folded into the indices, so no padded copy is ever made."""
    kernel_width = 4.0
    widen = antialias and scale < 1
    if widen:
        kernel_width /= scale
    out = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = out / scale + 0.5 * (1 - 1 / scale)  # output pixel centre in input coordinates (1-based)
    left = torch.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    dist = u[:, None] - idx
    weights = scale * _cubic(dist * scale) if widen else _cubic(dist)
    weights = weights / weights.sum(dim=1, keepdim=True)
    keep = weights.abs().sum(dim=0) > 0  # MATLAB drops all-zero columns; it changes nothing but work
    idx, weights = idx[:, keep], weights[:, keep]
    # symmetric padding: ..., 2, 1 | 1, 2, ..., n | n, n-1, ...
    zero_based = (idx - 1).long() % (2 * in_len)
    zero_based = torch.where(zero_based < in_len, zero_based, 2 * in_len - 1 - zero_based)
    return zero_based, weights


def _resize_dim(x: torch.Tensor, dim: int, out_len: int, scale: float, antialias: bool) -> torch.Tensor:
    idx, w = _contributions(x.shape[dim], out_len, scale, antialias)
    idx = idx.to(x.device)
    w = w.to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float32)
    x = x.movedim(dim, -1)
    gathered = x[..., idx]  # ... × out_len × P
    return (gathered * w).sum(-1).movedim(-1, dim)


def imresize(x: torch.Tensor, scale: float | None = None, size: tuple[int, int] | None = None,
             antialias: bool = True) -> torch.Tensor:
    """MATLAB ``imresize(x, scale, 'bicubic')`` on the last two dimensions of ``x`` (any leading dims).

    Give ``scale`` (one factor for both sides) or the output ``size`` (H, W). Height is resized
    first, then width, as MATLAB does for equal factors. No clipping or rounding happens here.
    """
    if (scale is None) == (size is None):
        raise ValueError("imresize needs exactly one of scale= or size=")
    in_h, in_w = x.shape[-2:]
    if size is None:
        if scale <= 0:
            raise ValueError(f"imresize scale must be positive, got {scale}")
        size = (math.ceil(in_h * scale), math.ceil(in_w * scale))
        scale_h = scale_w = float(scale)
    else:
        scale_h, scale_w = size[0] / in_h, size[1] / in_w
    out = x.float() if not x.is_floating_point() else x
    out = _resize_dim(out, -2, size[0], scale_h, antialias)
    return _resize_dim(out, -1, size[1], scale_w, antialias)


def bicubic_downsample(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """LR = MATLAB ``imresize(HR, 1/scale)``; HR sides must be multiples of ``scale`` (see mod_crop)."""
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"bicubic_downsample: size {h}x{w} is not a multiple of scale {scale}; mod_crop first")
    return imresize(hr, size=(h // scale, w // scale))


def bicubic_upsample(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB ``imresize(LR, scale)``: the interpolation baseline that SRCNN/VDSR-style nets refine."""
    h, w = lr.shape[-2:]
    return imresize(lr, size=(h * scale, w * scale))


def mod_crop(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop the bottom/right so that both sides are multiples of ``scale`` (top-left kept, as in MATLAB)."""
    h, w = x.shape[-2:]
    return x[..., : h - h % scale, : w - w % scale]


def quantize(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Clip to [0, 1] and round to the nearest of 2**bits levels, as saving to an image file does."""
    levels = (1 << bits) - 1
    return torch.round(x.clamp(0, 1) * levels) / levels


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma in [16/255, 235/255], as MATLAB ``rgb2ycbcr``; N×3×H×W -> N×1×H×W.

    A one-channel input is returned unchanged: MATLAB scripts use a gray image directly as Y.
    """
    if x.shape[-3] == 1:
        return x
    if x.shape[-3] != 3:
        raise ValueError(f"rgb_to_y expects 1 or 3 channels, got {x.shape[-3]}")
    w = x.new_tensor([65.481, 128.553, 24.966]).view(3, 1, 1) / 255.0
    return (x * w).sum(dim=-3, keepdim=True) + 16.0 / 255.0


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """BT.601 Y, Cb, Cr, each scaled to [0, 1] like MATLAB ``rgb2ycbcr`` / 255."""
    m = x.new_tensor([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]) / 255.0
    off = x.new_tensor([16.0, 128.0, 128.0]).view(3, 1, 1) / 255.0
    return torch.einsum("ij,...jhw->...ihw", m, x) + off


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of ``rgb_to_ycbcr``."""
    m = x.new_tensor([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]) / 255.0
    off = x.new_tensor([16.0, 128.0, 128.0]).view(3, 1, 1) / 255.0
    return torch.einsum("ij,...jhw->...ihw", torch.linalg.inv(m), x - off)


def image_pyramid(x: torch.Tensor, levels: int, factor: int = 2) -> list[torch.Tensor]:
    """[x, x↓factor, x↓factor², ...], finest first, each level MATLAB-bicubic downsampled from the last.

    Multi-scale deblurring nets (DeepDeblur, SRN) take inputs and targets from here, so both sides of the
    loss are built the same way. Sides must be multiples of factor**(levels-1).
    """
    out = [x]
    for _ in range(levels - 1):
        out.append(bicubic_downsample(out[-1], factor))
    return out
