"""SRN-DeblurNet (Tao, Gao, Shen, Wang & Jia, "Scale-recurrent Network for Deep Image Deblurring", CVPR 2018).

One encoder-decoder, applied coarse to fine over a pyramid (ratio 0.5) with the same weights at every
scale. Its input at a scale is the blurred image there concatenated with the previous scale's estimate,
bilinearly upsampled (at the coarsest scale: the blurred image itself). Encoder: conv + 3 ResBlocks at
32, 64 (stride 2) and 128 (stride 2) channels, 5×5 kernels; decoder mirrors it with 4×4 transposed
convs and additive skips. An optional ConvLSTM in the bottleneck carries a hidden state from scale to
scale (the paper's recurrent design; the authors' released colour model omits it, ``use_lstm=False``).
Details follow the authors' TensorFlow code: ReLU after every conv but the last, transposed convs and
LSTM state resized bilinearly, and the previous estimate enters without gradient.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from datamodules.image_ops import image_pyramid

from .common import ResBlock, check_channels, check_int, check_kernel, pyramid_reach, receptive_width

# Reaches in pixels of the finer side: a stride-2 'same' conv of radius p reads p + 0.5 fine pixels from
# the coarse centre; a fine pixel of a ×2 4×4 transposed conv or of ×2 bilinear reads 1.5 fine pixels away.
TRANSPOSED_CONV_REACH = 1.5
BILINEAR_UP_REACH = 1.5


class ConvLSTMCell(nn.Module):
    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        self.gates = nn.Conv2d(2 * channels, 4 * channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x, state):
        h, c = state if state is not None else (torch.zeros_like(x), torch.zeros_like(x))
        i, j, f, o = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = c * torch.sigmoid(f + 1.0) + torch.sigmoid(i) * torch.tanh(j)  # forget bias 1, as the reference
        h = torch.tanh(c) * torch.sigmoid(o)
        return h, (h, c)


def _resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class SRN(nn.Module):
    def __init__(self, channels: int = 3, scales: int = 3, features: int = 32, blocks: int = 3,
                 kernel_size: int = 5, use_lstm: bool = True):
        super().__init__()
        check_channels(channels)
        check_int("scales", scales, net="SRN")
        check_int("blocks", blocks)
        check_int("features", features)
        check_kernel("kernel_size", kernel_size, net="SRN")
        k, pad = kernel_size, kernel_size // 2
        widths = (features, 2 * features, 4 * features)

        def stage(width: int) -> list[nn.Module]:
            return [ResBlock(width, k) for _ in range(blocks)]

        def down(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, k, stride=2, padding=pad), nn.ReLU(inplace=True)]

        def up(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.ReLU(inplace=True))

        self.enc1 = nn.Sequential(nn.Conv2d(2 * channels, widths[0], k, padding=pad), nn.ReLU(inplace=True),
                                  *stage(widths[0]))
        self.enc2 = nn.Sequential(*down(widths[0], widths[1]), *stage(widths[1]))
        self.enc3 = nn.Sequential(*down(widths[1], widths[2]), *stage(widths[2]))
        self.lstm = ConvLSTMCell(widths[2]) if use_lstm else None
        self.dec3 = nn.Sequential(*stage(widths[2]))
        self.up3 = up(widths[2], widths[1])
        self.dec2 = nn.Sequential(*stage(widths[1]))
        self.up2 = up(widths[1], widths[0])
        self.dec1 = nn.Sequential(*stage(widths[0]), nn.Conv2d(widths[0], channels, k, padding=pad))

        self.scales = scales
        self.scale = 1
        self.in_channels = self.out_channels = channels
        self.size_multiple = 4 * 2 ** (scales - 1)  # two stride-2 convs at the coarsest scale
        self.receptive_field = receptive_width(self._reach(pad, blocks, use_lstm))

    def _reach(self, pad: int, blocks: int, use_lstm: bool) -> float:
        """Reach of ``forward`` in full-resolution pixels (pyramid construction included)."""
        stage = 2 * pad * blocks
        # in pixels of one scale's input; the bottleneck runs 4× coarser
        encoder = (pad + stage) + (pad + 0.5 + 2 * stage) + 2 * (pad + 0.5) + 4 * stage
        lstm_conv = 4 * 1 if use_lstm else 0  # 3×3 at the bottleneck
        decoder = 4 * stage + 2 * TRANSPOSED_CONV_REACH + 2 * stage + TRANSPOSED_CONV_REACH + stage + pad
        out = hidden = None
        for i in reversed(range(self.scales)):
            unit = 2**i  # full-resolution pixels per pixel of this scale
            inp = pyramid_reach(i) if out is None else max(pyramid_reach(i), out + BILINEAR_UP_REACH * unit)
            bottleneck = inp + (encoder + lstm_conv) * unit
            if use_lstm and hidden is not None:  # the state comes from the coarser bottleneck, resized ×2
                bottleneck = max(bottleneck, hidden + (4 * BILINEAR_UP_REACH + lstm_conv) * unit)
            hidden = bottleneck
            out = bottleneck + decoder * unit
        return out

    def step(self, blurred, previous, state):
        """One scale: (blurred, upsampled previous estimate, LSTM state) -> (estimate, LSTM state)."""
        e1 = self.enc1(torch.cat([blurred, previous], dim=1))
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        if self.lstm is not None:
            if state is not None:
                state = tuple(_resize(s, e3) for s in state)
            e3, state = self.lstm(e3, state)
        d2 = self.dec2(self.up3(self.dec3(e3)) + e2)
        return self.dec1(self.up2(d2) + e1), state

    def forward_pyramid(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Blurred pyramid (finest first, each level half the previous) -> deblurred pyramid, finest first."""
        if len(xs) != self.scales:
            raise ValueError(f"SRN expects {self.scales} pyramid levels, got {len(xs)}")
        for x in xs:
            if x.shape[-2] % 4 or x.shape[-1] % 4:
                raise ValueError(f"SRN needs every pyramid level's sides to be multiples of 4, got {tuple(x.shape)}")
        outputs, estimate, state = [], xs[-1], None
        for blurred in reversed(xs):
            previous = estimate.detach()
            if previous.shape[-2:] != blurred.shape[-2:]:
                previous = _resize(previous, blurred)
            estimate, state = self.step(blurred, previous, state)
            outputs.append(estimate)
        return outputs[::-1]

    def forward(self, x):
        return self.forward_pyramid(image_pyramid(x, self.scales))[0]
