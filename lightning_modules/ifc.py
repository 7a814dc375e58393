"""Information Fidelity Criterion (Sheikh, Bovik & de Veciana, IEEE TIP 2005), as in the authors' MATLAB
``ifcvec.m`` (LIVE release, also shipped in SelfExSR's ``quant_eval``), the third metric of SRCNN's tables.

The reference image is modelled, subband by subband, as a Gaussian scale mixture of 3×3 coefficient vectors
(C = s·U, U ~ N(0, C_U)); the distortion as a local gain plus additive noise (D = g·C + V). IFC is the mutual
information between reference and distorted coefficients, summed over the subbands:

    sum_blocks sum_j log2(1 + g² s λ_j / σ_v²)       (λ_j: eigenvalues of C_U)

divided by the number of image pixels (the SR evaluation scripts' normalisation, which gives Set5 bicubic
values of 2..6). Subbands: levels 1-4 of a steerable pyramid with Simoncelli's ``sp5Filters`` (six
orientations) built with ``reflect1`` edges; only the 0° and 90° bands of each level are used. The distortion
channel (g, σ_v²) is fitted by least squares in a window centred on each block, 17/9/5/3 wide from the finest
level to the coarsest, and blocks that such a window pushes over the subband edge are left out.

Inputs are on the 0..255 scale internally (``data_range`` says what the caller's maximum is); everything is
computed in float64, batched over images, on the inputs' device.
"""
from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from datamodules.errors import AnticipatedError


BLOCK = 3  # M in the paper: side of the coefficient vectors of the GSM
LEVELS = 4
TOL = 1e-15  # variance below this counts as zero (distsub_est_m.m)
# the authors' ifcvec.m takes a 4-level steerable pyramid and drops each subband's edges: below 72 px a side its
# coarsest subbands have no interior left (it fails on them), so we refuse them too rather than invent a value
MIN_SIDE = 72

# Simoncelli's sp5Filters (matlabPyrTools). lo0 and lo are symmetric, so their orientation needs no care.
_SP5_LO0 = [
    [0.00341614, -0.01551246, -0.03848215, -0.01551246, 0.00341614],
    [-0.01551246, 0.05586982, 0.15925570, 0.05586982, -0.01551246],
    [-0.03848215, 0.15925570, 0.40304148, 0.15925570, -0.03848215],
    [-0.01551246, 0.05586982, 0.15925570, 0.05586982, -0.01551246],
    [0.00341614, -0.01551246, -0.03848215, -0.01551246, 0.00341614],
]
_SP5_LO_HALF = [  # lofilt is 2× these taps
    [0.00085404, -0.00244917, -0.00387812, -0.00944432, -0.00962054, -0.00944432, -0.00387812, -0.00244917, 0.00085404],
    [-0.00244917, -0.00523281, -0.00661117, 0.00410600, 0.01002988, 0.00410600, -0.00661117, -0.00523281, -0.00244917],
    [-0.00387812, -0.00661117, 0.01396746, 0.03277038, 0.03981393, 0.03277038, 0.01396746, -0.00661117, -0.00387812],
    [-0.00944432, 0.00410600, 0.03277038, 0.06426333, 0.08169618, 0.06426333, 0.03277038, 0.00410600, -0.00944432],
    [-0.00962054, 0.01002988, 0.03981393, 0.08169618, 0.10096540, 0.08169618, 0.03981393, 0.01002988, -0.00962054],
    [-0.00944432, 0.00410600, 0.03277038, 0.06426333, 0.08169618, 0.06426333, 0.03277038, 0.00410600, -0.00944432],
    [-0.00387812, -0.00661117, 0.01396746, 0.03277038, 0.03981393, 0.03277038, 0.01396746, -0.00661117, -0.00387812],
    [-0.00244917, -0.00523281, -0.00661117, 0.00410600, 0.01002988, 0.00410600, -0.00661117, -0.00523281, -0.00244917],
    [0.00085404, -0.00244917, -0.00387812, -0.00944432, -0.00962054, -0.00944432, -0.00387812, -0.00244917, 0.00085404],
]
# First column of bfilts (the 0° band), 7 values per line as listed; MATLAB reshapes it column-major, so each
# line becomes a *column* of the filter: odd along x, a horizontal-derivative band. The 90° band (4th column)
# is exactly its negated transpose.
_SP5_BAND0_COLUMNS = [
    [0.00277643, 0.00496194, 0.01026699, 0.01455399, 0.01026699, 0.00496194, 0.00277643],
    [-0.00986904, -0.00893064, 0.01189859, 0.02755155, 0.01189859, -0.00893064, -0.00986904],
    [-0.01021852, -0.03075356, -0.08226445, -0.11732297, -0.08226445, -0.03075356, -0.01021852],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.01021852, 0.03075356, 0.08226445, 0.11732297, 0.08226445, 0.03075356, 0.01021852],
    [0.00986904, 0.00893064, -0.01189859, -0.02755155, -0.01189859, 0.00893064, 0.00986904],
    [-0.00277643, -0.00496194, -0.01026699, -0.01455399, -0.01026699, -0.00496194, -0.00277643],
]


