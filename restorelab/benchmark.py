"""``restorelab benchmark``: any methods on any degradation recipe, on the standard test sets, measured the way the
papers measure them; a per-image CSV and one markdown table per set, the protocol sentence in each table's header.

Every pair is ``datamodules.recipes.evaluation_pair`` (every draw seeded per image name), the function ``restorelab
test`` uses, so a benchmark pair is byte-identical to the test loop's for the same image and seed; every method
(checkpoints of any training scheme, the classical baseline of the task, methods that adapt per image) goes
through the restorer interface (``lightning_modules.restorer``) and every score through
``lightning_modules.protocol``.

    SR        ×2/×3/×4 on Set5, Set14, BSD100, Urban100, T91, a folder, ``skimage:val``: HR mod-cropped to the scale,
              LR by MATLAB bicubic (``BicubicSR``) or, with ``--kernel``, (HR ⊗ k)↓s (``ClassicalSR``: a named test
              kernel such as MZSR's gd_2.0, or a .npy/.mat file); PSNR/SSIM/MS-SSIM/IFC on Y (BT.601) with ``s``
              pixels shaved; gray files used directly as Y (the published Set14 numbers); nets trained on Y
              measured on the Y they output, as the papers' scripts do. Baseline: bicubic.
    denoise   σ = 15/25/50 on Set12, BSD68, CBSD68, Kodak24 (``AWGN``: noise added in float, unclipped, as in
              DnCNN's test code); PSNR/SSIM on RGB (gray images as they are), nothing shaved. Baseline: the noisy
              input, measured as the nets receive it (float, unrounded).
    deblur    motion blur (``MotionBlur``) synthesised along random camera paths (``--blur synthetic``) or real
              ``GOPRO_Large`` pairs (``--blur gopro``, sets = split folders such as ``benchmark:GOPRO_Large/test``);
              PSNR/SSIM on RGB, nothing shaved. Baseline: the blurred input.

    restorelab benchmark --ckpt runs/srcnn/<id>/checkpoints/last.ckpt --sets Set5 Set14 --scales 2 3 4
    restorelab benchmark --ckpt vdsr.ckpt --sets Set5 --scales 2 --kernel gd_2.0
    restorelab benchmark --ckpt dncnn.ckpt --sets Set12 BSD68 --sigmas 15 25 50
    restorelab benchmark --ckpt deepdeblur.ckpt --task deblur

``run_benchmark`` returns the rows; ``markdown_tables(result)`` makes the tables (e.g. for a README).
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from datamodules.errors import AnticipatedError
from datamodules.gopro import gopro_pairs
from datamodules.image_ops import mod_crop
from datamodules.recipes import AWGN, NAMED_KERNELS, BicubicSR, ClassicalSR, MotionBlur, Recipe, evaluation_pair
from datamodules.sources import BENCHMARK_SETS, ImageSourceError, dataset_root, read_image, resolve_source
from lightning_modules.classical import baseline_for
from lightning_modules.protocol import Protocol
from lightning_modules.restorer import Restorer
from restorelab.predict import add_inference_options, inference_options, load_restorer

SR_SCALES = (2, 3, 4)
NOISE_SIGMAS = (15, 25, 50)
DENOISING_SETS = ("Set12", "BSD68", "CBSD68", "Kodak24")
TASKS = ("sr", "denoise", "deblur")
CSV_FIELDS = ("set", "task", "scale", "sigma", "degradation", "method", "image", "psnr", "ssim", "ms_ssim", "ifc")


@dataclass
class BenchmarkSet:
    name: str
    samples: list[tuple[str, dict]]  # (name, {"target": 1×C×H×W} or a real pair {"degraded", "target"})


@dataclass
class BenchmarkResult:
    rows: list[dict]
    notes: list[str] = field(default_factory=list)
    sentences: dict[str, str] = field(default_factory=dict)  # set name -> the protocol sentence of its table


# ---------------------------------------------------------------------------------------------- recipes


def task_recipe(task: str, kernel: str | None = None, blur: str = "synthetic") -> Recipe:
    """The recipe a benchmark of ``task`` uses: SR by bicubic, or by ``kernel`` (a named test kernel or a kernel
    file); denoising by AWGN (its σ set per level); deblurring by synthetic or real GoPro blur."""
    if task == "sr":
        if kernel is None:
            return BicubicSR()
        if kernel in NAMED_KERNELS:
            return ClassicalSR(kernel=kernel)
        return ClassicalSR(kernel="file", kernel_file=kernel, order="blur_decimate")
    if kernel is not None:
        raise AnticipatedError(f"--kernel {kernel} is for SR, not {task}")
    return AWGN() if task == "denoise" else MotionBlur(source=blur)


def at_level(recipe: Recipe, level: float) -> Recipe:
    """The recipe at one table column: denoising evaluates at σ = ``level``; SR and deblurring take it as is."""
    return recipe.at_sigma(level) if isinstance(recipe, AWGN) else recipe


def protocol_for(task: str, scale: int, extra: bool = True) -> Protocol:
    """SR: Y with the scale shaved (and MS-SSIM, IFC); denoising and deblurring: RGB, nothing shaved."""
    return Protocol.for_task(scale, "y", extra=extra) if task == "sr" else Protocol.for_task(1, "rgb")


def sentence(task: str, recipe: Recipe, extra: bool) -> str:
    protocol = protocol_for(task, 2 if task == "sr" else 1, extra)
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
             channels: str | None = None) -> list[dict]:
    """Per-image rows of every method on one set at one level (the SR scale, or σ for denoising); ``channels``
    converts the images first (None: their own colours)."""
    scale = int(level) if task == "sr" else 1
    protocol = protocol_for(task, scale, extra)
    rows = []
    for name, sample in bench.samples:
        batch = {k: mod_crop(v, scale) for k, v in sample.items()} | {"name": [name]}
        pair = evaluation_pair(recipe, batch, scale, channels, seed)
        target = protocol.view(pair["target"])
        for method in methods:
            _, measured = method.restore(pair, what=f"{bench.name}/{name}")
            view = protocol.view(measured, round_to_8bit=False if method.measured_as_given else None)
            sigma = level if task == "denoise" else float(pair["sigma"][0])
            rows.append({"set": bench.name, "task": task, "scale": scale, "sigma": sigma,
                         "degradation": type(recipe).__name__ + (f":{recipe.kernel}" if isinstance(recipe, ClassicalSR) else ""),
                         "method": method.label, "image": name, **protocol.score(view, target)})
            advance()
    return rows


def run_benchmark(methods: Sequence[Restorer], sets: Sequence[str] | None = None, task: str = "auto",
                  scales: Sequence[int] = SR_SCALES, sigmas: Sequence[float] = NOISE_SIGMAS,
                  data_root: str | Path | None = None, extra_metrics: bool = True, seed: int = 0,
                  progress: bool = True, kernel: str | None = None, blur: str = "synthetic",
                  recipe: Recipe | None = None, baseline: bool = True, channels: str | None = None) -> BenchmarkResult:
    """The task's baseline and every method that covers a level, on every set at every level: the SR scales, the
    denoising σ, or the one deblurring level. ``recipe`` replaces the task's default (``task_recipe``). A method
    that cannot take a set's images (a gray-only net on colour images) raises before anything runs, unless
    ``channels`` ("gray", "rgb") converts every image first."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    task = (recipe.task if recipe is not None else infer_task(methods, sets, kernel)) if task == "auto" else task
    if task not in TASKS:
        raise AnticipatedError(f"--task {task} must be one of {', '.join(TASKS)}")
    recipe = recipe or task_recipe(task, kernel, blur)
    notes = []
    if not sets:
        sets, note = default_sets(task, data_root)
        notes += [note] if note else []
    benches = [load_set(s, data_root, recipe) for s in sets]
    levels = list(scales) if task == "sr" else list(sigmas) if task == "denoise" else [1]
    everyone = ([baseline_for(task)] if baseline else []) + list(methods)
    plan = []
    for m in methods:
        own = [level for level in levels if m.covers(task, int(level) if task == "sr" else 1)]
        if not own:
            made_for = (f"a x{', x'.join(map(str, m.scales))} SR checkpoint" if m.task == "sr" and m.scales else
                        f"a {m.task} method" if m.task else "not for these levels")
            asked = ", ".join(f"x{v:g}" for v in levels) if task == "sr" else task
            notes.append(f"{m.label}: {made_for}, not evaluated ({asked} asked)")
        elif len(own) < len(levels):
            notes.append(f"{m.label}: evaluated at {', '.join(f'x{v:g}' for v in own)} only")
        for bench in benches:
            for c in [{"gray": 1, "rgb": 3}[channels]] if channels else sorted({s["target"].shape[1] for _, s in bench.samples}):
                m.check_input(c, what=f"images of {bench.name}")
    for bench in benches:
        for level in levels:
            fitting = [m for m in everyone if m.covers(task, int(level) if task == "sr" else 1)]
            plan.append((bench, level, fitting))

    rows: list[dict] = []
    total = sum(len(b.samples) * len(fitting) for b, _, fitting in plan)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not progress, transient=True) as bar:
        job = bar.add_task("benchmark", total=total)
        for bench, level, fitting in plan:
            bar.update(job, description=f"{bench.name} {'x' if task == 'sr' else 'σ=' if task == 'denoise' else ''}{level:g}")
            rows += evaluate(bench, at_level(recipe, level), task, level, fitting, extra_metrics, seed,
                             lambda: bar.advance(job), channels)
    text = sentence(task, recipe, extra_metrics)
    return BenchmarkResult(rows, notes, {b.name: text for b in benches})


