"""The evaluation engine of ``restorelab benchmark`` and ``restorelab tune``: the recipe of each task, the sets, and
``evaluate``, which restores every image of a set with every method and scores it by ``lightning_modules.protocol``.
Every pair is ``datamodules.recipes.evaluation_pair`` (every draw seeded per image name), the function ``restorelab
test`` uses, so a pair here is byte-identical to the test loop's for the same image and seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from datamodules.errors import AnticipatedError
from datamodules.gopro import gopro_pairs
from datamodules.image_ops import mod_crop
from datamodules.recipes import (AWGN, BicubicSR, ClassicalSR, Kernel, KernelBlur, MotionBlur, Recipe,
                                evaluation_pair)
from datamodules.sources import BENCHMARK_SETS, ImageSourceError, dataset_root, read_image, resolve_source
from lightning_modules.protocol import Protocol
from lightning_modules.restorer import Restorer

SR_SCALES = (2, 3, 4)
NOISE_SIGMAS = (15, 25, 50)
DENOISING_SETS = ("Set12", "BSD68", "CBSD68", "Kodak24")
TASKS = ("sr", "denoise", "deblur")
CSV_FIELDS = ("set", "task", "scale", "sigma", "degradation", "method", "image", "psnr", "ssim", "ms_ssim", "ifc",
              "spectrum", "gradient", "lpips", "updates", "seconds")


@dataclass
class BenchmarkSet:
    name: str
    samples: list[tuple[str, dict]]  # (name, {"target": 1×C×H×W} or a real pair {"degraded", "target"})



# ---------------------------------------------------------------------------------------------- recipes


BLURS = ("synthetic", "gopro", "kernel")


def task_recipe(task: str, kernel: str | None = None, blur: str = "synthetic") -> Recipe:
    """The recipe a benchmark of ``task`` uses: SR by bicubic, or by ``kernel`` (a named test kernel or a kernel
    file); denoising by AWGN (its σ set per level); deblurring by synthetic or real GoPro motion blur, or
    (``blur="kernel"``) by a known kernel: random camera shake, or ``kernel`` (a family such as "gaussian", a named
    kernel, a file)."""
    if task == "sr" or (task == "deblur" and blur == "kernel"):
        made = ClassicalSR if task == "sr" else KernelBlur
        if kernel is None:
            return BicubicSR() if task == "sr" else KernelBlur()
        if kernel in Kernel.__args__:
            return made(kernel=kernel)
        return made(kernel="file", kernel_file=kernel, order="blur_decimate")
    if kernel is not None:
        raise AnticipatedError(f"--kernel {kernel} is for SR or --blur kernel, not {task}"
                               + (f" with --blur {blur}" if task == "deblur" else ""))
    if blur not in BLURS:
        raise AnticipatedError(f"--blur {blur} must be one of {', '.join(BLURS)}")
    return AWGN() if task == "denoise" else MotionBlur(source=blur)


def at_level(recipe: Recipe, level: float) -> Recipe:
    """The recipe at one table column: denoising evaluates at σ = ``level``; SR and deblurring take it as is."""
    return recipe.at_sigma(level) if isinstance(recipe, AWGN) else recipe


def protocol_for(task: str, scale: int, extra: bool = True, round_y: bool = False, texture: bool = False,
                 lpips=None) -> Protocol:
    """SR: Y with the scale shaved (and MS-SSIM, IFC; ``round_y``: Y rounded to 8 bit, a paper-reproduction
    option); denoising and deblurring: RGB, nothing shaved. ``texture``, ``lpips``: ``Protocol``'s, any task."""
    if task == "sr":
        return Protocol.for_task(scale, "y", extra=extra, round_y=round_y, texture=texture, lpips=lpips)
    return Protocol.for_task(1, "rgb", texture=texture, lpips=lpips)


def sentence(task: str, recipe: Recipe, extra: bool, round_y: bool = False, texture: bool = False,
             lpips=None) -> str:
    protocol = protocol_for(task, 2 if task == "sr" else 1, extra, round_y, texture, lpips)
    inputs = {"sr": "HR mod-cropped to the scale.", "denoise": "Noise seeded per image; the noisy input measured as "
              "the nets receive it (float, unrounded).", "deblur": "Blur seeded per image."}[task]
    degradation = recipe.describe(sigma="of the column's σ") if isinstance(recipe, AWGN) else recipe.describe()
    return protocol.sentence(border="by scale" if task == "sr" else None, degradation=degradation, inputs=inputs)


