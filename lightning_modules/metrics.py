"""Paper-protocol image metrics: PSNR, SSIM and MS-SSIM from torchmetrics, on the Y channel (BT.601,
16–235) with the border shaved, averaged per image (not PSNR of the pooled MSE), synced across DDP ranks.

Two paths, as in BasicSR: ``evaluation_view`` + torchmetrics here for training/validation (batched, on
device), and the same functions called image by image by the benchmark.
"""
from __future__ import annotations

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.functional.image import structural_similarity_index_measure
from torchmetrics.image import MultiScaleStructuralSimilarityIndexMeasure, PeakSignalNoiseRatio

from datamodules.image_ops import quantize, rgb_to_y

# torchmetrics' 5-scale MS-SSIM with an 11×11 window needs sides larger than (11 - 1) * 2**4.
MS_SSIM_MIN_SIDE = 161


def evaluation_view(x: torch.Tensor, shave: int, y_channel: bool = True, round_to_8bit: bool = True) -> torch.Tensor:
    """What the metrics see: the image saved as 8-bit (rounded), converted to Y, border shaved."""
    if round_to_8bit:
        x = quantize(x)
    if y_channel:
        x = rgb_to_y(x)
    if shave:
        x = x[..., shave:-shave, shave:-shave]
    return x


class SSIM(Metric):
    """Mean SSIM per image over the 'valid' part of the SSIM map, as MATLAB ``ssim_index``, BasicSR and
    scikit-image compute it. torchmetrics' own SSIM also averages the border, where its window reaches into
    reflect padding (+0.004 on the held-out photos at x3); we take its full map and drop that border."""

    full_state_update = False

    def __init__(self, kernel_size: int = 11, sigma: float = 1.5, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size, self.sigma = kernel_size, sigma
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        _, ssim_map = structural_similarity_index_measure(
            pred, target, gaussian_kernel=True, sigma=self.sigma, kernel_size=self.kernel_size, data_range=1.0,
            reduction="none", return_full_image=True)
        b = (self.kernel_size - 1) // 2
        self.total += ssim_map[..., b:-b, b:-b].flatten(1).mean(1).double().sum()
        self.count += pred.shape[0]

    def compute(self) -> torch.Tensor:
        return (self.total / self.count).float()


class ImageQuality(nn.Module):
    """PSNR / SSIM / MS-SSIM on images already passed through ``evaluation_view``.

    Data range 1.0 on [0, 1] equals the papers' 255 on [0, 255]; SSIM uses the Gaussian 11×11, σ = 1.5
    window with 'valid' borders (Wang et al.; MATLAB ssim_index / scikit-image gaussian_weights=True).
    """

    def __init__(self, ms_ssim: bool = True):
        super().__init__()
        self.psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3), reduction="elementwise_mean")
        self.ssim = SSIM()
        self.ms_ssim = MultiScaleStructuralSimilarityIndexMeasure(data_range=1.0) if ms_ssim else None

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = pred.float(), target.float()
        self.psnr.update(pred, target)
        self.ssim.update(pred, target)
        if self.ms_ssim is not None and min(pred.shape[-2:]) >= MS_SSIM_MIN_SIDE:
            self.ms_ssim.update(pred, target)

    def compute(self) -> dict[str, torch.Tensor]:
        out = {"psnr": self.psnr.compute(), "ssim": self.ssim.compute()}
        if self.ms_ssim is not None and self.ms_ssim._update_count:
            out["ms_ssim"] = self.ms_ssim.compute()
        return out

    def reset(self) -> None:
        for m in (self.psnr, self.ssim, self.ms_ssim):
            if m is not None:
                m.reset()


def psnr_ssim(pred: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """Per-image PSNR (dB) and SSIM of two views from ``evaluation_view`` (1×C×H×W)."""
    q = ImageQuality(ms_ssim=False).to(pred.device)
    q.update(pred, target)
    out = q.compute()
    return float(out["psnr"]), float(out["ssim"])
