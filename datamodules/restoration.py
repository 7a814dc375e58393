"""DataModules that synthesize (degraded, clean) pairs on the fly, for the three tasks.

    SRDataModule       bicubic SR, or the classical model (blur kernel, three orders, noise); mixed-scale batches
    DenoiseDataModule  Gaussian noise of a fixed σ or a blind range, optional JPEG
    DeblurDataModule   motion blur from synthetic camera paths, averaged video frames or GoPro_Large pairs;
                       optional image pyramids for multi-scale nets

The DataLoader does only cheap CPU work — decode, random crop, flips/rot90 (albumentations: one draw hits
every aligned image of a sample, so a real blurred/sharp pair stays aligned) — and yields clean images, plus
the real degraded image or the video frames where the data has them. Degradation runs on the batch after it
reached the device (``on_after_batch_transfer``), so on a GPU it runs on the GPU. Validation and test use
full images whose degraded inputs are fixed: every random draw comes from a CPU ``torch.Generator`` seeded
by the image's name (``image_seed``), so the pairs are the same on every run, process and device.
"""
from __future__ import annotations

import math
import os
import zlib
from functools import partial
from pathlib import Path
from typing import Callable, Literal, Union

import albumentations as A
import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from datamodules import image_ops as d
from datamodules.image_ops import Channels, bicubic_downsample, bicubic_upsample, mod_crop, quantize, to_channels
from datamodules.errors import AnticipatedError
from datamodules.gopro import GOPRO_BLUR_KINDS, frame_folders, frame_windows, gopro_pairs
from datamodules.sources import dataset_root, load_images, read_image

# A sample: a clean C×H×W image, a dict of aligned images ({"degraded": blurred, "target": sharp}, or
# {"frames": T×C×H×W}), or a zero-argument callable returning either, read at every use (large data sets).
Item = Union[torch.Tensor, dict, Callable[[], Union[torch.Tensor, dict]]]


def image_seed(name: str, seed: int) -> int:
    """A stable per-image seed (same on every run, process and device)."""
    return (zlib.crc32(name.encode()) + 1_000_003 * seed) % (2**31)


# ------------------------------------------------------------------------------------------- option checks


def check_choice(option: str, value, choices) -> None:
    if value not in choices:
        raise AnticipatedError(f"data.init_args.{option}={value!r} must be one of {', '.join(map(repr, choices))}")


def as_range(option: str, value, low: float = 0.0, high: float = math.inf) -> tuple[float, float]:
    """A config value that is a fixed number or a [low, high] range, as a checked (low, high) pair."""
    pair = (value, value) if isinstance(value, (int, float)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, float)) for v in pair) or not low <= pair[0] <= pair[1] <= high:
        raise AnticipatedError(f"data.init_args.{option}={value!r} must be a number or a [low, high] range within [{low}, {high}]")
    return float(pair[0]), float(pair[1])


def draw_per_image(n: int, value_range: tuple[float, float], generator: torch.Generator | None) -> torch.Tensor:
    """N values ~ U[low, high] (all equal to low for a fixed value), on the generator's device."""
    return d.sample_sigma(n, *value_range, generator)


def randint_per_image(n: int, low: int, high: int, generator: torch.Generator | None) -> torch.Tensor:
    """N integers uniform in [low, high]."""
    device = generator.device if generator is not None else "cpu"
    return torch.randint(low, high + 1, (n,), generator=generator, device=device)


# ------------------------------------------------------------------------------------------------ datasets


def read_aligned(paths: dict) -> dict[str, torch.Tensor]:
    """Read one sample's aligned files: key → a path (C×H×W) or a tuple of frame paths (T×C×H×W)."""
    return {k: torch.stack([read_image(p) for p in v]) if isinstance(v, tuple) else read_image(v)
            for k, v in paths.items()}


def aligned(item: Item) -> dict[str, torch.Tensor]:
    item = item() if callable(item) else item
    return item if isinstance(item, dict) else {"target": item}


def _to_hwc(x: torch.Tensor) -> np.ndarray:
    """C×H×W or T×C×H×W → H×W×(T·C) float32: one array albumentations crops and flips in one go."""
    return np.ascontiguousarray(x.reshape(-1, *x.shape[-2:]).permute(1, 2, 0).numpy())


def _from_hwc(a: np.ndarray, lead: tuple[int, ...]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).reshape(*lead, *a.shape[:2])