# ------------------------------------------------------------------------------------------------- sets


def load_set(spec: str, data_root: str | Path | None = None, recipe: Recipe | None = None) -> BenchmarkSet:
    """``Set5`` (any name of ``BENCHMARK_SETS``) or ``benchmark:Set5``, ``skimage:val``, a folder, a file; with a
    GoPro ``MotionBlur`` recipe, a GOPRO_Large split folder (``benchmark:GOPRO_Large/test``)."""
    source = f"benchmark:{spec}" if spec in BENCHMARK_SETS else spec
    kind, _, rest = source.partition(":")
    if isinstance(recipe, MotionBlur) and recipe.source == "gopro":
        folder = dataset_root(data_root) / rest if kind == "benchmark" else Path(spec).expanduser()
        samples = [(f"{sharp.parent.parent.name}/{sharp.name}",
                    {"degraded": read_image(blurred)[None], "target": read_image(sharp)[None]})
                   for blurred, sharp in gopro_pairs(folder.parent, folder.name, recipe.gopro_blur)]
        return BenchmarkSet(folder.name if kind != "benchmark" else rest, samples)
    name = rest if kind == "benchmark" else source if kind == "skimage" else Path(spec).name
    return BenchmarkSet(name, [(p.name, {"target": read_image(p)[None]}) for p in resolve_source(source, data_root)])


def default_sets(task: str, data_root: str | Path | None = None) -> tuple[list[str], str | None]:
    """Set5/Set14 (SR) or Set12/BSD68 (denoising) when the data folder has them, else the bundled photos."""
    if task == "deblur":
        return ["skimage:val"], None
    wanted = ["Set5", "Set14"] if task == "sr" else ["Set12", "BSD68"]
    try:
        root = dataset_root(data_root)
    except ImageSourceError:
        root = None
    if root is not None and all((root / s).is_dir() for s in wanted):
        return wanted, None
    return ["skimage:val"], f"{' and '.join(wanted)} not found (RESTORELAB_DATA / --data_root); using skimage:val"


def infer_task(methods: Sequence[Restorer], sets: Sequence[str] | None, kernel: str | None = None) -> str:
    """The methods' task (they must agree); without methods of a task, SR unless every set is a denoising set."""
    tasks = {m.task for m in methods} - {None}
    if len(tasks) > 1:
        raise AnticipatedError(f"checkpoints of different tasks ({', '.join(sorted(tasks))}) mixed: benchmark them "
                               "separately or give --task")
    if tasks:
        return tasks.pop()
    named = [s.partition("benchmark:")[2] or s for s in sets or []]
    return "denoise" if kernel is None and named and all(s in DENOISING_SETS for s in named) else "sr"


# ------------------------------------------------------------------------------------------- evaluation


def evaluate(bench: BenchmarkSet, recipe: Recipe, task: str, level: float, methods: Sequence[Restorer],
             extra: bool = True, seed: int = 0, advance: Callable[[], None] = lambda: None,
             channels: str | None = None, round_y: bool = False, texture: bool = False, lpips=None) -> list[dict]:
    """Per-image rows of every method on one set at one level (the SR scale, or σ for denoising); ``channels``
    converts the images first (None: their own colours); ``texture``, ``lpips``: ``protocol_for``'s."""
    scale = int(level) if task == "sr" else 1
    protocol = protocol_for(task, scale, extra, round_y, texture, lpips)
    rows = []
    for name, sample in bench.samples:
        batch = {k: mod_crop(v, scale) for k, v in sample.items()} | {"name": [name]}
        pair = evaluation_pair(recipe, batch, scale, channels, seed)
        target = protocol.view(pair["target"])
        for method in methods:
            restored, measured = method.restore(pair, what=f"{bench.name}/{name}")
            view = protocol.view(measured, round_to_8bit=False if method.measured_as_given else None)
            sigma = level if task == "denoise" else float(pair["sigma"][0])
            rows.append({"set": bench.name, "task": task, "scale": scale, "sigma": sigma,
                         "degradation": type(recipe).__name__ + (f":{recipe.kernel}" if isinstance(recipe, ClassicalSR) else ""),
                         "method": method.label, "image": name, **protocol.score(view, target),
                         "lpips": protocol.perceptual_score(restored, pair["target"]),
                         **getattr(method, "last_budget", {})})  # a per-image learner's updates and seconds
            advance()
    return rows
