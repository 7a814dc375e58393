"""Example-based super-resolution after Freeman, Jones & Pasztor, "Example-based super-resolution", IEEE Computer
Graphics and Applications 22(2), 2002: a database of (LR patch feature, HR high-frequency patch) pairs cut from
training images, a nearest-neighbour look-up per patch of the test image, the found HR detail added to the
interpolated image.

What is implemented, on the luma (``channels = "y"``; chroma is upscaled bicubically by the base class):

* Training pairs: every training image (default T91, ``benchmark:T91``; ``skimage:train`` with a warning and a
  label note where the data folder has no T91) degraded by the recipe the test pairs come from
  (``datamodules.recipes.BicubicSR``: MATLAB bicubic ↓s, 8 bit), then MATLAB-bicubic ↑s, at the pair's scale.
  The database of a scale is built on first use and kept; with ``cache`` (a folder) it is also stored on disk.
* Bands, as in the paper: the *mid band* of the interpolated image, ``up − G_σ * up`` (Gaussian σ =
  ``band_sigma``, default s/2 HR pixels), is the feature; the *high band* ``HR − up`` is what is predicted.
  Both are divided by the local contrast of the mid band, mean |mid band| over the feature window + 0.01 (the
  paper's contrast normalisation), and the predicted patch is multiplied back by the test patch's contrast.
* Geometry: HR patches of ``patch``×``patch`` (the paper's 5×5) on a grid of step ``stride`` over the upsampled
  image, each with the ``context``×``context`` (7×7) mid-band window centred on it as its feature; ``patches``
  pairs sampled at random (seeded) positions, in proportion to each image's area.
* Look-up: exact k-nearest neighbours in feature space by scikit-learn's ``NearestNeighbors`` (brute force:
  49-dimensional features defeat its trees, and brute force is BLAS matrix products). faiss-cpu's flat index
  would give the same neighbours somewhat faster, but it is not a dependency of this suite.
* Synthesis: with ``alpha = 0`` each patch's prediction is the mean of its ``k`` neighbours' HR patches; with
  ``alpha > 0``, the paper's one-pass algorithm: patches are visited in raster order and, of the ``k``
  candidates found by the feature alone, the one minimising ‖feature − candidate feature‖² +
  α²‖already-predicted overlap − candidate overlap‖² (in contrast-normalised units) is taken. The paper uses
  α = 0.1·M²/(2N − 1) (M = 7 feature side, N = 5 patch side: 0.54) and searches the whole database with the
  concatenated vector; searching only the k feature-nearest candidates is our approximation. Overlapping HR
  patches are blended by averaging in both modes.

Measured on Set5 ×3 (``restorelab benchmark --method example_based``, T91, 100 000 pairs, stride 2): k = 16
averaged (chosen on BSD200 from 4/16/32) 31.90 dB against bicubic's 30.40; the one-pass choice of a single
candidate (alpha 0.54, k 8 to 64) stays near bicubic (30.3–30.4 dB): one example per patch adds detail of the right
kind at the wrong place, which PSNR punishes, so averaging k neighbours (which makes this a neighbour-embedding
variant in effect) is the configured default and the one-pass mode an option.

Not implemented: the paper's Markov network solved by belief propagation (it replaces it with the one-pass
algorithm itself), its training on a few hand-picked images at a different resolution, and colour (it works on
luminance too, with colour interpolated).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from datamodules.errors import AnticipatedError
from datamodules.image_ops import bicubic_upsample, mod_crop, to_channels
from datamodules.recipes import BicubicSR
from datamodules.sources import ImageSourceError, read_image, resolve_source
from lightning_modules.restorer import Restorer, pair_scale

DEFAULT_TRAIN = "benchmark:T91"
FALLBACK_TRAIN = "skimage:train"
CONTRAST_EPS = 0.01


# ------------------------------------------------------------------- shared with sparse_coding.py


def training_paths(train: str, data_root, method: str) -> tuple[list[Path], str]:
    """The training images of ``train`` and the source used: the default T91 falls back to the bundled photos
    (with a warning) where the data folder lacks it; any other source must exist."""
    try:
        return resolve_source(train, data_root), train
    except ImageSourceError as e:
        if train != DEFAULT_TRAIN:
            raise AnticipatedError(f"{method}: train={train!r} gives no training images ({e})") from None
        warnings.warn(f"{method}: {train} not found ({e}); training on {FALLBACK_TRAIN} instead, so its numbers are "
                      f"not the paper's setting", stacklevel=3)
        return resolve_source(FALLBACK_TRAIN), FALLBACK_TRAIN


def training_lumas(paths: list[Path], scale: int, min_side: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(HR Y, upsampled Y) of each training image, float64 H×W in [0, 1]: the HR mod-cropped, degraded by the
    benchmark's own SR recipe (bicubic ↓s in the file's colours, 8 bit, bicubic ↑s), then both taken to Y, as
    the restorer base gives a test pair to a "y" method. Images with a side below ``min_side`` are skipped."""
    recipe, out = BicubicSR(), []
    for path in paths:
        hr = mod_crop(read_image(path)[None].double(), scale)
        if min(hr.shape[-2:]) < max(min_side, 2 * scale):
            continue
        pair = recipe(hr, scale, None, None)
        out.append((to_channels(hr, "y")[0, 0].numpy(), to_channels(pair["upsampled"], "y")[0, 0].numpy()))
    return out


