"""The evaluation protocol, in one place: what the metrics see of an image (``Protocol.view``: 8-bit rounding,
colour space, border shave) and the per-image scores (``Protocol.score``: PSNR, SSIM, MS-SSIM, IFC, the texture
statistics of ``lightning_modules.texture``, LPIPS with local weights), used by
validation and test (``lightning_modules.schemes``), ``restorelab benchmark``, ``models`` and ``compare``.

The papers' protocol: outputs saved as 8 bit, PSNR/SSIM on Y (BT.601, 16–235) with the border shaved by the
scale (SR) or on RGB with nothing shaved (colour denoising), one value per image, averaged over a set (not the
PSNR of the pooled MSE). Two paths compute the same numbers, as in BasicSR: ``ImageQuality`` accumulates
batched torchmetrics states on the device, synced across DDP ranks (validation/test means), and ``score``
gives one image's values (test rows, benchmark).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.functional.image import structural_similarity_index_measure
from torchmetrics.image import MultiScaleStructuralSimilarityIndexMeasure, PeakSignalNoiseRatio

from datamodules.image_ops import quantize, rgb_to_gray, rgb_to_y
from lightning_modules import ifc as ifc_metric
from lightning_modules import texture as texture_metric

# torchmetrics' 5-scale MS-SSIM with an 11×11 window needs sides larger than (11 - 1) * 2**4.
MS_SSIM_MIN_SIDE = 161

Space = Literal["y", "rgb", "gray"]
SPACE_WORDS = {"y": "Y (BT.601)", "rgb": "RGB", "gray": "gray (plain luma)"}
GRAY_WORDS = {"y": "gray images used directly as Y", "rgb": "gray images as they are",
              "gray": "gray images as they are"}


def evaluation_view(x: torch.Tensor, shave: int, y_channel: bool = True, round_to_8bit: bool = True,
                    round_y: bool = False) -> torch.Tensor:
    """What the metrics see: the image saved as 8-bit (rounded), converted to Y (``round_y``: Y itself rounded to
    8 bit, as MATLAB's ``rgb2ycbcr`` returns it for uint8 images), border shaved. The primitive ``Protocol.view``
    applies; kept for callers that vary the shave per crop (``restorelab compare``)."""
    if round_to_8bit:
        x = quantize(x)
    if y_channel:
        x = rgb_to_y(x)
        x = (x * 255).round() / 255 if round_y else x
    if shave:
        x = x[..., shave:-shave, shave:-shave]
    return x


@dataclass(frozen=True)
class Protocol:
    """How images are measured. ``space``: "y" (SR papers), "rgb" (colour denoising/deblurring) or "gray"
    (colour images measured as plain luma); ``shave``: border pixels dropped on each side; ``round_to_8bit``:
    images measured as saved to 8-bit files; ``extra``: MS-SSIM and IFC besides PSNR/SSIM; ``round_y``: Y rounded to
    8 bit before the metrics (the scripts that call MATLAB's ``rgb2ycbcr`` on uint8 images; off by default: the
    SR papers' PSNR scripts convert doubles); ``texture``: the spectrum and gradient distances to the target
    (``lightning_modules.texture``: how much of the target's fine texture an output has, which PSNR punishes
    a GAN for inventing); ``lpips``: a ``perceptual.LPIPS`` (local weights) for ``perceptual_score``."""

    space: Space = "y"
    shave: int = 0
    round_to_8bit: bool = True
    extra: bool = False
    round_y: bool = False
    texture: bool = False
    lpips: nn.Module | None = None

    def __post_init__(self) -> None:
        if self.space not in SPACE_WORDS:
            raise ValueError(f"metric space {self.space!r} is not one of {', '.join(SPACE_WORDS)}")
        if self.shave < 0:
            raise ValueError(f"shave={self.shave} must be at least 0")

    @classmethod
    def for_task(cls, scale: int = 1, space: Space = "y", **options) -> "Protocol":
        """The papers' protocol for a task of this SR ``scale`` (1: denoising, deblurring): the border shaved
        by the scale, none at scale 1."""
        return cls(space, scale if scale > 1 else 0, **options)

    def view(self, x: torch.Tensor, gray: bool = False, round_to_8bit: bool | None = None) -> torch.Tensor:
        """What the metrics see of ``x`` (…×C×H×W). An image flagged ``gray`` (a gray file an RGB net saw
        replicated) is measured as gray (on Y: its own Y, the MATLAB convention), in every space, so its score
        does not depend on the net's colour space and equals the benchmark's, where a gray file stays gray; a
        1-channel image is its own Y anyway. ``round_to_8bit`` overrides the
        protocol's for inputs measured as the nets receive them (float noisy images)."""
        if gray or self.space == "gray":
            x = rgb_to_gray(x)
        rounded = self.round_to_8bit if round_to_8bit is None else round_to_8bit
        return evaluation_view(x, self.shave, y_channel=self.space == "y", round_to_8bit=rounded, round_y=self.round_y)

    def score(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, float | None]:
        """One image's scores, ``pred`` and ``target`` being views (1×C×H×W): psnr (dB), ssim, and with
        ``extra`` ms_ssim (None where a side is under ``MS_SSIM_MIN_SIDE``) and ifc (None where a side is under
        ``ifc.MIN_SIDE`` or the view has colour channels); without ``extra`` both are None; with ``texture``,
        spectrum (decades) and gradient (Y levels) distances, else None."""
        if pred.shape[0] != 1 or target.shape[0] != 1:
            # a batch would be averaged into one row silently
            raise ValueError(f"score takes one image (1×C×H×W), got {tuple(pred.shape)} and {tuple(target.shape)}")
        quality = ImageQuality(ms_ssim=self.extra).to(pred.device)
        quality.update(pred, target)
        values = {k: float(v) for k, v in quality.compute().items()}
        ifc = None
        if self.extra and target.shape[-3] == 1 and min(target.shape[-2:]) >= ifc_metric.MIN_SIDE:
            ifc = float(ifc_metric.ifc(target, pred))
        texture = {"spectrum": None, "gradient": None}
        if self.texture:
            texture = {"spectrum": texture_metric.spectrum_distance(pred, target),
                       "gradient": texture_metric.gradient_histogram_distance(pred, target)}
        return {"psnr": values["psnr"], "ssim": values["ssim"], "ms_ssim": values.get("ms_ssim"), "ifc": ifc, **texture}

    def perceptual_score(self, pred: torch.Tensor, target: torch.Tensor) -> float | None:
        """LPIPS of one restored image against its target, both in their colours (1×C×H×W): LPIPS is defined on
        RGB, so it sees the 8-bit images with the border shaved, not the Y the other metrics see; None without
        ``lpips``."""
        if self.lpips is None:
            return None
        view = lambda x: evaluation_view(x, self.shave, y_channel=False, round_to_8bit=self.round_to_8bit)  # noqa: E731
        with torch.no_grad():
            return float(self.lpips(view(pred).float(), view(target).float()))

    def sentence(self, border: str | None = None, degradation: str = "", inputs: str = "") -> str:
        """The protocol in words, for a table's header. ``border`` replaces the shaved width where one table
        spans several scales ("by scale"); ``degradation`` says how the inputs were degraded (a clause, e.g.
        "MATLAB bicubic"), ``inputs`` anything else about them (sentences)."""
        metrics = "PSNR/SSIM"
        if border is None:
            border = f"{self.shave} px" if self.shave else ""
        shaved = f"border shaved {border}" if border else "no border shaved"
        parts = [f"{metrics} on {SPACE_WORDS[self.space]}, {shaved}" + (f", {degradation}" if degradation else "")
                 + f"; {GRAY_WORDS[self.space]}."]
        if inputs:
            parts.append(inputs)
        parts.append("Outputs rounded to 8 bit." if self.round_to_8bit else "Outputs measured unrounded.")
        if self.round_y and self.space == "y":
            parts.append("Y rounded to 8 bit before the metrics (MATLAB rgb2ycbcr on uint8).")
        if self.texture:
            parts.append(f"Texture distances to the target on the same {'Y' if self.space == 'y' else 'views (on luma)'}"
                         ", lower = closer: spectrum = mean |Δ log10 radially averaged power| over 0.25-0.5 cycles/px "
                         "(decades); gradient = Wasserstein-1 distance between the gradient-magnitude distributions.")
        if self.lpips is not None:
            parts.append("LPIPS (VGG16, local weights) on the RGB outputs, border shaved.")
        if self.extra:
            parts.append(f"MS-SSIM and IFC on the same {'Y' if self.space == 'y' else 'views'} (MS-SSIM only where "
                         f"both sides are at least {MS_SSIM_MIN_SIDE} px).")
        return " ".join(parts)


class SSIM(Metric):
    """Mean SSIM per image over the 'valid' part of the SSIM map, as MATLAB ``ssim_index``, BasicSR and
    scikit-image compute it. torchmetrics' own SSIM also averages the border, where its window reaches into
    reflect padding (+0.004 on the held-out photos at x3); we take its full map and drop that border."""

    full_state_update = False

    def __init__(self, kernel_size: int = 11, sigma: float = 1.5, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size, self.sigma = kernel_size, sigma
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        _, ssim_map = structural_similarity_index_measure(
            pred, target, gaussian_kernel=True, sigma=self.sigma, kernel_size=self.kernel_size, data_range=1.0,
            reduction="none", return_full_image=True)
        b = (self.kernel_size - 1) // 2
        self.total += ssim_map[..., b:-b, b:-b].flatten(1).mean(1).double().sum()
        self.count += pred.shape[0]

    def compute(self) -> torch.Tensor:
        return (self.total / self.count).float()


class ImageQuality(nn.Module):
    """PSNR / SSIM / MS-SSIM on images already passed through ``Protocol.view``, accumulated over batches.

    Data range 1.0 on [0, 1] equals the papers' 255 on [0, 255]; SSIM uses the Gaussian 11×11, σ = 1.5
    window with 'valid' borders (Wang et al.; MATLAB ssim_index / scikit-image gaussian_weights=True).
    """

    def __init__(self, ms_ssim: bool = True):
        super().__init__()
        self.psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3), reduction="elementwise_mean")
        self.ssim = SSIM()
        self.ms_ssim = MultiScaleStructuralSimilarityIndexMeasure(data_range=1.0) if ms_ssim else None

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = pred.float(), target.float()
        self.psnr.update(pred, target)
        self.ssim.update(pred, target)
        if self.ms_ssim is not None and min(pred.shape[-2:]) >= MS_SSIM_MIN_SIDE:
            self.ms_ssim.update(pred, target)

    def compute(self) -> dict[str, torch.Tensor]:
        out = {"psnr": self.psnr.compute(), "ssim": self.ssim.compute()}
        if self.ms_ssim is not None and self.ms_ssim._update_count:
            out["ms_ssim"] = self.ms_ssim.compute()
        return out

    def reset(self) -> None:
        for m in (self.psnr, self.ssim, self.ms_ssim):
            if m is not None:
                m.reset()


def psnr_ssim(pred: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """Per-image PSNR (dB) and SSIM of two views (1×C×H×W)."""
    scores = Protocol().score(pred, target)
    return scores["psnr"], scores["ssim"]
