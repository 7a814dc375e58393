"""ZSSR: Shocher, Cohen & Irani, "Zero-Shot Super-Resolution using Deep Internal Learning", CVPR 2018.

A fresh net is trained on every test image, on examples made from that image alone: an *HR father* is an
augmented crop of the LR input, its *LR son* the father degraded by the degradation model at the SR scale; the
net learns son → father and is then applied to the input itself. Facts below are from the authors' code
(github.com/assafshocher/ZSSR, ``configs.py`` ``Config`` defaults, ``ZSSR.py``, ``utils.py``); what this file
does differently is said where it does.

Net (``lightning_modules.nets.zssr.ZSSRNet``; configs.py ``depth = 8``, ``width = 64``, ``learn_residual = True``,
``init_variance = 0.1``): 8 conv layers 3×3 of 64 channels, ReLU between them, no biases, residual over the son
interpolated to the father's size (``upscale_method = 'cubic'``: our MATLAB ``imresize``). RGB in, RGB out: the
authors' filters are 3→64→…→3 and they train on the colour image, so ``channels = "rgb"`` is the default here;
``channels="y"`` trains a 1-channel net on the luma (the base class adds bicubic chroma), which the suite's
Y-measured tables may prefer and which is about three times cheaper in the first and last layer only.

Training (``ZSSR.train``, ``forward_backward_pass``): one father per update, L1 loss (``tf.abs`` mean), Adam at
``learning_rate = 0.001``; ``max_iters = 3000``, ``crop_size = 128`` (LR pixels), ``noise_std = 0.0`` (noise
added to sons, then clipped to [0, 1]).

Learning-rate policy (``ZSSR.learning_rate_policy``, ``quick_test``; ``LearningRatePolicy`` below, testable
without training): every ``run_test_every = 50`` updates the reconstruction error is measured (MSE between the
LR input and the net applied to the input's own son). When ``(update + 1) % learning_rate_policy_check_every``
(= 60) is 0 and more than ``min_iters = 256`` updates have passed since the last change, a line is fitted
(``np.polyfit(..., 1, cov=True)``) to the last ``learning_rate_slope_range // run_test_every`` = 256 // 50 = 5
errors against their update numbers; if −``learning_rate_change_ratio`` · slope < std (ratio 1.5, std = √ of the
slope's variance in the fit's covariance), i.e. the error is not falling significantly (a rising curve counts
too), the rate is divided by 10; training stops once it is below ``min_learning_rate = 9e-6`` (after three
divisions from 1e-3), or at ``max_iters``. With fewer than 4 errors (possible only with smaller overrides) the
fit's covariance is undefined and the check waits.

Augmentation (``utils.random_augment``, configs.py ``augment_*``): with probability
``augment_leave_as_is_probability = 0.05`` the father is a plain random crop; with
``augment_no_interpolate_probability = 0.45`` a random crop turned by k·90° and mirrored (8 choices; neither if
``augment_allow_rotation = False``); otherwise an affine warp, bicubic, of a random global scale
U[``augment_min_scale`` = 0.5, max scale] (max scale 1 for a single jump; in gradual SR the latest scale reached,
the source being the smallest earlier output whose scale exceeds the draw), x/y scales differing by
N(0, ``augment_scale_diff_sigma`` = 0.25), shear N(0, ``augment_shear_sigma`` = 0.1) per axis, rotation
U[0, 2π) and a random mirror (no rotation or mirror without ``augment_allow_rotation``), cropped to
``crop_size``. The authors warp with OpenCV's ``warpPerspective`` into a fixed 128×128 window filled with black
where it leaves the image (always, for inputs under 128 px); here the window is clamped to the scaled image's
size and centred on a random point of it, and the rest of a turned crop is filled by reflection
(``grid_sample(padding_mode="reflection")``), so fathers never carry black borders.

Sons (``ZSSR.father_to_son``: ``imresize(father, 1/sf, kernel=...)``): with a kernel, the authors correlate with
it and decimate (offset 0), after ``kernel_shift`` moved its centre of mass so that bicubic interpolation of the
LR lines up with the HR. Here a son is made by *the suite's own degradation function*,
``datamodules.image_ops.classical_degradation(father, s, kernel, order)`` with the pair's kernel, unshifted: the
function ``ClassicalSR`` made the test LR with, so the son of an image is exactly that recipe's LR of it before
8-bit rounding (tests/test_zssr.py); the net learns any offset between the decimated LR and bicubic. The order is
the pair's (``ClassicalSR`` records it: "blur_decimate" for the g^d kernels, the authors' with a kernel and MZSR's,
"blur_bicubic" for g^b); ``order`` overrides it, and is "blur_decimate" for a pair that records none. Without a kernel, sons are MATLAB bicubic
↓s (``downscale_method = 'cubic'``), the benchmark's ``BicubicSR``. Fathers are cropped to multiples of the
(integer) scale so that son sizes are exact.

Inference (``ZSSR.final_test``): the input in its 8 rotations/mirrors (``output_flip = True``: the geometric
self-ensemble), each through the net (output clipped to [0, 1]), turned back and improved by
``back_projection_iters = [10]`` iterations of back-projection (``utils.back_projection``:
sr ← clip(sr + bicubic↑(lr − ↓(sr)))), ↓ by the kernel (the son-maker) or bicubic), then the pixel-wise median of
the 8 (``np.median``: the mean of the two middle values), back-projected the same number of times again.

Gradual SR (configs.py ``scale_factors = [[2.0, 2.0]]``; ``X2_GRADUAL_IDEAL_CONF`` uses
[1.0×1.5, 1.5×1.0, 1.5, 1.5×2.0, 2.0×1.5, 2.0] with ``back_projection_iters = [6, 6, 8, 10, 10, 12]``):
``gradual`` lists intermediate isotropic scales (e.g. [1.5] for ×2); for each step in turn the same net keeps
training (``init_net_for_each_sf = False``; the learning rate and counters restart, Adam's moments persist),
its post-processed output joins the fathers' sources, and the next step's sons are the fathers ↓ that step's
scale relative to the input. The authors' anisotropic steps and ``base_change_sfs`` are not offered. Sons of
non-integer scales are bicubic only (a kernel is defined for the pair's integer scale), so ``gradual`` with a
used kernel is refused.

Cost: the default config runs up to 3000 updates per image (see configs/methods/zssr.yaml for measured time);
``time_limit_seconds`` stops training early, ``max_iters`` etc. can be lowered, and ``last_budget`` records
{"updates", "seconds"} of the last image after every ``run``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from datamodules.errors import AnticipatedError
from datamodules.image_ops import DEGRADATION_ORDERS, classical_degradation, imresize
from lightning_modules.classical import degradation
from lightning_modules.classical.filters import check_positive
from lightning_modules.inference import budgeted_forward, geometric_views
from lightning_modules.nets.zssr import ZSSRNet
from lightning_modules.restorer import Restorer, pair_scale

# configs.py defaults
MAX_ITERS = 3000
MIN_ITERS = 256
MIN_LEARNING_RATE = 9e-6
LEARNING_RATE = 0.001
CROP_SIZE = 128
BACK_PROJECTION_ITERS = 10
RUN_TEST_EVERY = 50
POLICY_CHECK_EVERY = 60
SLOPE_RANGE = 256
CHANGE_RATIO = 1.5
LEAVE_AS_IS_PROBABILITY = 0.05
NO_INTERPOLATE_PROBABILITY = 0.45
MIN_SCALE = 0.5
SCALE_DIFF_SIGMA = 0.25
SHEAR_SIGMA = 0.1

NAME = "zssr"


# ------------------------------------------------------------------------------- learning-rate policy


def slope_says_reduce(steps, errors, ratio: float = CHANGE_RATIO) -> bool:
    """The authors' test: a line fitted to (steps, errors) with its covariance; reduce when −ratio·slope < the
    slope's standard deviation (the error does not fall significantly). Needs at least 4 points."""
    (slope, _), cov = np.polyfit(np.asarray(steps, float), np.asarray(errors, float), 1, cov=True)
    return bool(-ratio * slope < math.sqrt(max(float(cov[0, 0]), 0.0)))


