"""``restorelab predict --ckpt PATH --input IMG_OR_FOLDER --output DIR [--tile N] [--memory_budget GB]
[--self_ensemble] [--overwrite] [--no_progress]``: apply a trained checkpoint to image files (the files *are* the
degraded inputs: LR images for SR, noisy/blurred ones otherwise) and write 8-bit PNGs, ``scale`` times larger
for SR.

Any size within a memory budget: ``--memory_budget`` GB (default ``$RESTORELAB_MEMORY_BUDGET``, else 4 GB or a
quarter of the RAM on the CPU, 80 % of the free memory of a GPU). By default each image runs in one pass if the
net's estimated memory for it fits, else in the largest exact tiles that do (``lightning_modules.inference``
says how the estimate is made); ``--tile 0`` asks for one pass and ``--tile N`` for N-pixel tiles, and either is
refused with one line if it does not fit, as are tiles below the net's minimum (its halo: tiles smaller than
that cost more than 9× the pixels they keep). Nets with a global receptive field cannot be tiled exactly: an
image they cannot take in one pass within the budget is refused, saying what size would fit. A progress bar
over images and tiles goes to stderr (``--no_progress``: none).

Outputs are ``<stem>.png``; inputs sharing a stem (``a.tif``, ``a.png``) keep their whole name (``a.tif.png``,
``a.png.png``). An output file that already exists is never replaced silently: the run is refused before any
work, naming it, unless ``--overwrite`` is given. The output folder is created (and checked writable) before
any work too.

Colours follow the checkpoint's training space (``channels`` of its DataModule):

* "y"   (SRCNN, VDSR): colour inputs go through the net as BT.601 Y; Cb/Cr are MATLAB-bicubic upscaled, as
        the SRCNN authors' demo does. Gray inputs are their own Y.
* "rgb": colour inputs as they are; gray inputs are replicated to R=G=B and the output's luma kept, so a
        gray file stays gray.
* "gray": gray inputs only: a colour image has no faithful gray round trip (its chroma would be lost).

Every reader of ``datamodules.sources`` applies: 16-bit files are scaled to [0, 1]; an alpha channel is
dropped (outputs are opaque RGB or gray; re-composite yourself if you need transparency). Outputs carry no
metadata (OpenCV's PNG encoder writes pixels only).

``load_restorer`` (a checkpoint behind the restorer interface, ``lightning_modules.restorer``) is shared with
``restorelab benchmark`` and ``restorelab compare``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import cv2
import torch
from torch import nn

from datamodules.image_ops import load_kernel, quantize
from datamodules.recipes import NAMED_KERNELS, ClassicalSR
from datamodules.errors import AnticipatedError
from datamodules.sources import ImageSourceError, read_image, resolve_source
from lightning_modules.inference import BUDGET_ENV, check_tile, parse_budget
from lightning_modules.restorer import NetRestorer, Restorer
from lightning_modules.zero_shot.mzsr import DIRECT_RATES, TestTimeAdaptation
from restorelab.checkpointing import CheckpointError, load_recipe, load_scheme, read_checkpoint
from restorelab.methods import read_method
from restorelab.tune import load_tuning, tuned_from_record

DEFAULT_TILE = None  # automatic: one pass if it fits the memory budget, else the largest exact tile that does
OPTIONS = ("--tile", "--memory_budget")  # the option names the budget's one-line errors name


def _checkpoint_label(path: Path, net: nn.Module) -> str:
    # runs/<experiment>/<run id>/checkpoints/<file>.ckpt, the CLI's layout, names the run; else the file does
    if path.parent.name == "checkpoints" and len(path.parents) >= 3:
        return f"{type(net).__name__} ({path.parents[2].name}/{path.parents[1].name}/{path.stem})"
    return f"{type(net).__name__} ({path.stem})"


def load_restorer(path: str | Path, device: str | torch.device = "cpu", tile: int | None = DEFAULT_TILE,
                  ensemble: bool = False, budget: int | None = None, steps: int | None = None) -> Restorer:
    """The restorer (``lightning_modules.restorer.NetRestorer``) of a training scheme's checkpoint saved by the CLI
    (or any checkpoint with the same ``hyper_parameters`` / ``datamodule_hyper_parameters``), rebuilt through the
    class path it saved; anything else raises ``CheckpointError``. Its task comes from the recipe it was trained
    on, its SR factors from the net (a sub-pixel net: its own) or the data (a net on the upsampled image: every
    scale it trained on, so VDSR trained on ×2/×3/×4 is benchmarked at each). ``tile`` (None: automatic, 0: one
    pass) is checked against the net's minimum here (``MemoryBudgetError``); ``budget`` is in bytes (None: the
    device's default). ``steps``: gradient steps on each test image's own example first (MZSR's test time,
    ``lightning_modules.zero_shot.mzsr.TestTimeAdaptation``); None: the checkpoint's own ``test_steps`` (a
    meta-trained one's), else none."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    if "hyper_parameters" not in ckpt:
        raise CheckpointError(f"{path}: not a restorelab checkpoint (no hyper_parameters)")
    if "net" not in ckpt["hyper_parameters"]:
        raise CheckpointError(f"{path}: its hyper_parameters do not record the net (saved by an older restorelab); "
                              "retrain it")
    module = load_scheme(path, checkpoint=ckpt)
    net = module.net.eval().to(device)
    data = ckpt.get("datamodule_hyper_parameters") or {}
    in_channels = getattr(net, "in_channels", 1)
    channels = data.get("channels") or ("rgb" if in_channels == 3 else "y" if module.scale > 1 else "gray")
    if in_channels != (3 if channels == "rgb" else 1):
        raise CheckpointError(f"{path}: net takes {in_channels} channels but was trained on channels={channels}")
    check_tile(net, tile, OPTIONS[0])
    recipe = load_recipe(path, ckpt)
    task = recipe.task if recipe is not None else "sr" if module.scale > 1 else "denoise"  # saved before recipes
    net_scale = getattr(net, "scale", 1)
    scales = (net_scale,) if net_scale > 1 else tuple(data.get("scales") or [module.scale])
    label = (ckpt.get("imported_from") or {}).get("label") or _checkpoint_label(path, net)  # restorelab import
    restorer = NetRestorer(net, channels, label, task, scales, tile, ensemble, device, budget, OPTIONS)
    restorer.path, restorer.trained_scale = path, module.scale
    steps = steps if steps is not None else getattr(module.hparams, "test_steps", None)
    if steps is None:
        return restorer
    adapted = TestTimeAdaptation(restorer, steps, getattr(module.hparams, "test_rates", DIRECT_RATES))
    adapted.trained_scale = module.scale
    return adapted


