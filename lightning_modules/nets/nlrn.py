"""NLRN (Liu, Wen, Fan, Loy & Huang, "Non-Local Recurrent Network for Image Restoration", NeurIPS 2018).

One residual block, unrolled ``steps`` times with shared weights, refines a state that always starts
again from the first conv's features (s_t = block(s_{t-1}) + s_0). Each step opens with a non-local
module restricted to a ``window``×``window`` neighbourhood: every pixel attends (embedded Gaussian:
softmax of dot products of 1×1 embeddings) to the pixels around it. The pre-softmax correlations are
summed over the steps (correlation propagation), so a noisy estimate at one step is steadied by the
earlier ones. The output is the input plus the predicted residual.

As in the reference code, BN layers are not shared between steps (their statistics change as the state
is refined) and g starts at zero, so every non-local module starts as the identity. Pixels of a window
that fall outside the image are masked out of the softmax instead of being zero-padded.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import receptive_width


def _window_rows(x: torch.Tensor, window: int):
    """Yield, for each row of the window, an N×C×H×W×window view of x (zero outside the image):
    [..., i, j, k] is the pixel at offset (row - window//2, k - window//2) from (i, j).

    Going row by row with broadcast products on these views (not einsum, which would copy and save
    them for backward) keeps memory at window·|x| transient and nothing beyond the output saved.
    """
    r = window // 2
    h = x.shape[-2]
    padded = F.pad(x, (r, r, r, r))
    for row in range(window):
        yield padded[:, :, row:row + h].unfold(3, window, 1)


def windowed_correlation(query: torch.Tensor, key: torch.Tensor, window: int) -> torch.Tensor:
    """N×H×W×window² dot products of each pixel's query with the keys of its window (0 outside the image)."""
    return torch.cat([(query.unsqueeze(-1) * rows).sum(1) for rows in _window_rows(key, window)], dim=-1)


def windowed_sum(weights: torch.Tensor, values: torch.Tensor, window: int) -> torch.Tensor:
    """N×C×H×W: Σ_k weights[..., k] · (value at window offset k), the converse of ``windowed_correlation``."""
    out = 0
    for row, rows in enumerate(_window_rows(values, window)):
        out = out + (weights[..., row * window:(row + 1) * window].unsqueeze(1) * rows).sum(-1)
    return out


class NonLocal(nn.Module):
    def __init__(self, features: int, embed_features: int, window: int):
        super().__init__()
        self.window = window
        self.theta = nn.Conv2d(features, embed_features, 1)
        self.phi = nn.Conv2d(features, embed_features, 1)
        self.g = nn.Conv2d(features, features, 1)
        nn.init.zeros_(self.g.weight)
        nn.init.zeros_(self.g.bias)

    def forward(self, x: torch.Tensor, correlation: torch.Tensor | None):
        """Returns the updated features and the accumulated pre-softmax correlation (N×H×W×window²)."""
        new = windowed_correlation(self.theta(x), self.phi(x), self.window)
        correlation = new if correlation is None else correlation + new
        inside = windowed_correlation(*[x.new_ones(1, 1, *x.shape[-2:])] * 2, self.window) > 0.5
        attention = correlation.masked_fill(~inside, float("-inf")).softmax(dim=-1)
        return x + windowed_sum(attention, self.g(x), self.window), correlation


class NLRN(nn.Module):
    def __init__(self, channels: int = 1, features: int = 128, steps: int = 12, window: int = 45,
                 embed_features: int = 64):
        super().__init__()
        if window < 1 or window % 2 == 0:
            raise ValueError(f"NLRN window must be odd and positive, got {window}")
        self.head = nn.Sequential(nn.BatchNorm2d(channels), nn.Conv2d(channels, features, 3, padding=1))
        # the recurrent block: weights shared by every step
        self.non_local = NonLocal(features, embed_features, window)
        self.conv_a = nn.Conv2d(features, features, 3, padding=1)
        self.conv_b = nn.Conv2d(features, features, 3, padding=1)
        # one (before non-local, before conv_a, before conv_b) BN triple per step
        self.step_norms = nn.ModuleList(
            nn.ModuleList(nn.BatchNorm2d(features) for _ in range(3)) for _ in range(steps))
        self.tail = nn.Sequential(nn.BatchNorm2d(features), nn.ReLU(inplace=True),
                                  nn.Conv2d(features, channels, 3, padding=1))

        self.scale = 1
        self.in_channels = self.out_channels = channels
        # per step: the window, then two 3×3 convs; the propagated correlation reads states of earlier
        # steps inside the same window, whose reach is smaller. Eval-mode BN.
        self.receptive_field = receptive_width(1 + steps * (window // 2 + 2) + 1)
        self.size_multiple = 1

    def forward(self, x):
        first = self.head(x)
        state, correlation = first, None
        for norm_in, norm_a, norm_b in self.step_norms:
            h, correlation = self.non_local(F.relu(norm_in(state)), correlation)
            h = self.conv_a(norm_a(h))
            state = self.conv_b(F.relu(norm_b(h))) + first
        return x + self.tail(state)
