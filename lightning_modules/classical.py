"""Parameter-free classical methods behind the restorer interface (``lightning_modules.restorer``): the
baselines of every table (bicubic interpolation, the degraded input itself) and the classical filters the papers
beat. Each is measured by the same protocol code as a trained checkpoint.
"""
from __future__ import annotations

import math

import torch

from datamodules.image_ops import bicubic_upsample
from lightning_modules.restorer import Restorer, pair_scale


class Bicubic(Restorer):
    """MATLAB ``imresize(LR, s)``: the SR baseline (the recipe's ``upsampled`` where it made one, the same
    function on the same LR)."""

    label, task, channels = "Bicubic", "sr", "any"

    def run(self, pair: dict, what: str) -> torch.Tensor:
        return pair["upsampled"] if "upsampled" in pair else bicubic_upsample(pair["degraded"], pair_scale(pair))


class DegradedInput(Restorer):
    """The degraded input as it is: the baseline of denoising ("Noisy input") and deblurring ("Blurred input")
    tables, measured as the nets receive it (float, unclipped)."""

    measured_as_given, channels = True, "any"

    def __init__(self, task: str, label: str):
        self.task, self.label = task, label

    def run(self, pair: dict, what: str) -> torch.Tensor:
        return pair["degraded"]


class GaussianFilter(Restorer):
    """Gaussian smoothing of σ pixels (kornia, reflect borders): the classical denoiser of the model table."""

    task, channels = "denoise", "any"

    def __init__(self, sigma: float):
        self.sigma = float(sigma)
        self.kernel_size = 2 * math.ceil(3 * self.sigma) + 1
        self.label = f"Gaussian filter σ={self.sigma:g}"

    def run(self, pair: dict, what: str) -> torch.Tensor:
        from kornia.filters import gaussian_blur2d

        return gaussian_blur2d(pair["degraded"], (self.kernel_size,) * 2, (self.sigma, self.sigma), border_type="reflect")


def baseline_for(task: str) -> Restorer:
    """The no-method row of a task's table."""
    if task == "sr":
        return Bicubic()
    return DegradedInput(task, "Noisy input" if task == "denoise" else "Blurred input")
