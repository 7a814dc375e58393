"""Texture statistics that need no learned weights, to show what an adversarial loss changes.

An MSE-trained net predicts the mean of the plausible images, which lacks their high-frequency energy and
their sharp gradients; a GAN output puts that energy back (not necessarily at the right places, which PSNR
punishes). The radial power spectrum and the distribution of gradient magnitudes measure that energy
whether or not it is aligned with the target. Inputs are single images, 1×C×H×W (C = 1 or 3) in [0, 1];
statistics are taken on the luma Y of ``datamodules.image_ops.rgb_to_y`` (BT.601, [16, 235]/255 for RGB; a gray
image is used as it is, as everywhere in the suite), in float64.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.stats import wasserstein_distance

from datamodules.errors import AnticipatedError
from datamodules.image_ops import rgb_to_y

LOG_EPS = 1e-10  # floor of the power before log10: a flat or band-limited image has rings of zero power


def luma(img: torch.Tensor) -> torch.Tensor:
    if img.ndim != 4 or img.shape[0] != 1 or img.shape[1] not in (1, 3):
        raise AnticipatedError(f"texture statistics take one 1×1×H×W or 1×3×H×W image, got shape {tuple(img.shape)}")
    return rgb_to_y(img.detach().double().cpu())[0, 0]


def radial_power_spectrum(img: torch.Tensor) -> torch.Tensor:
    """log10 of the mean power |F|² of the luma's 2-D DFT on rings of integer radius r = 0 .. min(H, W)//2.

    Radius r is the frequency √(fy² + fx²) in units of 1/min(H, W) cycles per pixel, rounded (so r = min//2 is
    the Nyquist frequency of the shorter side; the corners beyond it are left out). The power is divided by
    the window's Σw², which makes it the per-frequency variance: white noise of variance σ² gives log10 σ² at
    every ring, whatever the image size.
    """
    y = luma(img)
    h, w = y.shape
    # Without a window the DFT sees the image as periodic, and the jump between opposite borders adds a
    # cross of energy along both frequency axes at every radius, hiding the texture's own spectrum; the mean
    # is subtracted first so that the DC term does not leak through the window's own spectrum.
    window = torch.outer(torch.hann_window(h, periodic=False, dtype=y.dtype),
                         torch.hann_window(w, periodic=False, dtype=y.dtype))
    power = torch.fft.fft2((y - y.mean()) * window).abs().square() / window.square().sum()
    side = min(h, w)
    fy, fx = torch.fft.fftfreq(h, dtype=y.dtype), torch.fft.fftfreq(w, dtype=y.dtype)
    radius = torch.round(torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2) * side).long()
    keep = radius <= side // 2
    sums = torch.bincount(radius[keep], weights=power[keep], minlength=side // 2 + 1)
    counts = torch.bincount(radius[keep], minlength=side // 2 + 1)
    return torch.log10(sums / counts + LOG_EPS)


def spectrum_distance(out: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over the rings r = ⌈R/2⌉ .. R (R = min(H, W)//2, i.e. 0.25 to 0.5 cycles per pixel) of
    |S_out(r) − S_target(r)|, S = ``radial_power_spectrum``: in decades of power, 0 for equal spectra.
    The images must have the same size."""
    if out.shape[-2:] != target.shape[-2:]:
        raise AnticipatedError(f"spectrum_distance needs images of one size, got {tuple(out.shape)} and "
                               f"{tuple(target.shape)}")
    a, b = radial_power_spectrum(out), radial_power_spectrum(target)
    high = slice(len(a) // 2, None)  # len = R + 1, so len // 2 = ⌈R/2⌉
    return float((a[high] - b[high]).abs().mean())


def gradient_magnitudes(img: torch.Tensor) -> np.ndarray:
    """√(dx² + dy²) of forward differences of the luma, on the (H−1)×(W−1) pixels that have both."""
    y = luma(img)
    dx, dy = y[:-1, 1:] - y[:-1, :-1], y[1:, :-1] - y[:-1, :-1]
    return torch.sqrt(dx * dx + dy * dy).flatten().numpy()


def gradient_histogram_distance(out: torch.Tensor, target: torch.Tensor) -> float:
    """1-D Wasserstein-1 distance (``scipy.stats.wasserstein_distance``) between the distributions of the two
    images' gradient magnitudes: the area between their cumulative histograms, exact (no bins, so no bin edges
    to choose), in luma units per pixel; 0 for equal distributions, and the images may differ in size.
    A flat image against a ramp of slope a per pixel gives a."""
    return float(wasserstein_distance(gradient_magnitudes(out), gradient_magnitudes(target)))
