"""DataModules that synthesize (degraded, clean) pairs on the fly with a degradation recipe (``datamodules.recipes``).

    SRDataModule       super-resolution: a BicubicSR or ClassicalSR recipe; mixed-scale batches (VDSR)
    DenoiseDataModule  an AWGN or JPEG recipe
    DeblurDataModule   a MotionBlur recipe: synthetic camera paths, averaged video frames or GoPro_Large pairs;
                       optional image pyramids for multi-scale nets

The DataLoader does only cheap CPU work — decode, random crop, flips/rot90 (albumentations: one draw hits
every aligned image of a sample, so a real blurred/sharp pair stays aligned) — and yields clean images, plus
the real degraded image or the video frames where the data has them. The recipe runs on the batch after it
reached the device (``on_after_batch_transfer``), so on a GPU it runs on the GPU. Validation and test use
full images whose degraded inputs are fixed: ``recipes.evaluation_pair`` draws everything from a CPU
``torch.Generator`` seeded by the image's name, the same function ``restorelab benchmark`` calls.
"""
from __future__ import annotations

import math
import os
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
from datamodules.errors import AnticipatedError
from datamodules.gopro import frame_folders, frame_windows, gopro_pairs
from datamodules.image_ops import Channels, bicubic_upsample, mod_crop, to_channels
from datamodules.recipes import AWGN, BicubicSR, MotionBlur, Recipe, evaluation_pair
from datamodules.recipes import check_choice as _check_choice
from datamodules.sources import dataset_root, load_images, read_image

# A sample: a clean C×H×W image, a dict of aligned images ({"degraded": blurred, "target": sharp}, or
# {"frames": T×C×H×W}), or a zero-argument callable returning either, read at every use (large data sets).
Item = Union[torch.Tensor, dict, Callable[[], Union[torch.Tensor, dict]]]


OPTION = "data.init_args."


