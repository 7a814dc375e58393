"""Interpolation: the SR methods with nothing to learn. MATLAB bicubic (``imresize``, antialiased, our
``image_ops.imresize``) is every SR table's baseline."""
from __future__ import annotations

import torch

from datamodules.image_ops import bicubic_upsample
from lightning_modules.restorer import Restorer, pair_scale


class Bicubic(Restorer):
    """MATLAB ``imresize(LR, s)``: the SR baseline (the recipe's ``upsampled`` where it made one, the same
    function on the same LR)."""

    label, task, channels = "Bicubic", "sr", "any"

    def run(self, pair: dict, what: str) -> torch.Tensor:
        return pair["upsampled"] if "upsampled" in pair else bicubic_upsample(pair["degraded"], pair_scale(pair))
