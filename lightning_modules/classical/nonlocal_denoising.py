"""Non-local denoisers, with the noise σ of the pair (``degradation(pair, "sigma", ...)``, never a config value):

    NonLocalMeans  non-local means (Buades, Coll & Morel, CVPR 2005): scikit-image
                   ``restoration.denoise_nl_means(image, patch_size, patch_distance, h, fast_mode, sigma)`` with
                   ``sigma`` = the pair's σ/255 and ``h`` = ``h_factor``·σ; colour images as one multichannel image
                   (``channel_axis``: the patch distance sums over the channels).
    BM3D           block matching and 3D filtering (Dabov et al., TIP 2007): ``bm3d.bm3d(z, σ/255, profile)`` on
                   gray images, ``bm3d.bm3d_rgb`` (CBM3D: opponent colour space, grouping on its luma) on colour,
                   single-threaded (``num_threads = 1``: deterministic to the last bit).

What differs: both run on the CPU in float64 on the noisy input as the pair holds it (unclipped); NL-means's ``h``
is a free factor chosen per σ on validation images (``restorelab tune``); skimage's ``sigma`` subtracts the
expected noise distance 2σ² from each patch distance (Buades et al. 2011's variant). BM3D is the ``bm3d`` package
(version 4, Mäkinen, Azzari & Foi 2020: the authors' compiled code, whose "np" profile is the default here), not
the 2007 MATLAB release behind the published tables: for a scalar σ it thresholds at λ = 3.0 (2007: 2.7), weights
its Wiener stage with μ² = 0.4 (2007: 1) and corrects the block matching and the coefficient variances (γ = 3,
k = 4; none in 2007, v4's "conventional mode" nf = 0), and the 2007 code used its "very noisy" parameters (profile
"vn_old" here) above σ = 40. Profiles: np, refilter, vn, vn_old, high, deb, lc (low complexity).

Measured (``restorelab benchmark --method bm3d``, gray, seed 0), σ = 15/25/50: Set12 32.39/29.98/26.73 dB, BSD68
31.14/28.62/25.68 dB; DnCNN (TIP 2017) reports 32.37/29.97/26.72 and 31.07/28.57/25.62. With the 2007 settings
above ("np", λ = 2.7, μ² = 1, nf = 0) the package gives Set12 32.33/29.91/26.70 and BSD68 31.01/28.49/25.63: the
version accounts for 0.06–0.13 dB, the size of the BSD68 gap; the noise draw for ±0.01 (three seeds, 17 images).
"""
from __future__ import annotations

import numpy as np
import torch

from datamodules.errors import AnticipatedError
from lightning_modules.classical import degradation
from lightning_modules.classical.filters import check_positive
from lightning_modules.restorer import Restorer

BM3D_PROFILE_CLASSES = {"np": "BM3DProfile", "refilter": "BM3DProfileRefilter", "vn": "BM3DProfileVN",
                        "vn_old": "BM3DProfileVNOld", "high": "BM3DProfileHigh", "deb": "BM3DProfileDeb",
                        "lc": "BM3DProfileLC"}
BM3D_PROFILES = tuple(BM3D_PROFILE_CLASSES)


def per_image_sigma(pair: dict, method: Restorer, what: str) -> list[float]:
    """The pair's σ of each image on the 0..1 scale."""
    sigma = torch.as_tensor(degradation(pair, "sigma", method, what), dtype=torch.float64).flatten()
    n = len(pair["degraded"])
    return [float(s) / 255 for s in (sigma.expand(n) if sigma.numel() == 1 else sigma)]


def as_numpy(image: torch.Tensor) -> np.ndarray:
    """C×H×W tensor → H×W (gray) or H×W×C float64."""
    array = image.detach().cpu().double().numpy()
    return array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)


def from_numpy(arrays: list[np.ndarray], like: torch.Tensor) -> torch.Tensor:
    """H×W or H×W×C arrays → N×C×H×W in ``like``'s dtype and device."""
    images = [a[None] if a.ndim == 2 else a.transpose(2, 0, 1) for a in arrays]
    return torch.from_numpy(np.ascontiguousarray(np.stack(images))).to(like.dtype).to(like.device)


class NonLocalMeans(Restorer):
    """Each pixel the weighted mean of the pixels within ``patch_distance`` whose ``patch_size``² patches resemble
    its own, weights exp(-max(d² - 2σ², 0)/h²) (``fast_mode``: uniform patch weights, Darbon et al.'s integral
    images)."""

    task, channels = "denoise", "any"

    def __init__(self, h_factor: float = 0.6, patch_size: int = 5, patch_distance: int = 6, fast_mode: bool = True):
        self.h_factor = check_positive("NonLocalMeans", "h_factor", h_factor)
        self.patch_size = check_positive("NonLocalMeans", "patch_size", patch_size, integer=True)
        self.patch_distance = check_positive("NonLocalMeans", "patch_distance", patch_distance, integer=True)
        if not isinstance(fast_mode, bool):
            raise AnticipatedError(f"NonLocalMeans: fast_mode={fast_mode!r} must be true or false")
        self.fast_mode = fast_mode
        self.label = f"Non-local means h={self.h_factor:g}σ"

    def run(self, pair: dict, what: str) -> torch.Tensor:
        from skimage.restoration import denoise_nl_means

        degraded = pair["degraded"]
        out = []
        for image, sigma in zip(degraded, per_image_sigma(pair, self, what)):
            array = as_numpy(image)
            out.append(denoise_nl_means(array, patch_size=self.patch_size, patch_distance=self.patch_distance,
                                        h=self.h_factor * sigma, fast_mode=self.fast_mode, sigma=sigma,
                                        channel_axis=-1 if array.ndim == 3 else None))
        return from_numpy(out, degraded)


class BM3D(Restorer):
    """BM3D (gray) or CBM3D (colour) at the pair's σ; nothing to tune."""

    task, channels = "denoise", "any"

    def __init__(self, profile: str = "np"):
        if profile not in BM3D_PROFILES:
            raise AnticipatedError(f"BM3D: profile={profile!r} must be one of {', '.join(BM3D_PROFILES)}")
        self.profile = profile
        self.label = "BM3D" if profile == "np" else f"BM3D ({profile})"

    def bm3d_profile(self):
        """The package's profile object, single-threaded: its threads sum the aggregation in a varying order, which
        changed CBM3D outputs by up to 2.5e-5 from run to run (and was no faster on two shared cores)."""
        from bm3d import profiles

        chosen = getattr(profiles, BM3D_PROFILE_CLASSES[self.profile])()
        chosen.num_threads = 1
        return chosen

    def run(self, pair: dict, what: str) -> torch.Tensor:
        import bm3d

        degraded = pair["degraded"]
        out = []
        for image, sigma in zip(degraded, per_image_sigma(pair, self, what)):
            array = as_numpy(image)
            denoise = bm3d.bm3d_rgb if array.ndim == 3 else bm3d.bm3d
            out.append(denoise(array, sigma, self.bm3d_profile()))
        return from_numpy(out, degraded)
