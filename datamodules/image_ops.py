"""Degradations, batched and device-agnostic: every function takes N×C×H×W float tensors in [0, 1]
on any device and returns tensors on the same device.

The MATLAB-exact ``imresize`` lives here because every SR number in the literature is measured against
it: cubic kernel with a = -0.5, kernel widened by 1/scale when shrinking (antialiasing), symmetric
(mirror) padding, output size ``ceil(in * scale)``.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch


def _cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))


EPS = 2.220446049250313e-16  # MATLAB's eps, which its lanczos kernels add to avoid 0/0 at x = 0


def _lanczos3(x: torch.Tensor) -> torch.Tensor:
    """MATLAB's ``lanczos3``: sinc(x)·sinc(x/3) on |x| < 3, written as MATLAB writes it."""
    f = (torch.sin(math.pi * x) * torch.sin(math.pi * x / 3) + EPS) / (math.pi ** 2 * x * x / 3 + EPS)
    return f * (x.abs() < 3)


def _lanczos2(x: torch.Tensor) -> torch.Tensor:
    """MATLAB's ``lanczos2``: sinc(x)·sinc(x/2) on |x| < 2."""
    f = (torch.sin(math.pi * x) * torch.sin(math.pi * x / 2) + EPS) / (math.pi ** 2 * x * x / 2 + EPS)
    return f * (x.abs() < 2)


def _triangle(x: torch.Tensor) -> torch.Tensor:
    """MATLAB's ``triangle`` (bilinear)."""
    return (x + 1) * ((-1 <= x) & (x < 0)) + (1 - x) * ((0 <= x) & (x <= 1))


# MATLAB imresize's kernels by name: (the function, its width in input pixels)
RESIZE_KERNELS = {"cubic": (_cubic, 4.0), "lanczos3": (_lanczos3, 6.0), "lanczos2": (_lanczos2, 4.0),
                  "triangle": (_triangle, 2.0)}


