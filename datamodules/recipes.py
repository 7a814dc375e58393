"""Degradation recipes: how a clean image becomes the degraded input of a method, as objects.

One recipe object serves training (a batch of patches, random draws from torch's global RNG on the batch's
device), evaluation (one image, every draw from a CPU generator seeded by the image's name: ``evaluation_pair``)
and the benchmark, which calls the same ``evaluation_pair``; so ``restorelab test``, ``restorelab benchmark``,
``compare`` and the model table see byte-identical pairs for the same image and seed.

    BicubicSR     LR = MATLAB imresize(HR, 1/s), 8 bit: the SR benchmarks' degradation
    ClassicalSR   LR = (HR ⊗ k)↓s + n in the three orders; kernel families and MZSR's named test kernels
    AWGN          white Gaussian noise of a fixed σ or drawn per image (blind), optionally then JPEG
    JPEG          JPEG compression alone (deblocking)
    MotionBlur    motion blur from synthetic camera paths, averaged video frames, or real GoPro pairs
    KernelBlur    uniform blur by a known kernel plus noise (non-blind deconvolution)

A recipe maps a clean batch to a *pair* dict: ``degraded`` (the method's input), ``upsampled`` (MATLAB bicubic ×s
of it for SR, the input of SRCNN/VDSR-style nets and the bicubic baseline; ``degraded`` itself at scale 1),
``target``, and what made it, one entry per image: ``scale`` (int), ``sigma`` (noise σ on 0..255, 0 for none)
and, where a blur kernel made it, ``kernel`` (N×K×K). Methods that use the degradation model (Wiener,
Richardson–Lucy, ZSSR, MZSR) read those.
"""
from __future__ import annotations

import dataclasses
import math
import zlib
from dataclasses import dataclass
from typing import Literal, Union

import torch

from datamodules import image_ops as d
from datamodules.errors import AnticipatedError
from datamodules.image_ops import Channels, bicubic_upsample, quantize, to_channels

TASK_NAMES = {"sr": "super-resolution", "denoise": "denoising", "deblur": "deblurring"}
PREFIX = "data.init_args.recipe.init_args."  # how the command line spells a recipe option, for error lines


def image_seed(name: str, seed: int) -> int:
    """A stable per-image seed (same on every run, process and device)."""
    return (zlib.crc32(name.encode()) + 1_000_003 * seed) % (2**31)


def check_choice(option: str, value, choices, prefix: str = PREFIX) -> None:
    if value not in choices:
        raise AnticipatedError(f"{prefix}{option}={value!r} must be one of {', '.join(map(repr, choices))}")


def as_range(option: str, value, low: float = 0.0, high: float = math.inf, prefix: str = PREFIX) -> tuple[float, float]:
    """A config value that is a fixed number or a [low, high] range, as a checked (low, high) pair."""
    pair = (value, value) if isinstance(value, (int, float)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, float)) for v in pair) or not low <= pair[0] <= pair[1] <= high:
        raise AnticipatedError(f"{prefix}{option}={value!r} must be a number or a [low, high] range within [{low}, {high}]")
    return float(pair[0]), float(pair[1])


def draw_per_image(n: int, value_range: tuple[float, float], generator: torch.Generator | None) -> torch.Tensor:
    """N values ~ U[low, high] (all equal to low for a fixed value), on the generator's device."""
    return d.sample_sigma(n, *value_range, generator)


def randint_per_image(n: int, low: int, high: int, generator: torch.Generator | None) -> torch.Tensor:
    """N integers uniform in [low, high]."""
    device = generator.device if generator is not None else "cpu"
    return torch.randint(low, high + 1, (n,), generator=generator, device=device)