def check_choice(option: str, value, choices) -> None:
    _check_choice(option, value, choices, prefix=OPTION)


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
        recipe: Recipe,
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
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
        seed: int = 0,
    ):
        """
        Args:
            recipe: the degradation (``datamodules.recipes``), on the command line ``--data.init_args.recipe=AWGN
                --data.init_args.recipe.init_args.sigma=50``; its options are checked when it is made.
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
            pin_memory: page-locked batches for faster host-to-GPU copies; None = with a GPU.
            persistent_workers: keep the workers between epochs; None = whenever there are workers.
                The three loader options change how batches are loaded, not the experiment: no part of the run id.
            seed: of the fixed validation/test pairs (``recipes.image_seed``); training follows ``seed_everything``.
        """
        super().__init__()
        self.save_hyperparameters()  # under the CLI: the recipe's class_path/init_args, not the object
        if not isinstance(recipe, self.recipe_type):
            raise AnticipatedError(f"data.init_args.recipe={type(recipe).__name__} is not a recipe for "
                                   f"{type(self).__name__}; it takes {self.recipe_type.__name__} or a subclass")
        self.recipe = recipe
        recipe.check_scale(scale)
        check_choice("channels", channels, ("y", "rgb", "gray"))
        for option, value in (("patch_size", patch_size), ("batch_size", batch_size),
                              ("patches_per_epoch", patches_per_epoch)):
            if not isinstance(value, int) or value < 1:
                raise AnticipatedError(f"data.init_args.{option}={value!r} must be a positive integer")
        if num_workers is not None and (not isinstance(num_workers, int) or isinstance(num_workers, bool)
                                        or num_workers < 0):
            raise AnticipatedError(f"data.init_args.num_workers={num_workers!r} must be a non-negative integer "
                                   "(or null: 0 on a CPU-only machine, min(8, cores) with a GPU)")
        if persistent_workers and self._workers() == 0:
            given = "0" if num_workers == 0 else "null, which is 0 on a CPU-only machine"
            raise AnticipatedError(f"data.init_args.persistent_workers=true needs data.init_args.num_workers > 0 "
                                   f"(it is {given})")
        self.scale = scale
        if patch_size % self.patch_multiple():
            raise AnticipatedError(f"data.init_args.patch_size={patch_size} must be a multiple of {self.patch_multiple()}")
        self.train_set = self.val_set = self.test_set = self.predict_set = None

    # ---- what a task subclass defines
    recipe_type: type = Recipe

    def patch_multiple(self) -> int:
        """What training patch sides must be multiples of."""
        return 1

    def eval_multiple(self) -> int:
        """What validation/test image sides are cropped to multiples of (before the net's own needs)."""
        return self.patch_multiple()

    def test_sources(self) -> list[str]:
        """The test images' specs: ``test``, else the validation images."""
        return self.hparams.test or self.hparams.val

    def degrade(self, batch: dict) -> dict:
        """A training batch (already in the training colours) → its pair, every draw from torch's global RNG on
        the batch's device."""
        return self.recipe.degrade_batch(batch, self.scale, self.hparams.channels, None)

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
            self.test_set = FullImages(self.source_items(self.test_sources(), m), m)
        if stage == "predict" and self.predict_set is None:
            # the files are the net's inputs
            self.predict_set = FullImages(load_images(hp.predict or hp.val, hp.data_root),
                                          getattr(net, "size_multiple", 1))

    def _workers(self) -> int:
        if self.hparams.num_workers is not None:
            return self.hparams.num_workers
        return min(8, os.cpu_count() or 1) if torch.cuda.is_available() else 0

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        workers, hp = self._workers(), self.hparams
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
            pin_memory=torch.cuda.is_available() if hp.pin_memory is None else hp.pin_memory,
            persistent_workers=workers > 0 if hp.persistent_workers is None else hp.persistent_workers,
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
            return self.degrade(batch)
        return self.fixed_pairs(batch)

    def fixed_pairs(self, batch: dict) -> dict:
        """Evaluation pairs: each image's ``recipes.evaluation_pair`` (seeded per image), as the benchmark makes them."""
        parts = []
        for i, name in enumerate(batch["name"]):
            one = {k: v[i : i + 1] for k, v in batch.items() if torch.is_tensor(v)}
            parts.append(evaluation_pair(self.recipe, {**one, "name": [name]}, self.scale, self.hparams.channels,
                                         self.hparams.seed))
        out = _concat([{k: v for k, v in p.items() if k != "name"} for p in parts])
        out["name"] = list(batch["name"])
        return out

    def as_given(self, batch: dict) -> dict:
        """Predict: the files *are* the degraded inputs."""
        x = to_channels(batch["target"], self.hparams.channels)
        return {"degraded": x, "upsampled": x, "name": batch["name"]}




# ---------------------------------------------------------------------------------------- super-resolution

SR_SCALES = (2, 3, 4, 8)


