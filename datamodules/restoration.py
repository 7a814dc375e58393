"""DataModules that synthesize (degraded, clean) pairs on the fly.

The DataLoader does only cheap CPU work — decode once, random crop, flips/rot90 (albumentations) — and
yields clean images. Degradation runs on the batch after it reached the device
(``on_after_batch_transfer``), so on a GPU it runs on the GPU. Validation and test use full images whose
degraded inputs are fixed: deterministic operators, and any randomness seeded per image.
"""
from __future__ import annotations

import os
import zlib
from typing import Literal

import albumentations as A
import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from datamodules.degradations import bicubic_downsample, bicubic_upsample, mod_crop, quantize, rgb_to_y
from datamodules.sources import load_images

Channels = Literal["y", "rgb", "gray"]


def to_channels(x: torch.Tensor, channels: Channels) -> torch.Tensor:
    """Bring a 1- or 3-channel image (…×C×H×W) to the training colour space.

    "y": BT.601 luma (a gray image is its own Y); "rgb": gray replicated; "gray": plain luma
    (0.299, 0.587, 0.114, no 16–235 offset, as the gray denoising sets were made).
    """
    c = x.shape[-3]
    if channels == "y":
        return rgb_to_y(x)
    if channels == "rgb":
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:]) if c == 1 else x
    if c == 1:
        return x
    w = x.new_tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    return (x * w).sum(-3, keepdim=True)


def image_seed(name: str, seed: int) -> int:
    """A stable per-image seed (same on every run, process and device)."""
    return (zlib.crc32(name.encode()) + 1_000_003 * seed) % (2**31)


class RandomPatches(Dataset):
    """``length`` random clean patches; an image is picked with probability proportional to its area."""

    def __init__(self, images: list[tuple[str, torch.Tensor]], patch_size: int, length: int, channels: Channels,
                 augment: bool = True):
        self.images = [to_channels(img, channels).permute(1, 2, 0).numpy() for _, img in images]
        areas = np.array([im.shape[0] * im.shape[1] for im in self.images], dtype=np.float64)
        self.probs = areas / areas.sum()
        self.length = length
        ops = [A.RandomCrop(patch_size, patch_size)]
        if augment:
            ops += [A.HorizontalFlip(p=0.5), A.RandomRotate90(p=1.0)]
        self.transform = A.Compose(ops)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng(torch.randint(0, 2**31, ()).item())  # follows torch's worker seeding
        img = self.images[rng.choice(len(self.images), p=self.probs)]
        patch = self.transform(image=img)["image"]
        return {"target": torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1)}


class FullImages(Dataset):
    """Whole images for validation/test/predict, mod-cropped to ``multiple``, in their own channels."""

    def __init__(self, images: list[tuple[str, torch.Tensor]], multiple: int = 1):
        self.images = [(name, mod_crop(img, multiple)) for name, img in images]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        name, img = self.images[i]
        return {"target": img, "name": name, "index": i}


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
            patch_size: side of the clean (target) training patch.
            patches_per_epoch: what one epoch means: the datasets are small and sampled at random.
            num_workers: None = 0 on a CPU-only machine (workers would steal the training cores) and
                min(8, cores) with a GPU.
        """
        super().__init__()
        self.save_hyperparameters()
        self.scale = scale
        if patch_size % self.patch_multiple():
            raise ValueError(f"data.patch_size={patch_size} must be a multiple of {self.patch_multiple()}")
        self.train_set = self.val_set = self.test_set = self.predict_set = None

    # ---- what a task subclass defines
    def patch_multiple(self) -> int:
        return 1

    def degrade(self, target: torch.Tensor, names: list[str] | None) -> dict:
        """Clean batch (already in the training colour space when ``names`` is None, i.e. training) →
        batch dict with ``degraded``, ``upsampled`` and ``target``. ``names`` are given for fixed
        evaluation pairs, whose randomness must be seeded per image."""
        raise NotImplementedError

    # ---- data
    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        m = self.patch_multiple()
        if stage in (None, "fit") and self.train_set is None:
            images = load_images(hp.train, hp.data_root, min_size=hp.patch_size)
            self.train_set = RandomPatches(images, hp.patch_size, hp.patches_per_epoch, hp.channels, hp.augment)
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = FullImages(load_images(hp.val, hp.data_root, min_size=m), m)
        if stage in (None, "test") and self.test_set is None:
            self.test_set = FullImages(load_images(hp.test or hp.val, hp.data_root, min_size=m), m)
        if stage == "predict" and self.predict_set is None:
            self.predict_set = FullImages(load_images(hp.predict or hp.val, hp.data_root))

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
        training = trainer is not None and trainer.training
        out = self.degrade(batch["target"], None if training else list(batch["name"]))
        if not training:  # fixed pairs were degraded in the source colours; now move to the training ones
            out = {k: to_channels(v, self.hparams.channels) if torch.is_tensor(v) else v for k, v in out.items()}
            out["name"] = batch["name"]
        return out

    def as_given(self, batch: dict) -> dict:
        """Predict: the files *are* the degraded inputs."""
        x = to_channels(batch["target"], self.hparams.channels)
        return {"degraded": x, "upsampled": x, "name": batch["name"]}


class SRDataModule(RestorationDataModule):
    """Bicubic super-resolution: LR = MATLAB ``imresize(HR, 1/s)`` saved as 8 bit; ``upsampled`` =
    ``imresize(LR, s)``, the input of SRCNN/VDSR-style nets and the bicubic baseline."""

    def __init__(self, scale: int = 3, **kwargs):
        if scale not in (2, 3, 4, 8):
            raise ValueError(f"data.scale must be one of 2, 3, 4, 8; got {scale}")
        super().__init__(scale=scale, **kwargs)

    def patch_multiple(self) -> int:
        return self.scale

    def degrade(self, target: torch.Tensor, names: list[str] | None) -> dict:
        lr = quantize(bicubic_downsample(target, self.scale))
        return {"degraded": lr, "upsampled": bicubic_upsample(lr, self.scale), "target": target}

    def as_given(self, batch: dict) -> dict:
        x = to_channels(batch["target"], self.hparams.channels)
        return {"degraded": x, "upsampled": bicubic_upsample(x, self.scale), "name": batch["name"]}
