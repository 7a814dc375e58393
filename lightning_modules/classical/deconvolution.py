"""Non-blind deconvolution with the known kernel of the pair (``degradation(pair, "kernel", ...)``: ``KernelBlur``
pairs carry it; ``MotionBlur`` and GoPro pairs do not, and get the one-line error), per channel, in float64 on the
CPU (scikit-image):

    Wiener               ``restoration.wiener(image, psf, balance)``: the Wiener–Hunt deconvolution, a
                         Laplacian regulariser weighted by ``balance`` (the free parameter).
    UnsupervisedWiener   ``restoration.unsupervised_wiener(image, psf, rng=...)`` (Orieux, Giovannelli & Rodet,
                         JOSA A 2010): the same model, balance and noise level estimated by a Gibbs sampler, seeded
                         (``seed``) so that a run is deterministic.
    RichardsonLucy       ``restoration.richardson_lucy(image, psf, num_iter)`` (Richardson 1972, Lucy 1974);
                         ``num_iter`` the free parameter (early stopping is its only regularisation).

Boundaries: the recipe blurs with reflect borders, whereas skimage's Wiener filters work in the Fourier domain
(circular: the left edge blurs into the right) and its Richardson–Lucy convolves with zeros outside. So the Wiener
filters deconvolve the image extended by reflection to (2H-2)×(2W-2), which is periodic and whose circular blur
is exactly the recipe's reflect-border blur (checked to 1e-7), and keep its first H×W; Richardson–Lucy deconvolves
the image reflect-padded by the kernel's size K on every side and crops the frame. Measured on the first five
BSD200 images (KernelBlur: camera shake 31×31, σ = 2.55; blurred input 24.67 dB), mean PSNR without / reflect pad
by K / whole-image mirror extension: Wiener balance 0.01 24.16 / 25.66 / 26.45, balance 0.03 25.07 / 26.74 /
27.07 dB (0.1: pad 27.16, mirror 27.22), unsupervised Wiener 23.70 / 25.21 / 25.94 dB, Richardson–Lucy 30
iterations 19.07 / 27.62 dB / — (its zero border must lie outside the image on every side). ``pad=false`` gives the
library's own boundaries back, for that comparison.

Richardson–Lucy needs a non-negative image, so its input is clipped to [0, 1] first (the noisy pair is not); the
Wiener filters take it unclipped. Outputs are clipped to [-1, 1] by skimage (``clip=True``) and rounded to 8 bit
by the protocol. Kernels are taken as the recipe applies them: true convolution, centred on pixel K//2 (odd K).
"""
from __future__ import annotations

import numpy as np
import torch

from datamodules.errors import AnticipatedError
from lightning_modules.classical import degradation
from lightning_modules.classical.filters import check_positive
from lightning_modules.restorer import Restorer


def mirror_extend(image: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """H×W extended by reflection to (2H-2)×(2W-2): a periodic image whose circular convolution with a kernel
    narrower than it is exactly the recipe's reflect-border convolution of the original, which lies at offset 0."""
    h, w = image.shape
    return np.pad(image, ((0, h - 2), (0, w - 2)), mode="reflect"), 0


def reflect_pad(image: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """H×W mirrored by ``k`` pixels on every side, the edge pixel not repeated (torch's "reflect", the recipe's),
    the original at offset ``k``."""
    return np.pad(image, k, mode="reflect"), k


def check_flag(owner: str, option: str, value) -> bool:
    if not isinstance(value, bool):
        raise AnticipatedError(f"{owner}: {option}={value!r} must be true or false")
    return value


class Deconvolution(Restorer):
    """Per image, per channel: extend by reflection (``extend``; ``pad`` false: the library's own boundaries, for
    comparison), ``deconvolve``, crop back."""

    task, channels = "deblur", "any"
    clip_input = False
    pad = True
    extend = staticmethod(mirror_extend)

    def deconvolve(self, image: np.ndarray, psf: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def channel(self, image: np.ndarray, psf: np.ndarray) -> np.ndarray:
        """One H×W channel restored, extended and cropped as ``extend`` says."""
        if not self.pad:
            return self.deconvolve(image, psf)
        h, w = image.shape
        extended, at = self.extend(image, max(psf.shape))
        return self.deconvolve(extended, psf)[at:at + h, at:at + w]

    def run(self, pair: dict, what: str) -> torch.Tensor:
        degraded = pair["degraded"]
        kernels = torch.as_tensor(degradation(pair, "kernel", self, what))
        kernels = kernels.expand(len(degraded), *kernels.shape[-2:]) if kernels.ndim == 2 else kernels
        out = []
        for image, kernel in zip(degraded, kernels):
            psf = kernel.detach().cpu().double().numpy()
            array = image.detach().cpu().double().numpy()
            array = np.clip(array, 0, 1) if self.clip_input else array
            out.append(np.stack([self.channel(c, psf) for c in array]))
        return torch.from_numpy(np.stack(out)).to(degraded.dtype).to(degraded.device)


class Wiener(Deconvolution):
    """Wiener–Hunt deconvolution, Laplacian regulariser weighted by ``balance``."""

    def __init__(self, balance: float = 0.03, pad: bool = True):
        self.balance = check_positive("Wiener", "balance", balance)
        self.pad = check_flag("Wiener", "pad", pad)
        self.label = f"Wiener balance={self.balance:g}"

    def deconvolve(self, image, psf):
        from skimage.restoration import wiener

        return wiener(image, psf, self.balance)


class UnsupervisedWiener(Deconvolution):
    """Wiener–Hunt with the balance sampled from its posterior (Gibbs), from ``np.random.default_rng(seed)``
    afresh for every channel, so that the same input always gives the same output."""

    def __init__(self, seed: int = 0, pad: bool = True):
        self.pad = check_flag("UnsupervisedWiener", "pad", pad)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise AnticipatedError(f"UnsupervisedWiener: seed={seed!r} must be a non-negative integer")
        self.seed = seed
        self.label = "Unsupervised Wiener"

    def deconvolve(self, image, psf):
        from skimage.restoration import unsupervised_wiener

        return unsupervised_wiener(image, psf, rng=np.random.default_rng(self.seed))[0]


class RichardsonLucy(Deconvolution):
    """``num_iter`` multiplicative Richardson–Lucy updates from a flat 0.5 image, on the input clipped to [0, 1]
    and reflect-padded by K (its convolutions are spatial, zeros outside: the image must lie K inside them)."""

    clip_input = True
    extend = staticmethod(reflect_pad)

    def __init__(self, num_iter: int = 30, pad: bool = True):
        self.num_iter = check_positive("RichardsonLucy", "num_iter", num_iter, integer=True)
        self.pad = check_flag("RichardsonLucy", "pad", pad)
        self.label = f"Richardson–Lucy {self.num_iter} iterations"

    def deconvolve(self, image, psf):
        from skimage.restoration import richardson_lucy

        return richardson_lucy(image, psf, num_iter=self.num_iter)
