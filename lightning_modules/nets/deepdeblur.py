"""DeepDeblur (Nah, Kim & Lee, "Deep Multi-scale Convolutional Neural Network for Dynamic Scene
Deblurring", CVPR 2017).

Coarse-to-fine over a 3-level pyramid (factor 2). Every level has its own weights: a conv, 19 ResBlocks
(5×5, 64 channels, no BN) and a conv back to the image. The coarser level's output is up-convolved
(5×5 conv to 4× the channels + PixelShuffle(2), as in the authors' PyTorch code) and concatenated to
the next finer blurred image. Inputs are centred (−0.5) and outputs shifted back, as in that code.
"""
from __future__ import annotations

import torch
from torch import nn

from datamodules.image_ops import image_pyramid

from .common import (ResBlock, check_channels, check_int, check_kernel, pixel_shuffle_reach, pyramid_reach,
                     receptive_width)


class DeepDeblur(nn.Module):
    def __init__(self, channels: int = 3, scales: int = 3, blocks: int = 19, features: int = 64,
                 kernel_size: int = 5):
        super().__init__()
        check_channels(channels)
        check_int("scales", scales, net="DeepDeblur")
        check_int("blocks", blocks)
        check_int("features", features)
        check_kernel("kernel_size", kernel_size, net="DeepDeblur")
        pad = kernel_size // 2

        def level(in_channels: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(in_channels, features, kernel_size, padding=pad),
                                 *[ResBlock(features, kernel_size) for _ in range(blocks)],
                                 nn.Conv2d(features, channels, kernel_size, padding=pad))

        # finest first; only the coarsest level lacks the up-convolved estimate in its input
        self.levels = nn.ModuleList(level(channels if i == scales - 1 else 2 * channels) for i in range(scales))
        # up_convs[i] brings the output of level i+1 to the size of level i
        self.up_convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, 4 * channels, kernel_size, padding=pad), nn.PixelShuffle(2))
            for _ in range(scales - 1))

        self.scales = scales
        self.scale = 1
        self.in_channels = self.out_channels = channels
        self.size_multiple = 2 ** (scales - 1)
        # reach in full-resolution pixels of ``forward``, pyramid construction included
        level_reach = pad * (2 * blocks + 2)  # in pixels of the level's own resolution
        up_reach = pad + pixel_shuffle_reach(2)  # in pixels of the coarser level
        reach = None
        for i in reversed(range(scales)):
            from_input = pyramid_reach(i)
            if reach is not None:
                from_input = max(from_input, reach + up_reach * 2 ** (i + 1))
            reach = from_input + level_reach * 2**i
        self.receptive_field = receptive_width(reach)

    def forward_pyramid(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Blurred pyramid (finest first, each level half the previous) -> deblurred pyramid, finest first."""
        if len(xs) != self.scales:
            raise ValueError(f"DeepDeblur expects {self.scales} pyramid levels, got {len(xs)}")
        outputs: list[torch.Tensor] = [None] * self.scales
        estimate = None  # centred output of the coarser level
        for i in reversed(range(self.scales)):
            inp = xs[i] - 0.5
            if estimate is not None:
                inp = torch.cat([inp, self.up_convs[i](estimate)], dim=1)
            estimate = self.levels[i](inp)
            outputs[i] = estimate + 0.5
        return outputs

    def forward(self, x):
        return self.forward_pyramid(image_pyramid(x, self.scales))[0]