@dataclass
class LearningRatePolicy:
    """ZSSR's learning-rate schedule as a small state machine: ``record`` a reconstruction error, call ``step``
    after each update (it may divide ``lr`` by 10), stop when ``done``."""

    lr: float = LEARNING_RATE
    min_lr: float = MIN_LEARNING_RATE
    min_iters: int = MIN_ITERS
    check_every: int = POLICY_CHECK_EVERY
    test_every: int = RUN_TEST_EVERY
    slope_range: int = SLOPE_RANGE
    ratio: float = CHANGE_RATIO
    steps: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    changes: list = field(default_factory=lambda: [0])

    def wants_test(self, it: int) -> bool:
        return it % self.test_every == 0

    def record(self, it: int, error: float) -> None:
        self.steps.append(int(it))
        self.errors.append(float(error))

    def step(self, it: int) -> bool:
        """After update ``it`` (0-based): True when the rate was just divided by 10."""
        if (it + 1) % self.check_every or it - self.changes[-1] <= self.min_iters:
            return False
        n = max(self.slope_range // self.test_every, 1)
        steps, errors = self.steps[-n:], self.errors[-n:]
        if len(steps) < 4 or not slope_says_reduce(steps, errors, self.ratio):
            return False
        self.lr /= 10
        self.changes.append(it)
        return True

    @property
    def done(self) -> bool:
        return self.lr < self.min_lr


# ------------------------------------------------------------------------------------------ fathers


def _crop(x: torch.Tensor, h: int, w: int, rng: np.random.Generator) -> torch.Tensor:
    top = int(rng.integers(0, x.shape[-2] - h + 1))
    left = int(rng.integers(0, x.shape[-1] - w + 1))
    return x[..., top:top + h, left:left + w]


def random_father(sources: list[tuple[torch.Tensor, float]], rng: np.random.Generator, crop_size: int = CROP_SIZE,
                  max_scale: float = 1.0, min_scale: float = MIN_SCALE, allow_rotation: bool = True,
                  leave_as_is_probability: float = LEAVE_AS_IS_PROBABILITY,
                  no_interpolate_probability: float = NO_INTERPOLATE_PROBABILITY,
                  scale_diff_sigma: float = SCALE_DIFF_SIGMA, shear_sigma: float = SHEAR_SIGMA,
                  min_side: int = 1) -> torch.Tensor:
    """One HR father (1×C×h×w in [0, 1]) from ``sources`` ((image, its scale relative to the input), smallest
    first), by the authors' three modes (module docstring); sides at least ``min_side`` where the source allows."""
    chooser = rng.random()
    mode = ("leave_as_is" if chooser < leave_as_is_probability else
            "no_interp" if chooser < leave_as_is_probability + no_interpolate_probability else "affine")
    scale = 1.0 if mode == "leave_as_is" else float(rng.random() * (max_scale - min_scale) + min_scale)
    index = next((i for i, (_, base) in enumerate(sources) if base > scale - 1e-6), len(sources) - 1)
    image, base = sources[index]
    H, W = image.shape[-2:]
    crop_h, crop_w = min(H, max(crop_size, min_side)), min(W, max(crop_size, min_side))
    if mode != "affine":
        father = _crop(image, crop_h, crop_w, rng)
        if mode == "no_interp" and allow_rotation:
            father = torch.rot90(father, int(rng.integers(4)), dims=(-2, -1))
            father = father.flip(-1) if rng.random() < 0.5 else father
        return father
    scale /= base
    diff = float(rng.normal()) * scale_diff_sigma
    mirror = -1.0 if allow_rotation and rng.random() < 0.5 else 1.0
    sx, sy = mirror * (scale + diff / 2), scale - diff / 2
    theta = float(rng.random() * 2 * math.pi) if allow_rotation else 0.0
    shear_x, shear_y = float(rng.normal()) * shear_sigma, float(rng.normal()) * shear_sigma
    # forward map (input pixel offsets from the centre → output offsets): shear · rotation · scale, as the authors
    rotation = np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]])
    forward = np.array([[1.0, shear_x], [shear_y, 1.0]]) @ rotation @ np.diag([sx, sy])
    if abs(np.linalg.det(forward)) < 1e-3:
        return _crop(image, crop_h, crop_w, rng)
    side_h = min(crop_h, max(int(abs(sy) * H), min_side))
    side_w = min(crop_w, max(int(abs(sx) * W), min_side))
    # the window's centre, a random point of the scaled image's extent that keeps the window inside it
    ty = (rng.random() - 0.5) * max(abs(sy) * H - side_h, 0.0)
    tx = (rng.random() - 0.5) * max(abs(sx) * W - side_w, 0.0)
    ys = torch.arange(side_h, dtype=torch.float64) - (side_h - 1) / 2 + ty
    xs = torch.arange(side_w, dtype=torch.float64) - (side_w - 1) / 2 + tx
    qy, qx = torch.meshgrid(ys, xs, indexing="ij")
    inverse = torch.from_numpy(np.linalg.inv(forward))
    px = inverse[0, 0] * qx + inverse[0, 1] * qy + (W - 1) / 2  # input pixel centres, x first as OpenCV's matrices
    py = inverse[1, 0] * qx + inverse[1, 1] * qy + (H - 1) / 2
    grid = torch.stack([(2 * px + 1) / W - 1, (2 * py + 1) / H - 1], dim=-1)[None].to(image)
    father = F.grid_sample(image, grid, mode="bicubic", padding_mode="reflection", align_corners=False)
    return father.clamp(0, 1)