def save_atomic(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` to ``path`` through a temporary file in the same folder, so that a reader (another process
    building the same entry) never sees half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp.npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would keep the cache from others sharing the folder
        os.replace(tmp, path)
    except OSError as e:
        raise AnticipatedError(f"{path}: cannot write the cache file ({e.strerror or type(e).__name__}); give "
                               f"another cache folder or cache=null") from None


def cache_key(paths: list[Path], **settings) -> str:
    """A name for what was learned from ``paths`` with ``settings``: changes with any setting, file or file size."""
    files = [(p.name, p.stat().st_size) for p in paths]
    return hashlib.sha1(json.dumps([files, settings], sort_keys=True, default=str).encode()).hexdigest()[:16]


def patch_grid(length: int, patch: int, stride: int) -> np.ndarray:
    """Top-left offsets of patches of side ``patch`` every ``stride`` pixels, the last one flush with the end."""
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return np.asarray(starts)


# ------------------------------------------------------------------------------------------ the method


class PatchDatabase:
    """Contrast-normalised (feature, HR high band) pairs of one scale and the look-up over the features."""

    def __init__(self, features: np.ndarray, targets: np.ndarray):
        from sklearn.neighbors import NearestNeighbors

        self.features, self.targets = features.astype(np.float32), targets.astype(np.float32)
        self.index = NearestNeighbors(algorithm="brute").fit(self.features)

    def lookup(self, features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(squared distances, indices), each N×k, of the k nearest database features."""
        dist, idx = self.index.kneighbors(features.astype(np.float32), n_neighbors=k)
        return dist ** 2, idx


class TrainedLearner(Restorer):
    """An SR method that learns from training images (``self.source``: the set it found); its row says so where
    the bundled photos replaced the paper's T91."""

    _label = ""
    source = DEFAULT_TRAIN

    @property
    def label(self) -> str:
        """The table row's name; it says so where the bundled photos replaced the paper's training set (unless the
        name says it already: ``train=...`` fixed on the command line)."""
        said = self.source == DEFAULT_TRAIN or f"train={self.source}" in self._label
        return self._label + ("" if said else f" [trained on {self.source}]")

    @label.setter
    def label(self, value: str) -> None:
        self._label = value


class ExampleBased(TrainedLearner):
    """Example-based SR (Freeman et al. 2002) on the luma; see the module docstring."""

    task, channels = "sr", "y"

    def __init__(self, data_root: str | Path | None = None, train: str = DEFAULT_TRAIN, patch: int = 5,
                 context: int = 7, stride: int = 2, patches: int = 100_000, k: int = 1, alpha: float = 0.0,
                 band_sigma: float | None = None, seed: int = 0, cache: str | Path | None = None):
        if patch < 1 or context < patch or (context - patch) % 2:
            raise AnticipatedError(f"example_based: context={context} must be at least patch={patch} and exceed it "
                                   "by an even number of pixels (the feature window is centred on the patch)")
        if not 1 <= stride <= patch:
            raise AnticipatedError(f"example_based: stride={stride} must be in [1, patch={patch}] so that patches "
                                   "cover the image")
        if k < 1 or patches < k:
            raise AnticipatedError(f"example_based: k={k} must be at least 1 and at most patches={patches}")
        self.data_root, self.patch, self.context, self.stride = data_root, int(patch), int(context), int(stride)
        self.patches, self.k, self.alpha, self.band_sigma = int(patches), int(k), float(alpha), band_sigma
        self.seed, self.cache = int(seed), Path(cache) if cache else None
        self.paths, self.source = training_paths(train, data_root, "example_based")
        self._label = "Example-based (Freeman 2002)"
        self._databases: dict[int, PatchDatabase] = {}

    def sigma_for(self, scale: int) -> float:
        return float(self.band_sigma) if self.band_sigma is not None else scale / 2

    # -------------------------------------------------------------------------------- features

    def bands(self, up: np.ndarray, scale: int) -> np.ndarray:
        """The mid band of an upsampled image, padded by mirroring so that every patch has its whole window."""
        mid = up - gaussian_filter(up, self.sigma_for(scale), mode="reflect")
        m = (self.context - self.patch) // 2
        return np.pad(mid, m, mode="symmetric")

    def features_at(self, mid: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(normalised features N×context², contrasts N) of the windows whose patch starts at (rows, cols)."""
        windows = np.lib.stride_tricks.sliding_window_view(mid, (self.context, self.context))[rows, cols]
        windows = windows.reshape(len(rows), -1)
        contrast = np.abs(windows).mean(axis=1) + CONTRAST_EPS
        return windows / contrast[:, None], contrast

    # -------------------------------------------------------------------------------- database

    def database(self, scale: int) -> PatchDatabase:
        """The database of ``scale``, built on first use (or read from the cache)."""
        if scale not in self._databases:
            self._databases[scale] = self._load_or_build(scale)
        return self._databases[scale]

    def _load_or_build(self, scale: int) -> PatchDatabase:
        settings = dict(kind="example_based/1", scale=scale, patch=self.patch, context=self.context,
                        patches=self.patches, sigma=self.sigma_for(scale), seed=self.seed, source=self.source)
        path = self.cache / f"example_based_x{scale}_{cache_key(self.paths, **settings)}.npz" if self.cache else None
        if path is not None and path.is_file():
            try:
                with np.load(path) as z:
                    return PatchDatabase(z["features"], z["targets"])
            except (OSError, ValueError, KeyError):
                pass  # a damaged entry is rebuilt and replaced
        features, targets = self.build(scale)
        if path is not None:
            save_atomic(path, features=features, targets=targets)
        return PatchDatabase(features, targets)

    def build(self, scale: int) -> tuple[np.ndarray, np.ndarray]:
        """``patches`` (feature, HR high band) pairs from the training images at ``scale``."""
        images = training_lumas(self.paths, scale, self.context)
        if not images:
            raise AnticipatedError(f"example_based: no training image of {self.source} is at least {self.context} px "
                                   f"after mod-cropping to x{scale}")
        rng = np.random.default_rng(self.seed)
        areas = np.array([(h.shape[0] - self.patch + 1) * (h.shape[1] - self.patch + 1) for h, _ in images], float)
        counts = np.floor(areas / areas.sum() * self.patches).astype(int)
        counts[: self.patches - counts.sum()] += 1  # floor's remainder, so the total is exactly ``patches``
        features, targets = [], []
        for (hr, up), n in zip(images, counts):
            if n == 0:
                continue
            high = hr - up
            rows = rng.integers(0, hr.shape[0] - self.patch + 1, n)
            cols = rng.integers(0, hr.shape[1] - self.patch + 1, n)
            f, contrast = self.features_at(self.bands(up, scale), rows, cols)
            t = np.lib.stride_tricks.sliding_window_view(high, (self.patch, self.patch))[rows, cols]
            features.append(f)
            targets.append(t.reshape(n, -1) / contrast[:, None])
        return np.concatenate(features).astype(np.float32), np.concatenate(targets).astype(np.float32)

    # -------------------------------------------------------------------------------- synthesis

    def run(self, pair: dict, what: str) -> torch.Tensor:
        scale = pair_scale(pair)
        up = pair["upsampled"] if "upsampled" in pair else bicubic_upsample(pair["degraded"], scale)
        out = [self.super_resolve(img[0].double().numpy(), scale) for img in up.cpu()]
        return torch.from_numpy(np.stack(out)[:, None]).to(up.dtype)

    def super_resolve(self, up: np.ndarray, scale: int) -> np.ndarray:
        """The upsampled luma (H×W) plus the high band the database predicts for it."""
        h, w = up.shape
        if min(h, w) < self.patch:
            return up
        db = self.database(scale)
        rows, cols = np.meshgrid(patch_grid(h, self.patch, self.stride), patch_grid(w, self.patch, self.stride),
                                 indexing="ij")
        rows, cols = rows.ravel(), cols.ravel()
        features, contrast = self.features_at(self.bands(up, scale), rows, cols)
        dist, idx = db.lookup(features, self.k)
        p = self.patch
        if self.alpha <= 0:
            predicted = db.targets[idx].mean(axis=1) * contrast[:, None]
            offsets = (np.arange(p)[:, None] * w + np.arange(p)[None, :]).ravel()
            where = ((rows * w + cols)[:, None] + offsets[None, :]).ravel()
            acc = np.bincount(where, weights=predicted.ravel(), minlength=h * w).reshape(h, w)
            cnt = np.bincount(where, minlength=h * w).reshape(h, w).astype(float)
        else:
            acc, cnt = np.zeros_like(up), np.zeros_like(up)
            a2 = self.alpha ** 2
            for i, (r, c) in enumerate(zip(rows, cols)):
                candidates = db.targets[idx[i]].reshape(-1, p, p)
                seen = cnt[r:r + p, c:c + p] > 0
                cost = dist[i]
                if seen.any():
                    before = acc[r:r + p, c:c + p][seen] / cnt[r:r + p, c:c + p][seen] / contrast[i]
                    cost = cost + a2 * ((candidates[:, seen] - before) ** 2).sum(axis=1)
                acc[r:r + p, c:c + p] += candidates[int(np.argmin(cost))] * contrast[i]
                cnt[r:r + p, c:c + p] += 1
        return up + acc / np.maximum(cnt, 1)
