"""``restorelab compare``: one figure of zoomed crops side by side (HR | baseline | each checkpoint), each captioned
with its PSNR and its texture's distance from the HR image's (``lightning_modules.texture``: the radial power
spectrum distance, which shows what an adversarial loss adds and PSNR punishes), for a chosen image and region.

    restorelab compare --image skimage:chelsea.png --box 150 60 64 64 --scale 4 \
        --ckpt srresnet_x4.ckpt srgan_x4.ckpt --names SRResNet SRGAN --out srgan_x4.png

    restorelab compare --image ../shared/datasets/Set5/butterfly.png --box 100 80 64 64 \
        --ckpt runs/srcnn/<id>/checkpoints/last.ckpt --scale 3 --out butterfly_x3.png

The inputs are made as ``restorelab benchmark`` makes them (SR: 8-bit MATLAB bicubic LR of the mod-cropped
HR; denoising with ``--sigma``: the same seeded noise), and the captions give the benchmark's whole-image
PSNR and, in brackets, the PSNR of the crop alone (same colour space, nothing shaved). ``--box x y w h`` is in
HR pixels; every crop is shown with nearest-neighbour zoom so that its longer side is ``--panel`` pixels.
The PNG is exactly ``n·panel_w + (n+1)·GAP`` × ``TITLE + panel_h + CAPTION`` pixels for n panels.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import torch

from datamodules.errors import AnticipatedError
from datamodules.image_ops import mod_crop, quantize
from datamodules.recipes import evaluation_pair
from datamodules.sources import ImageSourceError, dataset_root, read_image, resolve_source
from lightning_modules.classical import baseline_for
from lightning_modules.protocol import Protocol
from restorelab.evaluation import at_level, protocol_for, task_recipe
from restorelab.checkpointing import CheckpointError
from restorelab.predict import DEFAULT_TILE, add_inference_options, inference_options, load_restorer, pick_device

GAP, TITLE, CAPTION = 8, 28, 44  # pixels: between panels, above them (protocol line), below them (captions)
DPI = 100


def resolve_image(spec: str, data_root: str | Path | None = None) -> Path:
    """A file, ``skimage:<photo>``, or ``benchmark:<Set>/<file>`` below the benchmark folder."""
    if spec.startswith("benchmark:"):
        return dataset_root(data_root) / spec.partition(":")[2]
    paths = resolve_source(spec, data_root)
    if len(paths) != 1:
        raise ImageSourceError(f"{spec}: names {len(paths)} images; compare takes one")
    return paths[0]


def panel_size(box_w: int, box_h: int, panel: int) -> tuple[int, int]:
    longest = max(box_w, box_h)
    return max(1, round(panel * box_w / longest)), max(1, round(panel * box_h / longest))


def draw(panels: Sequence[tuple[str, torch.Tensor]], out: str | Path, panel: int = 256, title: str = "") -> None:
    """Save crops (1×C×h×w each, one size) side by side with their captions, at exact pixel positions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = panels[0][1].shape[-2:]
    pw, ph = panel_size(w, h, panel)
    n = len(panels)
    width, height = n * pw + (n + 1) * GAP, TITLE + ph + CAPTION
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    fig.text(0.5, 1 - TITLE / 2 / height, title, ha="center", va="center", fontsize=9)
    for i, (caption, crop) in enumerate(panels):
        left = GAP + i * (pw + GAP)
        ax = fig.add_axes((left / width, CAPTION / height, pw / width, ph / height))
        pixels = quantize(crop[0]).permute(1, 2, 0).numpy()
        gray = pixels.shape[2] == 1
        ax.imshow(pixels[:, :, 0] if gray else pixels, cmap="gray" if gray else None, vmin=0, vmax=1,
                  interpolation="nearest", aspect="auto")
        ax.set_axis_off()
        fig.text((left + pw / 2) / width, (CAPTION - 4) / height, caption, ha="center", va="top", fontsize=8)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)  # no bbox_inches="tight": the size stays what was computed above
    plt.close(fig)


