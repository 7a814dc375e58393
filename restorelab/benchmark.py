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
import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from datamodules.errors import AnticipatedError
from datamodules.recipes import NAMED_KERNELS, Recipe
from lightning_modules.classical import baseline_for
from lightning_modules.restorer import Restorer
from restorelab.evaluation import (BLURS, CSV_FIELDS, NOISE_SIGMAS, SR_SCALES, TASKS, at_level, default_sets,
                                   evaluate, infer_task, load_set, sentence, task_recipe)
from restorelab.methods import method_names, read_method
from restorelab.tune import VAL_IMAGES, levels_for, prepare_methods
from lightning_modules.zero_shot.mzsr import steps_label
from restorelab.predict import add_inference_options, inference_options, load_restorer


@dataclass
class BenchmarkResult:
    rows: list[dict]
    notes: list[str] = field(default_factory=list)
    sentences: dict[str, str] = field(default_factory=dict)  # set name -> the protocol sentence of its table
    choices: list[str] = field(default_factory=list)  # the tuned parameters, one sentence per method


def run_benchmark(methods: Sequence[Restorer], sets: Sequence[str] | None = None, task: str = "auto",
                  scales: Sequence[int] = SR_SCALES, sigmas: Sequence[float] = NOISE_SIGMAS,
                  data_root: str | Path | None = None, extra_metrics: bool = True, seed: int = 0,
                  progress: bool = True, kernel: str | None = None, blur: str = "synthetic",
                  recipe: Recipe | None = None, baseline: bool = True, channels: str | None = None,
                  method_specs: Sequence[str] = (), tune_on: str | None = None, val_images: int = VAL_IMAGES,
                  tuned: Sequence[str | Path] = (), round_y: bool = False, texture: bool = False,
                  lpips_weights: str | None = None) -> BenchmarkResult:
    """The task's baseline and every method that covers a level, on every set at every level: the SR scales, the
    denoising σ, or the one deblurring level. ``recipe`` replaces the task's default (``task_recipe``). A method
    that cannot take a set's images (a gray-only net on colour images) raises before anything runs, unless
    ``channels`` ("gray", "rgb") converts every image first. ``method_specs`` add classical methods by name
    (``restorelab.methods``), their free parameters chosen on validation images (``restorelab.tune``: ``tune_on``,
    ``val_images``, or the records ``tuned``), never on these sets. ``round_y``: the protocol's Y rounded to 8 bit.
    ``texture``: the texture distances beside PSNR/SSIM; ``lpips_weights``: a local torchvision VGG16 file for LPIPS
    (``lightning_modules.perceptual.LPIPS``, checked before anything runs)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    specs = [(spec, *read_method(spec)) for spec in method_specs]
    probes = [config.build(data_root, **fixed) for _, config, fixed in specs]
    task = (recipe.task if recipe is not None else infer_task([*methods, *probes], sets, kernel)) if task == "auto" else task
    if task not in TASKS:
        raise AnticipatedError(f"--task {task} must be one of {', '.join(TASKS)}")
    recipe = recipe or task_recipe(task, kernel, blur)
    lpips = None
    if lpips_weights is not None:
        from lightning_modules.perceptual import LPIPS

        lpips = LPIPS(lpips_weights)
        lpips.check()
    notes = []
    if not sets:
        sets, note = default_sets(task, data_root)
        notes += [note] if note else []
    benches = [load_set(s, data_root, recipe) for s in sets]
    levels = levels_for(task, scales, sigmas)
    named, tunings = prepare_methods(method_specs, task, recipe, levels, benches, data_root, tune_on, val_images,
                                     tuned, seed, channels)
    methods = [*methods, *named]
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
                             lambda: bar.advance(job), channels, round_y, texture, lpips)
    text = sentence(task, recipe, extra_metrics, round_y, texture, lpips)
    return BenchmarkResult(rows, notes, {b.name: text for b in benches}, [t.text() for t in tunings if t.text()])


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
    return {key: {m: _mean([r.get(m) for r in group]) for m in METRICS} | {"n": len(group)}
            for key, group in groups.items()}


METRICS = ("psnr", "ssim", "ms_ssim", "ifc", "spectrum", "gradient", "lpips", "updates", "seconds")
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
        digits = {"psnr": 2, "ifc": 2, "spectrum": 3, "updates": 0, "seconds": 1}
        return " / ".join(f"{m[k]:.{digits.get(k, 4)}f}" for k in metrics)

    header = ["Method", *(f"{name(s)} PSNR / SSIM" for s in levels)]
    groups = [("psnr", "ssim")]
    if task == "sr":
        header += [f"{name(s)} MS-SSIM" for s in levels] + [f"{name(s)} IFC" for s in levels]
        groups += [("ms_ssim",), ("ifc",)]
    if any(r.get("spectrum") is not None for r in rows):
        header += [f"{name(s)} spectrum / gradient distance" for s in levels]
        groups += [("spectrum", "gradient")]
    if any(r.get("lpips") is not None for r in rows):
        header += [f"{name(s)} LPIPS" for s in levels]
        groups += [("lpips",)]
    if any(r.get("updates") is not None for r in rows):  # methods that learn on each image: their budget
        header += [f"{name(s)} updates / s per image" for s in levels]
        groups += [("updates", "seconds")]
    lines = [f"**{set_name}** ({images} images). {protocol_sentence}", "",
             "| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    for method in methods:
        cells = [cell(method, s, metrics) for metrics in groups for s in levels]
        lines.append("| " + " | ".join([method, *cells]) + " |")
    return "\n".join(lines)


def markdown_tables(result: BenchmarkResult) -> str:
    """One table per set; under each, the parameters chosen on validation images."""
    chosen = "".join(f"\n\nParameters chosen on validation images, never on this set: {'; '.join(result.choices)}."
                     if result.choices else "")
    return "\n\n".join(markdown_table(result.rows, s, result.sentences.get(s, "")) + chosen
                       for s in dict.fromkeys(r["set"] for r in result.rows))


# ---------------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="restorelab benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", nargs="*", default=[], help="checkpoints to evaluate (none: baseline only)")
    parser.add_argument("--names", nargs="*", default=None, help="table labels for the checkpoints, in order")
    parser.add_argument("--steps", nargs="+", type=int, default=None,
                        help="one row per count of gradient steps each checkpoint takes on each test image's own "
                             "example first (MZSR's test time: --steps 0 1 10); default: the checkpoint's own "
                             "(a meta-trained one: 1), else none")
    parser.add_argument("--method", nargs="*", default=[],
                        help=f"classical methods by name ({', '.join(method_names())}), a YAML file, or "
                             "name:key=value,... with fixed parameters")
    parser.add_argument("--tune_on", default=None,
                        help="validation images on which free parameters are chosen (default: BSD200 if present, "
                             "else skimage:train); never a measured set")
    parser.add_argument("--val_images", type=int, default=VAL_IMAGES, help="the first N validation images (0: all)")
    parser.add_argument("--tuned", nargs="*", default=[], help="tuning records of `restorelab tune` to use instead")
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
    parser.add_argument("--blur", choices=BLURS, default="synthetic",
                        help="deblurring: synthetic camera-path blur, GOPRO_Large pairs (sets = split folders), or "
                             "kernel: a known kernel (--kernel: default random camera shake) plus noise σ=2.55")
    parser.add_argument("--data_root", default=None, help="benchmark folder (default: $RESTORELAB_DATA)")
    add_inference_options(parser)
    parser.add_argument("--no_extra_metrics", action="store_true", help="SR: skip MS-SSIM and IFC")
    parser.add_argument("--texture", action="store_true",
                        help="also the texture distances to the target (radial power spectrum, gradient magnitudes)")
    parser.add_argument("--lpips", default=None, metavar="VGG16_FILE",
                        help="also LPIPS, with torchvision's VGG16 weights from this local file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-image draws (kernels, noise, blur)")
    paper = parser.add_argument_group("paper-script options (off by default; stated in the tables' header when on)")
    paper.add_argument("--lr_unrounded", action="store_true",
                       help="SR: LR kept in float, not rounded to 8 bit (the older MATLAB test scripts)")
    paper.add_argument("--round_y", action="store_true",
                       help="SR: Y rounded to 8 bit before the metrics (MATLAB rgb2ycbcr on uint8 images)")
    paper.add_argument("--numpy_noise", action="store_true",
                       help="denoising: the DnCNN authors' test-script noise (NumPy seeded 0 per image)")
    parser.add_argument("--out", default="runs/benchmark", help="folder for benchmark.csv and benchmark.md")
    parser.add_argument("--no_progress", action="store_true")
    args = parser.parse_args(argv)
    if args.names is not None and len(args.names) != len(args.ckpt):
        parser.error(f"--names gives {len(args.names)} labels for {len(args.ckpt)} checkpoints")
    # anticipated errors (one line) propagate to restorelab's command line, which prints them and exits 2
    options = inference_options(args)
    methods = []
    for i, path in enumerate(args.ckpt):
        for steps in args.steps or [None]:
            method = load_restorer(path, **options, steps=steps)
            if args.names:
                method.label = steps_label(args.names[i], steps) if args.steps else args.names[i]
            methods.append(method)
    recipe = None
    if args.lr_unrounded or args.numpy_noise:
        task = args.task if args.task != "auto" else infer_task(methods, args.sets, args.kernel) if methods or not args.method \
            else None
        task = task or ("denoise" if args.numpy_noise else "sr")
        recipe = task_recipe(task, args.kernel, args.blur)
        if args.lr_unrounded and not hasattr(recipe, "round_lr"):
            raise AnticipatedError(f"--lr_unrounded is for SR, not {task}")
        if args.numpy_noise and not hasattr(recipe, "test_noise"):
            raise AnticipatedError(f"--numpy_noise is for denoising, not {task}")
        recipe = dataclasses.replace(recipe, **({"round_lr": False} if args.lr_unrounded else {}),
                                     **({"test_noise": "numpy"} if args.numpy_noise else {}))
    result = run_benchmark(methods, args.sets, args.task, args.scales, args.sigmas, args.data_root,
                           not args.no_extra_metrics, args.seed, progress=not args.no_progress, kernel=args.kernel,
                           blur=args.blur, method_specs=args.method, tune_on=args.tune_on,
                           val_images=args.val_images, tuned=args.tuned, recipe=recipe, round_y=args.round_y,
                           texture=args.texture, lpips_weights=args.lpips)
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