class RandomPatches(Dataset):
    """``length`` random training patches in the training colour space.

    ``images`` holds (name, item), items as ``Item`` above. In-memory images are converted to ``channels``
    once and picked with probability proportional to their area; read-at-use ones are picked uniformly.
    """

    def __init__(self, images: list[tuple[str, Item]], patch_size: int, length: int, channels: Channels,
                 augment: bool = True):
        self.channels, self.patch_size, self.length = channels, patch_size, length
        self.items = [(name, item if callable(item) else self._arrays(item)) for name, item in images]
        if any(callable(item) for _, item in self.items):
            self.probs = None
        else:
            areas = np.array([np.prod(next(iter(arrays.values())).shape[:2]) for _, (arrays, _) in self.items],
                             dtype=np.float64)
            self.probs = areas / areas.sum()
        self.ops = [A.RandomCrop(patch_size, patch_size)]
        if augment:
            self.ops += [A.HorizontalFlip(p=0.5), A.RandomRotate90(p=1.0)]
        self.transforms: dict[tuple[str, ...], A.Compose] = {}

    def _arrays(self, item: Item) -> tuple[dict[str, np.ndarray], dict[str, tuple[int, ...]]]:
        tensors = {k: to_channels(v, self.channels) for k, v in aligned(item).items()}
        return {k: _to_hwc(v) for k, v in tensors.items()}, {k: tuple(v.shape[:-2]) for k, v in tensors.items()}

    def _transform(self, keys: tuple[str, ...]) -> A.Compose:
        """The first image is albumentations' "image", the others follow it as additional targets."""
        if keys not in self.transforms:
            self.transforms[keys] = A.Compose(self.ops, additional_targets={k: "image" for k in keys[1:]})
        return self.transforms[keys]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        # torch's RNG follows seed_everything and worker seeding; the index keeps DDP ranks apart
        rng = np.random.default_rng([torch.randint(0, 2**31, ()).item(), i])
        name, item = self.items[rng.choice(len(self.items), p=self.probs)]
        arrays, leads = self._arrays(item) if callable(item) else item
        keys = tuple(arrays)
        h, w = arrays[keys[0]].shape[:2]
        if min(h, w) < self.patch_size:
            raise AnticipatedError(f"{name}: {w}x{h} is smaller than the {self.patch_size}px patch")
        transform = self._transform(keys)
        transform.set_random_seed(int(rng.integers(2**31)))
        out = transform(image=arrays[keys[0]], **{k: arrays[k] for k in keys[1:]})
        return {k: _from_hwc(out["image" if k == keys[0] else k], leads[k]) for k in keys}


class FullImages(Dataset):
    """Whole images for validation/test/predict, mod-cropped to ``multiple``, in their own channels;
    items as in ``RandomPatches`` (read-at-use ones are read when asked for)."""

    def __init__(self, images: list[tuple[str, Item]], multiple: int = 1):
        self.multiple = multiple
        self.images = [(name, item if callable(item) else self._crop(item)) for name, item in images]

    def _crop(self, item: Item) -> dict[str, torch.Tensor]:
        return {k: mod_crop(v, self.multiple) for k, v in aligned(item).items()}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        name, item = self.images[i]
        return {**(self._crop(item) if callable(item) else item), "name": name, "index": i}


def _map_images(fn, batch: dict) -> dict:
    """Apply ``fn`` to every N×C×H×W image of a batch dict, pyramids (lists) included; per-image numbers
    (``sigma``, ``scale``) pass unchanged."""
    def apply(v):
        if isinstance(v, list):
            return [apply(x) for x in v]
        return fn(v) if torch.is_tensor(v) and v.ndim == 4 else v

    return {k: apply(v) for k, v in batch.items()}


def _concat(parts: list[dict]) -> dict:
    if len(parts) == 1:
        return parts[0]
    return {k: torch.cat([p[k] for p in parts]) if torch.is_tensor(v) else
            [torch.cat([p[k][i] for p in parts]) for i in range(len(v))] for k, v in parts[0].items()}


def _net_multiple(net) -> int:
    """Target sides the net can take: its input sides must be multiples of size_multiple."""
    return getattr(net, "scale", 1) * getattr(net, "size_multiple", 1) if net is not None else 1


# ---------------------------------------------------------------------------------------------- base class