def method_restorer(spec: str, record: str | None = None) -> Restorer:
    """A classical method for files: its configured parameters, those fixed in ``spec``, or a tuning record's."""
    config, fixed = read_method(spec)
    if record is not None:
        tuning = load_tuning(record)
        if tuning.method != config.name:
            raise AnticipatedError(f"{record}: a tuning record of {tuning.method}, not of {config.name}")
        return tuned_from_record(tuning)
    return config.build(**fixed)


def add_inference_options(parser: argparse.ArgumentParser, ensemble: bool = True) -> None:
    """How checkpoints run on whole images, the same options for predict, benchmark and compare."""
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE,
                        help="tile side in input pixels; 0: one pass; default: one pass if it fits --memory_budget, "
                             "else the largest exact tile that does")
    parser.add_argument("--memory_budget", type=float, default=None,
                        help=f"GB (10^9 bytes) for one image's pass; default ${BUDGET_ENV}, else 4 GB or a quarter "
                             "of the RAM on the CPU, 80%% of the free memory of a GPU")
    if ensemble:
        parser.add_argument("--self_ensemble", action="store_true", help="mean over the 8 flips/rotations")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")


def inference_options(args: argparse.Namespace) -> dict:
    """``load_restorer``'s keyword arguments from ``add_inference_options``'s options."""
    budget = None if args.memory_budget is None else parse_budget(args.memory_budget, "--memory_budget")
    return {"device": pick_device(args.device), "tile": args.tile, "budget": budget,
            "ensemble": getattr(args, "self_ensemble", False)}


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
    """``<stem>.png``; inputs sharing a stem (a.jpg, a.png) keep their whole name (a.jpg.png). Names that would
    still clash (on a case-insensitive file system too) get ``-2``, ``-3``, ... in input order."""
    stems = [p.stem.casefold() for p in inputs]
    names, taken = [], set()
    for p, stem in zip(inputs, stems):
        name = f"{p.stem}.png" if stems.count(stem) == 1 else f"{p.name}.png"
        base, k = name[:-4], 2
        while name.casefold() in taken:
            name, k = f"{base}-{k}.png", k + 1
        taken.add(name.casefold())
        names.append(name)
    return names


def prepare_output(folder: Path) -> Path:
    """Create ``folder`` (and its parents) and check that files can be written in it: before any work."""
    if folder.exists() and not folder.is_dir():
        raise AnticipatedError(f"{folder}: --output is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise AnticipatedError(f"{folder}: cannot write the output folder ({e.strerror or type(e).__name__}); "
                               "choose another --output") from None
    return folder


