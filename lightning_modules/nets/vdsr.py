"""VDSR (Kim, Lee & Lee, "Accurate Image Super-Resolution Using Very Deep Convolutional Networks", CVPR 2016).

The net sees the bicubic-upsampled image (so ``scale == 1``) and only predicts what bicubic missed:
20 conv 3×3 layers of 64 filters with ReLU, the last one reconstructing the residual, which is added
back to the input. Learning the residual is what lets such a deep plain stack train at a high rate.
"""
from __future__ import annotations

from torch import nn

from .common import check_channels, check_int, he_init_, receptive_width


class VDSR(nn.Module):
    def __init__(self, channels: int = 1, depth: int = 20, features: int = 64):
        super().__init__()
        check_channels(channels)
        check_int("depth", depth, 2, net="VDSR")
        check_int("features", features)
        layers = [nn.Conv2d(channels, features, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(features, features, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(features, channels, 3, padding=1))
        self.residual = nn.Sequential(*layers)
        he_init_(self)  # the paper trains from He initialisation

        self.scale = 1
        self.in_channels = self.out_channels = channels
        self.receptive_field = receptive_width(depth)  # 41×41 for depth 20, as in the paper
        self.size_multiple = 1

    def forward(self, x):
        return x + self.residual(x)