class RestorationDataModule(L.LightningDataModule):
    """Shared machinery; a task subclass says how to degrade (``degrade``) and what sizes must divide."""

    def __init__(
        self,
        train: list[str] = ["skimage:train"],  # noqa: B006
        val: list[str] = ["skimage:val"],  # noqa: B006
        test: list[str] | None = None,
        predict: list[str] | None = None,
        data_root: str | None = None,
        scale: int = 1,
        channels: Channels = "y",
        patch_size: int = 33,
        batch_size: int = 64,
        patches_per_epoch: int = 6400,
        augment: bool = True,
        num_workers: int | None = None,
        seed: int = 0,
    ):
        """
        Args:
            train, val, test, predict: source specs (``skimage:train``, ``benchmark:Set5``, a folder, a file).
            data_root: benchmark folder; defaults to ``$RESTORELAB_DATA``.
            scale: SR factor (1 for denoising/deblurring); the CLI links it to ``model.init_args.scale``.
            channels: training colour space: "y" (SRCNN/VDSR), "rgb", or "gray" (gray denoising).
            patch_size: side of the clean (target) training patch. It must also suit the net: the target
                side divided by ``net.scale`` must be a multiple of ``net.size_multiple`` (checked at fit);
                validation/test images are mod-cropped so that they suit it too.
            patches_per_epoch: what one epoch means: the datasets are small and sampled at random.
            num_workers: None = 0 on a CPU-only machine (workers would steal the training cores) and
                min(8, cores) with a GPU.
            seed: of the fixed validation/test pairs (``image_seed``); training follows ``seed_everything``.
        """
        super().__init__()
        self.save_hyperparameters()
        check_choice("channels", channels, ("y", "rgb", "gray"))
        for option, value in (("patch_size", patch_size), ("batch_size", batch_size),
                              ("patches_per_epoch", patches_per_epoch)):
            if not isinstance(value, int) or value < 1:
                raise AnticipatedError(f"data.init_args.{option}={value!r} must be a positive integer")
        self.scale = scale
        if patch_size % self.patch_multiple():
            raise AnticipatedError(f"data.init_args.patch_size={patch_size} must be a multiple of {self.patch_multiple()}")
        self.train_set = self.val_set = self.test_set = self.predict_set = None

    # ---- what a task subclass defines
    def patch_multiple(self) -> int:
        """What training patch sides must be multiples of."""
        return 1

    def eval_multiple(self) -> int:
        """What validation/test image sides are cropped to multiples of (before the net's own needs)."""
        return self.patch_multiple()

    def degrade(self, batch: dict, generator: torch.Generator | None) -> dict:
        """Clean batch → batch dict with ``degraded``, ``upsampled`` and ``target``.

        ``generator`` is None for training batches (already in the training colour space; draws come from
        torch's global RNG, noise on the batch's device) and a CPU generator seeded per image for the
        evaluation pairs, which are given one image at a time in their source colours and converted to the
        training colours afterwards (``to_channels`` is idempotent, so a subclass may convert earlier, e.g.
        before adding noise, whose σ must mean the same at training and evaluation).
        """
        raise NotImplementedError

    def source_items(self, specs: list[str], min_size: int, train: bool = False) -> list[tuple[str, Item]]:
        """(name, item) of every sample of the given specs; images with a side below ``min_size`` are skipped."""
        return load_images(specs, self.hparams.data_root, min_size=min_size)

    def check_net(self, net) -> None:
        """Raise, naming the option, where the net cannot train on these batches."""
        if self.hparams.patch_size % _net_multiple(net):
            raise AnticipatedError(f"data.init_args.patch_size={self.hparams.patch_size} must be a multiple of {_net_multiple(net)} "
                             f"for {type(net).__name__} (scale {getattr(net, 'scale', 1)} x size_multiple "
                             f"{getattr(net, 'size_multiple', 1)})")

    # ---- data
    def _net(self):
        module = self.trainer.lightning_module if self.trainer is not None else None
        return getattr(module, "net", None)

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        net = self._net()
        m = math.lcm(self.eval_multiple(), _net_multiple(net))
        if stage in (None, "fit") and net is not None:
            self.check_net(net)
        if stage in (None, "fit") and self.train_set is None:
            items = self.source_items(hp.train, hp.patch_size, train=True)
            self.train_set = RandomPatches(items, hp.patch_size, hp.patches_per_epoch, hp.channels, hp.augment)
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = FullImages(self.source_items(hp.val, m), m)
        if stage in (None, "test") and self.test_set is None:
            self.test_set = FullImages(self.source_items(hp.test or hp.val, m), m)
        if stage == "predict" and self.predict_set is None:
            # the files are the net's inputs
            self.predict_set = FullImages(load_images(hp.predict or hp.val, hp.data_root),
                                          getattr(net, "size_multiple", 1))

    def _workers(self) -> int:
        if self.hparams.num_workers is not None:
            return self.hparams.num_workers
        return min(8, os.cpu_count() or 1) if torch.cuda.is_available() else 0

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        workers = self._workers()
        sampler = None
        if not train and torch.distributed.is_available() and torch.distributed.is_initialized():
            # Lightning's default sampler pads the last ranks with repeated images, which would count
            # them twice in the per-image mean; this one splits the set without repeats.
            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size if train else 1,
            shuffle=False,  # training patches are random already
            sampler=sampler,
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0,
            drop_last=train,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_set, train=False)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        trainer = self.trainer
        if trainer is not None and trainer.predicting:
            return self.as_given(batch)
        if trainer is not None and trainer.training:
            return self.degrade(batch, None)
        return self.fixed_pairs(batch)

    def fixed_pairs(self, batch: dict) -> dict:
        """Evaluation pairs: each image degraded with its own seeded CPU generator, then brought to the
        training colours."""
        parts = []
        for i, name in enumerate(batch["name"]):
            one = {k: v[i : i + 1] for k, v in batch.items() if torch.is_tensor(v)}
            parts.append(self.degrade(one, torch.Generator().manual_seed(image_seed(name, self.hparams.seed))))
        out = _map_images(partial(to_channels, channels=self.hparams.channels), _concat(parts))
        out["name"] = batch["name"]
        # a gray file is measured as gray even when an RGB net sees it replicated (RestorationModule._views)
        source = next(v for v in batch.values() if torch.is_tensor(v) and v.ndim >= 4)  # N×C×H×W or N×T×C×H×W
        out["gray"] = torch.full((len(batch["name"]),), source.shape[-3] == 1)
        return out

    def as_given(self, batch: dict) -> dict:
        """Predict: the files *are* the degraded inputs."""
        x = to_channels(batch["target"], self.hparams.channels)
        return {"degraded": x, "upsampled": x, "name": batch["name"]}