class SRDataModule(RestorationDataModule):
    """Super-resolution: HR patch → LR by the recipe (``BicubicSR``: MATLAB ``imresize(HR, 1/s)``, the SR
    benchmarks' degradation; ``ClassicalSR``: (HR ⊗ k)↓s + n with kernel families, three orders and named
    test kernels); ``upsampled`` = MATLAB bicubic ×s of LR, the input of SRCNN/VDSR-style nets and the bicubic
    baseline.

    ``scales=[2, 3, 4]`` trains on mixed-scale batches (VDSR): each sample degraded at its own scale drawn
    from the list; such batches carry ``upsampled``, ``target`` and the per-sample ``scale`` but no
    ``degraded`` (its size differs per sample), so only nets on the upsampled input (scale 1) train on them.
    ``scale`` stays the validation/test scale that the CLI links to the model.
    """

    recipe_type = BicubicSR

    def __init__(
        self,
        recipe: BicubicSR = BicubicSR(),  # noqa: B008 (a dataclass the CLI replaces; never mutated)
        scale: int = 3,
        scales: list[int] | None = None,
        train_crop: int | None = None,
        **kwargs,
    ):
        """
        Args:
            recipe: ``BicubicSR()`` or ``ClassicalSR(kernel=..., order=..., noise_sigma=...)``.
            scale: validation/test SR factor (and the training one without ``scales``).
            scales: training factors, one drawn per sample; patch_size must be a multiple of their lcm.
            train_crop: side of the training pairs, cut from the centre of each degraded patch: VDSR's 41×41
                pairs come from 48-pixel patches (a multiple of lcm(2, 3, 4)) degraded at ×2/×3/×4, with the
                patch border, where bicubic sees the crop's edge, cut away as when whole images are degraded.
                Pairs then have no ``degraded`` (its side would not be whole), so only for nets on the
                upsampled input (scale 1).
        """
        if scale not in SR_SCALES:
            raise AnticipatedError(f"data.init_args.scale must be one of 2, 3, 4, 8; got {scale}")
        self.train_scales = list(scales) if scales else [scale]
        if not self.train_scales or len(set(self.train_scales)) != len(self.train_scales) or \
                any(s not in SR_SCALES for s in self.train_scales):
            raise AnticipatedError(f"data.init_args.scales={scales!r} must be distinct values from {list(SR_SCALES)}")
        super().__init__(recipe=recipe, scale=scale, **kwargs)
        patch_size = self.hparams.patch_size
        if hasattr(recipe, "min_side"):
            side = recipe.min_side(max(self.train_scales))
            if patch_size < side:
                raise AnticipatedError(f"data.init_args.patch_size={patch_size} is too small for a {recipe.size}x"
                                       f"{recipe.size} kernel (data.init_args.recipe.init_args.kernel_size) with order "
                                       f"{recipe.applied_order!r}")
        if train_crop is not None and (not isinstance(train_crop, int) or not 0 < train_crop <= patch_size):
            raise AnticipatedError(f"data.init_args.train_crop={train_crop!r} must be a positive integer no larger than "
                                   f"data.init_args.patch_size={patch_size}")

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

    def degrade(self, batch: dict) -> dict:
        hr, channels = batch["target"], self.hparams.channels
        if len(self.train_scales) == 1:
            out = self.recipe(hr, self.train_scales[0], channels, None)
        else:
            scales = torch.tensor(self.train_scales)[torch.randint(len(self.train_scales), (len(hr),))].to(hr.device)
            upsampled = torch.empty_like(hr)
            for s in scales.unique().tolist():
                chosen = scales == s
                upsampled[chosen] = self.recipe(hr[chosen], s, channels, None)["upsampled"]
            out = {"upsampled": upsampled, "target": hr, "scale": scales}
        crop = self.hparams.train_crop
        if crop is None:
            return out
        return {**{k: out[k] for k in out if k not in ("degraded", "kernel")},
                "upsampled": d.center_crop(out["upsampled"], (crop, crop)),
                "target": d.center_crop(out["target"], (crop, crop))}

    def as_given(self, batch: dict) -> dict:
        x = to_channels(batch["target"], self.hparams.channels)
        return {"degraded": x, "upsampled": bicubic_upsample(x, self.scale), "name": batch["name"]}


# --------------------------------------------------------------------------------------------- denoising


class DenoiseDataModule(RestorationDataModule):
    """Denoising with an ``AWGN`` recipe (σ fixed or blind, optional JPEG) or ``JPEG`` alone, in the training
    colours (gray or RGB). ``upsampled`` is ``degraded`` (scale 1), so the baseline is the noisy input. Batches
    also carry the per-image ``sigma``.
    """

    recipe_type = AWGN

    def __init__(
        self,
        recipe: AWGN = AWGN(),  # noqa: B008
        channels: Literal["gray", "rgb"] = "gray",
        patch_size: int = 40,
        batch_size: int = 128,
        **kwargs,
    ):
        """
        Args:
            recipe: ``AWGN(sigma=25)``, ``AWGN(sigma=[0, 55], test_sigma=25)`` (blind), ``JPEG(jpeg_quality=10)``.
            channels: "gray" (DnCNN-S/B) or "rgb" (CDnCNN-B).
        """
        check_choice("channels", channels, ("gray", "rgb"))
        super().__init__(recipe=recipe, channels=channels, patch_size=patch_size, batch_size=batch_size, **kwargs)