def _filters(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    as_kernel = partial(torch.tensor, dtype=torch.float64, device=device)
    lo0 = as_kernel(_SP5_LO0)[None, None]
    lo = 2 * as_kernel(_SP5_LO_HALF)[None, None]
    band0 = as_kernel(_SP5_BAND0_COLUMNS).T
    bands = torch.stack([band0, -band0.T])[:, None]  # 2×1×7×7: 0° and 90°
    return lo0, lo, bands


def _reflect_indices(n: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices of ``reflect1`` (mirror about the edge pixel) padding, folded again for pads wider than n."""
    i = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(i)
    i = i.remainder(2 * (n - 1))
    return torch.where(i < n, i, 2 * (n - 1) - i)


def _reflect_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    return x[..., _reflect_indices(h, pad, x.device)[:, None], _reflect_indices(w, pad, x.device)[None, :]]


def _correlate(x: torch.Tensor, kernel: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """matlabPyrTools ``corrDn(x, kernel, 'reflect1', [stride stride], [1 1])`` for odd square kernels."""
    return F.conv2d(_reflect_pad(x, kernel.shape[-1] // 2), kernel, stride=stride)


def _oriented_subbands(img: torch.Tensor) -> list[torch.Tensor]:
    """0° and 90° bands of steerable-pyramid levels 1..4, finest first, each (N·2)×1×h×w (image-major)."""
    lo0, lo, bands = _filters(img.device)
    low = _correlate(img, lo0)
    out = []
    for level in range(LEVELS):
        out.append(_correlate(low, bands).flatten(0, 1)[:, None])
        if level < LEVELS - 1:
            low = _correlate(low, lo, stride=2)
    return out


def _distortion_channel(ref: torch.Tensor, dist: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gain g and noise variance σ_v² of D = g·C + V, least squares in a window centred on each block."""
    n = window * window

    def window_sums(x: torch.Tensor) -> torch.Tensor:
        # one window per M×M block, centred on the block's centre pixel (corrDn with step M from M // 2)
        padded = _reflect_pad(x, window // 2)[..., BLOCK // 2:, BLOCK // 2:]
        return F.avg_pool2d(padded, window, stride=BLOCK, divisor_override=1)

    mean_ref, mean_dist = window_sums(ref) / n, window_sums(dist) / n
    cov = window_sums(ref * dist) - n * mean_ref * mean_dist
    var_ref = (window_sums(ref * ref) - n * mean_ref**2).clamp_min(0)
    var_dist = (window_sums(dist * dist) - n * mean_dist**2).clamp_min(0)

    gain = cov / (var_ref + TOL)
    noise = (var_dist - gain * cov) / n
    # the reference's fixes for flat windows and negative gains, in its order. Where it falls back to the
    # distorted window's energy it uses the window *sum* of squared deviations, not the variance: kept, since
    # the published numbers come from it.
    flat_ref = var_ref < TOL
    gain = gain.masked_fill(flat_ref, 0)
    noise = torch.where(flat_ref, var_dist, noise)
    flat_dist = var_dist < TOL
    gain = gain.masked_fill(flat_dist, 0)
    noise = noise.masked_fill(flat_dist, 0)
    negative = gain < 0
    noise = torch.where(negative, var_dist, noise)
    gain = gain.clamp_min(0)
    noise = noise.clamp_min(TOL)
    return gain, noise


def _reference_gsm(ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Multiplier field s (one per non-overlapping block) and eigenvalues of C_U (from all overlapping blocks)."""
    vectors = F.unfold(ref, BLOCK)  # B×9×L, every overlapping block
    centred = vectors - vectors.mean(-1, keepdim=True)
    cov = centred @ centred.transpose(1, 2) / vectors.shape[-1]
    blocks = F.unfold(ref, BLOCK, stride=BLOCK)  # B×9×(h/M · w/M)
    # pinv == inv for the covariance of any real subband; it keeps a flat reference at 0 instead of NaN
    s = ((torch.linalg.pinv(cov) @ blocks) * blocks).sum(1) / BLOCK**2
    s = s.view(ref.shape[0], ref.shape[-2] // BLOCK, ref.shape[-1] // BLOCK)
    return s, torch.linalg.eigvalsh(cov)


def ifc(reference: torch.Tensor, distorted: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """IFC of ``distorted`` against ``reference`` (order matters), one value per image, higher is better.

    Both are N×1×H×W gray / Y images with values in [0, data_range] (1.0 for the project's [0, 1] images,
    255 for 8-bit values); they are brought to 0..255, the scale ``ifcvec.m`` expects. Sides must be at
    least ``MIN_SIDE`` (72). Border shaving and Y conversion are the caller's business (``protocol.Protocol.score``).
    """
    if reference.shape != distorted.shape or reference.dim() != 4 or reference.shape[1] != 1:
        raise ValueError(f"ifc expects two N×1×H×W tensors of one shape, got {tuple(reference.shape)} "
                         f"and {tuple(distorted.shape)}")
    n, _, h, w = reference.shape
    if min(h, w) < MIN_SIDE:
        raise AnticipatedError(f"IFC needs images of at least {MIN_SIDE}x{MIN_SIDE} pixels (the authors' 4-level "
                               f"pyramid), got {w}x{h}")
    to_255 = 255.0 / data_range
    ref_bands = _oriented_subbands(reference.double() * to_255)
    dist_bands = _oriented_subbands(distorted.double() * to_255)

    total = reference.new_zeros(ref_bands[0].shape[0], dtype=torch.float64)
    for level, (ref, dist) in enumerate(zip(ref_bands, dist_bands)):
        bh, bw = ref.shape[-2] // BLOCK * BLOCK, ref.shape[-1] // BLOCK * BLOCK
        ref, dist = ref[..., :bh, :bw], dist[..., :bh, :bw]
        window = 2 ** (LEVELS - level) + 1  # 17, 9, 5, 3 from the finest level (ifcvec.m's lev)
        gain, noise = _distortion_channel(ref, dist, window)
        s, eigenvalues = _reference_gsm(ref)
        edge = math.ceil((window // 2) / BLOCK)  # blocks whose window reaches past the subband edge
        inner = (..., slice(edge, -edge), slice(edge, -edge))
        snr = (gain[:, 0][inner] ** 2 * s[inner] / (noise[:, 0][inner] + 1e-10)).flatten(1)
        total += torch.log2(1 + snr[:, :, None] * eigenvalues[:, None, :]).sum((1, 2))
    per_pixel = total.view(n, 2).sum(1) / (h * w)
    return per_pixel.to(reference.dtype if reference.is_floating_point() else torch.float32)


class IFC(Metric):
    """Mean IFC over images. ``update(preds, target)``: target is the reference; N×1×H×W in [0, data_range]."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, data_range: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.data_range = data_range
        self.add_state("ifc_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        values = ifc(target, preds, self.data_range)
        self.ifc_sum += values.double().sum()
        self.count += values.numel()

    def compute(self) -> torch.Tensor:
        return self.ifc_sum / self.count
