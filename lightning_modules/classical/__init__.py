"""The classical methods behind the restorer interface (``lightning_modules.restorer``), one small file per kind,
each measured by the same protocol code as a trained checkpoint and named by a config in ``configs/methods/``
(``restorelab benchmark --method NAME``):

    interpolation.py   nearest, bilinear, MATLAB bicubic (the SR baseline), Lanczos
    example_based.py   example-based SR (Freeman et al. 2002): a patch database, nearest-neighbour look-up
    sparse_coding.py   sparse-coding SR (Yang et al., TIP 2010): coupled dictionaries, back-projection
    filters.py         Gaussian, median, bilateral and guided filters (kornia)
    nonlocal_denoising.py  non-local means (scikit-image) and BM3D (the ``bm3d`` package)
    deconvolution.py   Wiener, unsupervised Wiener and Richardson–Lucy with the known kernel (scikit-image)

This module holds only what every table needs: the baseline of each task and ``degradation``, which methods built
on the degradation model use to read its parameters (σ, the kernel) from the pair the recipe made — never from a
config that could disagree with the data.
"""
from __future__ import annotations

import torch

from datamodules.errors import AnticipatedError
from lightning_modules.classical.interpolation import Bicubic
from lightning_modules.restorer import Restorer

ABOUT = {"sigma": "noise σ", "kernel": "blur kernel"}


class DegradedInput(Restorer):
    """The degraded input as it is: the baseline of denoising ("Noisy input") and deblurring ("Blurred input")
    tables, measured as the nets receive it (float, unclipped)."""

    measured_as_given, channels = True, "any"

    def __init__(self, task: str, label: str):
        self.task, self.label = task, label

    def run(self, pair: dict, what: str) -> torch.Tensor:
        return pair["degraded"]


def degradation(pair: dict, key: str, method: Restorer, what: str = "") -> torch.Tensor:
    """The pair's ``key`` ("sigma": N σ on 0..255, "kernel": N×K×K) for ``method``, or one line naming what is
    missing (a file given to ``restorelab predict`` without ``--sigma``/``--kernel``, GoPro pairs, which record no
    kernel)."""
    value = pair.get(key)
    if value is None or (key == "sigma" and torch.is_tensor(value) and bool((value <= 0).all())):
        where = f" of {what}" if what else ""
        raise AnticipatedError(f"{method.label}: needs the {ABOUT.get(key, key)} of the degradation, and the "
                               f"pair{where} has none (give a recipe that records it, or --{key} to predict)")
    return value


def baseline_for(task: str) -> Restorer:
    """The no-method row of a task's table."""
    if task == "sr":
        return Bicubic()
    return DegradedInput(task, "Noisy input" if task == "denoise" else "Blurred input")
