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

Boundaries (``boundary``): the recipe blurs with reflect borders, whereas skimage's Wiener filters work in the
Fourier domain (circular: the left edge blurs into the right) and its Richardson–Lucy convolves with zeros outside.
The Wiener filters get the image edge-tapered as MATLAB's ``edgetaper`` does ("taper": within a kernel's reach of
each border, blended into its own circular blur, weights from the PSF's autocorrelation), which makes it
consistent with a circular blur there; Richardson–Lucy gets it reflect-padded by the kernel's size K on every side,
the frame cropped after ("reflect"). Mirroring does not make the Wiener model exact: a mirrored blurred image is
the mirrored image blurred by the *flipped* kernel, which for camera shake is another kernel. Measured on the first
ten BSD200 images (validation, never test; KernelBlur: camera shake 31×31, σ = 2.55; blurred input 25.06 dB), mean
PSNR with none / reflect / taper / reflect then taper: Wiener balance 0.03 25.87 / 26.95 / 28.55 / 27.83 dB,
balance 0.1 26.41 / 27.40 / 28.09 / 27.82, balance 0.3 26.53 / 27.31 / 27.47 / 27.49, unsupervised Wiener 24.39 /
25.45 / 28.48 / 27.02 (taper the only one never below the blurred input), Richardson–Lucy 20 iterations 19.15 /
28.03 / — / 28.03. ``boundary="none"`` gives the library's own boundaries back, for that comparison.

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

BOUNDARIES = ("taper", "reflect", "none")


def circular_blur(image: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """``image`` ⊛ ``psf`` with periodic borders, the PSF centred on its pixel K//2 (skimage's ``ir2tf`` convention)."""
    support = np.zeros(image.shape)
    support[:psf.shape[0], :psf.shape[1]] = psf
    support = np.roll(support, (-(psf.shape[0] // 2), -(psf.shape[1] // 2)), axis=(0, 1))
    return np.fft.irfft2(np.fft.rfft2(support) * np.fft.rfft2(image), s=image.shape)


def edgetaper(image: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """MATLAB's ``edgetaper``: α·image + (1-α)·(image ⊛ psf, circular), α = (1-β_y)(1-β_x)ᵀ, β the circular
    autocorrelation of the PSF's projection on each axis (length n-1, then its first value again), scaled to peak 1:
    0 at the borders, 1 beyond the kernel's reach."""
    weights = []
    for axis, n in enumerate(image.shape):
        projection = psf.sum(axis=1 - axis)
        beta = np.real(np.fft.ifft(np.abs(np.fft.fft(projection, n - 1)) ** 2))
        beta = np.append(beta, beta[0])
        weights.append(1 - beta / beta.max())
    alpha = np.outer(*weights)
    return alpha * image + (1 - alpha) * circular_blur(image, psf)


class Deconvolution(Restorer):
    """Per image, per channel: the boundary treatment (``boundary``), ``deconvolve``, crop back."""

    task, channels = "deblur", "any"
    clip_input = False

    def __init__(self, boundary: str):
        if boundary not in BOUNDARIES:
            raise AnticipatedError(f"{type(self).__name__}: boundary={boundary!r} must be one of {', '.join(BOUNDARIES)}")
        self.boundary = boundary

    def deconvolve(self, image: np.ndarray, psf: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def channel(self, image: np.ndarray, psf: np.ndarray) -> np.ndarray:
        """One H×W channel restored."""
        if self.boundary == "taper":
            return self.deconvolve(edgetaper(image, psf), psf)
        if self.boundary == "reflect":  # mirrored without repeating the edge pixel, as the recipe's padding
            k, (h, w) = max(psf.shape), image.shape
            return self.deconvolve(np.pad(image, k, mode="reflect"), psf)[k:k + h, k:k + w]
        return self.deconvolve(image, psf)

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

    def __init__(self, balance: float = 0.03, boundary: str = "taper"):
        super().__init__(boundary)
        self.balance = check_positive("Wiener", "balance", balance)
        self.label = f"Wiener balance={self.balance:g}"

    def deconvolve(self, image, psf):
        from skimage.restoration import wiener

        return wiener(image, psf, self.balance)


class UnsupervisedWiener(Deconvolution):
    """Wiener–Hunt with the balance sampled from its posterior (Gibbs), from ``np.random.default_rng(seed)``
    afresh for every channel, so that the same input always gives the same output."""

    def __init__(self, seed: int = 0, boundary: str = "taper"):
        super().__init__(boundary)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise AnticipatedError(f"UnsupervisedWiener: seed={seed!r} must be a non-negative integer")
        self.seed = seed
        self.label = "Unsupervised Wiener"

    def deconvolve(self, image, psf):
        from skimage.restoration import unsupervised_wiener

        return unsupervised_wiener(image, psf, rng=np.random.default_rng(self.seed))[0]


class RichardsonLucy(Deconvolution):
    """``num_iter`` multiplicative Richardson–Lucy updates from a flat 0.5 image, on the input clipped to [0, 1]
    and reflect-padded by K (its convolutions are spatial with zeros outside: the image must lie K inside them)."""

    clip_input = True

    def __init__(self, num_iter: int = 20, boundary: str = "reflect"):
        super().__init__(boundary)
        self.num_iter = check_positive("RichardsonLucy", "num_iter", num_iter, integer=True)
        self.label = f"Richardson–Lucy {self.num_iter} iterations"

    def deconvolve(self, image, psf):
        from skimage.restoration import richardson_lucy

        return richardson_lucy(image, psf, num_iter=self.num_iter)
