"""``restorelab benchmark``: checkpoints and the interpolation baseline on the standard test sets, measured the
way the papers measure them; a per-image CSV and one markdown table per set.

SR (×2/×3/×4 on Set5, Set14, BSD100, Urban100, T91, a folder, ``skimage:val``): HR mod-cropped to the scale,
LR = 8-bit MATLAB ``imresize(HR, 1/s)``, baseline = 8-bit ``imresize(LR, s)``; PSNR/SSIM/MS-SSIM/IFC on Y
(BT.601) of the 8-bit outputs with ``s`` pixels shaved (``lightning_modules.metrics``). A gray file is used
directly as Y, as the MATLAB scripts of the SR papers do (this gives the published Set14 numbers). Nets trained
on Y are measured on the Y they output, as those scripts do; RGB nets on the Y of their RGB output.

Denoising (σ = 15/25/50 on Set12, BSD68, CBSD68, Kodak24): white Gaussian noise added in float, unclipped, as
in DnCNN's test code, drawn as ``DenoiseDataModule`` draws its test pairs (a generator seeded per image name by
``image_seed``), so every run, and ``restorelab test``, sees the same noisy inputs. PSNR/SSIM on RGB for colour
sets (CBSD68 convention), nothing shaved; the baseline is the noisy input exactly as the net receives it (float,
unclipped), the nets' outputs are rounded to 8 bit.

    restorelab benchmark --ckpt runs/srcnn/<id>/checkpoints/last.ckpt --sets Set5 Set14 --scales 2 3 4
    restorelab benchmark --ckpt dncnn.ckpt --sets Set12 BSD68 --sigmas 15 25 50

``run_benchmark`` returns the rows; ``markdown_tables(rows)`` makes the tables (e.g. for a README).
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from datamodules.image_ops import bicubic_downsample, bicubic_upsample, mod_crop, quantize
from datamodules.sources import BENCHMARK_SETS, ImageSourceError, dataset_root, read_image, resolve_source
from lightning_modules import ifc as ifc_metric
from lightning_modules.metrics import MS_SSIM_MIN_SIDE, ImageQuality, evaluation_view
from restorelab.checkpointing import CheckpointError
from restorelab.predict import Restorer, add_inference_options, inference_options, load_restorer

SR_SCALES = (2, 3, 4)
NOISE_SIGMAS = (15, 25, 50)
DENOISING_SETS = ("Set12", "BSD68", "CBSD68", "Kodak24")
SR_BASELINE, DENOISING_BASELINE = "Bicubic", "Noisy input"

SR_PROTOCOL = ("PSNR/SSIM on Y (BT.601), border shaved by scale, MATLAB bicubic; gray images used directly as Y. "
               "HR mod-cropped to the scale; LR and all outputs rounded to 8 bit. MS-SSIM and IFC on the same Y "
               f"(MS-SSIM only where both sides are at least {MS_SSIM_MIN_SIDE} px).")
DENOISING_PROTOCOL = ("PSNR/SSIM on RGB (gray images as they are), no border shaved; Gaussian noise of σ (0..255 "
                      "scale) added in float, unclipped, seeded per image; outputs rounded to 8 bit, the noisy "
                      "input measured as the nets receive it.")
CSV_FIELDS = ("set", "task", "scale", "sigma", "method", "image", "psnr", "ssim", "ms_ssim", "ifc")


@dataclass
class BenchmarkSet:
    name: str
    images: list[tuple[str, torch.Tensor]]  # (file name, 1×C×H×W in [0, 1])


@dataclass
class BenchmarkResult:
    rows: list[dict]
    notes: list[str] = field(default_factory=list)


def load_set(spec: str, data_root: str | Path | None = None) -> BenchmarkSet:
    """``Set5`` (any name of ``BENCHMARK_SETS``) or ``benchmark:Set5``, ``skimage:val``, a folder, a file."""
    source = f"benchmark:{spec}" if spec in BENCHMARK_SETS else spec
    kind, _, rest = source.partition(":")
    name = rest if kind == "benchmark" else source if kind == "skimage" else Path(spec).name
    return BenchmarkSet(name, [(p.name, read_image(p)[None]) for p in resolve_source(source, data_root)])


def sr_input(hr: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(LR, mod-cropped HR): LR = MATLAB bicubic ↓scale, saved as 8 bit."""
    hr = mod_crop(hr, scale)
    return quantize(bicubic_downsample(hr, scale)), hr