def compare(image: str | Path, box: tuple[int, int, int, int], ckpts: Sequence[str | Path], out: str | Path,
            scale: int | None = None, sigma: float | None = None, names: Sequence[str] | None = None,
            panel: int = 256, tile: int | None = DEFAULT_TILE, device: str = "auto",
            budget: int | None = None, kernel: str | None = None) -> list[tuple[str, float, float]]:
    """Write the figure; returns (caption name, whole-image PSNR, crop PSNR) per panel after HR. ``tile`` and
    ``budget`` (bytes) as in ``restorelab.predict.load_restorer``; ``kernel`` as ``restorelab benchmark --kernel``."""
    methods = [load_restorer(p, pick_device(device), tile, budget=budget) for p in ckpts]
    for m, name in zip(methods, names or []):
        m.label = name
    image = Path(image)
    clean = read_image(image)[None]
    task = "sr" if sigma is None else "denoise"
    if task == "sr":
        scale = scale or (methods[0].trained_scale if methods else 3)
        title = (f"x{scale}: PSNR on Y (BT.601), border shaved by {scale}; crop PSNR in brackets; spectrum "
                 "distance to HR (lower: closer texture)")
    else:
        scale = 1
        title = f"σ={sigma:g}: PSNR on RGB (gray as is); crop PSNR in brackets; spectrum distance to clean"
    for m in methods:
        if not m.covers(task, scale):
            own = f"x{', x'.join(map(str, m.scales))}" if m.task == "sr" else f"a {m.task} net"
            raise CheckpointError(f"{m.path}: checkpoint restores {own}, not "
                                  f"{f'--scale {scale}' if task == 'sr' else 'denoising (--sigma given)'}")
    x, y, w, h = box
    height, width = clean.shape[-2:]
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise AnticipatedError(f"--box {x} {y} {w} {h} is not inside the {width}x{height} image {image}")
    for m in methods:
        m.check_input(clean.shape[1], what=f"image {image}")

    recipe = at_level(task_recipe(task, kernel), sigma if sigma is not None else scale)
    pair = evaluation_pair(recipe, {"target": mod_crop(clean, scale), "name": [image.name]}, scale, None)
    clean = pair["target"]
    protocol = protocol_for(task, scale, extra=False, texture=True)
    crop = lambda t: t[..., y : y + h, x : x + w]  # noqa: E731
    baseline = baseline_for(task)
    if task == "denoise":
        baseline.label = f"Noisy (σ={sigma:g})"
    panels, scores = [("HR" if task == "sr" else "clean", crop(clean))], []
    for m in (baseline, *methods):
        shown, measured = m.restore(pair, what=str(image))
        if task == "sr" and m is baseline:
            shown = quantize(shown)
        rounded = False if m.measured_as_given else None
        whole_scores = protocol.score(protocol.view(measured, round_to_8bit=rounded), protocol.view(clean))
        whole = whole_scores["psnr"]
        local_view = Protocol(protocol.space, 0, protocol.round_to_8bit)
        local = local_view.score(local_view.view(crop(measured), round_to_8bit=rounded), local_view.view(crop(clean)))["psnr"]
        panels.append((f"{m.label}\n{whole:.2f} dB ({local:.2f} dB)\nspectrum {whole_scores['spectrum']:.2f}",
                       crop(shown)))
        scores.append((m.label, whole, local))
    draw(panels, out, panel, title)
    return scores


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="restorelab compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True,
                        help="HR / clean image: a file, skimage:<photo>, benchmark:Set5/bird.png")
    parser.add_argument("--box", nargs=4, type=int, required=True, metavar=("X", "Y", "W", "H"),
                        help="region, in HR pixels")
    parser.add_argument("--ckpt", nargs="*", default=[], help="checkpoints, one panel each")
    parser.add_argument("--names", nargs="*", default=None, help="captions for the checkpoints, in order")
    parser.add_argument("--scale", type=int, default=None, help="SR factor (default: the checkpoints', else 3)")
    parser.add_argument("--sigma", type=float, default=None, help="denoising instead of SR: noise level (0..255)")
    parser.add_argument("--kernel", default=None, help="SR: a named test kernel or a kernel file, as for benchmark")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--panel", type=int, default=256, help="longer side of each zoomed crop, pixels")
    parser.add_argument("--data_root", default=None)
    add_inference_options(parser, ensemble=False)
    args = parser.parse_args(argv)
    if args.scale is not None and args.sigma is not None:
        parser.error("give --scale (SR) or --sigma (denoising), not both")
    # anticipated errors (one line) propagate to restorelab's command line, which prints them and exits 2
    budget = inference_options(args)["budget"]
    image = resolve_image(args.image, args.data_root)
    scores = compare(image, tuple(args.box), args.ckpt, args.out, args.scale, args.sigma, args.names,
                     args.panel, args.tile, args.device, budget, args.kernel)
    for name, whole, local in scores:
        print(f"{name}: {whole:.2f} dB (crop {local:.2f} dB)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    from restorelab.cli import main as restorelab_main

    restorelab_main(["compare", *sys.argv[1:]])
