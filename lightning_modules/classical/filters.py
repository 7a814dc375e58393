"""Local denoising filters (kornia, on the pair's tensor as it is, reflect borders): the Gaussian low-pass, the
median filter, the bilateral filter (Tomasi & Manduchi, ICCV 1998) and the self-guided filter (He et al., ECCV
2010 / TPAMI 2013).

    GaussianFilter   kornia.filters.gaussian_blur2d, kernel 2⌈3σ⌉+1
    MedianFilter     kornia.filters.median_blur
    BilateralFilter  kornia.filters.bilateral_blur (L1 colour distance between the channels of a colour image)
    GuidedFilter     kornia.filters.guided_blur with the input as its own guide (He et al.'s colour guide for RGB)

What differs from the papers: nothing in the filters themselves; the noisy input is filtered unclipped (values may
lie outside [0, 1]), as the nets receive it, and the free parameters are chosen per σ on validation images
(``restorelab tune``), not set by hand per image. Filter σ and radii are in pixels, σ_color and ε on the 0..1
intensity scale (ε is a variance: (σ/255)² is the natural order of magnitude).
"""
from __future__ import annotations

import math

import torch

from datamodules.errors import AnticipatedError
from lightning_modules.restorer import Restorer


def check_positive(owner: str, option: str, value, integer: bool = False, odd: bool = False):
    """``value`` if it is a positive number (an integer, an odd one where asked), else one line naming it."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if (not number or not value > 0 or not math.isfinite(value) or (integer and value != int(value))
            or (odd and int(value) % 2 == 0)):
        kind = "a positive odd integer" if odd else "a positive integer" if integer else "positive"
        raise AnticipatedError(f"{owner}: {option}={value!r} must be {kind}")
    return int(value) if integer else float(value)


class GaussianFilter(Restorer):
    """Gaussian smoothing of σ pixels (kornia, reflect borders)."""

    task, channels = "denoise", "any"

    def __init__(self, sigma: float = 1.0):
        self.sigma = check_positive("GaussianFilter", "sigma", sigma)
        self.kernel_size = 2 * math.ceil(3 * self.sigma) + 1
        self.label = f"Gaussian filter σ={self.sigma:g}"

    def run(self, pair: dict, what: str) -> torch.Tensor:
        from kornia.filters import gaussian_blur2d

        return gaussian_blur2d(pair["degraded"], (self.kernel_size,) * 2, (self.sigma, self.sigma), border_type="reflect")


class MedianFilter(Restorer):
    """The median of each ``kernel_size``² window, per channel (kornia, reflect borders)."""

    task, channels = "denoise", "any"

    def __init__(self, kernel_size: int = 3):
        self.kernel_size = check_positive("MedianFilter", "kernel_size", kernel_size, integer=True, odd=True)
        self.label = f"Median filter {self.kernel_size}×{self.kernel_size}"

    def run(self, pair: dict, what: str) -> torch.Tensor:
        from kornia.filters import median_blur

        return median_blur(pair["degraded"], self.kernel_size, border_type="reflect")


class BilateralFilter(Restorer):
    """Gaussian weights in space (σ_space pixels) times Gaussian weights in intensity (σ_color, 0..1 scale), over a
    ``kernel_size``² window (default 2⌈2σ_space⌉+1: the spatial weight beyond 2σ is under e⁻², and the cost grows
    with the window's area)."""

    task, channels = "denoise", "any"

    def __init__(self, sigma_color: float = 0.3, sigma_space: float = 1.5, kernel_size: int | None = None):
        self.sigma_color = check_positive("BilateralFilter", "sigma_color", sigma_color)
        self.sigma_space = check_positive("BilateralFilter", "sigma_space", sigma_space)
        self.kernel_size = (2 * math.ceil(2 * self.sigma_space) + 1 if kernel_size is None else
                            check_positive("BilateralFilter", "kernel_size", kernel_size, integer=True, odd=True))
        self.label = f"Bilateral filter σ_color={self.sigma_color:g}, σ_space={self.sigma_space:g}"

    def run(self, pair: dict, what: str) -> torch.Tensor:
        from kornia.filters import bilateral_blur

        return bilateral_blur(pair["degraded"], self.kernel_size, self.sigma_color, (self.sigma_space,) * 2,
                              border_type="reflect")


class GuidedFilter(Restorer):
    """The guided filter with the noisy image as its own guide: in each (2r+1)² window the output is the linear
    fit a·I + b of the input to the guide, ε the ridge on a (edges with local variance ≫ ε are kept)."""

    task, channels = "denoise", "any"

    def __init__(self, radius: int = 1, eps: float = 0.1):
        self.radius = check_positive("GuidedFilter", "radius", radius, integer=True)
        self.eps = check_positive("GuidedFilter", "eps", eps)
        self.kernel_size = 2 * self.radius + 1
        self.label = f"Guided filter r={self.radius}, ε={self.eps:g}"

    def run(self, pair: dict, what: str) -> torch.Tensor:
        from kornia.filters import guided_blur

        image = pair["degraded"]
        return guided_blur(image, image, self.kernel_size, self.eps, border_type="reflect")
