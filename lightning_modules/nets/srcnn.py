"""SRCNN — Dong, Loy, He & Tang, "Image Super-Resolution Using Deep Convolutional Networks" (TPAMI 2016).

    bicubic-upsampled Y ─ conv f1×f1, n1 ─ ReLU ─ conv f2×f2, n2 ─ ReLU ─ [more f×f, n ─ ReLU] ─ conv f3×f3 ─ HR
          patch extraction            non-linear mapping                        reconstruction

Every ablation of the paper is a constructor argument: ``kernel_sizes`` [9, 1, 5] / [9, 3, 5] / [9, 5, 5]
(and [9, 1, 1, 5] ... for depth), ``filters`` [n1, n2, ...] (64/32, 128/64, 32/16), ``channels`` 1 (Y) or
3 (RGB). ``padding="valid"`` is the paper's training setup: no padding, the loss is taken on the centre of
the target (the module crops it). At evaluation a valid net pads its input by replicating the border, as
the authors' test code filters with ``imfilter(..., 'same', 'replicate')``, so outputs keep the input size.
``input_mean`` is subtracted from the input and added back to the output (0, the paper's, leaves both as they
are): from PyTorch's default init, Adam trains faster on a zero-centred input (NOTES.md "Measured: make train").
"""
from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from .common import bad_option, check_channels, check_ints


class SRCNN(nn.Module):
    scale = 1  # works on the bicubic-upsampled image
    size_multiple = 1

    def __init__(
        self,
        kernel_sizes: list[int] = [9, 5, 5],  # noqa: B006 - jsonargparse needs a literal default
        filters: list[int] = [64, 32],  # noqa: B006
        channels: int = 1,
        padding: Literal["same", "valid"] = "same",
        init_std: float | None = 1e-3,
        input_mean: float = 0.0,
    ):
        super().__init__()
        check_ints("kernel_sizes", kernel_sizes, odd=True, net="SRCNN")
        check_ints("filters", filters, net="SRCNN")
        if len(kernel_sizes) < 2 or len(filters) != len(kernel_sizes) - 1:
            raise bad_option("filters", filters, f"SRCNN needs len(filters) == len(kernel_sizes) - 1, "
                             f"with kernel_sizes={list(kernel_sizes)}")
        check_channels(channels)
        if padding not in ("same", "valid"):
            raise bad_option("padding", padding, "SRCNN padding must be 'same' or 'valid'")
        if init_std is not None and not init_std > 0:
            raise bad_option("init_std", init_std, "must be > 0, or null for PyTorch's default init")
        if not 0.0 <= input_mean <= 1.0:
            raise bad_option("input_mean", input_mean, "must be in [0, 1], the range of the images")
        self.in_channels = self.out_channels = channels
        self.padding, self.input_mean = padding, input_mean
        self.receptive_field = sum(kernel_sizes) - len(kernel_sizes) + 1
        self.border = (self.receptive_field - 1) // 2  # pixels lost per side by 'valid' convolutions
        widths = [channels, *filters, channels]

        def conv(i: int) -> nn.Conv2d:
            # 'valid' layers pad nothing, and a replicate mode would still run a zero-width pad, a copy of every
            # activation and of its gradient: 1 ms of make train's 16 ms net step (NOTES.md)
            same = padding == "same"
            return nn.Conv2d(widths[i], widths[i + 1], kernel_sizes[i], padding="same" if same else 0,
                             padding_mode="replicate" if same else "zeros")

        # named apart so that the paper's smaller learning rate for the last layer can address it
        self.features = nn.Sequential(*(m for i in range(len(filters)) for m in (conv(i), nn.ReLU(inplace=True))))
        self.reconstruction = conv(len(filters))
        if init_std is not None:  # the paper: N(0, 0.001) weights, zero biases
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, 0.0, init_std)
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.padding == "valid" and not self.training:
            x = F.pad(x, [self.border] * 4, mode="replicate")
        if not self.input_mean:
            return self.reconstruction(self.features(x))
        return self.reconstruction(self.features(x - self.input_mean)) + self.input_mean
