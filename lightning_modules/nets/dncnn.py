"""DnCNN (Zhang, Zuo, Chen, Meng & Zhang, "Beyond a Gaussian Denoiser: Residual Learning of Deep CNN for
Image Denoising", IEEE TIP 2017).

Conv+ReLU, (depth-2) × Conv+BN+ReLU, Conv, all 3×3 with 64 filters. The net predicts the noise and
subtracts it (residual learning): depth 17 for DnCNN-S (known σ), 20 for DnCNN-B / CDnCNN-B (blind),
channels 1 for gray and 3 for colour.
"""
from __future__ import annotations

from torch import nn

from .common import check_channels, check_int, he_init_, receptive_width


class DnCNN(nn.Module):
    def __init__(self, channels: int = 1, depth: int = 17, features: int = 64):
        super().__init__()
        check_channels(channels)
        check_int("depth", depth, 2, net="DnCNN")
        check_int("features", features)
        layers = [nn.Conv2d(channels, features, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            # no conv bias: the BN right after it has its own shift
            layers += [nn.Conv2d(features, features, 3, padding=1, bias=False), nn.BatchNorm2d(features),
                       nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(features, channels, 3, padding=1))
        self.noise = nn.Sequential(*layers)
        he_init_(self)

        self.scale = 1
        self.in_channels = self.out_channels = channels
        self.receptive_field = receptive_width(depth)  # 35×35 for depth 17, as in the paper (eval-mode BN)
        self.size_multiple = 1

    def forward(self, x):
        return x - self.noise(x)