# -------------------------------------------------------------------------------------------- deblurring


def _folder(spec: str, data_root: str | None) -> Path:
    """A folder spec: a path, or ``benchmark:<relative path>`` under the data root."""
    kind, _, name = spec.partition(":")
    return dataset_root(data_root) / name if kind == "benchmark" and name else Path(spec).expanduser()


class DeblurDataModule(RestorationDataModule):
    """Dynamic-scene motion blur with a ``MotionBlur`` recipe, whose ``source`` says what the specs hold:

    "synthetic"  still images (``skimage:train`` works);
    "frames"     folders of consecutive video frames (a spec: one folder of frames, or a folder of such
                 folders); the loader yields windows of the recipe's largest N and the device averages the
                 centred N frames drawn per sample;
    "gopro"      real pairs of the GoPro_Large layout (a spec: a split folder such as
                 ``/data/GoPro_Large/train`` or ``benchmark:GoPro_Large/test``), cropped and flipped together.

    ``pyramid_levels`` > 1 adds ``degraded_pyramid``/``target_pyramid`` (``image_ops.image_pyramid``, finest
    first) for DeepDeblur and SRN's multi-scale loss; patch_size must then be a multiple of 2**(levels-1) and of
    the net's own ``size_multiple`` (SRN: 4·2**(levels-1)), which fit checks.
    """

    recipe_type = MotionBlur

    def __init__(
        self,
        recipe: MotionBlur = MotionBlur(),  # noqa: B008
        pyramid_levels: int = 1,
        channels: Channels = "rgb",
        patch_size: int = 256,
        batch_size: int = 16,
        **kwargs,
    ):
        """
        Args:
            recipe: ``MotionBlur(source=..., n_frames=..., camera_gamma=...)``; the train/val/test specs follow
                its ``source``.
            pyramid_levels: levels of the ×2 pyramids added to every batch (1 = none).
        """
        if not isinstance(pyramid_levels, int) or pyramid_levels < 1:
            raise AnticipatedError(f"data.init_args.pyramid_levels={pyramid_levels!r} must be a positive integer")
        super().__init__(recipe=recipe, channels=channels, patch_size=patch_size, batch_size=batch_size, **kwargs)

    def patch_multiple(self) -> int:
        return 2 ** (self.hparams.pyramid_levels - 1)

    def check_net(self, net) -> None:
        super().check_net(net)
        levels = self.hparams.pyramid_levels
        if levels > 1 and getattr(net, "scales", levels) != levels:
            raise AnticipatedError(f"data.init_args.pyramid_levels={levels} but {type(net).__name__} works on {net.scales} "
                                   f"levels (model.init_args.net.init_args.scales)")

    def source_items(self, specs: list[str], min_size: int, train: bool = False) -> list[tuple[str, Item]]:
        recipe = self.recipe
        if recipe.source == "synthetic":
            return super().source_items(specs, min_size, train)
        items = []
        for spec in specs:
            folder = _folder(spec, self.hparams.data_root)
            if recipe.source == "gopro":
                for blurred, sharp in gopro_pairs(folder.parent, folder.name, recipe.gopro_blur):
                    items.append((f"{sharp.parent.parent.name}/{sharp.name}",
                                  partial(read_aligned, {"degraded": blurred, "target": sharp})))
                continue
            window = recipe.window
            stride = recipe.frame_stride if train else window
            for video in frame_folders(folder):
                for frames in frame_windows(video, window, stride):
                    items.append((f"{video.name}/{frames[window // 2].name}",
                                  partial(read_aligned, {"frames": frames})))
        return items

    def _with_pyramids(self, out: dict) -> dict:
        levels = self.hparams.pyramid_levels
        if levels > 1:
            out["degraded_pyramid"] = d.image_pyramid(out["degraded"], levels)
            out["target_pyramid"] = d.image_pyramid(out["target"], levels)
        return out

    def degrade(self, batch: dict) -> dict:
        return self._with_pyramids(super().degrade(batch))

    def fixed_pairs(self, batch: dict) -> dict:
        return self._with_pyramids(super().fixed_pairs(batch))
