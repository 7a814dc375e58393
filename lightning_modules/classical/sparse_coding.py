"""Sparse-coding super-resolution: Yang, Wright, Huang & Ma, "Image Super-Resolution via Sparse Representation",
IEEE TIP 19(11), 2010 (the "SC" row of the SRCNN paper's tables), on the luma (``channels = "y"``; chroma is
upscaled bicubically by the base class, as the paper and its code do).

The settings follow Yang's released ScSR code (``Demo_Dictionary_Training.m``, ``rnd_smp_patch.m``,
``sample_patches.m``, ``patch_pruning.m``, ``train_coupled_dict.m``, ``ScSR.m``, ``extr_lIm_fea.m``,
``lin_scale.m``, ``backprojection.m``; read in the copy kept in thomas-koehler/SupER,
matlab/algorithms/SRAlgorithms/ScSR/), working, as that code does, on intensities in 0..255:

* Training pairs (per scale, on T91 = Yang's 91 training images; ``skimage:train`` with a warning and a label
  note where the data folder has none): HR Y patches of 5×5 at ``patches`` (code: 100 000) random positions,
  kept away from the border, spread over the images in proportion to their area; the LR side is the benchmark's
  own degradation (MATLAB bicubic ↓s, 8 bit, bicubic ↑s back; the code: imresize down and up on uint8).
  HR vector: the patch minus its mean. LR feature: the first and second order gradients of the upsampled image,
  ``[-1, 0, 1]`` and ``[1, 0, -2, 0, 1]`` horizontally and vertically (``conv2(·, 'same')``, zero padding), the
  4×25 values of the patch concatenated. Pairs whose HR patch has variance ≤ ``prune`` (code: 10) are dropped.
* Coupled dictionary: both halves normalised to unit length, stacked as [√25·x_h; √100·x_l], normalised again,
  and one dictionary learned on the stack with sparsity λ = ``dict_lambda`` (code: 0.15, dictionaries of 512 and
  1024 atoms; objective ½‖x − Dα‖² + λ‖α‖₁ with atoms of norm ≤ 1). The code runs 40 full-batch iterations of
  feature-sign coding and Lagrange-dual atom updates; here scikit-learn's ``MiniBatchDictionaryLearning`` (the
  same objective, online updates, ``epochs`` passes over the data, seeded so that a dictionary is reproducible)
  learns it. D_h, D_l are its two parts. Learning takes minutes, so a dictionary is stored under ``cache`` (one
  file per training set, scale, size, λ, patch count, pruning, epochs and seed; written atomically) and reused.
* Reconstruction (``ScSR.m``): D_l's columns normalised; on the bicubic-upsampled test luma, 5×5 patches every
  ``5 − overlap`` pixels (code: overlap 4), 2 px off the top/left and 3 px off the bottom/right border as the code
  keeps them; each feature y is divided by its norm where that exceeds 1; its code
  α = argmin ½‖y − D_l α‖² + λ‖α‖₁ (λ = ``lam``; the code's feature-sign solver and scikit-learn's ``sparse_encode``
  solve the same problem, exactly up to solver tolerance); the HR patch D_h α rescaled to 1.2× the norm of the
  mean-removed upsampled patch (``lin_scale``) plus that patch's mean; overlapping patches averaged, the pixels no
  patch reaches left bicubic.
* Global reconstruction constraint (``backprojection.m``): ``backprojection`` iterations of
  X ← X + ((Y − (X)↓s)↑s) ⊗ p, with our MATLAB bicubic both ways and p the code's fspecial('gaussian', 5, 1)
  squared and renormalised, convolved with zero padding (``conv2(·, 'same')``).

What differs: MiniBatchDictionaryLearning instead of the code's batch solver (a different local optimum of the
same objective); the training luma is BT.601 Y (as the test pairs are measured) where the code takes rgb2gray;
the reconstruction is not rounded to 8 bit before back-projection. The paper's optional compatibility term with
already-reconstructed neighbours (its eq. 8) is, as in the released code, not used: overlaps are averaged.
Measured (``restorelab benchmark --method sparse_coding``, ×3, 1024 atoms, overlap 2, λ chosen 0.05 on BSD200):
Set5 31.52 / 0.8892, Set14 28.42 / 0.8046; the SRCNN paper (Dong et al., TPAMI 2016) quotes SC at 31.42 dB on
Set5 ×3. λ between 0.02 and 0.1 changes the validation PSNR by under 0.02 dB.
``lam`` is free at test time (the code trains with 0.15 and its demo codes with 0.2), so it is what ``tune``
searches; changing it reuses the cached dictionary.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import correlate1d, convolve

from datamodules.errors import AnticipatedError
from datamodules.image_ops import bicubic_downsample, bicubic_upsample
from lightning_modules.classical.example_based import (DEFAULT_TRAIN, TrainedLearner, cache_key, save_atomic,
                                                       training_lumas, training_paths)
from lightning_modules.restorer import pair_scale

CHUNK = 2048  # patches coded at a time: their dense codes (N×atoms, float64) stay small
GRADIENTS = (np.array([1.0, 0.0, -1.0]), np.array([1.0, 0.0, -2.0, 0.0, 1.0]))  # conv2 flips: [-1,0,1], [1,0,-2,0,1]


def gradient_features(up: np.ndarray) -> np.ndarray:
    """4×H×W: ``conv2(up, f, 'same')`` for f = [-1,0,1] and [1,0,-2,0,1], horizontally then vertically each
    (Yang's ``extr_lIm_fea``: zero padding)."""
    first, second = GRADIENTS
    return np.stack([correlate1d(up, first, axis=1, mode="constant"), correlate1d(up, first, axis=0, mode="constant"),
                     correlate1d(up, second, axis=1, mode="constant"), correlate1d(up, second, axis=0, mode="constant")])


def patches_at(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """N×(C·size²) patches of a H×W or C×H×W image whose top-left corners are (rows, cols)."""
    image = image if image.ndim == 3 else image[None]
    windows = np.lib.stride_tricks.sliding_window_view(image, (size, size), axis=(1, 2))[:, rows, cols]
    return np.ascontiguousarray(windows.transpose(1, 0, 2, 3)).reshape(len(rows), -1)


def backprojection_kernel() -> np.ndarray:
    """fspecial('gaussian', 5, 1) squared and renormalised, as in Yang's ``backprojection.m``."""
    x = np.arange(-2, 3, dtype=np.float64)
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / 2)
    p = (g / g.sum()) ** 2
    return p / p.sum()


def back_project(hr: np.ndarray, lr: np.ndarray, scale: int, iterations: int) -> np.ndarray:
    """The global reconstruction constraint: X ← X + ((Y − X↓s)↑s) ⊗ p, ``iterations`` times, MATLAB bicubic both
    ways."""
    p = backprojection_kernel()
    x = torch.from_numpy(hr.copy())[None, None]
    y = torch.from_numpy(lr)[None, None]
    for _ in range(iterations):
        diff = bicubic_upsample(y - bicubic_downsample(x, scale), scale)[0, 0].numpy()
        x = x + torch.from_numpy(convolve(diff, p, mode="constant"))[None, None]
    return x[0, 0].numpy()


def reconstruction_grid(length: int, patch: int, step: int) -> np.ndarray:
    """ScSR.m's patch starts (0-based): from 2 to length − patch − 3 every ``step``, plus the last one."""
    last = length - patch - 3
    if last < 2:
        return np.zeros(0, dtype=int)
    return np.unique(np.append(np.arange(2, last + 1, step), last))


class SparseCoding(TrainedLearner):
    """Sparse-coding SR (Yang et al., TIP 2010) on the luma; see the module docstring."""

    task, channels = "sr", "y"

    def __init__(self, data_root: str | Path | None = None, train: str = DEFAULT_TRAIN, atoms: int = 1024,
                 dict_lambda: float = 0.15, lam: float = 0.1, patch: int = 5, overlap: int = 4,
                 patches: int = 100_000, prune: float = 10.0, epochs: int = 1, backprojection: int = 20,
                 algorithm: str = "lasso_lars", seed: int = 0, cache: str | Path | None = "runs/cache/sparse_coding",
                 n_jobs: int | None = None):
        if not 0 <= overlap < patch:
            raise AnticipatedError(f"sparse_coding: overlap={overlap} must be in [0, patch={patch})")
        if algorithm not in ("lasso_lars", "lasso_cd"):
            raise AnticipatedError(f"sparse_coding: algorithm={algorithm!r} must be 'lasso_lars' or 'lasso_cd' (the "
                                   "l1 problem of the paper)")
        if atoms < 2 or patches < atoms or lam <= 0 or dict_lambda <= 0 or epochs < 1 or backprojection < 0:
            raise AnticipatedError(f"sparse_coding: atoms={atoms}, patches={patches}, lam={lam}, dict_lambda="
                                   f"{dict_lambda}, epochs={epochs}, backprojection={backprojection}: need atoms ≥ 2, "
                                   "patches ≥ atoms, λs > 0, epochs ≥ 1, backprojection ≥ 0")
        self.data_root, self.atoms, self.dict_lambda, self.lam = data_root, int(atoms), float(dict_lambda), float(lam)
        self.patch, self.overlap, self.patches, self.prune = int(patch), int(overlap), int(patches), float(prune)
        self.epochs, self.backprojection, self.algorithm = int(epochs), int(backprojection), algorithm
        self.seed, self.cache, self.n_jobs = int(seed), Path(cache) if cache else None, n_jobs
        self.paths, self.source = training_paths(train, data_root, "sparse_coding")
        self._label = "Sparse coding (Yang 2010)"
        self._dictionaries: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # ---------------------------------------------------------------------------------- training

    def training_pairs(self, scale: int) -> tuple[np.ndarray, np.ndarray]:
        """(X_h N×25 mean-removed HR patches, X_l N×100 gradient features), 0..255, pruned by HR variance."""
        p = self.patch
        images = training_lumas(self.paths, scale, 3 * p + 2)
        if not images:
            raise AnticipatedError(f"sparse_coding: no training image of {self.source} is larger than {3 * p + 2} px")
        rng = np.random.default_rng(self.seed)
        # sample_patches.m: starts in [p, H - p - 2] (0-based), clear of the zero padding of the gradient filters
        spans = [(h.shape[0] - 2 * p - 1, h.shape[1] - 2 * p - 1) for h, _ in images]
        areas = np.array([a * b for a, b in spans], float)
        counts = np.minimum(np.floor(areas / areas.sum() * self.patches).astype(int), areas.astype(int))
        xh, xl = [], []
        for (hr, up), (nr, nc), n in zip(images, spans, counts):
            if n == 0:
                continue
            flat = rng.choice(nr * nc, size=n, replace=False)
            rows, cols = flat // nc + p, flat % nc + p
            h = patches_at(hr * 255, rows, cols, p)
            xh.append(h - h.mean(axis=1, keepdims=True))
            xl.append(patches_at(gradient_features(up * 255), rows, cols, p))
        xh, xl = np.concatenate(xh), np.concatenate(xl)
        keep = xh.var(axis=1, ddof=1) > self.prune
        return xh[keep], xl[keep]

    def learn(self, scale: int) -> tuple[np.ndarray, np.ndarray]:
        """(D_h atoms×25, D_l atoms×100) learned jointly, as ``train_coupled_dict.m``."""
        from sklearn.decomposition import MiniBatchDictionaryLearning

        xh, xl = self.training_pairs(scale)
        nh, nl = np.linalg.norm(xh, axis=1), np.linalg.norm(xl, axis=1)
        keep = (nh > 0) & (nl > 0)
        xh, xl = xh[keep] / nh[keep, None], xl[keep] / nl[keep, None]
        x = np.hstack([np.sqrt(xh.shape[1]) * xh, np.sqrt(xl.shape[1]) * xl])
        norm = np.linalg.norm(x, axis=1)
        x = x[norm > 1e-5] / norm[norm > 1e-5, None]
        if len(x) < self.atoms:
            raise AnticipatedError(f"sparse_coding: only {len(x)} training patches of {self.source} survive pruning "
                                   f"(prune={self.prune}), fewer than atoms={self.atoms}; lower prune or add images")
        learner = MiniBatchDictionaryLearning(n_components=self.atoms, alpha=self.dict_lambda, max_iter=self.epochs,
                                              batch_size=256, random_state=self.seed, fit_algorithm="lars",
                                              max_no_improvement=None, tol=0.0)
        d = learner.fit(x).components_
        return d[:, : xh.shape[1]], d[:, xh.shape[1]:]

    def dictionaries(self, scale: int) -> tuple[np.ndarray, np.ndarray]:
        """(D_h, D_l) of ``scale``, learned on first use or read from the cache."""
        if scale not in self._dictionaries:
            self._dictionaries[scale] = self._load_or_learn(scale)
        return self._dictionaries[scale]

    def _load_or_learn(self, scale: int) -> tuple[np.ndarray, np.ndarray]:
        settings = dict(kind="sparse_coding/1", scale=scale, atoms=self.atoms, dict_lambda=self.dict_lambda,
                        patch=self.patch, patches=self.patches, prune=self.prune, epochs=self.epochs, seed=self.seed,
                        source=self.source)
        name = f"sc_x{scale}_{self.atoms}_{self.dict_lambda:g}_{cache_key(self.paths, **settings)}.npz"
        path = self.cache / name if self.cache else None
        if path is not None and path.is_file():
            try:
                with np.load(path) as z:
                    return z["dh"], z["dl"]
            except (OSError, ValueError, KeyError):
                pass  # a damaged entry is learned again and replaced
        dh, dl = self.learn(scale)
        if path is not None:
            save_atomic(path, dh=dh, dl=dl)
        return dh, dl

    # ---------------------------------------------------------------------------------- reconstruction

    def encode(self, features: np.ndarray, dl: np.ndarray) -> np.ndarray:
        """Sparse codes (N×atoms) of N features over D_l with normalised atoms, λ = ``lam``: what
        ``sklearn.decomposition.sparse_encode(features, D_l, algorithm=..., alpha=lam)`` returns. For "lasso_lars"
        its own solver (``LassoLars``, exact homotopy) is called without the Gram matrix, which ``sparse_encode``
        would copy (8 MB at 1024 atoms) for every patch: half the time, the same codes to 1e-12."""
        from sklearn.decomposition import sparse_encode
        from sklearn.linear_model import LassoLars

        d = dl / np.linalg.norm(dl, axis=1, keepdims=True)
        if self.algorithm == "lasso_cd":
            return sparse_encode(features, d, algorithm="lasso_cd", alpha=self.lam, n_jobs=self.n_jobs)
        # sparse_encode scales alpha by the signal length for LassoLars, whose loss is averaged over it
        solver = LassoLars(alpha=self.lam / d.shape[1], fit_intercept=False, precompute=False, fit_path=False)
        return solver.fit(d.T, features.T).coef_.reshape(len(features), -1)

    @staticmethod
    def normalise_features(features: np.ndarray) -> np.ndarray:
        """ScSR.m: a feature is divided by its norm where the norm exceeds 1 (on 0..255), else left as it is."""
        norm = np.linalg.norm(features, axis=1, keepdims=True)
        return np.where(norm > 1, features / np.maximum(norm, 1), features)

    def sparse_estimate(self, up: np.ndarray, scale: int) -> np.ndarray:
        """``ScSR.m`` on the upsampled luma (H×W, 0..255): the averaged HR patches, bicubic where none reaches."""
        dh, dl = self.dictionaries(scale)
        p = self.patch
        h, w = up.shape
        rows, cols = np.meshgrid(reconstruction_grid(h, p, p - self.overlap),
                                 reconstruction_grid(w, p, p - self.overlap), indexing="ij")
        rows, cols = rows.ravel(), cols.ravel()
        if not len(rows):
            return up.copy()
        m = patches_at(up, rows, cols, p)
        mean = m.mean(axis=1, keepdims=True)
        m_norm = np.linalg.norm(m - mean, axis=1, keepdims=True)
        features = self.normalise_features(patches_at(gradient_features(up), rows, cols, p))
        hp = np.concatenate([self.encode(features[i:i + CHUNK], dl) @ dh for i in range(0, len(features), CHUNK)])
        h_norm = np.linalg.norm(hp, axis=1, keepdims=True)
        hp = np.where(h_norm > 0, hp * (1.2 * m_norm / np.where(h_norm > 0, h_norm, 1)), hp) + mean  # lin_scale.m
        offsets = (np.arange(p)[:, None] * w + np.arange(p)[None, :]).ravel()
        where = ((rows * w + cols)[:, None] + offsets[None, :]).ravel()
        acc = np.bincount(where, weights=hp.ravel(), minlength=h * w).reshape(h, w)
        cnt = np.bincount(where, minlength=h * w).reshape(h, w)
        return np.where(cnt > 0, acc / np.maximum(cnt, 1), up)

    def super_resolve(self, lr: np.ndarray, up: np.ndarray, scale: int) -> np.ndarray:
        """The LR and upsampled lumas (0..1) → the HR luma (0..1)."""
        x = self.sparse_estimate(up * 255, scale)
        if self.backprojection:
            x = back_project(x, lr * 255, scale, self.backprojection)
        return x / 255

    def run(self, pair: dict, what: str) -> torch.Tensor:
        scale = pair_scale(pair)
        lr = pair["degraded"].cpu()
        up = pair["upsampled"].cpu() if "upsampled" in pair else bicubic_upsample(lr, scale)
        out = [self.super_resolve(a[0].double().numpy(), b[0].double().numpy(), scale) for a, b in zip(lr, up)]
        return torch.from_numpy(np.stack(out)[:, None]).to(up.dtype)