# ---------------------------------------------------------------------------------------- super-resolution

Kernel = Literal["none", "gaussian", "random_gaussian", "mzsr", "motion", "file"]
Order = Literal["blur_bicubic", "bicubic_blur", "blur_decimate"]
SR_SCALES = (2, 3, 4, 8)
# K when kernel_size is left out: DASR's 21 for Gaussians, MZSR's 15, 31 for camera shake
DEFAULT_KERNEL_SIZE = {"gaussian": 21, "random_gaussian": 21, "mzsr": 15, "motion": 31}


class SRDataModule(RestorationDataModule):
    """Super-resolution: HR patch → LR saved as 8 bit (clipped, rounded); ``upsampled`` = MATLAB bicubic ×s of
    LR, the input of SRCNN/VDSR-style nets and the bicubic baseline.

    ``kernel="none"``: LR = MATLAB ``imresize(HR, 1/s)``, the bicubic degradation of the SR benchmarks.
    Otherwise the classical model LR = (HR ⊗ k)↓s in one of three ``order``\\ s (``image_ops.
    classical_degradation``) with k a fixed Gaussian, random Gaussians per image, MZSR's kernel distribution,
    random camera shake, or a kernel file. Optional white noise (σ on the 0..255 scale, fixed or a range
    drawn per image) comes last, unclipped, in the training colours. Validation/test kernels and noise are
    drawn once per image (seeded).

    ``scales=[2, 3, 4]`` trains on mixed-scale batches (VDSR): each sample degraded at its own scale drawn
    from the list; such batches carry ``upsampled``, ``target`` and the per-sample ``scale`` but no
    ``degraded`` (its size differs per sample), so only nets on the upsampled input (scale 1) train on them.
    ``scale`` stays the validation/test scale that the CLI links to the model.
    """

    def __init__(
        self,
        scale: int = 3,
        scales: list[int] | None = None,
        train_crop: int | None = None,
        kernel: Kernel = "none",
        kernel_size: int | None = None,
        sigma: float = 2.0,
        sigma2: float | None = None,
        theta: float = 0.0,
        sigma_range: tuple[float, float] = (0.2, 4.0),
        isotropic: bool = False,
        kernel_file: str | None = None,
        order: Order = "blur_bicubic",
        noise_sigma: float | tuple[float, float] = 0.0,
        **kwargs,
    ):
        """
        Args:
            scale: validation/test SR factor (and the training one without ``scales``).
            scales: training factors, one drawn per sample; patch_size must be a multiple of their lcm.
            train_crop: side of the training pairs, cut from the centre of each degraded patch: VDSR's 41×41
                pairs come from 48-pixel patches (a multiple of lcm(2, 3, 4)) degraded at ×2/×3/×4, with the
                patch border, where bicubic sees the crop's edge, cut away as when whole images are degraded.
                Pairs then have no ``degraded`` (its side would not be whole), so only for nets on the
                upsampled input (scale 1).
            kernel: "none" (bicubic), "gaussian" (fixed: ``sigma``, ``sigma2``, ``theta``), "random_gaussian"
                (σ1, σ2 ~ U(``sigma_range``), σ2 = σ1 if ``isotropic``, θ ~ U[0°, 180°)), "mzsr" (MZSR's
                anisotropic Gaussians for this scale), "motion" (random camera shake of length
                U[(K-1)/4, K-1]), "file" (``kernel_file``: .npy, .txt, .csv, .mat or an image).
            kernel_size: K of the K×K kernel; None = 21 (Gaussians), 15 (mzsr), 31 (motion).
            sigma, sigma2: standard deviations in HR pixels along the principal axes (sigma2=None: isotropic).
            theta: angle of the sigma axis in degrees, counter-clockwise from +x.
            order: "blur_bicubic" (SRMD), "bicubic_blur" (DPSR: blur at LR), "blur_decimate" (USRNet, MZSR).
            noise_sigma: σ on the 0..255 scale, or [low, high] drawn per image.
        """
        if scale not in SR_SCALES:
            raise AnticipatedError(f"data.init_args.scale must be one of 2, 3, 4, 8; got {scale}")
        self.train_scales = list(scales) if scales else [scale]
        if not self.train_scales or len(set(self.train_scales)) != len(self.train_scales) or \
                any(s not in SR_SCALES for s in self.train_scales):
            raise AnticipatedError(f"data.init_args.scales={scales!r} must be distinct values from {list(SR_SCALES)}")
        check_choice("kernel", kernel, Kernel.__args__)
        check_choice("order", order, Order.__args__)
        self.noise_range = as_range("noise_sigma", noise_sigma, 0.0, 255.0)
        self.kernel_size = kernel_size or DEFAULT_KERNEL_SIZE.get(kernel, 0)
        if kernel_size is not None and (not isinstance(kernel_size, int) or kernel_size < 1):
            raise AnticipatedError(f"data.init_args.kernel_size={kernel_size!r} must be a positive integer")
        self.fixed_kernel = None
        if kernel == "gaussian":
            if sigma <= 0 or (sigma2 is not None and sigma2 <= 0):
                raise AnticipatedError(f"data.init_args.sigma={sigma!r} and data.sigma2={sigma2!r} must be positive")
            self.fixed_kernel = d.gaussian_kernel(self.kernel_size, sigma, sigma2, math.radians(theta))
        elif kernel == "random_gaussian":
            as_range("sigma_range", sigma_range, 1e-3)
        elif kernel == "file":
            if not kernel_file:
                raise AnticipatedError("data.init_args.kernel_file is required when data.kernel='file'")
            self.fixed_kernel = d.load_kernel(kernel_file)
            self.kernel_size = max(self.fixed_kernel.shape)
        super().__init__(scale=scale, **kwargs)
        self._check_kernel_fits()
        patch_size = self.hparams.patch_size
        if train_crop is not None and (not isinstance(train_crop, int) or not 0 < train_crop <= patch_size):
            raise AnticipatedError(f"data.init_args.train_crop={train_crop!r} must be a positive integer no larger than "
                             f"data.patch_size={patch_size}")

    def _check_kernel_fits(self) -> None:
        """Reflect padding needs the blurred image's sides to exceed the kernel's half width."""
        if self.hparams.kernel == "none":
            return
        side = self.hparams.patch_size
        if self.hparams.order == "bicubic_blur":
            side //= max(self.train_scales)
        if side <= self.kernel_size // 2:
            raise AnticipatedError(f"data.init_args.patch_size={self.hparams.patch_size} is too small for a {self.kernel_size}x"
                             f"{self.kernel_size} kernel (data.kernel_size) with order {self.hparams.order!r}")

    def patch_multiple(self) -> int:
        return math.lcm(*self.train_scales)

    def eval_multiple(self) -> int:
        return self.scale

    def check_net(self, net) -> None:
        super().check_net(net)
        if len(self.train_scales) > 1 and getattr(net, "scale", 1) != 1:
            raise AnticipatedError(f"data.init_args.scales={self.train_scales} mixes scales in a batch, which only nets on the "
                             f"upsampled input (scale 1, e.g. VDSR) can train on; {type(net).__name__} has "
                             f"scale {net.scale}")
        if self.hparams.train_crop is not None and getattr(net, "scale", 1) != 1:
            raise AnticipatedError(f"data.init_args.train_crop={self.hparams.train_crop} crops the upsampled input, but "
                             f"{type(net).__name__} takes the LR image (scale {net.scale})")

    def kernels(self, n: int, scale: int, generator: torch.Generator | None) -> torch.Tensor:
        """The blur kernel for n images: K×K when fixed, N×K×K when drawn per image."""
        hp, k = self.hparams, self.kernel_size
        if self.fixed_kernel is not None:
            return self.fixed_kernel
        if hp.kernel == "random_gaussian":
            return d.random_gaussian_kernel(n, k, tuple(hp.sigma_range), hp.isotropic, generator)
        if hp.kernel == "mzsr":
            return d.random_mzsr_kernel(n, scale, k, generator)
        return d.random_motion_kernel(n, k, ((k - 1) / 4, k - 1), generator=generator)

    def low_resolution(self, hr: torch.Tensor, scale: int, generator: torch.Generator | None) -> torch.Tensor:
        """Noise-free LR, 8 bit as an image file."""
        if self.hparams.kernel == "none":
            return quantize(bicubic_downsample(hr, scale))
        return quantize(d.classical_degradation(hr, scale, self.kernels(len(hr), scale, generator),
                                                self.hparams.order))

    def pair(self, hr: torch.Tensor, scale: int, generator: torch.Generator | None) -> dict:
        lr = self.low_resolution(hr, scale, generator)
        if self.noise_range[1] > 0:
            channels = self.hparams.channels
            hr, lr = to_channels(hr, channels), to_channels(lr, channels)
            lr = d.add_gaussian_noise(lr, draw_per_image(len(lr), self.noise_range, generator), generator)
        return {"degraded": lr, "upsampled": bicubic_upsample(lr, scale), "target": hr}

    def degrade(self, batch: dict, generator: torch.Generator | None) -> dict:
        hr = batch["target"]
        if generator is not None:
            return self.pair(hr, self.scale, generator)
        if len(self.train_scales) == 1:
            out = self.pair(hr, self.train_scales[0], None)
        else:
            scales = torch.tensor(self.train_scales)[torch.randint(len(self.train_scales), (len(hr),))].to(hr.device)
            upsampled = torch.empty_like(hr)
            for s in scales.unique().tolist():
                chosen = scales == s
                upsampled[chosen] = self.pair(hr[chosen], s, None)["upsampled"]
            out = {"upsampled": upsampled, "target": hr, "scale": scales}
        crop = self.hparams.train_crop
        if crop is None:
            return out
        return {**{k: out[k] for k in out if k != "degraded"},
                "upsampled": d.center_crop(out["upsampled"], (crop, crop)),
                "target": d.center_crop(out["target"], (crop, crop))}

    def as_given(self, batch: dict) -> dict:
        x = to_channels(batch["target"], self.hparams.channels)
        return {"degraded": x, "upsampled": bicubic_upsample(x, self.scale), "name": batch["name"]}