# ------------------------------------------------------------------------------------------------ outputs


def write_csv(rows: Sequence[dict], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows({k: ("" if row.get(k) is None else row[k]) for k in CSV_FIELDS} for row in rows)


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(values) / len(values) if values else None


def level_of(row: dict) -> float:
    return row["scale"] if row["task"] == "sr" else row["sigma"] if row["task"] == "denoise" else 1


def set_means(rows: Sequence[dict]) -> dict[tuple[str, str, float], dict]:
    """(set, method, level) -> mean of every metric over the set's images (level: scale for SR, σ for denoising)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["set"], row["method"], level_of(row)), []).append(row)
    return {key: {m: _mean([r[m] for r in group]) for m in ("psnr", "ssim", "ms_ssim", "ifc")} | {"n": len(group)}
            for key, group in groups.items()}


COLUMN_NAMES = {"sr": lambda s: f"×{s:g}", "denoise": lambda s: f"σ={s:g}", "deblur": lambda s: "blur"}


def markdown_table(rows: Sequence[dict], set_name: str, protocol_sentence: str) -> str:
    """One set: rows = methods, columns = levels with ``PSNR / SSIM`` cells, then MS-SSIM and IFC per scale for SR;
    the protocol is stated above the table."""
    rows = [r for r in rows if r["set"] == set_name]
    task = rows[0]["task"]
    levels = sorted({level_of(r) for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    means = set_means(rows)
    images = len({r["image"] for r in rows})
    name = COLUMN_NAMES[task]

    def cell(method, level, metrics):
        m = means.get((set_name, method, level))
        if m is None or m[metrics[0]] is None:
            return "—"
        return " / ".join(f"{m[k]:.2f}" if k in ("psnr", "ifc") else f"{m[k]:.4f}" for k in metrics)

    header = ["Method", *(f"{name(s)} PSNR / SSIM" for s in levels)]
    groups = [("psnr", "ssim")]
    if task == "sr":
        header += [f"{name(s)} MS-SSIM" for s in levels] + [f"{name(s)} IFC" for s in levels]
        groups += [("ms_ssim",), ("ifc",)]
    lines = [f"**{set_name}** ({images} images). {protocol_sentence}", "",
             "| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    for method in methods:
        cells = [cell(method, s, metrics) for metrics in groups for s in levels]
        lines.append("| " + " | ".join([method, *cells]) + " |")
    return "\n".join(lines)


def markdown_tables(result: BenchmarkResult) -> str:
    return "\n\n".join(markdown_table(result.rows, s, result.sentences.get(s, ""))
                       for s in dict.fromkeys(r["set"] for r in result.rows))


# ---------------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="restorelab benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", nargs="*", default=[], help="checkpoints to evaluate (none: baseline only)")
    parser.add_argument("--names", nargs="*", default=None, help="table labels for the checkpoints, in order")
    parser.add_argument("--sets", nargs="*", default=None,
                        help="Set5 Set14 BSD100 Urban100 T91 Set12 BSD68 CBSD68 Kodak24, skimage:val, folders "
                             "(default: Set5 Set14 / Set12 BSD68 if present, else skimage:val)")
    parser.add_argument("--task", choices=("auto", *TASKS), default="auto",
                        help="auto: the checkpoints' task; without checkpoints SR unless the sets are denoising sets")
    parser.add_argument("--scales", nargs="+", type=int, default=list(SR_SCALES))
    parser.add_argument("--kernel", default=None,
                        help=f"SR: LR = (HR ⊗ k)↓s with a named test kernel ({', '.join(NAMED_KERNELS)}) or a kernel "
                             "file (.npy, .mat, ...: direct subsampling) instead of bicubic")
    parser.add_argument("--sigmas", nargs="+", type=float, default=list(NOISE_SIGMAS))
    parser.add_argument("--blur", choices=("synthetic", "gopro"), default="synthetic",
                        help="deblurring: synthetic camera-path blur, or GOPRO_Large pairs (sets = split folders)")
    parser.add_argument("--data_root", default=None, help="benchmark folder (default: $RESTORELAB_DATA)")
    add_inference_options(parser)
    parser.add_argument("--no_extra_metrics", action="store_true", help="SR: skip MS-SSIM and IFC")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-image draws (kernels, noise, blur)")
    parser.add_argument("--out", default="runs/benchmark", help="folder for benchmark.csv and benchmark.md")
    parser.add_argument("--no_progress", action="store_true")
    args = parser.parse_args(argv)
    if args.names is not None and len(args.names) != len(args.ckpt):
        parser.error(f"--names gives {len(args.names)} labels for {len(args.ckpt)} checkpoints")
    # anticipated errors (one line) propagate to restorelab's command line, which prints them and exits 2
    options = inference_options(args)
    methods = [load_restorer(p, **options) for p in args.ckpt]
    for m, label in zip(methods, args.names or []):
        m.label = label
    result = run_benchmark(methods, args.sets, args.task, args.scales, args.sigmas, args.data_root,
                           not args.no_extra_metrics, args.seed, progress=not args.no_progress, kernel=args.kernel,
                           blur=args.blur)
    out = Path(args.out)
    tables = markdown_tables(result)
    write_csv(result.rows, out / "benchmark.csv")
    (out / "benchmark.md").write_text(tables + "\n")
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(tables)
    print(f"\nper-image values: {out / 'benchmark.csv'}; tables: {out / 'benchmark.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from restorelab.cli import main as restorelab_main

    restorelab_main(["benchmark", *sys.argv[1:]])
