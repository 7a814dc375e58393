"""SRResNet (Ledig et al., "Photo-Realistic Single Image Super-Resolution Using a Generative Adversarial
Network", CVPR 2017): the MSE-trained generator of SRGAN.

Works on the LR image itself (``scale`` = SR factor): a 9×9 conv + PReLU, 16 residual blocks
(conv-BN-PReLU-conv-BN, 64 channels, 3×3), a conv-BN closing a skip over all blocks, then sub-pixel
upsampling stages (conv to f²·64 channels, PixelShuffle(f), PReLU), and a 9×9 conv back to the image.
"""
from __future__ import annotations

import math

from torch import nn

from .common import bad_option, check_channels, check_int, pixel_shuffle_reach, receptive_width


class ResidualBlock(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(features, features, 3, padding=1), nn.BatchNorm2d(features), nn.PReLU(features),
            nn.Conv2d(features, features, 3, padding=1), nn.BatchNorm2d(features),
        )

    def forward(self, x):
        return x + self.body(x)


def upsampling_factors(scale: int) -> list[int]:
    """×2 stages for powers of two (×4 = two stages, as in the paper), one ×3 stage for 3."""
    if scale == 3:
        return [3]
    if scale >= 2 and scale & (scale - 1) == 0:
        return [2] * int(math.log2(scale))
    raise bad_option("scale", scale, "SRResNet supports scale 3 or a power of two (2, 4, 8)")


class SRResNet(nn.Module):
    def __init__(self, channels: int = 3, scale: int = 4, blocks: int = 16, features: int = 64):
        super().__init__()
        check_channels(channels)
        check_int("blocks", blocks)
        check_int("features", features)
        factors = upsampling_factors(scale)
        self.head = nn.Sequential(nn.Conv2d(channels, features, 9, padding=4), nn.PReLU(features))
        self.body = nn.Sequential(*[ResidualBlock(features) for _ in range(blocks)],
                                  nn.Conv2d(features, features, 3, padding=1), nn.BatchNorm2d(features))
        self.upsample = nn.Sequential(*[
            nn.Sequential(nn.Conv2d(features, features * f * f, 3, padding=1), nn.PixelShuffle(f), nn.PReLU(features))
            for f in factors])
        self.tail = nn.Conv2d(features, channels, 9, padding=4)

        self.scale = scale
        self.in_channels = self.out_channels = channels
        reach = 4 + 2 * blocks + 1  # in LR pixels, up to the upsampling
        resolution = 1  # of the current stage, relative to the LR image
        for f in factors:
            reach += (1 + pixel_shuffle_reach(f)) / resolution
            resolution *= f
        self.receptive_field = receptive_width(reach + 4 / resolution)  # eval-mode BN
        self.size_multiple = 1

    def forward(self, x):
        features = self.head(x)
        return self.tail(self.upsample(features + self.body(features)))
