"""``restorelab predict --ckpt PATH --input IMG_OR_FOLDER --output DIR [--tile N] [--self_ensemble]``: apply a
trained checkpoint to image files (the files *are* the degraded inputs: LR images for SR, noisy/blurred ones
otherwise) and write 8-bit PNGs, ``scale`` times larger for SR.

Colours follow the checkpoint's training space (``channels`` of its DataModule):

* "y"   (SRCNN, VDSR): colour inputs go through the net as BT.601 Y; Cb/Cr are MATLAB-bicubic upscaled, as
        the SRCNN authors' demo does. Gray inputs are their own Y.
* "rgb": colour inputs as they are; gray inputs are replicated to R=G=B and the output's luma kept, so a
        gray file stays gray.
* "gray": gray inputs only: a colour image has no faithful gray round trip (its chroma would be lost).

Every reader of ``datamodules.sources`` applies: 16-bit files are scaled to [0, 1]; an alpha channel is
dropped (outputs are opaque RGB or gray; re-composite yourself if you need transparency). Outputs carry no
metadata (OpenCV's PNG encoder writes pixels only).

``Restorer`` and ``load_restorer`` are shared with ``restorelab benchmark`` and ``restorelab compare``.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import cv2
import torch
from torch import nn

from datamodules.degradations import bicubic_upsample, quantize, rgb_to_ycbcr, ycbcr_to_rgb
from datamodules.restoration import to_channels
from datamodules.sources import ImageSourceError, read_image, resolve_source
from restorelab.infer import self_ensemble, tiled_forward

DEFAULT_TILE = 512  # input pixels per tile side; tiles are exact (see restorelab.infer), so this only bounds memory


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded or does not fit the request; the message is one line naming it."""


@dataclass
class Restorer:
    """A trained net ready for whole images: ``restorer(degraded)`` -> restored, both 1×C×H×W in [0, 1] (C = 1
    or 3, the image's own colours); ``scale`` is the SR factor of the task (1 for denoising/deblurring)."""

    net: nn.Module
    scale: int
    channels: str  # the training colour space: "y", "rgb" or "gray"
    path: Path
    label: str
    tile: int = DEFAULT_TILE  # 0: one pass over the whole image
    ensemble: bool = False
    device: torch.device = torch.device("cpu")

    def check_input(self, image_channels: int, what: str = "input") -> None:
        if self.channels == "gray" and image_channels == 3:
            raise CheckpointError(f"{self.path}: net trained on gray images (channels: gray) cannot restore the "
                                  f"colour {what}; convert it to gray first")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The net on images already in its colour space, at the degraded resolution."""
        x = x.to(self.device)
        if self.net.scale == 1 and self.scale > 1:  # SRCNN/VDSR refine the bicubic-upsampled image
            x = bicubic_upsample(x, self.scale)
        run = partial(tiled_forward, self.net, tile=self.tile or max(x.shape[-2:]))
        with torch.no_grad():
            out = self_ensemble(self.net, x, run) if self.ensemble else run(x)
        return out.cpu()

    def restore(self, degraded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(restored image in the input's colours, what the SR papers measure of it): the second is the Y a
        "y" net computed for a colour image (their scripts never rebuild RGB), else the image itself."""
        c = degraded.shape[-3]
        self.check_input(c)
        if self.channels == "rgb":
            out = self.forward(to_channels(degraded, "rgb"))
            out = to_channels(out, "gray") if c == 1 else out
            return out, out
        if c == 1:
            out = self.forward(degraded)
            return out, out
        ycbcr = rgb_to_ycbcr(degraded)
        y = self.forward(ycbcr[:, :1])
        chroma = bicubic_upsample(ycbcr[:, 1:], self.scale) if self.scale > 1 else ycbcr[:, 1:]
        return ycbcr_to_rgb(torch.cat([y, chroma], dim=1)), y

    def __call__(self, degraded: torch.Tensor) -> torch.Tensor:
        return self.restore(degraded)[0]


def _checkpoint_label(path: Path, net: nn.Module) -> str:
    # runs/<experiment>/<run id>/checkpoints/<file>.ckpt, the CLI's layout, names the run; else the file does
    if path.parent.name == "checkpoints" and len(path.parents) >= 3:
        return f"{type(net).__name__} ({path.parents[2].name}/{path.parents[1].name}/{path.stem})"
    return f"{type(net).__name__} ({path.stem})"


