"""The one interface every method implements: a trained net of any training scheme (``NetRestorer``, built from a
checkpoint by ``restorelab.checkpointing``), a parameter-free classical method (``lightning_modules.classical``),
a method that adapts to each test image. The benchmark, ``compare``, ``predict`` and the model table see only this.

A method restores a *pair* (``datamodules.recipes``): ``degraded`` in the image's own colours (1×C×H×W, C = 1 or
3), ``upsampled`` where the recipe made it, and what made it (``scale``, ``sigma``, ``kernel``), which methods
built on the degradation model read. ``restore(pair)`` gives (the restored image in the input's colours, what the
protocol measures of it): the latter is the Y that a "y" method computed for a colour image, as the SR papers'
scripts measure (they never rebuild RGB), else the image itself.

A subclass says which colour space it works in (``channels``: "y", "rgb", "gray", or "any" for per-channel
methods that take an image in whatever colours it has) and implements ``run`` on a
pair already converted to it; the base does the conversions: "y" methods see the BT.601 luma of a colour input
(Cb/Cr are MATLAB-bicubic upscaled back), gray images are their own Y; "rgb" methods see gray inputs replicated
and give back the luma, so a gray file stays gray; "gray" methods refuse colour inputs (their chroma would be lost).
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import nn

from datamodules.errors import AnticipatedError
from datamodules.image_ops import bicubic_upsample, rgb_to_ycbcr, to_channels, ycbcr_to_rgb
from lightning_modules.inference import budgeted_forward, default_budget, image_bytes, self_ensemble

PAIR_IMAGES = ("degraded", "upsampled")


def pair_scale(pair: dict) -> int:
    scale = pair.get("scale", 1)
    return int(scale[0]) if torch.is_tensor(scale) else int(scale)


class Restorer:
    """``label`` names the method in tables; ``task``: the one task it is for (None: any); ``scales``: the SR factors
    it restores (None: any); ``measured_as_given``: its output is scored as it is, not rounded to 8 bit (the noisy
    input of denoising tables, which the nets receive in float)."""

    label: str = ""
    channels: str = "rgb"
    task: str | None = None
    scales: tuple[int, ...] | None = None
    measured_as_given: bool = False

    def run(self, pair: dict, what: str) -> torch.Tensor:
        """The method on a pair in ``channels``: the restored image at the target's size."""
        raise NotImplementedError

    def covers(self, task: str, scale: int) -> bool:
        return (self.task is None or self.task == task) and (self.scales is None or scale in self.scales)

    def check_input(self, image_channels: int, what: str = "input") -> None:
        if self.channels == "gray" and image_channels == 3:
            raise AnticipatedError(f"{getattr(self, 'path', self.label)}: net trained on gray images (channels: gray) "
                                   f"cannot restore the colour {what}; convert it to gray first")

    def restore(self, pair: dict, what: str = "") -> tuple[torch.Tensor, torch.Tensor]:
        degraded = pair["degraded"]
        c = degraded.shape[-3]
        self.check_input(c, what or "input")
        if self.channels == "any":
            out = self.run(pair, what)
            return out, out
        if self.channels == "rgb":
            out = self.run(_in_channels(pair, "rgb"), what)
            out = to_channels(out, "gray") if c == 1 else out
            return out, out
        if c == 1:
            out = self.run(pair, what)
            return out, out
        y = self.run(_in_channels(pair, "y"), what)
        scale = pair_scale(pair)
        chroma = rgb_to_ycbcr(degraded)[:, 1:]
        chroma = bicubic_upsample(chroma, scale) if scale > 1 else chroma
        return ycbcr_to_rgb(torch.cat([y, chroma.to(y.device)], dim=1)), y

    def __call__(self, pair: dict, what: str = "") -> torch.Tensor:
        return self.restore(pair, what)[0]


def _in_channels(pair: dict, channels: str) -> dict:
    return {k: to_channels(v, channels) if k in PAIR_IMAGES and torch.is_tensor(v) else v for k, v in pair.items()}


class NetRestorer(Restorer):
    """A trained net on whole images, in one pass or exact tiles within a memory budget
    (``lightning_modules.inference``; ``MemoryBudgetError``, one line, where neither fits), optionally the ×8
    self-ensemble. Nets of scale 1 refine the bicubic-upsampled image (the pair's ``upsampled``, else made here)."""

    def __init__(self, net: nn.Module, channels: str, label: str, task: str | None = None,
                 scales: tuple[int, ...] | None = None, tile: int | None = None, ensemble: bool = False,
                 device: torch.device | str = "cpu", budget: int | None = None, options: tuple[str, str] = ("--tile", "--memory_budget")):
        self.net, self.channels, self.label, self.task, self.scales = net, channels, label, task, scales
        self.tile, self.ensemble, self.device, self.budget, self.options = tile, ensemble, torch.device(device), budget, options
        self.on_tile: Callable[[int, int], None] | None = None  # progress: (tiles done, tiles) of the current pass

    @property
    def scale(self) -> int:
        """The SR factor of a sub-pixel net's own layers (1 for nets on the upsampled image)."""
        return getattr(self.net, "scale", 1)

    def net_input(self, pair: dict) -> torch.Tensor:
        scale = pair_scale(pair)
        if self.scale == 1 and scale > 1:
            return pair["upsampled"] if "upsampled" in pair else bicubic_upsample(pair["degraded"], scale)
        return pair["degraded"]

    def run(self, pair: dict, what: str) -> torch.Tensor:
        x = self.net_input(pair).to(self.device)
        budget = self.budget if self.budget is not None else default_budget(self.device)
        if self.ensemble:  # the running sum (output-sized) and the rotated view (input-sized) come on top
            budget -= image_bytes(self.net, tuple(x.shape))
        forward = partial(budgeted_forward, self.net, budget=budget, tile=self.tile, on_tile=self.on_tile,
                          options=self.options, what=what)
        with torch.no_grad():
            out = self_ensemble(self.net, x, forward) if self.ensemble else forward(x)
        return out.cpu()