@lru_cache(maxsize=64)
def _contributions(in_len: int, out_len: int, scale: float, kernel: str,
                   antialias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (out_len×P, into the unpadded input) and weights (out_len×P) of MATLAB's
    ``contributions`` for a named kernel: mirror padding is folded into the indices, so no padded copy is ever made."""
    h, kernel_width = RESIZE_KERNELS[kernel]
    widen = antialias and scale < 1
    if widen:
        kernel_width /= scale
    out = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = out / scale + 0.5 * (1 - 1 / scale)  # output pixel centre in input coordinates (1-based)
    left = torch.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    dist = u[:, None] - idx
    weights = scale * h(dist * scale) if widen else h(dist)
    weights = weights / weights.sum(dim=1, keepdim=True)
    keep = weights.abs().sum(dim=0) > 0  # MATLAB drops all-zero columns; it changes nothing but work
    idx, weights = idx[:, keep], weights[:, keep]
    # symmetric padding: ..., 2, 1 | 1, 2, ..., n | n, n-1, ...
    zero_based = (idx - 1).long() % (2 * in_len)
    zero_based = torch.where(zero_based < in_len, zero_based, 2 * in_len - 1 - zero_based)
    return zero_based, weights


def _resize_dim(x: torch.Tensor, dim: int, out_len: int, scale: float, kernel: str, antialias: bool) -> torch.Tensor:
    """Resize along ``dim`` (-2 or -1): gather the P taps of every output pixel, weight, sum."""
    idx, w = _contributions(x.shape[dim], out_len, scale, kernel, antialias)
    idx = idx.to(x.device)
    w = w.to(device=x.device, dtype=x.dtype)
    taps = x.index_select(dim, idx.flatten())
    if dim == -2:
        return torch.einsum("...opw,op->...ow", taps.unflatten(-2, idx.shape), w)
    return torch.einsum("...hop,op->...ho", taps.unflatten(-1, idx.shape), w)


def imresize(x: torch.Tensor, scale: float | None = None, size: tuple[int, int] | None = None,
             antialias: bool = True, kernel: str = "cubic") -> torch.Tensor:
    """MATLAB ``imresize(x, scale, kernel)`` on the last two dimensions of ``x`` (any leading dims); ``kernel``
    one of ``RESIZE_KERNELS`` (default "cubic": MATLAB's 'bicubic', every SR benchmark's degradation).

    Give ``scale`` (one factor for both sides) or the output ``size`` (H, W). Height is resized
    first, then width, as MATLAB does for equal factors. No clipping or rounding happens here.
    """
    if (scale is None) == (size is None):
        raise ValueError("imresize needs exactly one of scale= or size=")
    if kernel not in RESIZE_KERNELS:
        raise ValueError(f"imresize: kernel must be one of {', '.join(RESIZE_KERNELS)}, got {kernel!r}")
    in_h, in_w = x.shape[-2:]
    if size is None:
        if scale <= 0:
            raise ValueError(f"imresize scale must be positive, got {scale}")
        size = (math.ceil(in_h * scale), math.ceil(in_w * scale))
        scale_h = scale_w = float(scale)
    else:
        scale_h, scale_w = size[0] / in_h, size[1] / in_w
    out = x.float() if not x.is_floating_point() else x
    out = _resize_dim(out, -2, size[0], scale_h, kernel, antialias)
    return _resize_dim(out, -1, size[1], scale_w, kernel, antialias)


def bicubic_downsample(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """LR = MATLAB ``imresize(HR, 1/scale)``; HR sides must be multiples of ``scale`` (see mod_crop)."""
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"bicubic_downsample: size {h}x{w} is not a multiple of scale {scale}; mod_crop first")
    return imresize(hr, size=(h // scale, w // scale))


def bicubic_upsample(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB ``imresize(LR, scale)``: the interpolation baseline that SRCNN/VDSR-style nets refine."""
    h, w = lr.shape[-2:]
    return imresize(lr, size=(h * scale, w * scale))


def mod_crop(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop the bottom/right so that both sides are multiples of ``scale`` (top-left kept, as in MATLAB)."""
    h, w = x.shape[-2:]
    return x[..., : h - h % scale, : w - w % scale]


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The central size[0]×size[1] window of …×H×W."""
    dh, dw = (x.shape[-2] - size[0]) // 2, (x.shape[-1] - size[1]) // 2
    return x[..., dh : dh + size[0], dw : dw + size[1]]


def quantize(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Clip to [0, 1] and round to the nearest of 2**bits levels, as saving to an image file does."""
    levels = (1 << bits) - 1
    return torch.round(x.clamp(0, 1) * levels) / levels


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma in [16/255, 235/255], as MATLAB ``rgb2ycbcr``; N×3×H×W -> N×1×H×W.

    A one-channel input is returned unchanged: MATLAB scripts use a gray image directly as Y.
    """
    if x.shape[-3] == 1:
        return x
    if x.shape[-3] != 3:
        raise ValueError(f"rgb_to_y expects 1 or 3 channels, got {x.shape[-3]}")
    w = x.new_tensor([65.481, 128.553, 24.966]).view(3, 1, 1) / 255.0
    return (x * w).sum(dim=-3, keepdim=True) + 16.0 / 255.0


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """Plain luma (0.299, 0.587, 0.114; no 16-235 offset), as gray test sets were made; 1 channel passes."""
    if x.shape[-3] == 1:
        return x
    w = x.new_tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    return (x * w).sum(dim=-3, keepdim=True)


# the colour spaces nets train in
Channels = Literal["y", "rgb", "gray"]


def to_channels(x: torch.Tensor, channels: Channels) -> torch.Tensor:
    """Bring a 1- or 3-channel image (…×C×H×W) to the training colour space; idempotent.

    "y": BT.601 luma (a gray image is its own Y); "rgb": gray replicated; "gray": plain luma
    (0.299, 0.587, 0.114, no 16–235 offset, as the gray denoising sets were made).
    """
    c = x.shape[-3]
    if channels == "y":
        return rgb_to_y(x)
    if channels == "rgb":
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:]) if c == 1 else x
    return rgb_to_gray(x)


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """BT.601 Y, Cb, Cr, each scaled to [0, 1] like MATLAB ``rgb2ycbcr`` / 255."""
    m = x.new_tensor([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]) / 255.0
    off = x.new_tensor([16.0, 128.0, 128.0]).view(3, 1, 1) / 255.0
    return torch.einsum("ij,...jhw->...ihw", m, x) + off


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of ``rgb_to_ycbcr``."""
    m = x.new_tensor([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]) / 255.0
    off = x.new_tensor([16.0, 128.0, 128.0]).view(3, 1, 1) / 255.0
    return torch.einsum("ij,...jhw->...ihw", torch.linalg.inv(m), x - off)


def image_pyramid(x: torch.Tensor, levels: int, factor: int = 2) -> list[torch.Tensor]:
    """[x, x↓factor, x↓factor², ...], finest first, each level MATLAB-bicubic downsampled from the last.

    Multi-scale deblurring nets (DeepDeblur, SRN) take inputs and targets from here, so both sides of the
    loss are built the same way. Sides must be multiples of factor**(levels-1).
    """
    out = [x]
    for _ in range(levels - 1):
        out.append(bicubic_downsample(out[-1], factor))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Synthetic degradations for blind SR, denoising and deblurring.
#
# Randomness always comes from an explicit ``torch.Generator`` (``None`` = torch's global RNG), so a validation
# set seeded per image is the same every epoch. Random numbers are drawn on the generator's device: a CPU
# generator gives the same pairs on every machine at the cost of a host->device copy of the noise, a CUDA
# generator draws on the GPU. Kernels are small and built where their parameters are drawn; ``blur`` moves them.
# Kernels are K×K (or N×K×K, one per image) float32 tensors that sum to 1. Their coordinates: x to the right,
# y up, angles counter-clockwise from +x, so "theta" and "angle" mean what they look like on screen.
# ----------------------------------------------------------------------------------------------------------------


def _draw_device(generator: torch.Generator | None, fallback: torch.device | str = "cpu") -> torch.device:
    return generator.device if generator is not None else torch.device(fallback)


def _uniform(shape, low, high, generator: torch.Generator | None) -> torch.Tensor:
    """float64 uniform samples in [low, high) on the generator's device (CPU without one)."""
    u = torch.rand(shape, generator=generator, device=_draw_device(generator), dtype=torch.float64)
    return low + (high - low) * u


def _kernel_grid(size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """x (right) and y (up) offsets of every tap from the kernel centre; the centre of an even kernel is
    tap ``size // 2``, the anchor ``blur`` gives it."""
    offsets = torch.arange(size, dtype=torch.float64, device=device) - size // 2
    return offsets[None, :].expand(size, size), -offsets[:, None].expand(size, size)


def gaussian_kernel(size: int, sigma1, sigma2=None, theta=0.0) -> torch.Tensor:
    """Sampled Gaussian with covariance R(theta) diag(sigma1², sigma2²) R(theta)ᵀ, normalised to sum 1.

    sigma1/sigma2 are standard deviations in pixels along the principal axes (sigma2=None: isotropic) and
    theta (radians) is the angle of the sigma1 axis. Scalars give a K×K kernel; 1-D tensors of length N
    (broadcast against each other) give N×K×K, all built in one vectorised pass.
    """
    batched = any(torch.is_tensor(p) and p.ndim > 0 for p in (sigma1, sigma2, theta))
    device = next((p.device for p in (sigma1, sigma2, theta) if torch.is_tensor(p)), torch.device("cpu"))

    def as64(p):
        return torch.as_tensor(p, dtype=torch.float64, device=device).reshape(-1, 1, 1)

    s1 = as64(sigma1)
    s2 = s1 if sigma2 is None else as64(sigma2)
    t = as64(theta)
    x, y = _kernel_grid(size, device)
    # rotate the offsets into the principal frame, where the quadratic form is diagonal
    u = x * torch.cos(t) + y * torch.sin(t)
    v = -x * torch.sin(t) + y * torch.cos(t)
    k = torch.exp(-0.5 * ((u / s1) ** 2 + (v / s2) ** 2))
    k = (k / k.sum(dim=(-2, -1), keepdim=True)).float()
    return k if batched else k[0]


def random_gaussian_kernel(n: int, size: int = 21, sigma_range: tuple[float, float] = (0.2, 4.0),
                           isotropic: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """N×K×K Gaussians: sigma1, sigma2 ~ U(sigma_range) independently (sigma2 = sigma1 when isotropic),
    theta ~ U[0, pi). The default range is DASR's isotropic [0.2, 4]. Below ~0.7 px a sampled Gaussian is
    narrower than sigma (variance 0.86 sigma² at 0.5 px), as in every sampled-kernel code."""
    sigma1 = _uniform(n, *sigma_range, generator)
    sigma2 = sigma1 if isotropic else _uniform(n, *sigma_range, generator)
    theta = _uniform(n, 0.0, math.pi, generator)
    return gaussian_kernel(size, sigma1, sigma2, theta)


def random_mzsr_kernel(n: int, scale: int, size: int = 15, generator: torch.Generator | None = None) -> torch.Tensor:
    """N×K×K anisotropic Gaussians drawn as MZSR (Soh et al., CVPR 2020) draws its meta-training kernels.

    The covariance eigenvalues (variances, not standard deviations) are lambda1 ~ U[1, 2.5·scale] and
    lambda2 ~ U[1, lambda1], theta ~ U[0, pi), on a 15×15 support; MZSR then applies them by blur ->
    direct decimation (``order="blur_decimate"``), ZSSR's kernel ``imresize``.
    """
    lambda1 = _uniform(n, 1.0, 2.5 * scale, generator)
    lambda2 = 1.0 + (lambda1 - 1.0) * _uniform(n, 0.0, 1.0, generator)
    theta = _uniform(n, 0.0, math.pi, generator)
    return gaussian_kernel(size, lambda1.sqrt(), lambda2.sqrt(), theta)


def _splat(points: torch.Tensor, size: int) -> torch.Tensor:
    """Rasterise N×M×2 sample points (x right, y up, relative to the kernel centre) into N×K×K kernels by
    bilinear splatting, each point carrying equal weight: the exposure a path leaves on the sensor."""
    n, m, _ = points.shape
    centre = size // 2
    col = (centre + points[..., 0]).clamp(0, size - 1 - 1e-6)
    row = (centre - points[..., 1]).clamp(0, size - 1 - 1e-6)
    c0, r0 = col.floor(), row.floor()
    fc, fr = col - c0, row - r0
    kernel = points.new_zeros(n, size * size)
    for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        # the clamp above keeps r0 + 1 / c0 + 1 in range whenever their weight is non-zero
        idx = ((r0 + dr).clamp(max=size - 1) * size + (c0 + dc).clamp(max=size - 1)).long()
        kernel.scatter_add_(1, idx, w)
    kernel = kernel.view(n, size, size)
    return (kernel / kernel.sum(dim=(-2, -1), keepdim=True)).float()


def motion_kernel(size: int, length: float, angle: float) -> torch.Tensor:
    """K×K linear motion blur: a segment of ``length`` pixels through the centre at ``angle`` degrees,
    rasterised anti-aliased (sub-pixel samples at the midpoints of 4·length pieces, bilinearly splatted)."""
    if not 0 <= length <= size - 1:
        raise ValueError(f"motion_kernel: length {length} must be in [0, size - 1 = {size - 1}]")
    m = max(1, math.ceil(4 * length))
    t = (torch.arange(m, dtype=torch.float64) + 0.5) / m - 0.5  # midpoints: variance is length²/12 (1 - 1/m²)
    a = math.radians(angle)
    points = torch.stack([t * length * math.cos(a), t * length * math.sin(a)], dim=-1)
    return _splat(points[None], size)[0]


def random_motion_kernel(n: int, size: int = 31, length_range: tuple[float, float] = (5.0, 35.0),
                         max_curvature: float = 0.3, max_turn_rate: float = 0.05,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """N×K×K camera-shake kernels from random trajectories.

    A point moves at constant speed for ``length`` pixels (~U(length_range)); its heading performs a Gaussian
    random walk (std ``kappa``·sqrt(step) per step, kappa ~ U[0, max_curvature] rad/sqrt(px)) and, with
    probability ``rate``·step per step (rate ~ U[0, max_turn_rate] per px), turns sharply by 90-270 degrees.
    This keeps the two ingredients of Boracchi & Foi's (2012) trajectories that DeblurGAN samples (inertial
    smooth drift, sudden jerks) in a closed form that needs no sequential loop. The trajectory is centred on
    its centroid (so the blur does not shift the image) and shrunk if it would leave the kernel.
    """
    steps = 4 * math.ceil(length_range[1])
    length = _uniform((n, 1), *length_range, generator)
    step = length / steps
    kappa = _uniform((n, 1), 0.0, max_curvature, generator)
    turn_rate = _uniform((n, 1), 0.0, max_turn_rate, generator)
    drift = torch.randn((n, steps), generator=generator, device=length.device, dtype=torch.float64)
    turns = _uniform((n, steps), 0.0, 1.0, generator) < turn_rate * step
    turn_angle = _uniform((n, steps), 0.5 * math.pi, 1.5 * math.pi, generator)
    heading = _uniform((n, 1), 0.0, 2 * math.pi, generator) + torch.cumsum(
        kappa * step.sqrt() * drift + turns * turn_angle, dim=1)
    velocity = torch.stack([heading.cos(), heading.sin()], dim=-1) * step[..., None]
    path = torch.cumsum(velocity, dim=1) - 0.5 * velocity  # midpoint of every step
    path = path - path.mean(dim=1, keepdim=True)
    reach = path.abs().amax(dim=(1, 2), keepdim=True).clamp(min=1e-12)
    path = path * ((size - 1) / 2 / reach).clamp(max=1.0)
    return _splat(path, size)


def load_kernel(path) -> torch.Tensor:
    """A user-supplied K×K blur kernel from .npy, .txt/.csv (numpy.loadtxt), .mat (the one 2-D array in it) or
    an image file (.png, ...; colour averaged to gray), normalised to sum 1, float32."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            k = np.load(path)
        elif suffix in (".txt", ".csv"):
            k = np.loadtxt(path, delimiter="," if suffix == ".csv" else None, ndmin=2)
        elif suffix == ".mat":
            from scipy.io import loadmat

            arrays = [v for key, v in loadmat(path).items() if not key.startswith("__") and np.ndim(v) == 2]
            if len(arrays) != 1:
                raise ValueError(f"expected exactly one 2-D array, found {len(arrays)}")
            k = arrays[0]
        else:
            import cv2

            data = np.fromfile(path, np.uint8)  # read by numpy: non-ASCII paths too
            k = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
            if k is None:
                raise ValueError("not an image OpenCV can decode")
            k = k.mean(axis=-1) if k.ndim == 3 else k
        k = np.asarray(k, dtype=np.float64)
    except Exception as e:  # unreadable file: say which one, in one line
        raise ValueError(f"load_kernel: cannot read a kernel from {path}: {type(e).__name__}: {e}") from None
    if k.ndim != 2 or k.size == 0 or not np.isfinite(k).all() or k.sum() <= 0:
        raise ValueError(f"load_kernel: {path} must hold a non-empty 2-D array of finite numbers with a positive sum, "
                         f"got shape {k.shape}")
    return torch.from_numpy(k / k.sum()).float()


# ---------------------------------------------------------------------------------------- classical SR model


def blur(x: torch.Tensor, kernel: torch.Tensor, padding: str = "reflect") -> torch.Tensor:
    """x ⊗ k: true convolution (kernel flipped, as scipy.ndimage.convolve and KAIR), output the size of x.

    ``kernel`` is K×K (whole batch) or N×K×K (one per image, shared by its channels). ``padding`` is a torch pad
    mode: "reflect" mirrors without repeating the edge pixel (scipy "mirror"), "replicate" repeats it (scipy
    "nearest"), "circular" wraps (scipy "wrap", what KAIR's degradations and USRNet's FFT model use).
    """
    import kornia

    kernel = kernel if kernel.ndim == 3 else kernel[None]
    return kornia.filters.filter2d(x, kernel, border_type=padding, behaviour="conv")


def decimate(x: torch.Tensor, scale: int, offset: int = 0) -> torch.Tensor:
    """Direct decimation x[..., offset::s, offset::s]. With the default offset 0 (KAIR, ZSSR/MZSR/KernelGAN)
    LR pixel i sits on HR pixel s·i, i.e. (s-1)/2 HR pixels up-left of where bicubic_downsample centres it."""
    h, w = x.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"decimate: size {h}x{w} is not a multiple of scale {scale}; mod_crop first")
    return x[..., offset::scale, offset::scale]


DEGRADATION_ORDERS = ("blur_bicubic", "bicubic_blur", "blur_decimate")


def classical_degradation(hr: torch.Tensor, scale: int, kernel: torch.Tensor, order: str = "blur_bicubic",
                          noise_sigma=0.0, generator: torch.Generator | None = None,
                          padding: str = "reflect") -> torch.Tensor:
    """I_LR = (I_HR ⊗ k)↓s + n in the three orders KAIR names:

    "blur_bicubic"  blur, then MATLAB bicubic ↓s (SRMD),
    "bicubic_blur"  MATLAB bicubic ↓s, then blur at LR resolution (DPSR),
    "blur_decimate" blur, then direct decimation (USRNet, ZSSR/MZSR, KernelGAN).

    White Gaussian noise of ``noise_sigma`` (0..255 scale; float or one per image) is added last, unclipped.
    """
    if order == "blur_bicubic":
        lr = bicubic_downsample(blur(hr, kernel, padding), scale)
    elif order == "bicubic_blur":
        lr = blur(bicubic_downsample(hr, scale), kernel, padding)
    elif order == "blur_decimate":
        lr = decimate(blur(hr, kernel, padding), scale)
    else:
        raise ValueError(f"classical_degradation: order must be one of {DEGRADATION_ORDERS}, got {order!r}")
    if torch.is_tensor(noise_sigma) or noise_sigma > 0:
        lr = add_gaussian_noise(lr, noise_sigma, generator)
    return lr


# ------------------------------------------------------------------------------------------------- denoising


def sample_sigma(n: int, low: float = 0.0, high: float = 55.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """N noise levels ~ U[low, high] on the 0..255 scale: blind denoising (DnCNN-B trains on [0, 55])."""
    return _uniform(n, low, high, generator).float()


def add_gaussian_noise(x: torch.Tensor, sigma, generator: torch.Generator | None = None,
                       clip: bool = False) -> torch.Tensor:
    """x + N(0, (sigma/255)²), sigma on the 0..255 scale: one float for the batch (DnCNN-S) or a length-N
    tensor, one per image (blind). Unclipped by default, as the DnCNN training data is."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype).to(x.device)
    if sigma.ndim == 1:
        sigma = sigma.view(-1, *([1] * (x.ndim - 1)))
    noise = torch.randn(x.shape, generator=generator, device=_draw_device(generator, x.device), dtype=x.dtype)
    noisy = x + noise.to(x.device) * (sigma / 255.0)
    return noisy.clamp(0, 1) if clip else noisy


def jpeg_compress(x: torch.Tensor, quality, backend: str = "cv2") -> torch.Tensor:
    """JPEG encode + decode at ``quality`` (1..100; int or one per image), 1- or 3-channel images.

    "cv2": a real libjpeg round trip on the CPU (8-bit, 4:2:0 chroma for colour, Y only for gray), the
    artefacts JPEG-deblocking papers train on; the result goes back to x's device. "kornia": kornia's
    differentiable JPEG on x's device (same standard tables and 4:2:0, but smooth rounding and no 8-bit
    quantisation, so values differ slightly from a real codec); gray images go through it as R=G=B.
    """
    n = x.shape[0]
    qualities = torch.as_tensor(quality, dtype=torch.float32).flatten().expand(n)
    if backend == "kornia":
        import kornia

        rgb = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        out = kornia.enhance.jpeg_codec_differentiable(rgb.clamp(0, 1), qualities.to(x.device, x.dtype))
        return out.mean(dim=1, keepdim=True) if x.shape[1] == 1 else out
    if backend != "cv2":
        raise ValueError(f"jpeg_compress: backend must be 'cv2' or 'kornia', got {backend!r}")
    import cv2

    images = quantize(x).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for image, q in zip(images, qualities.tolist()):
        bgr = np.ascontiguousarray(image[..., ::-1] if image.shape[-1] == 3 else image[..., 0])  # cv2 wants BGR
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(round(q))])
        if not ok:
            raise RuntimeError(f"jpeg_compress: OpenCV could not encode a {bgr.shape} image at quality {q}")
        decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        decoded = decoded[..., ::-1] if decoded.ndim == 3 else decoded[..., None]
        out.append(torch.from_numpy(decoded.copy()))
    return torch.stack(out).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype) / 255.0


# ------------------------------------------------------------------------------- GoPro-style motion blur


def average_frames(frames: torch.Tensor, gamma: float = 2.2) -> torch.Tensor:
    """Blur of Nah et al. (CVPR 2017): N×T×C×H×W frames -> N×C×H×W, averaged in linear light.

    The camera response is taken as the gamma curve (gamma 2.2 makes GoPro_Large's ``blur_gamma``; gamma 1,
    a plain average, its ``blur``). The sharp target is the middle frame, ``frames[:, T // 2]``.
    """
    linear = frames.clamp(min=0) ** gamma
    return linear.mean(dim=1) ** (1.0 / gamma)


def synthesize_trajectory(n_frames: int, generator: torch.Generator | None = None, max_shift: float = 1.5,
                          max_rotation: float = 0.1, batch: int = 1) -> torch.Tensor:
    """batch×T×3 smooth camera motion (dx, dy in pixels, image axes: x right, y down; rotation in degrees,
    counter-clockwise on screen) of every frame relative to the middle one, which is the identity.

    Each of the three components follows p(k) = v·k + a·k²/2 (k = frame offset from the middle): a constant
    acceleration, so the path is smooth and sub-pixel, with v ~ U[-m/2, m/2] and a ~ U[-m, m]/(2·(T//2)) so that
    consecutive frames move at most m = max_shift px (max_rotation degrees) per component. The middle frame
    is frame T // 2, as in ``average_frames``.
    """
    half = n_frames // 2
    limit = torch.tensor([max_shift, max_shift, max_rotation], dtype=torch.float64, device=_draw_device(generator))
    velocity = _uniform((batch, 1, 3), -0.5, 0.5, generator) * limit
    accel = _uniform((batch, 1, 3), -1.0, 1.0, generator) * limit / max(2 * half, 1)
    k = torch.arange(n_frames, dtype=torch.float64, device=limit.device)[None, :, None] - half
    return (velocity * k + 0.5 * accel * k * k).float()


def render_frames(image: torch.Tensor, trajectory: torch.Tensor) -> torch.Tensor:
    """N×C×H×W image, N×T×3 trajectory -> N×T×C×H×W frames: each frame the image rotated about its centre
    and shifted (content moves by +dx, +dy), bilinear, reflected at the borders so no black edges appear."""
    import kornia

    n, c, h, w = image.shape
    t = trajectory.shape[1]
    motion = trajectory.to(image.device, image.dtype).reshape(n * t, 3)
    centre = image.new_tensor([(w - 1) / 2, (h - 1) / 2]).expand(n * t, 2)
    matrix = kornia.geometry.transform.get_rotation_matrix2d(centre, motion[:, 2], torch.ones_like(motion[:, :2]))
    matrix = torch.cat([matrix[..., :2], matrix[..., 2:] + motion[:, :2, None]], dim=-1)
    sources = image[:, None].expand(n, t, c, h, w).reshape(n * t, c, h, w)
    frames = kornia.geometry.transform.warp_affine(sources, matrix, (h, w), padding_mode="reflection",
                                                   align_corners=True)
    return frames.view(n, t, c, h, w)


def synthetic_motion_blur(sharp: torch.Tensor, n_frames=(7, 13), generator: torch.Generator | None = None,
                          gamma: float = 2.2, max_shift: float = 1.5,
                          max_rotation: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """GoPro-style (blurred, sharp) pairs from single sharp images: render a smooth random camera path over
    ``n_frames`` frames (an int, or (low, high): one odd count drawn per call, as Nah et al. average 7-13
    frames and an odd count keeps a true middle frame) and average them in linear light.

    The middle frame of the path is the identity, so the target is ``sharp`` itself.
    """
    if not isinstance(n_frames, int):
        odd = [t for t in range(n_frames[0], n_frames[1] + 1) if t % 2]
        n_frames = odd[int(torch.randint(len(odd), (1,), generator=generator, device=_draw_device(generator)))]
    trajectory = synthesize_trajectory(n_frames, generator, max_shift, max_rotation, batch=sharp.shape[0])
    return average_frames(render_frames(sharp, trajectory), gamma), sharp