# ------------------------------------------------------------------------------------------ sons


def make_son(father: torch.Tensor, scale: float, kernel: torch.Tensor | None, order: str = "blur_decimate") -> torch.Tensor:
    """The LR son of ``father``: the recipe's blur-and-subsample with ``kernel`` (K×K) in ``order``
    (``image_ops.classical_degradation``), or MATLAB bicubic ↓``scale`` without one; clipped to [0, 1]. ZSSR's and
    MZSR's sons alike."""
    if kernel is not None:
        out = classical_degradation(father, int(scale), kernel, order)
    else:
        h, w = father.shape[-2:]
        out = imresize(father, size=(max(1, math.ceil(h / scale)), max(1, math.ceil(w / scale))))
    return out.clamp(0, 1)


# ------------------------------------------------------------------------------------------ the method


def _median(stack: torch.Tensor) -> torch.Tensor:
    """np.median over dim 0: the middle value, or the mean of the two middle ones for an even count."""
    values = stack.sort(dim=0).values
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


class ZSSR(Restorer):
    """ZSSR on each test image; see the module docstring. ``use_kernel``: None uses the pair's kernel where it has
    one (bicubic sons otherwise), True requires it (one line from ``degradation`` where it is missing), False
    always makes bicubic sons."""

    task = "sr"
    label = "ZSSR (Shocher 2018)"

    def __init__(self, max_iters: int = MAX_ITERS, min_iters: int = MIN_ITERS, crop_size: int = CROP_SIZE,
                 lr: float = LEARNING_RATE, min_lr: float = MIN_LEARNING_RATE, features: int = 64, depth: int = 8,
                 seed: int = 0, device: str | None = None, back_projection_iters: int | list[int] = BACK_PROJECTION_ITERS,
                 ensemble: bool = True, gradual: list[float] | None = None, progress: bool = False,
                 time_limit_seconds: float | None = None, use_kernel: bool | None = None,
                 order: str | None = None, channels: str = "rgb", allow_rotation: bool = True,
                 noise_std: float = 0.0, run_test_every: int = RUN_TEST_EVERY,
                 policy_check_every: int = POLICY_CHECK_EVERY):
        self.max_iters = check_positive(NAME, "max_iters", max_iters, integer=True)
        if not isinstance(min_iters, int) or isinstance(min_iters, bool) or min_iters < 0:
            raise AnticipatedError(f"{NAME}: min_iters={min_iters!r} must be an integer >= 0")
        self.min_iters = min_iters
        self.crop_size = check_positive(NAME, "crop_size", crop_size, integer=True)
        self.lr = check_positive(NAME, "lr", lr)
        self.min_lr = check_positive(NAME, "min_lr", min_lr)
        self.features = check_positive(NAME, "features", features, integer=True)
        self.depth = check_positive(NAME, "depth", depth, integer=True)
        if self.depth < 2:
            raise AnticipatedError(f"{NAME}: depth={depth!r} must be at least 2 (a first and a last conv layer)")
        self.seed = int(seed)
        self.device = torch.device(device) if device else torch.device("cpu")
        if channels not in ("rgb", "y"):
            raise AnticipatedError(f"{NAME}: channels={channels!r} must be 'rgb' (the authors') or 'y'")
        self.channels = channels
        if order is not None and order not in DEGRADATION_ORDERS:
            raise AnticipatedError(f"{NAME}: order={order!r} must be one of {', '.join(map(repr, DEGRADATION_ORDERS))}")
        self.order = order
        self.active_order = order or "blur_decimate"
        if use_kernel not in (None, True, False):
            raise AnticipatedError(f"{NAME}: use_kernel={use_kernel!r} must be true, false or null (where present)")
        self.use_kernel = use_kernel
        self.gradual = self._check_gradual(gradual)
        if self.gradual and use_kernel:
            raise AnticipatedError(f"{NAME}: gradual={gradual!r} needs bicubic sons (a kernel is defined for the "
                                   "pair's scale only); leave use_kernel out or set it false")
        bp = back_projection_iters
        bp = [bp] if not isinstance(bp, (list, tuple)) else list(bp)
        if not bp or any(not isinstance(b, int) or isinstance(b, bool) or b < 0 for b in bp):
            raise AnticipatedError(f"{NAME}: back_projection_iters={back_projection_iters!r} must be an integer >= 0 "
                                   "or a list of them, one per gradual step")
        self.back_projection_iters = bp
        self.ensemble, self.progress, self.allow_rotation = bool(ensemble), bool(progress), bool(allow_rotation)
        if time_limit_seconds is not None and (not isinstance(time_limit_seconds, (int, float))
                                               or isinstance(time_limit_seconds, bool) or time_limit_seconds < 0):
            raise AnticipatedError(f"{NAME}: time_limit_seconds={time_limit_seconds!r} must be null or a number >= 0")
        self.time_limit_seconds = None if time_limit_seconds is None else float(time_limit_seconds)
        if not isinstance(noise_std, (int, float)) or noise_std < 0:
            raise AnticipatedError(f"{NAME}: noise_std={noise_std!r} must be a number >= 0")
        self.noise_std = float(noise_std)
        self.run_test_every = check_positive(NAME, "run_test_every", run_test_every, integer=True)
        self.policy_check_every = check_positive(NAME, "policy_check_every", policy_check_every, integer=True)
        self.last_budget: dict | None = None

    @staticmethod
    def _check_gradual(gradual) -> list[float]:
        if gradual is None:
            return []
        if not isinstance(gradual, (list, tuple)) or any(
                not isinstance(g, (int, float)) or isinstance(g, bool) or g <= 1 for g in gradual):
            raise AnticipatedError(f"{NAME}: gradual={gradual!r} must be null or a list of intermediate scales > 1")
        return sorted(float(g) for g in gradual)

    # ------------------------------------------------------------------------------ degradation model

    def son(self, father: torch.Tensor, scale: float, kernel: torch.Tensor | None) -> torch.Tensor:
        return make_son(father, scale, kernel, self.active_order)

    def _noisy_son(self, father, scale, kernel, gen: torch.Generator | None):
        out = self.son(father, scale, kernel)
        if self.noise_std > 0:
            noise = torch.randn(out.shape, generator=gen, device="cpu", dtype=out.dtype).to(out.device)
            out = (out + noise * self.noise_std).clamp(0, 1)
        return out

    def back_project(self, sr: torch.Tensor, lr: torch.Tensor, scale: float, kernel, iterations: int) -> torch.Tensor:
        """``utils.back_projection`` ``iterations`` times: sr ← clip(sr + bicubic↑(lr − ↓(sr)))."""
        for _ in range(iterations):
            down = self.son(sr, scale, kernel) if kernel is not None else imresize(sr, size=tuple(lr.shape[-2:]))
            sr = (sr + imresize(lr - down, size=tuple(sr.shape[-2:]))).clamp(0, 1)
        return sr

    # ------------------------------------------------------------------------------ one image

    def run(self, pair: dict, what: str) -> torch.Tensor:
        started, updates = time.perf_counter(), 0
        try:
            scale = pair_scale(pair)
            lr_images = pair["degraded"]
            kernels = None
            self.active_order = self.order or pair.get("order") or "blur_decimate"
            if self.use_kernel or (self.use_kernel is None and pair.get("kernel") is not None):
                kernels = degradation(pair, "kernel", self, what)
                if self.gradual:
                    raise AnticipatedError(f"{NAME}: gradual={self.gradual} needs bicubic sons, and the pair{' of ' + what if what else ''} "
                                           "has a kernel; set use_kernel=false to ignore it, or leave gradual out")
            outs = []
            for i in range(len(lr_images)):
                kernel = None if kernels is None else kernels[min(i, len(kernels) - 1)].to(self.device, torch.float32)
                out, n = self.super_resolve(lr_images[i:i + 1].to(self.device, torch.float32), scale, kernel, what,
                                            started)
                outs.append(out.cpu())
                updates += n
            return torch.cat(outs).to(lr_images.dtype)
        finally:
            self.last_budget = {"updates": updates, "seconds": time.perf_counter() - started}

    def steps_for(self, scale: int) -> list[float]:
        steps = [g for g in self.gradual if g < scale - 1e-6] + [float(scale)]
        return steps

    def super_resolve(self, lr: torch.Tensor, scale: int, kernel: torch.Tensor | None, what: str,
                      started: float) -> tuple[torch.Tensor, int]:
        """(the SR image of one LR image, updates made)."""
        steps = self.steps_for(scale)
        min_side = int(scale) if kernel is None else int(scale) * math.ceil((kernel.shape[-1] // 2 + 1) / scale)
        if min(lr.shape[-2:]) < min_side:
            raise AnticipatedError(f"{NAME}: the LR image{' of ' + what if what else ''} is {lr.shape[-2]}×{lr.shape[-1]}, "
                                   f"too small for sons at x{scale}{' with a ' + str(kernel.shape[-1]) + '-px kernel' if kernel is not None else ''} "
                                   f"(needs sides of at least {min_side})")
        rng = np.random.default_rng(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = ZSSRNet(lr.shape[1], self.depth, self.features).to(self.device)
        optimizer = torch.optim.Adam(net.parameters(), lr=self.lr)
        sources = [(lr, 1.0)]
        updates, out = 0, lr
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True), disable=not self.progress, transient=True) as bar:
            for k, sf in enumerate(steps):
                job = bar.add_task(f"ZSSR {what} x{sf:g}", total=self.max_iters)
                updates += self.train(net, optimizer, sources, lr, sf, kernel, rng, gen, min_side, started,
                                      lambda: bar.advance(job))
                out = self.final_test(net, lr, sf, kernel, self.back_projection_iters[min(k, len(self.back_projection_iters) - 1)], what)
                sources.append((out, sf))
        return out, updates

    def train(self, net, optimizer, sources, lr, sf, kernel, rng, gen, min_side, started, advance) -> int:
        """The authors' loop at one scale step; the number of updates made."""
        policy = LearningRatePolicy(self.lr, self.min_lr, self.min_iters, self.policy_check_every, self.run_test_every)
        for group in optimizer.param_groups:
            group["lr"] = policy.lr
        test_input = lr if kernel is None else lr[..., : lr.shape[-2] // int(sf) * int(sf), : lr.shape[-1] // int(sf) * int(sf)]
        max_scale = sources[-1][1]
        multiple = int(sf) if float(sf).is_integer() else 1
        net.train()
        updates = 0
        for it in range(self.max_iters):
            if self.time_limit_seconds is not None and time.perf_counter() - started >= self.time_limit_seconds:
                break
            father = random_father(sources, rng, self.crop_size, max_scale, allow_rotation=self.allow_rotation,
                                   min_side=min_side)
            h, w = father.shape[-2:]
            father = father[..., : max(h - h % multiple, multiple), : max(w - w % multiple, multiple)]
            son = self._noisy_son(father, sf, kernel, gen)
            prediction = net(imresize(son, size=tuple(father.shape[-2:])))
            loss = (prediction - father).abs().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            updates += 1
            advance()
            if policy.wants_test(it):
                policy.record(it, self.reconstruction_error(net, test_input, sf, kernel))
            if policy.step(it):
                for group in optimizer.param_groups:
                    group["lr"] = policy.lr
            if policy.done:
                break
        return updates

    @torch.no_grad()
    def reconstruction_error(self, net, image: torch.Tensor, sf: float, kernel) -> float:
        """``quick_test``'s reconstruction MSE: the net on the input's own son against the input."""
        net.eval()
        rec = net(imresize(self.son(image, sf, kernel), size=tuple(image.shape[-2:]))).clamp(0, 1)
        net.train()
        return float(((rec - image) ** 2).mean())

    @torch.no_grad()
    def final_test(self, net, lr: torch.Tensor, sf: float, kernel, bp_iters: int, what: str) -> torch.Tensor:
        """The 8-fold geometric self-ensemble (or the input alone), each output back-projected, their median,
        back-projected again."""
        net.eval()

        def forward(view: torch.Tensor) -> torch.Tensor:
            h, w = view.shape[-2:]
            up = imresize(view, size=(math.ceil(h * sf - 1e-9), math.ceil(w * sf - 1e-9)))
            return budgeted_forward(net, up, what=what).clamp(0, 1)

        outputs = [self.back_project(y, lr, sf, kernel, bp_iters)
                   for y in geometric_views(lr, forward, 8 if self.ensemble else 1)]
        out = _median(torch.stack(outputs)) if len(outputs) > 1 else outputs[0]
        return self.back_project(out, lr, sf, kernel, bp_iters)
