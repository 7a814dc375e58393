"""The image-specific net of ZSSR (Shocher, Cohen & Irani, "Zero-Shot Super-Resolution using Deep Internal
Learning", CVPR 2018), as the authors' code builds it (assafshocher/ZSSR, ``ZSSR.build_network`` and
``configs.Config``: ``depth = 8``, ``width = 64``, ``learn_residual = True``, ``init_variance = 0.1``):

* ``depth`` 3×3 'same' convolutions, ``features`` channels each, ReLU after all but the last, no normalisation;
* a global skip: output = input + convs(input), the input being the image already interpolated (MATLAB bicubic)
  to the output size, so ``scale == 1``;
* no biases (the authors' ``tf.nn.conv2d`` layers have none) and weights ~ N(0, init_variance / fan_in), fan_in =
  3·3·C_in.

MZSR (Soh et al., CVPR 2020) meta-learns the initialisation of the same kind of net; ``bias=True`` gives it the
biases its layers have.
"""
from __future__ import annotations

import math

from torch import nn

from .common import bad_option, check_channels, check_int, receptive_width

INIT_VARIANCE = 0.1  # configs.py: init_variance


class ZSSRNet(nn.Module):
    def __init__(self, channels: int = 3, depth: int = 8, features: int = 64, bias: bool = False,
                 init_variance: float = INIT_VARIANCE):
        super().__init__()
        check_channels(channels)
        check_int("depth", depth, 2, net="ZSSRNet")
        check_int("features", features)
        if not isinstance(init_variance, (int, float)) or isinstance(init_variance, bool) or init_variance <= 0:
            raise bad_option("init_variance", init_variance, "must be a positive number")
        widths = [channels] + [features] * (depth - 1) + [channels]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1, bias=bool(bias)))
            if i < depth - 1:
                layers.append(nn.ReLU(inplace=True))
        self.residual = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, math.sqrt(init_variance / (9 * m.in_channels)))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

        self.scale = 1
        self.in_channels = self.out_channels = channels
        self.receptive_field = receptive_width(depth)  # each 3×3 conv reaches one pixel further: 17×17 at depth 8
        self.size_multiple = 1

    def forward(self, x):
        return x + self.residual(x)
