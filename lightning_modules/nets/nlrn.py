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

Memory: the propagated correlation is window² floats per pixel (8.1 kB at the paper's 45×45), kept whole for
the next step. Without autograd (evaluation), everything else of a non-local step (the broadcast products, the
new, masked and softmaxed correlations) is computed in chunks of image rows of about ``CHUNK_BYTES``, so a
step holds one correlation plus a chunk's transients instead of several full copies; the values equal the
one-piece computation to float rounding (``tests/test_memory_budget.py``). Training (autograd) runs one piece.
The receptive field is finite (steps × (window//2 + 2) + 2 pixels of reach), so whole images beyond the memory
budget are tiled exactly (``lightning_modules.inference``), with a halo of that reach.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import check_channels, check_int, check_kernel, receptive_width

# Evaluation (no autograd) computes the non-local module in chunks of image rows whose transient tensors take
# about this many bytes; only the propagated correlation (N×H×W×window² floats) is kept whole.
CHUNK_BYTES = 64 * 2**20


def _window_rows(padded: torch.Tensor, window: int, start: int, stop: int):
    """Yield, for each row of the window, an N×C×(stop-start)×W×window view of the image whose zero-padded
    (by window//2 on every side) copy is ``padded``: [..., i, j, k] is the pixel at offset
    (row - window//2, k - window//2) from (start + i, j).

    Going row by row with broadcast products on these views (not einsum, which would copy and save
    them for backward) keeps memory at window·|x| transient and nothing beyond the output saved.
    """
    for row in range(window):
        yield padded[:, :, start + row:stop + row].unfold(3, window, 1)


def _pad(x: torch.Tensor, window: int) -> torch.Tensor:
    r = window // 2
    return F.pad(x, (r, r, r, r))


def windowed_correlation(query: torch.Tensor, key: torch.Tensor, window: int, start: int = 0,
                         padded_key: torch.Tensor | None = None) -> torch.Tensor:
    """N×h×W×window² dot products of each pixel's query with the keys of its window (0 outside the image).
    ``query`` holds image rows ``start`` to ``start + h`` (all of them by default), ``key`` the whole image
    (or ``padded_key`` its zero-padded copy, to pad it once for many chunks)."""
    padded = _pad(key, window) if padded_key is None else padded_key
    stop = start + query.shape[-2]
    return torch.cat([(query.unsqueeze(-1) * rows).sum(1) for rows in _window_rows(padded, window, start, stop)],
                     dim=-1)


def windowed_sum(weights: torch.Tensor, values: torch.Tensor, window: int, start: int = 0,
                 padded_values: torch.Tensor | None = None) -> torch.Tensor:
    """N×C×h×W: Σ_k weights[..., k] · (value at window offset k), the converse of ``windowed_correlation``;
    ``weights`` hold image rows ``start`` to ``start + h``."""
    padded = _pad(values, window) if padded_values is None else padded_values
    stop = start + weights.shape[1]
    out = 0
    for row, rows in enumerate(_window_rows(padded, window, start, stop)):
        out = out + (weights[..., row * window:(row + 1) * window].unsqueeze(1) * rows).sum(-1)
    return out


def window_mask(height: int, width: int, window: int, start: int = 0, stop: int | None = None,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """(stop-start)×W×window² booleans: which window offsets of the pixels of rows start..stop are inside the
    image (the order of ``windowed_correlation``'s last dimension)."""
    stop = height if stop is None else stop
    r = window // 2
    offsets = torch.arange(window, device=device) - r
    rows = torch.arange(start, stop, device=device)[:, None] + offsets  # (h, window)
    cols = torch.arange(width, device=device)[:, None] + offsets  # (W, window)
    rows_in, cols_in = (rows >= 0) & (rows < height), (cols >= 0) & (cols < width)
    return (rows_in[:, None, :, None] & cols_in[None, :, None, :]).reshape(stop - start, width, window * window)


class NonLocal(nn.Module):
    def __init__(self, features: int, embed_features: int, window: int):
        super().__init__()
        self.window = window
        self.theta = nn.Conv2d(features, embed_features, 1)
        self.phi = nn.Conv2d(features, embed_features, 1)
        self.g = nn.Conv2d(features, features, 1)
        nn.init.zeros_(self.g.weight)
        nn.init.zeros_(self.g.bias)
        # rows per chunk without autograd: None sizes chunks to CHUNK_BYTES; 0 never chunks
        self.chunk_rows: int | None = None

    def rows_per_chunk(self, x: torch.Tensor) -> int:
        """Image rows per chunk: 0 (one piece) with autograd or ``chunk_rows == 0``."""
        if torch.is_grad_enabled() or self.chunk_rows == 0:
            return 0
        if self.chunk_rows is not None:
            return self.chunk_rows
        n, c, _, w = x.shape
        # per image row: the broadcast products of one window row (embedding / value channels × window), the new,
        # accumulated, masked and softmaxed correlations (window² each) and the chunk's output, in float32
        per_row = 4 * n * w * (max(self.theta.out_channels, c) * self.window + 4 * self.window**2 + 2 * c)
        return max(1, CHUNK_BYTES // per_row)

    def forward(self, x: torch.Tensor, correlation: torch.Tensor | None):
        """Returns the updated features and the accumulated pre-softmax correlation (N×H×W×window²)."""
        rows = self.rows_per_chunk(x)
        h, w = x.shape[-2:]
        if rows == 0 or rows >= h:
            new = windowed_correlation(self.theta(x), self.phi(x), self.window)
            correlation = new if correlation is None else correlation + new
            inside = window_mask(h, w, self.window, device=x.device)
            attention = correlation.masked_fill(~inside, float("-inf")).softmax(dim=-1)
            return x + windowed_sum(attention, self.g(x), self.window), correlation
        # the same, row chunk by row chunk, accumulating the correlation in place (no autograd here)
        theta, key, values = self.theta(x), _pad(self.phi(x), self.window), _pad(self.g(x), self.window)
        if correlation is None:
            correlation = x.new_empty(x.shape[0], h, w, self.window**2)
            first = True
        else:
            first = False
        out = torch.empty_like(x)
        for start in range(0, h, rows):
            stop = min(start + rows, h)
            new = windowed_correlation(theta[:, :, start:stop], None, self.window, start, key)
            part = correlation[:, start:stop]
            if first:
                part.copy_(new)
            else:
                part += new
            del new
            inside = window_mask(h, w, self.window, start, stop, device=x.device)
            attention = part.masked_fill(~inside, float("-inf")).softmax(dim=-1)
            out[:, :, start:stop] = x[:, :, start:stop] + windowed_sum(attention, None, self.window, start, values)
        return out, correlation


class NLRN(nn.Module):
    def __init__(self, channels: int = 1, features: int = 128, steps: int = 12, window: int = 45,
                 embed_features: int = 64):
        super().__init__()
        check_channels(channels)
        for name, value in (("features", features), ("embed_features", embed_features), ("steps", steps)):
            check_int(name, value, net="NLRN")
        check_kernel("window", window, net="NLRN", why="the non-local window is centred on its pixel")
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