def noisy_input(name: str, clean: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """clean + N(0, (σ/255)²), unclipped: exactly the validation/test input ``DenoiseDataModule`` makes for a file
    of this name (its generator is seeded by ``image_seed(name, seed)``), so runs, and ``restorelab test``, agree."""
    from datamodules.restoration import DenoiseDataModule

    data = DenoiseDataModule(noise_sigma=float(sigma), channels="rgb" if clean.shape[1] == 3 else "gray", seed=seed)
    return data.fixed_pairs({"target": clean, "name": [name]})["degraded"]


def measure(pred: torch.Tensor, target: torch.Tensor, extra: bool) -> dict:
    """PSNR/SSIM of two evaluation views; with ``extra``, also MS-SSIM and IFC (None where a side is too small)."""
    quality = ImageQuality(ms_ssim=extra)
    quality.update(pred, target)
    values = {k: float(v) for k, v in quality.compute().items()}
    row = {"psnr": values["psnr"], "ssim": values["ssim"], "ms_ssim": values.get("ms_ssim"), "ifc": None}
    if extra and min(target.shape[-2:]) >= ifc_metric.MIN_SIDE:
        row["ifc"] = float(ifc_metric.ifc(target, pred))
    return row


def evaluate_sr(bench: BenchmarkSet, scale: int, restorers: Sequence[Restorer], extra: bool = True,
                advance: Callable[[], None] = lambda: None) -> list[dict]:
    """Per-image rows for the bicubic baseline and every restorer (all of this ``scale``) on one set."""
    rows = []
    for name, image in bench.images:
        lr, hr = sr_input(image, scale)
        target = evaluation_view(hr, scale)
        outputs = [(SR_BASELINE, lambda: bicubic_upsample(lr, scale))]
        outputs += [(r.label, lambda r=r: r.restore(lr, what=f"{bench.name}/{name}")[1]) for r in restorers]
        for method, restore in outputs:
            scores = measure(evaluation_view(restore(), scale), target, extra)
            rows.append({"set": bench.name, "task": "sr", "scale": scale, "sigma": 0, "method": method,
                         "image": name, **scores})
            advance()
    return rows


def evaluate_denoising(bench: BenchmarkSet, sigma: float, restorers: Sequence[Restorer], seed: int = 0,
                       advance: Callable[[], None] = lambda: None) -> list[dict]:
    """Per-image rows for the noisy input and every restorer on one set at noise level ``sigma``."""
    rows = []
    view = lambda x, rounded=True: evaluation_view(x, 0, y_channel=False, round_to_8bit=rounded)  # noqa: E731
    for name, clean in bench.images:
        noisy = noisy_input(name, clean, sigma, seed)
        target = view(clean)
        outputs = [(DENOISING_BASELINE, lambda: view(noisy, rounded=False))]
        outputs += [(r.label, lambda r=r: view(r(noisy, what=f"{bench.name}/{name}"))) for r in restorers]
        for method, restore in outputs:
            rows.append({"set": bench.name, "task": "denoise", "scale": 1, "sigma": sigma, "method": method,
                         "image": name, **measure(restore(), target, extra=False)})
            advance()
    return rows


def infer_task(restorers: Sequence[Restorer], sets: Sequence[str] | None) -> str:
    """"sr" for checkpoints with scale > 1, "denoise" for scale-1 ones; without checkpoints, from the sets."""
    kinds = {r.scale > 1 for r in restorers}
    if len(kinds) > 1:
        raise CheckpointError("SR and scale-1 checkpoints mixed: benchmark them separately or give --task")
    if kinds:
        return "sr" if kinds.pop() else "denoise"
    named = [s.partition("benchmark:")[2] or s for s in sets or []]
    return "denoise" if named and all(s in DENOISING_SETS for s in named) else "sr"


def default_sets(task: str, data_root: str | Path | None = None) -> tuple[list[str], str | None]:
    """Set5/Set14 (SR) or Set12/BSD68 (denoising) when the data folder has them, else the bundled photos."""
    wanted = ["Set5", "Set14"] if task == "sr" else ["Set12", "BSD68"]
    try:
        root = dataset_root(data_root)
    except ImageSourceError:
        root = None
    if root is not None and all((root / s).is_dir() for s in wanted):
        return wanted, None
    return ["skimage:val"], f"{' and '.join(wanted)} not found (RESTORELAB_DATA / --data_root); using skimage:val"


def run_benchmark(restorers: Sequence[Restorer], sets: Sequence[str] | None = None, task: str = "auto",
                  scales: Sequence[int] = SR_SCALES, sigmas: Sequence[float] = NOISE_SIGMAS,
                  data_root: str | Path | None = None, extra_metrics: bool = True, seed: int = 0,
                  progress: bool = True) -> BenchmarkResult:
    """Every restorer that fits, plus the baseline, on every set at every scale (SR) or σ (denoising).

    A checkpoint is evaluated only at its own scale (a note says where it was skipped); one whose colour
    space cannot take a set's images raises ``CheckpointError`` before anything runs.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    task = infer_task(restorers, sets) if task == "auto" else task
    notes = []
    if not sets:
        sets, note = default_sets(task, data_root)
        notes += [note] if note else []
    benches = [load_set(s, data_root) for s in sets]
    levels = list(scales if task == "sr" else sigmas)
    fits = lambda r, level: r.scale == level if task == "sr" else r.scale == 1  # noqa: E731
    for r in restorers:
        own = [level for level in levels if fits(r, level)]
        if not own:
            kind = f"a x{r.scale} SR checkpoint" if r.scale > 1 else "a scale-1 (denoising) checkpoint"
            asked = ", ".join(f"x{s}" for s in levels) if task == "sr" else "denoising"
            notes.append(f"{r.label}: {kind}, not evaluated ({asked} asked)")
            continue
        if len(own) < len(levels):
            notes.append(f"{r.label}: a x{r.scale} checkpoint, evaluated at x{r.scale} only")
        for bench in benches:
            for c in sorted({img.shape[1] for _, img in bench.images}):
                r.check_input(c, what=f"images of {bench.name}")
    plan = [(bench, level, [r for r in restorers if fits(r, level)]) for bench in benches for level in levels]

    rows: list[dict] = []
    total = sum(len(b.images) * (1 + len(fitting)) for b, _, fitting in plan)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not progress, transient=True) as bar:
        job = bar.add_task("benchmark", total=total)
        for bench, level, fitting in plan:
            bar.update(job, description=f"{bench.name} {'x' if task == 'sr' else 'σ='}{level:g}")
            advance = lambda: bar.advance(job)  # noqa: E731
            if task == "sr":
                rows += evaluate_sr(bench, level, fitting, extra_metrics, advance)
            else:
                rows += evaluate_denoising(bench, level, fitting, seed, advance)
    return BenchmarkResult(rows, notes)


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


def set_means(rows: Sequence[dict]) -> dict[tuple[str, str, float], dict]:
    """(set, method, level) -> mean of every metric over the set's images (level: scale for SR, else σ)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        level = row["scale"] if row["task"] == "sr" else row["sigma"]
        groups.setdefault((row["set"], row["method"], level), []).append(row)
    return {key: {m: _mean([r[m] for r in group]) for m in ("psnr", "ssim", "ms_ssim", "ifc")} | {"n": len(group)}
            for key, group in groups.items()}


def markdown_table(rows: Sequence[dict], set_name: str) -> str:
    """One set: rows = methods, columns = scales (or σ) with ``PSNR / SSIM`` cells, then MS-SSIM and IFC per
    scale for SR; the protocol is stated above the table."""
    rows = [r for r in rows if r["set"] == set_name]
    sr = rows[0]["task"] == "sr"
    key = "scale" if sr else "sigma"
    levels = sorted({r[key] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    means = set_means(rows)
    images = len({r["image"] for r in rows})
    name = (lambda s: f"×{s}") if sr else (lambda s: f"σ={s:g}")

    def cell(method, level, metrics):
        m = means.get((set_name, method, level))
        if m is None or m[metrics[0]] is None:
            return "—"
        return " / ".join(f"{m[k]:.2f}" if k in ("psnr", "ifc") else f"{m[k]:.4f}" for k in metrics)

    header = ["Method", *(f"{name(s)} PSNR / SSIM" for s in levels)]
    groups = [("psnr", "ssim")]
    if sr:
        header += [f"{name(s)} MS-SSIM" for s in levels] + [f"{name(s)} IFC" for s in levels]
        groups += [("ms_ssim",), ("ifc",)]
    lines = [f"**{set_name}** ({images} images). {SR_PROTOCOL if sr else DENOISING_PROTOCOL}", "",
             "| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    for method in methods:
        cells = [cell(method, s, metrics) for metrics in groups for s in levels]
        lines.append("| " + " | ".join([method, *cells]) + " |")
    return "\n".join(lines)


def markdown_tables(rows: Sequence[dict]) -> str:
    return "\n\n".join(markdown_table(rows, s) for s in dict.fromkeys(r["set"] for r in rows))


# ---------------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="restorelab benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", nargs="*", default=[], help="checkpoints to evaluate (none: baseline only)")
    parser.add_argument("--names", nargs="*", default=None, help="table labels for the checkpoints, in order")
    parser.add_argument("--sets", nargs="*", default=None,
                        help="Set5 Set14 BSD100 Urban100 T91 Set12 BSD68 CBSD68 Kodak24, skimage:val, folders "
                             "(default: Set5 Set14 / Set12 BSD68 if present, else skimage:val)")
    parser.add_argument("--task", choices=("auto", "sr", "denoise"), default="auto",
                        help="auto: SR for checkpoints with scale > 1, denoising for scale-1 ones")
    parser.add_argument("--scales", nargs="+", type=int, default=list(SR_SCALES))
    parser.add_argument("--sigmas", nargs="+", type=float, default=list(NOISE_SIGMAS))
    parser.add_argument("--data_root", default=None, help="benchmark folder (default: $RESTORELAB_DATA)")
    add_inference_options(parser)
    parser.add_argument("--no_extra_metrics", action="store_true", help="SR: skip MS-SSIM and IFC")
    parser.add_argument("--seed", type=int, default=0, help="denoising: seed of the per-image noise")
    parser.add_argument("--out", default="runs/benchmark", help="folder for benchmark.csv and benchmark.md")
    parser.add_argument("--no_progress", action="store_true")
    args = parser.parse_args(argv)
    if args.names is not None and len(args.names) != len(args.ckpt):
        parser.error(f"--names gives {len(args.names)} labels for {len(args.ckpt)} checkpoints")
    # anticipated errors (one line) propagate to restorelab's command line, which prints them and exits 2
    options = inference_options(args)
    restorers = [load_restorer(p, **options) for p in args.ckpt]
    for r, label in zip(restorers, args.names or []):
        r.label = label
    result = run_benchmark(restorers, args.sets, args.task, args.scales, args.sigmas, args.data_root,
                           not args.no_extra_metrics, args.seed, progress=not args.no_progress)
    out = Path(args.out)
    tables = markdown_tables(result.rows)
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