def output_targets(inputs: Sequence[Path], folder: Path, overwrite: bool = False) -> list[Path]:
    """Where each input's result goes; existing files are refused (one line naming them) unless ``overwrite``."""
    targets = [folder / name for name in output_names(inputs)]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        shown = ", ".join(t.name for t in existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise AnticipatedError(f"{folder}: {len(existing)} output file(s) already exist ({shown}); pass --overwrite "
                               "to replace them, or choose another --output")
    return targets


def predict_files(restorer: Restorer, inputs: Sequence[Path], output: Path, progress: bool = False,
                  overwrite: bool = True, scale: int | None = None, degradation: dict | None = None) -> list[Path]:
    """Restore every input file into ``output``; returns the written paths. Unreadable files are reported
    and skipped; a colour file given to a gray-only net stops the run (every other file would fail too), and
    so does an image that neither one pass nor any tile fits within the budget (``MemoryBudgetError``).
    ``progress``: a bar over images and tiles on stderr. ``scale``: the SR factor (None: the one it trained at).
    ``degradation``: what made the files, for methods built on the degradation model (``sigma``, ``kernel``)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    targets = output_targets(inputs, output, overwrite)
    scale = scale or getattr(restorer, "trained_scale", 1)
    written = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not progress, transient=True) as bar:
        images = bar.add_task("images", total=len(inputs))
        tiles = bar.add_task("tiles", total=None)
        restorer.on_tile = lambda done, total: bar.update(tiles, completed=done, total=total)  # nets report tiles
        try:
            for path, target in zip(inputs, targets):
                bar.update(images, description=f"{path.name}")
                bar.reset(tiles, total=None)
                try:
                    image = read_image(path)[None]
                except ImageSourceError as e:
                    bar.console.print(f"skipped: {e}", markup=False, highlight=False)
                    bar.advance(images)
                    continue
                restorer.check_input(image.shape[1], what=f"image {path}")
                pair = {"degraded": image, "scale": torch.tensor([scale])} | (degradation or {})
                save_png(restorer(pair, what=str(path)), target)
                written.append(target)
                h, w = image.shape[-2:]
                print(f"{path} ({w}x{h}) -> {target} ({w * scale}x{h * scale})")
                bar.advance(images)
        finally:
            restorer.on_tile = None
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """The command; anticipated errors (``AnticipatedError``) propagate for ``restorelab``'s one-line report."""
    parser = argparse.ArgumentParser(prog="restorelab predict", description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--ckpt", help="checkpoint saved by `restorelab fit` (or `restorelab import`)")
    which.add_argument("--method", help="a classical method by name (configs/methods/), name:key=value,..., or YAML")
    parser.add_argument("--input", required=True, help="image file, folder, or source spec (skimage:val, ...)")
    parser.add_argument("--output", required=True, help="folder for the restored PNGs")
    parser.add_argument("--scale", type=int, default=None,
                        help="SR factor (default: the checkpoint's); refused where the net does not restore it")
    add_inference_options(parser)
    parser.add_argument("--sigma", type=float, default=None,
                        help="noise σ of the files (0..255), for methods that need it (BM3D, non-local means)")
    parser.add_argument("--kernel", default=None,
                        help="blur kernel of the inputs: a file (.npy, .mat, ...) or a named SR test kernel "
                             f"({', '.join(NAMED_KERNELS)}), for the deconvolutions and the zero-shot SR methods")
    parser.add_argument("--steps", type=int, default=None,
                        help="--ckpt: gradient steps on each input's own example first (MZSR's test time); default: "
                             "the checkpoint's own (a meta-trained one: 1), else none")
    parser.add_argument("--tuned", default=None, help="a `restorelab tune` record of --method's parameters")
    parser.add_argument("--overwrite", action="store_true", help="replace output files that already exist")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar on stderr")
    args = parser.parse_args(argv)
    if args.ckpt:
        restorer = load_restorer(args.ckpt, **inference_options(args), steps=args.steps)
        if args.scale is not None and args.scale not in restorer.scales:
            own = ", ".join(f"x{s}" for s in restorer.scales)
            raise CheckpointError(f"{args.ckpt}: checkpoint restores {own}, but --scale {args.scale} was asked")
    else:
        if args.steps is not None:
            raise AnticipatedError("--steps adapts a checkpoint (--ckpt) to each input; a --method has its own options")
        restorer = method_restorer(args.method, args.tuned)
        if restorer.task == "sr" and args.scale is None:
            raise AnticipatedError(f"--method {args.method} is an SR method: give --scale")
    degradation = {}
    if args.sigma is not None:
        if not 0 < args.sigma <= 255:
            raise AnticipatedError(f"--sigma {args.sigma:g} must be in (0, 255]")
        degradation["sigma"] = torch.tensor([args.sigma])
    if args.kernel in NAMED_KERNELS:
        named = ClassicalSR(kernel=args.kernel)
        degradation |= {"kernel": named.fixed_kernel[None], "order": named.applied_order}
    elif args.kernel is not None:
        degradation["kernel"] = load_kernel(args.kernel)[None]
    inputs = resolve_source(args.input)
    output = Path(args.output)
    created = not output.exists()
    prepare_output(output)
    try:  # predict_files refuses existing outputs before any work
        written = predict_files(restorer, inputs, output, progress=not args.no_progress, overwrite=args.overwrite,
                                scale=args.scale, degradation=degradation)
    except BaseException:
        if created and not any(output.iterdir()):  # a run that wrote nothing leaves no folder behind
            output.rmdir()
        raise
    return 0 if len(written) == len(inputs) else 1


if __name__ == "__main__":
    from restorelab.cli import main as restorelab_main

    restorelab_main(["predict", *sys.argv[1:]])