# --------------------------------------------------------------------------------------------- denoising


class DenoiseDataModule(RestorationDataModule):
    """Additive white Gaussian noise (DnCNN): σ fixed (DnCNN-S, e.g. 25) or drawn per image from a range
    (DnCNN-B: [0, 55]), on the 0..255 scale, added in the training colours (gray or RGB), unclipped unless
    ``clip``; then, optionally, a JPEG round trip (real libjpeg on the CPU; noise 0 + JPEG = deblocking).
    ``upsampled`` is ``degraded`` (scale 1), so the baseline is the noisy input. Batches also carry the
    per-image ``sigma``.
    """

    def __init__(
        self,
        noise_sigma: float | tuple[float, float] = 25.0,
        test_sigma: float | None = None,
        clip: bool = False,
        jpeg_quality: int | tuple[int, int] | None = None,
        channels: Literal["gray", "rgb"] = "gray",
        patch_size: int = 40,
        batch_size: int = 128,
        **kwargs,
    ):
        """
        Args:
            noise_sigma: σ (0..255) or [low, high] drawn per image (blind).
            test_sigma: σ of the validation/test pairs; None = ``noise_sigma``, drawn once per image when a range.
            clip: clip the noisy image to [0, 1], as saving it would.
            jpeg_quality: JPEG quality (1..100) or [low, high] drawn per image; None = no JPEG.
            channels: "gray" (DnCNN-S/B) or "rgb" (CDnCNN-B).
        """
        check_choice("channels", channels, ("gray", "rgb"))
        if kwargs.get("scale", 1) != 1:
            raise AnticipatedError(f"data.init_args.scale={kwargs['scale']!r} must be 1 for denoising")
        self.noise_range = as_range("noise_sigma", noise_sigma, 0.0, 255.0)
        self.test_range = self.noise_range if test_sigma is None else as_range("test_sigma", test_sigma, 0.0, 255.0)
        self.jpeg_range = None if jpeg_quality is None else tuple(
            int(q) for q in as_range("jpeg_quality", jpeg_quality, 1, 100))
        super().__init__(channels=channels, patch_size=patch_size, batch_size=batch_size, **kwargs)

    def degrade(self, batch: dict, generator: torch.Generator | None) -> dict:
        clean = to_channels(batch["target"], self.hparams.channels)
        n = len(clean)
        sigma = draw_per_image(n, self.noise_range if generator is None else self.test_range, generator)
        noisy = d.add_gaussian_noise(clean, sigma, generator, clip=self.hparams.clip)
        if self.jpeg_range is not None:
            noisy = d.jpeg_compress(noisy, randint_per_image(n, *self.jpeg_range, generator))
        return {"degraded": noisy, "upsampled": noisy, "target": clean, "sigma": sigma.to(clean.device)}