def _per_image(value, n: int, like: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(value, dtype=dtype).expand(n).clone().to(like.device)


class Recipe:
    """The interface. ``task`` says which benchmark family a recipe belongs to (and so the table's baseline,
    ``lightning_modules.classical.baseline_for``); ``describe`` is the degradation's part of a table's protocol
    sentence.

    ``__call__(clean, scale, channels, generator)``: ``clean`` is N×C×H×W in [0, 1]; ``channels`` is the colour
    space the pair must come in (None: the images' own), which matters where an operation does not commute with
    a colour conversion (noise, whose σ must mean the same at training and evaluation; linear-light averaging).
    Operations that commute with it up to 8-bit rounding (resizing, blur) run in the images' own colours, as
    a saved LR file would be made.
    """

    task: str = "sr"

    def __call__(self, clean: torch.Tensor, scale: int, channels: Channels | None,
                 generator: torch.Generator | None) -> dict:
        raise NotImplementedError

    def degrade_batch(self, batch: dict, scale: int, channels: Channels | None,
                      generator: torch.Generator | None) -> dict:
        """A loaded batch (``target``: clean images; real pairs and frame windows also carry ``degraded`` /
        ``frames``) → the pair. Only recipes that read more than the clean image override it."""
        return self(batch["target"], scale, channels, generator)

    def describe(self) -> str:
        raise NotImplementedError

    def check_scale(self, scale: int) -> None:
        """Refuse, naming the option, a scale this recipe cannot make."""
        if self.task != "sr" and scale != 1:
            raise AnticipatedError(f"data.init_args.scale={scale!r} must be 1 for {TASK_NAMES[self.task]}")


def evaluation_pair(recipe: Recipe, batch: dict, scale: int, channels: Channels | None, seed: int = 0) -> dict:
    """The fixed pair of one image (a batch of one, named by ``batch["name"][0]``): every draw from a CPU generator
    seeded by ``image_seed(name, seed)``, then every image brought to ``channels``. ``gray`` says the file was
    gray (the protocol measures it as its own Y even when an RGB method saw it replicated)."""
    name = batch["name"][0]
    pair = recipe.degrade_batch(batch, scale, channels, torch.Generator().manual_seed(image_seed(name, seed)))
    if channels is not None:
        # "y": the target stays in the file's colours, so that the protocol takes the Y of the 8-bit RGB file
        # unrounded, as the SR papers' scripts and the benchmark do (a Y converted here would be rounded again)
        kept = ("target",) if channels == "y" else ()
        pair = {k: _map_image(v, channels) if k in IMAGE_KEYS and k not in kept else v for k, v in pair.items()}
    source = next(v for v in batch.values() if torch.is_tensor(v) and v.ndim >= 4)  # N×C×H×W or N×T×C×H×W
    return {**pair, "name": [name], "gray": torch.full((1,), source.shape[-3] == 1)}


IMAGE_KEYS = ("degraded", "upsampled", "target", "degraded_pyramid", "target_pyramid")


def _map_image(v, channels: Channels):
    return [to_channels(x, channels) for x in v] if isinstance(v, list) else to_channels(v, channels)


# ---------------------------------------------------------------------------------------------------- SR


@dataclass
class BicubicSR(Recipe):
    """LR = MATLAB ``imresize(HR, 1/s)`` (bicubic, antialiased), saved as 8 bit: the degradation of the SR
    benchmarks (Set5, Set14, ...) and of SRCNN, VDSR, SRResNet. ``round_lr=False`` keeps the LR in float, as the
    older MATLAB test scripts do (``imresize`` on a double image, never saved): a paper-reproduction option."""

    round_lr: bool = True

    def rounded(self, lr: torch.Tensor) -> torch.Tensor:
        return quantize(lr) if self.round_lr else lr

    def low_resolution(self, hr: torch.Tensor, scale: int, generator: torch.Generator | None) -> tuple[torch.Tensor, dict]:
        return self.rounded(d.bicubic_downsample(hr, scale)), {}

    noise_range = (0.0, 0.0)

    def __call__(self, clean, scale, channels, generator):
        lr, made = self.low_resolution(clean, scale, generator)
        n = len(clean)
        sigma = torch.zeros(n)
        if self.noise_range[1] > 0:
            if channels is not None:  # σ must mean the same at training and evaluation: noise in the pair's colours
                lr = to_channels(lr, channels)
            sigma = draw_per_image(n, self.noise_range, generator)
            lr = d.add_gaussian_noise(lr, sigma, generator)
        return {"degraded": lr, "upsampled": bicubic_upsample(lr, scale), "target": clean,
                "scale": _per_image(scale, n, clean, torch.long), "sigma": sigma.to(clean.device), **made}

    def describe(self) -> str:
        return f"LR = MATLAB imresize(HR, 1/s) (bicubic, antialiased), {self.rounding}"

    @property
    def rounding(self) -> str:
        return "rounded to 8 bit" if self.round_lr else "LR NOT rounded to 8 bit (the older MATLAB scripts)"


Kernel = Literal["gaussian", "random_gaussian", "mzsr", "motion", "file", "gd_0.2", "gd_2.0", "gd_ani", "gb_1.3"]
Order = Literal["blur_bicubic", "bicubic_blur", "blur_decimate"]
# K when kernel_size is left out: DASR's 21 for Gaussians, MZSR's 15, 31 for camera shake
DEFAULT_KERNEL_SIZE = {"gaussian": 21, "random_gaussian": 21, "mzsr": 15, "motion": 31}


@dataclass(frozen=True)
class NamedKernel:
    """A test kernel of a paper, with the order it is applied in."""

    sigma1: float  # standard deviation in HR pixels along the first axis
    sigma2: float
    theta: float  # radians, the first axis' angle counter-clockwise from +x
    order: str
    size: int = 15
    about: str = ""


# MZSR (Soh et al., CVPR 2020, Sec. 5) tests on isotropic Gaussians of width 0.2 and 2.0 followed by direct
# subsampling (g^d), an anisotropic one with covariance eigenvalues λ1 = 4, λ2 = 1 and θ = -0.5 (g^d_ani), and an
# isotropic one of width 1.3 followed by bicubic subsampling (g^b); 15×15 as its kernels. The widths are read as
# standard deviations and the λ as variances, as MZSR's meta-training kernels are (``image_ops.random_mzsr_kernel``).
NAMED_KERNELS = {
    "gd_0.2": NamedKernel(0.2, 0.2, 0.0, "blur_decimate", about="MZSR g^d_0.2: isotropic Gaussian σ=0.2, direct ↓s"),
    "gd_2.0": NamedKernel(2.0, 2.0, 0.0, "blur_decimate", about="MZSR g^d_2.0: isotropic Gaussian σ=2.0, direct ↓s"),
    "gd_ani": NamedKernel(2.0, 1.0, -0.5, "blur_decimate",
                          about="MZSR g^d_ani: anisotropic Gaussian λ1=4, λ2=1, θ=-0.5, direct ↓s"),
    "gb_1.3": NamedKernel(1.3, 1.3, 0.0, "blur_bicubic", about="MZSR g^b_1.3: isotropic Gaussian σ=1.3, bicubic ↓s"),
}


@dataclass
class ClassicalSR(BicubicSR):
    """The classical degradation LR = (HR ⊗ k)↓s + n (``image_ops.classical_degradation``), LR saved as 8 bit
    before the noise, which comes last, unclipped, in the training colours.

    ``kernel``: "gaussian" (fixed: ``sigma``, ``sigma2``, ``theta``), "random_gaussian" (σ1, σ2 ~
    U(``sigma_range``), σ2 = σ1 if ``isotropic``, θ ~ U[0°, 180°)), "mzsr" (MZSR's anisotropic meta-training
    Gaussians for the scale), "motion" (random camera shake of length U[(K-1)/4, K-1]), "file" (``kernel_file``:
    .npy, .txt, .csv, .mat or an image), or a named test kernel (``NAMED_KERNELS``: gd_0.2, gd_2.0, gd_ani,
    gb_1.3), which also fixes the order. ``order``: "blur_bicubic" (SRMD), "bicubic_blur" (DPSR: blur at LR),
    "blur_decimate" (USRNet, ZSSR, MZSR); None: the named kernel's, else blur_bicubic. ``noise_sigma``: σ on
    0..255, or [low, high] drawn per image. Evaluation kernels and noise are drawn once per image (seeded).
    """

    kernel: Kernel = "gaussian"
    kernel_size: int | None = None
    sigma: float = 2.0
    sigma2: float | None = None
    theta: float = 0.0  # degrees, for a fixed "gaussian"
    sigma_range: tuple[float, float] = (0.2, 4.0)
    isotropic: bool = False
    kernel_file: str | None = None
    order: Order | None = None
    noise_sigma: Union[float, tuple[float, float]] = 0.0
    images_per_kernel: int = 1  # consecutive images of a batch that share one drawn kernel (MZSR's tasks: 16)

    def __post_init__(self):
        check_choice("kernel", self.kernel, Kernel.__args__)
        if not isinstance(self.images_per_kernel, int) or isinstance(self.images_per_kernel, bool) or self.images_per_kernel < 1:
            raise AnticipatedError(f"{PREFIX}images_per_kernel={self.images_per_kernel!r} must be a positive integer")
        named = NAMED_KERNELS.get(self.kernel)
        if self.order is not None:
            check_choice("order", self.order, Order.__args__)
            if named is not None and self.order != named.order:
                raise AnticipatedError(f"{PREFIX}order={self.order!r} contradicts kernel={self.kernel!r}, which is "
                                       f"applied by {named.order!r} ({named.about}); leave order out")
        self.applied_order = self.order or (named.order if named else "blur_bicubic")
        self.noise_range = as_range("noise_sigma", self.noise_sigma, 0.0, 255.0)
        if self.kernel_size is not None and (not isinstance(self.kernel_size, int) or self.kernel_size < 1):
            raise AnticipatedError(f"{PREFIX}kernel_size={self.kernel_size!r} must be a positive integer")
        self.size = self.kernel_size or (named.size if named else DEFAULT_KERNEL_SIZE.get(self.kernel, 0))
        self.fixed_kernel = None
        if named is not None:
            self.fixed_kernel = d.gaussian_kernel(self.size, named.sigma1, named.sigma2, named.theta)
        elif self.kernel == "gaussian":
            if self.sigma <= 0 or (self.sigma2 is not None and self.sigma2 <= 0):
                raise AnticipatedError(f"{PREFIX}sigma={self.sigma!r} and sigma2={self.sigma2!r} must be positive")
            self.fixed_kernel = d.gaussian_kernel(self.size, self.sigma, self.sigma2, math.radians(self.theta))
        elif self.kernel == "random_gaussian":
            as_range("sigma_range", self.sigma_range, 1e-3)
        elif self.kernel == "file":
            if not self.kernel_file:
                raise AnticipatedError(f"{PREFIX}kernel_file is required when kernel='file'")
            self.fixed_kernel = d.load_kernel(self.kernel_file)
            self.size = max(self.fixed_kernel.shape)

    def kernels(self, n: int, scale: int, generator: torch.Generator | None) -> torch.Tensor:
        """N×K×K kernels, one per image (one per ``images_per_kernel`` consecutive images)."""
        if self.fixed_kernel is not None:
            return self.fixed_kernel.expand(n, *self.fixed_kernel.shape)
        group = self.images_per_kernel
        m = -(-n // group)
        if self.kernel == "random_gaussian":
            drawn = d.random_gaussian_kernel(m, self.size, tuple(self.sigma_range), self.isotropic, generator)
        elif self.kernel == "mzsr":
            drawn = d.random_mzsr_kernel(m, scale, self.size, generator)
        else:
            drawn = d.random_motion_kernel(m, self.size, ((self.size - 1) / 4, self.size - 1), generator=generator)
        return drawn if group == 1 else drawn.repeat_interleave(group, dim=0)[:n]

    def low_resolution(self, hr, scale, generator):
        kernels = self.kernels(len(hr), scale, generator).to(hr.device)
        blur_kernel = self.fixed_kernel.to(hr.device) if self.fixed_kernel is not None else kernels
        lr = self.rounded(d.classical_degradation(hr, scale, blur_kernel, self.applied_order))
        return lr, {"kernel": kernels, "order": self.applied_order}

    def min_side(self, scale: int) -> int:
        """Reflect padding needs the blurred image's sides to exceed the kernel's half width: the least HR side."""
        half = self.size // 2 + 1
        return half * scale if self.applied_order == "bicubic_blur" else half

    def describe(self) -> str:
        named = NAMED_KERNELS.get(self.kernel)
        kernel = named.about if named else f"{self.kernel} {self.size}×{self.size} kernel, order {self.applied_order}"
        noise = "" if self.noise_range[1] == 0 else f", then white noise σ={_range_text(self.noise_range)}"
        return f"LR = (HR ⊗ k)↓s with the {kernel}, {self.rounding}{noise}"


@dataclass
class KernelBlur(ClassicalSR):
    """Uniform blur by a known kernel, then white noise: y = x ⊗ k + n at full resolution, the setting of non-blind
    deconvolution (Wiener, Richardson–Lucy; Levin et al. 2009 add 1 % noise, σ = 2.55). The kernel families and
    files of ``ClassicalSR`` (default: random camera shake, 31×31), drawn once per image and carried in the pair as
    ``kernel``, so that a deconvolution reads the PSF the data was made with."""

    kernel: Kernel = "motion"
    order: Order | None = "blur_decimate"
    noise_sigma: Union[float, tuple[float, float]] = 2.55
    task = "deblur"

    def __call__(self, clean, scale, channels, generator):
        pair = super().__call__(clean, 1, channels, generator)
        return pair | {"upsampled": pair["degraded"]}

    def describe(self) -> str:
        named = NAMED_KERNELS.get(self.kernel)
        kernel = named.about if named else f"{self.kernel} {self.size}×{self.size} kernel (reflect borders)"
        noise = "" if self.noise_range[1] == 0 else f", then white noise σ={_range_text(self.noise_range)} unclipped"
        return f"blurred by the {kernel}, {self.rounding}{noise}; the kernel known to the methods"


def _range_text(r: tuple[float, float]) -> str:
    return f"{r[0]:g}" if r[0] == r[1] else f"U[{r[0]:g}, {r[1]:g}]"


# ------------------------------------------------------------------------------------------------ denoising


@dataclass
class AWGN(Recipe):
    """Additive white Gaussian noise (DnCNN): σ fixed (DnCNN-S, e.g. 25) or drawn per image from a range
    (DnCNN-B: [0, 55]), on the 0..255 scale, added in the pair's colours (gray or RGB), unclipped unless
    ``clip``; then, optionally, a JPEG round trip (real libjpeg on the CPU) of a quality drawn per image.
    ``test_sigma``: σ of the evaluation pairs (None: ``sigma``, drawn once per image when a range).
    ``test_noise``: "torch", our seeded draw per image; "numpy", the noise of the DnCNN authors' Python test scripts
    (``np.random.seed(seed=0)`` before each image, then ``np.random.normal(0, σ/255, x.shape)`` on its H×W(×C)
    array, float32), to reproduce their numbers image for image. Training pairs always use torch's RNG."""

    sigma: Union[float, tuple[float, float]] = 25.0
    test_sigma: float | None = None
    clip: bool = False
    jpeg_quality: Union[int, tuple[int, int], None] = None
    test_noise: Literal["torch", "numpy"] = "torch"
    task = "denoise"

    def __post_init__(self):
        check_choice("test_noise", self.test_noise, ("torch", "numpy"))
        self.noise_range = as_range("sigma", self.sigma, 0.0, 255.0)
        self.test_range = self.noise_range if self.test_sigma is None else as_range("test_sigma", self.test_sigma, 0.0, 255.0)
        self.jpeg_range = None if self.jpeg_quality is None else tuple(
            int(q) for q in as_range("jpeg_quality", self.jpeg_quality, 1, 100))

    def __call__(self, clean, scale, channels, generator):
        clean = clean if channels is None else to_channels(clean, channels)
        n = len(clean)
        sigma = draw_per_image(n, self.noise_range if generator is None else self.test_range, generator)
        if generator is not None and self.test_noise == "numpy":
            noisy = torch.cat([_numpy_script_noise(x, float(s)) for x, s in zip(clean, sigma)])
            noisy = noisy.clamp(0, 1) if self.clip else noisy
        else:
            noisy = d.add_gaussian_noise(clean, sigma, generator, clip=self.clip)
        if self.jpeg_range is not None:
            noisy = d.jpeg_compress(noisy, randint_per_image(n, *self.jpeg_range, generator))
        return {"degraded": noisy, "upsampled": noisy, "target": clean, "scale": _per_image(1, n, clean, torch.long),
                "sigma": sigma.to(clean.device)}

    def at_sigma(self, sigma: float) -> "AWGN":
        """The same recipe evaluated at another fixed σ (a benchmark's σ = 15/25/50)."""
        return dataclasses.replace(self, test_sigma=float(sigma))

    def describe(self, sigma: str | None = None) -> str:
        """``sigma`` words the noise level where a table's columns vary it."""
        level = sigma or f"σ={_range_text(self.test_range)}"
        noise = f"white Gaussian noise {level} (0..255 scale) added in float, " + ("clipped" if self.clip else "unclipped")
        if self.test_noise == "numpy":
            noise += ", drawn as the DnCNN authors' test scripts do (NumPy, seed 0 per image)"
        return noise + ("" if self.jpeg_range is None else f", then JPEG quality {_range_text(self.jpeg_range)}")


def _numpy_script_noise(clean: torch.Tensor, sigma: float) -> torch.Tensor:
    """One C×H×W image plus the noise of cszn's main_test scripts, drawn on the H×W (gray) or H×W×C array."""
    import numpy as np

    hwc = clean.permute(1, 2, 0).cpu().numpy().astype(np.float32)
    hwc = hwc[..., 0] if hwc.shape[2] == 1 else hwc
    np_rng = np.random.RandomState(0)  # np.random.seed(seed=0) seeds this same legacy generator
    noisy = (hwc + np_rng.normal(0, sigma / 255.0, hwc.shape)).astype(np.float32)
    noisy = noisy[..., None] if noisy.ndim == 2 else noisy
    return torch.from_numpy(noisy).permute(2, 0, 1)[None].to(clean.device)


@dataclass
class JPEG(AWGN):
    """JPEG compression alone (deblocking, as ARCNN/DnCNN-3): a quality fixed or drawn per image."""

    sigma: Union[float, tuple[float, float]] = 0.0
    jpeg_quality: Union[int, tuple[int, int], None] = 10

    def __post_init__(self):
        if self.jpeg_quality is None:
            raise AnticipatedError(f"{PREFIX}jpeg_quality is required for the JPEG recipe")
        super().__post_init__()


# -------------------------------------------------------------------------------------------- deblurring

BlurSource = Literal["synthetic", "frames", "gopro"]
GOPRO_BLUR_KINDS = ("blur", "blur_gamma")


def _odd_counts(n: int, low: int, high: int, generator: torch.Generator | None) -> torch.Tensor:
    """N odd frame counts uniform over the odd numbers in [low, high] (an odd count has a middle frame)."""
    first = low + 1 - low % 2
    return first + 2 * randint_per_image(n, 0, (high - first) // 2, generator)


@dataclass
class MotionBlur(Recipe):
    """Dynamic-scene motion blur (Nah et al., CVPR 2017: the average of N = 7..13 consecutive sharp frames in
    linear light, camera gamma 2.2; the middle frame is the target), made from ``source``:

    "synthetic"  still images moved along smooth random camera paths (``image_ops.synthetic_motion_blur``),
                 N frames rendered and averaged;
    "frames"     windows of consecutive video frames (the DataModule loads them), the centred N averaged;
    "gopro"      real (blurred, sharp) pairs of the GoPro_Large layout, taken as they are.

    N is drawn per image among the odd counts of ``n_frames`` and carried in the pair as ``n_frames``. Blur is
    made in the pair's colours: the linear-light average does not commute with a colour conversion.
    """

    source: BlurSource = "synthetic"
    n_frames: Union[int, tuple[int, int]] = (7, 13)
    camera_gamma: float = 2.2
    max_shift: float = 1.5
    max_rotation: float = 0.1
    frame_stride: int = 1
    gopro_blur: Literal["blur", "blur_gamma"] = "blur_gamma"
    task = "deblur"

    def __post_init__(self):
        check_choice("source", self.source, BlurSource.__args__)
        check_choice("gopro_blur", self.gopro_blur, GOPRO_BLUR_KINDS)
        low, high = (int(v) for v in as_range("n_frames", self.n_frames, 1, 1000))
        if not any(t % 2 for t in range(low, high + 1)):
            raise AnticipatedError(f"{PREFIX}n_frames={self.n_frames!r} must include an odd count (the target is the "
                                   "middle frame)")
        self.frame_range = (low, high - 1 + high % 2)
        if self.camera_gamma <= 0:
            raise AnticipatedError(f"{PREFIX}camera_gamma={self.camera_gamma!r} must be positive")
        if not isinstance(self.frame_stride, int) or self.frame_stride < 1:
            raise AnticipatedError(f"{PREFIX}frame_stride={self.frame_stride!r} must be a positive integer")

    @property
    def window(self) -> int:
        """Frames a "frames" sample holds: the largest odd count."""
        return self.frame_range[1]

    def degrade_batch(self, batch, scale, channels, generator):
        if "degraded" in batch:  # a real pair
            blurred, sharp = batch["degraded"], batch["target"]
            if channels is not None:
                blurred, sharp = to_channels(blurred, channels), to_channels(sharp, channels)
            n = len(sharp)
            return {"degraded": blurred, "upsampled": blurred, "target": sharp,
                    "scale": _per_image(1, n, sharp, torch.long), "sigma": _per_image(0.0, n, sharp)}
        if "frames" in batch:
            frames = batch["frames"] if channels is None else to_channels(batch["frames"], channels)
            return self._blur(frames[:, self.window // 2], generator, frames)
        return self(batch["target"], scale, channels, generator)

    def __call__(self, clean, scale, channels, generator):
        return self._blur(clean if channels is None else to_channels(clean, channels), generator)

    def _blur(self, sharp: torch.Tensor, generator, frames: torch.Tensor | None = None) -> dict:
        middle = self.window // 2
        counts = _odd_counts(len(sharp), *self.frame_range, generator)
        blurred = torch.empty_like(sharp)
        for count in counts.unique().tolist():
            chosen = (counts == count).to(sharp.device)
            if frames is not None:
                window = frames[chosen, middle - count // 2 : middle + count // 2 + 1]
                blurred[chosen] = d.average_frames(window, self.camera_gamma)
            else:
                blurred[chosen] = d.synthetic_motion_blur(sharp[chosen], count, generator, self.camera_gamma,
                                                          self.max_shift, self.max_rotation)[0]
        n = len(sharp)
        return {"degraded": blurred, "upsampled": blurred, "target": sharp, "scale": _per_image(1, n, sharp, torch.long),
                "sigma": _per_image(0.0, n, sharp), "n_frames": counts.to(sharp.device)}

    def describe(self) -> str:
        if self.source == "gopro":
            return f"real GoPro_Large pairs ({self.gopro_blur})"
        frames = f"{self.frame_range[0]}-{self.frame_range[1]}" if self.frame_range[0] != self.frame_range[1] \
            else f"{self.frame_range[0]}"
        made = "along a random camera path" if self.source == "synthetic" else "of consecutive video frames"
        return f"blur averaged in linear light (gamma {self.camera_gamma:g}) from {frames} frames {made}"