def load_restorer(path: str | Path, device: str | torch.device = "cpu", tile: int = DEFAULT_TILE,
                  ensemble: bool = False) -> Restorer:
    """A ``Restorer`` from a ``RestorationModule`` checkpoint saved by the CLI (or any checkpoint with the same
    ``hyper_parameters`` / ``datamodule_hyper_parameters``); anything else raises ``CheckpointError``."""
    from lightning_modules.restoration import RestorationModule

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever torch says, the user needs one line naming the file
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(f"{path}: not a restorelab checkpoint (no state_dict / hyper_parameters)")
    if "net" not in ckpt["hyper_parameters"]:
        raise CheckpointError(f"{path}: its hyper_parameters do not record the net (saved by an older restorelab); "
                              "retrain it")
    try:
        module = RestorationModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot rebuild the net: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    net = module.net.eval().to(device)
    data = ckpt.get("datamodule_hyper_parameters") or {}
    in_channels = getattr(net, "in_channels", 1)
    channels = data.get("channels") or ("rgb" if in_channels == 3 else "y" if module.scale > 1 else "gray")
    if in_channels != (3 if channels == "rgb" else 1):
        raise CheckpointError(f"{path}: net takes {in_channels} channels but was trained on channels={channels}")
    return Restorer(net, module.scale, channels, path, _checkpoint_label(path, net), tile, ensemble,
                    torch.device(device))


def pick_device(name: str = "auto") -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else torch.device(name)


def save_png(image: torch.Tensor, path: str | Path) -> None:
    """1×C×H×W (or C×H×W) in [0, 1] -> 8-bit PNG, gray or RGB, no metadata."""
    chw = quantize(image.reshape(-1, *image.shape[-2:]))
    hwc = (chw * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    pixels = hwc[:, :, 0] if hwc.shape[2] == 1 else cv2.cvtColor(hwc, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".png", pixels)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the PNG")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    data.tofile(str(path))  # works for non-ASCII paths, unlike cv2.imwrite


def output_names(inputs: Sequence[Path]) -> list[str]:
    """``<stem>.png``; inputs sharing a stem (a.jpg, a.png) keep their whole name (a.jpg.png)."""
    stems = [p.stem for p in inputs]
    return [f"{p.stem}.png" if stems.count(p.stem) == 1 else f"{p.name}.png" for p in inputs]


def predict_files(restorer: Restorer, inputs: Sequence[Path], output: Path) -> list[Path]:
    """Restore every input file into ``output``; returns the written paths. Unreadable files are reported
    and skipped; a colour file given to a gray-only net stops the run (every other file would fail too)."""
    written = []
    for path, name in zip(inputs, output_names(inputs)):
        try:
            image = read_image(path)[None]
        except ImageSourceError as e:
            print(f"skipped: {e}", file=sys.stderr)
            continue
        restorer.check_input(image.shape[1], what=f"image {path}")
        target = output / name
        save_png(restorer(image), target)
        written.append(target)
        h, w = image.shape[-2:]
        print(f"{path} ({w}x{h}) -> {target} ({w * restorer.scale}x{h * restorer.scale})")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="restorelab predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint saved by `restorelab fit`")
    parser.add_argument("--input", required=True, help="image file, folder, or source spec (skimage:val, ...)")
    parser.add_argument("--output", required=True, help="folder for the restored PNGs")
    parser.add_argument("--scale", type=int, default=None,
                        help="expected SR factor; refused if the checkpoint's differs")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE, help="tile side in input pixels (0: whole image)")
    parser.add_argument("--self_ensemble", action="store_true", help="mean over the 8 flips/rotations")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    args = parser.parse_args(argv)
    try:
        restorer = load_restorer(args.ckpt, pick_device(args.device), args.tile, args.self_ensemble)
        if args.scale is not None and args.scale != restorer.scale:
            raise CheckpointError(f"{args.ckpt}: checkpoint is x{restorer.scale}, but --scale {args.scale} was asked")
        inputs = resolve_source(args.input)
        written = predict_files(restorer, inputs, Path(args.output))
    except (CheckpointError, ImageSourceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if len(written) == len(inputs) else 1


if __name__ == "__main__":
    sys.exit(main())