# -------------------------------------------------------------------------------------------- deblurring

Source = Literal["synthetic", "frames", "gopro"]


def _folder(spec: str, data_root: str | None) -> Path:
    """A folder spec: a path, or ``benchmark:<relative path>`` under the data root."""
    kind, _, name = spec.partition(":")
    return dataset_root(data_root) / name if kind == "benchmark" and name else Path(spec).expanduser()


def _odd_counts(n: int, low: int, high: int, generator: torch.Generator | None) -> torch.Tensor:
    """N odd frame counts uniform over the odd numbers in [low, high] (an odd count has a middle frame)."""
    first = low + 1 - low % 2
    return first + 2 * randint_per_image(n, 0, (high - first) // 2, generator)


class DeblurDataModule(RestorationDataModule):
    """Dynamic-scene motion blur (Nah et al., CVPR 2017: the average of N = 7..13 consecutive sharp frames in
    linear light, gamma 2.2; the middle frame is the target). ``source``:

    "synthetic"  still images (``skimage:train`` works) moved along smooth random camera paths
                 (``image_ops.synthetic_motion_blur``), N frames rendered and averaged;
    "frames"     folders of consecutive video frames (a spec: one folder of frames, or a folder of such
                 folders); the loader yields windows of the largest N and the device averages the centred
                 N frames drawn per sample;
    "gopro"      real pairs of the GoPro_Large layout (a spec: a split folder such as
                 ``/data/GoPro_Large/train`` or ``benchmark:GoPro_Large/test``), cropped and flipped together.

    N is drawn per sample among the odd counts of ``n_frames``. ``pyramid_levels`` > 1 adds
    ``degraded_pyramid``/``target_pyramid`` (``image_ops.image_pyramid``, finest first) for DeepDeblur and
    SRN's multi-scale loss; patch_size must then be a multiple of 2**(levels-1) and of the net's own
    ``size_multiple`` (SRN: 4·2**(levels-1)), which fit checks.
    """

    def __init__(
        self,
        source: Source = "synthetic",
        n_frames: int | tuple[int, int] = (7, 13),
        camera_gamma: float = 2.2,
        max_shift: float = 1.5,
        max_rotation: float = 0.1,
        frame_stride: int = 1,
        gopro_blur: Literal["blur", "blur_gamma"] = "blur_gamma",
        pyramid_levels: int = 1,
        channels: Channels = "rgb",
        patch_size: int = 256,
        batch_size: int = 16,
        **kwargs,
    ):
        """
        Args:
            source: "synthetic", "frames" or "gopro" (see the class docstring); train/val/test specs follow it.
            n_frames: frames averaged, or [low, high] (odd counts drawn per sample); not used by "gopro".
            camera_gamma: camera response of the linear-light average (1 = plain average; not "gamma", which
                is the learning-rate decay of the module).
            max_shift, max_rotation: "synthetic": largest per-frame camera motion (pixels, degrees).
            frame_stride: "frames": training windows start every this many frames (evaluation windows do not overlap).
            gopro_blur: "gopro": the blurred folder, ``blur_gamma`` (the paper's) or ``blur``.
            pyramid_levels: levels of the ×2 pyramids added to every batch (1 = none).
        """
        check_choice("source", source, Source.__args__)
        check_choice("gopro_blur", gopro_blur, GOPRO_BLUR_KINDS)
        if kwargs.get("scale", 1) != 1:
            raise AnticipatedError(f"data.init_args.scale={kwargs['scale']!r} must be 1 for deblurring")
        low, high = (int(v) for v in as_range("n_frames", n_frames, 1, 1000))
        if not any(t % 2 for t in range(low, high + 1)):
            raise AnticipatedError(f"data.init_args.n_frames={n_frames!r} must include an odd count (the target is the middle frame)")
        self.frame_range = (low, high - 1 + high % 2)
        if camera_gamma <= 0:
            raise AnticipatedError(f"data.init_args.camera_gamma={camera_gamma!r} must be positive")
        if not isinstance(pyramid_levels, int) or pyramid_levels < 1:
            raise AnticipatedError(f"data.init_args.pyramid_levels={pyramid_levels!r} must be a positive integer")
        if not isinstance(frame_stride, int) or frame_stride < 1:
            raise AnticipatedError(f"data.init_args.frame_stride={frame_stride!r} must be a positive integer")
        super().__init__(channels=channels, patch_size=patch_size, batch_size=batch_size, **kwargs)

    def patch_multiple(self) -> int:
        return 2 ** (self.hparams.pyramid_levels - 1)

    def check_net(self, net) -> None:
        super().check_net(net)
        levels = self.hparams.pyramid_levels
        if levels > 1 and getattr(net, "scales", levels) != levels:
            raise AnticipatedError(f"data.init_args.pyramid_levels={levels} but {type(net).__name__} works on {net.scales} "
                             f"levels (model.init_args.net.init_args.scales)")

    def source_items(self, specs: list[str], min_size: int, train: bool = False) -> list[tuple[str, Item]]:
        hp = self.hparams
        if hp.source == "synthetic":
            return super().source_items(specs, min_size, train)
        items = []
        for spec in specs:
            folder = _folder(spec, hp.data_root)
            if hp.source == "gopro":
                for blurred, sharp in gopro_pairs(folder.parent, folder.name, hp.gopro_blur):
                    items.append((f"{sharp.parent.parent.name}/{sharp.name}",
                                  partial(read_aligned, {"degraded": blurred, "target": sharp})))
                continue
            window = self.frame_range[1]
            stride = hp.frame_stride if train else window
            for video in frame_folders(folder):
                for frames in frame_windows(video, window, stride):
                    items.append((f"{video.name}/{frames[window // 2].name}",
                                  partial(read_aligned, {"frames": frames})))
        return items

    def blur(self, batch: dict, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(blurred, sharp) of a batch, per its source. Synthesised blur is made in the training colours, so
        that training and evaluation pairs are made alike (the linear-light average does not commute with
        a colour conversion)."""
        hp = self.hparams
        if "degraded" in batch:  # a real pair
            return batch["degraded"], batch["target"]
        middle = self.frame_range[1] // 2  # of a window of frames
        frames = to_channels(batch["frames"], hp.channels) if "frames" in batch else None
        sharp = frames[:, middle] if frames is not None else to_channels(batch["target"], hp.channels)
        counts = _odd_counts(len(sharp), *self.frame_range, generator)
        blurred = torch.empty_like(sharp)
        for count in counts.unique().tolist():
            chosen = (counts == count).to(sharp.device)
            if frames is not None:
                window = frames[chosen, middle - count // 2 : middle + count // 2 + 1]
                blurred[chosen] = d.average_frames(window, hp.camera_gamma)
            else:
                blurred[chosen] = d.synthetic_motion_blur(sharp[chosen], count, generator, hp.camera_gamma,
                                                          hp.max_shift, hp.max_rotation)[0]
        return blurred, sharp

    def degrade(self, batch: dict, generator: torch.Generator | None) -> dict:
        blurred, sharp = self.blur(batch, generator)
        out = {"degraded": blurred, "upsampled": blurred, "target": sharp}
        levels = self.hparams.pyramid_levels
        if levels > 1:
            out["degraded_pyramid"] = d.image_pyramid(blurred, levels)
            out["target_pyramid"] = d.image_pyramid(sharp, levels)
        return out
