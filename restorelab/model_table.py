"""``restorelab models``: train every paper's net briefly on the CPU from its config, measure it on the held-out
bundled photos against the classical baseline, and write the README's model table (between
``<!-- model-table:start -->`` and ``<!-- model-table:end -->``) plus the rows as JSON and CSV.

Each run is ``restorelab fit --config configs/<net>.yaml --config configs/experiment/cpu_budget/<net>.yaml``
(the nets are the files of that folder, listed in ``TABLE``'s order; each file is the CPU budget: smaller
width/depth/patches, Adam at a constant rate, or decayed to 0 over about the steps the budget allows where the
last weights were otherwise caught mid-spike) with ``--trainer.max_time`` = the budget; no validation
during training, so nothing is selected on the images that are measured: the last weights are evaluated.
Evaluation is ``restorelab benchmark``'s (``run_benchmark``: the recipe the net trained on, the restorer interface,
the paper protocol, outputs rounded to 8 bit) on fixed degraded versions of chelsea, coffee and camera:

    SR        Y channel, border shaved by the scale, vs MATLAB bicubic at ×3 and ×4 (VDSR: one multi-scale net;
              SRResNet: one net per scale)
    denoise   gray, σ = 25 (one seeded draw per image), vs the noisy input (measured unrounded, as the nets receive
              it)
    deblur    RGB, GoPro-style synthetic blur (7-13 frames along a random camera path, averaged in linear
              light), vs the blurred input

Beside each net, the best classical method of its task (``CLASSICAL``: ``restorelab benchmark --method``'s, on the
same pairs, free parameters chosen on the first ``TUNE_IMAGES`` training photos, never on the measured ones), and
a second table of every classical method per setting, with a known-kernel deblurring setting (``KernelBlur``) for
the deconvolutions, which the nets' motion blur (an average of frames, no kernel) cannot feed.

    restorelab models                                  # all nets, 600 s of training each
    restorelab models --threads 1 --jobs 2             # two nets at once, one core each (how the README's was made)
    restorelab models --only vdsr dncnn_s --budget-seconds 300
    restorelab models --classical_only                 # the classical rows again, on the nets' saved checkpoints
    restorelab models --classical_only deblur          # those of one task only

``run_model(key, budget_seconds, work_dir)`` returns a net's rows; ``render_table`` / ``rewrite_readme`` make
and place the table (the slow learning tests reuse them).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import csv
import json
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from datamodules.errors import AnticipatedError

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- model-table:start -->", "<!-- model-table:end -->"
DEFAULT_BUDGET_SECONDS = 600
# The classical rows of each task (configs/methods/); the learners among them learn from the nets' training photos,
# sparse coding with Yang's λ = 0.1 and 512 atoms fixed (tuning λ would re-code the training photos per grid point).
CLASSICAL = {
    "sr": ["nearest", "bilinear", "lanczos", "example_based:train=skimage:train",
           "sparse_coding:train=skimage:train,lam=0.1,atoms=512"],
    "denoise": ["gaussian", "median", "bilateral", "guided", "nl_means", "bm3d"],
    "deblur": ["wiener", "unsupervised_wiener", "richardson_lucy"],
}
TUNE_ON, TUNE_IMAGES = "skimage:train", 4  # the free parameters' validation photos: training photos, not measured ones

DATA = "--data.init_args"
# The CPU budgets: one experiment config per net, stacked after the net's own config. The nets of the table are
# the files of this folder; TABLE says in which order they are listed, and what the table shows of each.
EXPERIMENTS = REPO / "configs" / "experiment" / "cpu_budget"


@dataclass(frozen=True)
class ModelSpec:
    name: str  # as the table shows it
    paper: str
    task: str  # "sr", "denoise" or "deblur"
    levels: tuple[int, ...]  # SR: scales measured; denoise: σ measured; deblur: ()
    budget_note: str  # the experiment config in words, for the table
    per_scale: bool = False  # SR nets whose layers depend on the scale (sub-pixel): one training run per scale
    starts_from: str = ""  # the key of the net whose run (at the same scale) initialises this one's generator
    vgg: bool = False  # trains with a VGG perceptual loss: $RESTORELAB_VGG19, else a random VGG19 made for it
    config: str = ""  # the net's config, relative to the repository root: configs/<key>.yaml
    experiment: str = ""  # its CPU budget, stacked after it: configs/experiment/cpu_budget/<key>.yaml


# What the table says of each net, keyed by the stem of its experiment file, in the table's order. Not CLI
# options, so not in the configs; the training deltas themselves are only in the YAML files.
TABLE: dict[str, dict] = {
    "srcnn": dict(name="SRCNN", paper="Dong et al., TPAMI 2016", task="sr", levels=(3,),
                  budget_note="9-1-5, 'same' padding, batch 16, Adam 1e-3 cosine to 0 over 15000 steps "
                              "(paper: 9-5-5, 'valid', 128, SGD 1e-4)"),
    "vdsr": dict(name="VDSR", paper="Kim et al., CVPR 2016", task="sr", levels=(3, 4),
                 budget_note="depth 10, 32 filters, batch 16, Adam 1e-3 (paper: 20, 64, 64, SGD 0.1)"),
    "dncnn_s": dict(name="DnCNN-S", paper="Zhang et al., TIP 2017", task="denoise", levels=(25,),
                    budget_note="depth 6, 32 filters, batch 8, Adam 3e-3 (paper: 17, 64, 128, 1e-3 then 1e-4)"),
    "dncnn_b": dict(name="DnCNN-B", paper="Zhang et al., TIP 2017", task="denoise", levels=(25,),
                    budget_note="blind σ∈[0, 55]; depth 6, 32 filters, 40² patches, batch 16, Adam 1e-3 cosine to 0 "
                                "over 5000 steps (paper: 20, 64, 50², 128)"),
    "nlrn": dict(name="NLRN", paper="Liu et al., NeurIPS 2018", task="denoise", levels=(25,),
                 budget_note="32 features, 3 steps, 7×7 window, 32² patches, batch 8, Adam 1e-3 "
                             "(paper: 128, 12, 45×45, 43², 16)"),
    "srresnet": dict(name="SRResNet", paper="Ledig et al., CVPR 2017", task="sr", levels=(3, 4), per_scale=True,
                     budget_note="4 blocks, 32 channels, 48² HR patches, batch 8, Adam 1e-3 cosine to 0 over 5500 "
                                 "steps (paper: 16, 64, 96², 16, 1e-4)"),
    "srgan": dict(name="SRGAN", paper="Ledig et al., CVPR 2017", task="sr", levels=(4,), per_scale=True,
                  starts_from="srresnet",
                  budget_note="fine-tuned from the SRResNet ×4 row; the paper's SRGAN-MSE variant (MSE + 10⁻³ "
                              "adversarial, no VGG: none can be downloaded here), discriminator of 32 base channels, "
                              "48² HR patches, batch 8, Adam 1e-4, EMA 0.999 (paper: VGG54 content loss, 96², 16)"),
    "deepdeblur": dict(name="DeepDeblur", paper="Nah et al., CVPR 2017", task="deblur", levels=(),
                       budget_note="3 ResBlocks of 16 channels per level, 64² patches, batch 4, Adam 1e-3 cosine to 0 "
                                   "over 5000 steps (paper: 19 of 64, 256², 4, 5e-5)"),
    "srn": dict(name="SRN", paper="Tao et al., CVPR 2018", task="deblur", levels=(),
                budget_note="16 base channels, 1 ResBlock per stage, 64² patches, batch 4, Adam 1e-3 cosine to 0 over "
                            "2500 steps (paper: 32, 3, 256², 16, 1e-4)"),
    "deblurgan": dict(name="DeblurGAN", paper="Kupyn et al., CVPR 2018", task="deblur", levels=(), vgg=True,
                      budget_note="16 base channels, 3 ResBlocks, critic of 16, 64² patches, batch 4; the paper's "
                                  "losses (VGG19 conv3_3 MSE ×100 + WGAN-GP, 5 critic steps) plus pixel MSE ×100, "
                                  "identity init, Adam 1e-4 (0.5, 0.999) linearly to 0 over the second half of 6000 "
                                  "steps, both players' counted (paper: 64, 9, 256², 1, no pixel loss)"),
}


def load_specs(folder: Path = EXPERIMENTS) -> dict[str, ModelSpec]:
    """One spec per experiment file of ``folder``, in ``TABLE``'s order; a file without a row there, or a row
    without a file, is an error (the table could not say what it measured)."""
    keys = sorted(p.stem for p in Path(folder).glob("*.yaml"))
    if unlisted := [k for k in keys if k not in TABLE]:
        raise AnticipatedError(f"{folder}: {', '.join(unlisted)} not in restorelab/model_table.py TABLE "
                               f"(name, paper, task, levels, budget note)")
    if missing := [k for k in TABLE if k not in keys]:
        raise AnticipatedError(f"{folder}: no experiment config for {', '.join(missing)} (TABLE lists them)")
    folder = Path(folder).resolve()
    shown = folder.relative_to(REPO) if folder.is_relative_to(REPO) else folder  # as the table shows it
    return {key: ModelSpec(**TABLE[key], config=f"configs/{key}.yaml", experiment=f"{shown}/{key}.yaml")
            for key in TABLE}


SPECS: dict[str, ModelSpec] = load_specs()
QUIET = ("--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false")


# ---------------------------------------------------------------------------------------------- training


@dataclass
class TrainedRun:
    checkpoint: Path
    steps: int
    seconds: float
    overrides: tuple[str, ...]  # command-line words after the two configs (e.g. an SR scale)


def max_time(seconds: float) -> str:
    """Lightning's ``DD:HH:MM:SS``."""
    s = max(1, int(round(seconds)))
    return f"{s // 86400:02d}:{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


@contextlib.contextmanager
def _own_run_directory():
    """Sweeps and Slurm jobs point every run at one directory through the environment; these runs need their own."""
    names = ("RESTORELAB_RUN_DIR", "RESTORELAB_RUN_ID", "RESTORELAB_EXPERIMENT")
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def train(key: str, budget_seconds: float, runs_dir: Path, extra: Sequence[str] = (),
          run_id: str = "cpu-budget") -> TrainedRun:
    """``restorelab fit --config configs/<key>.yaml --config configs/experiment/cpu_budget/<key>.yaml`` (then
    ``extra``) for ``budget_seconds`` of training, in a fresh ``runs_dir/<key>/<run_id>``."""
    spec = SPECS[key]
    return fit_for(key, (REPO / spec.config, REPO / spec.experiment), budget_seconds, runs_dir, extra, run_id)


def fit_for(name: str, configs: Sequence[Path], budget_seconds: float, runs_dir: Path, extra: Sequence[str] = (),
            run_id: str = "cpu-budget") -> TrainedRun:
    """``restorelab fit`` of the stacked ``configs`` (then ``extra``) for ``budget_seconds`` of training, no
    validation, in a fresh ``runs_dir/<name>/<run_id>``; returns its last checkpoint, the steps reached, the wall
    time of the fit and ``extra``."""
    from restorelab.cli import main as cli

    run_dir = Path(runs_dir) / name / run_id
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = tuple(extra)
    args = ["fit", *(w for c in configs for w in ("--config", str(c))),
            f"--runs_dir={runs_dir}", f"--experiment={name}", f"--run_id={run_id}",
            f"--trainer.max_time={max_time(budget_seconds)}", "--trainer.limit_val_batches=0",
            "--test_after_fit=false", *QUIET, *overrides]
    start = time.perf_counter()
    with _own_run_directory():
        try:
            cli(args)
        except SystemExit as e:  # the command line always exits; only a failure is news
            if e.code:
                raise AnticipatedError(f"{name}: restorelab fit exited {e.code} (its error is printed above)") from None
    seconds = time.perf_counter() - start
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    steps = torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"]
    return TrainedRun(checkpoint, steps, seconds, overrides)


# -------------------------------------------------------------------------------------------- evaluation


HELD_OUT = ["skimage:val"]  # the measured photos


def benchmark(checkpoint: Path, level: int | float | None, method_specs: Sequence[str] = (), with_net: bool = True,
              baseline: bool = True, recipe=None):
    """``restorelab benchmark`` of a trained checkpoint (and classical ``method_specs``, tuned on ``TUNE_ON``) on the
    held-out photos, under the recipe it trained on (``checkpointing.load_recipe``; ``recipe`` replaces it) at
    ``level`` (SR scale or σ; None for deblurring): the pairs, restorers and protocol of every other table. A
    gray-trained net sees the photos in gray."""
    from restorelab.benchmark import run_benchmark
    from restorelab.checkpointing import load_recipe
    from restorelab.predict import load_restorer

    restorer = load_restorer(checkpoint)
    recipe = recipe or load_recipe(checkpoint)
    levels = [level] if level is not None else [1]
    return run_benchmark([restorer] if with_net else [], HELD_OUT, recipe.task, scales=levels, sigmas=levels,
                         extra_metrics=False, texture=True, progress=False, recipe=recipe, baseline=baseline,
                         channels="gray" if restorer.channels == "gray" else None, method_specs=method_specs,
                         tune_on=TUNE_ON, val_images=TUNE_IMAGES)


def classical_benchmark(recipe, level: float | None, specs: Sequence[str], channels: str | None):
    """The classical methods of ``specs`` (and the task's baseline) on the held-out photos under ``recipe``."""
    from restorelab.benchmark import run_benchmark

    levels = [level] if level is not None else [1]
    return run_benchmark([], HELD_OUT, recipe.task, scales=levels, sigmas=levels, extra_metrics=False, progress=False,
                         recipe=recipe, channels=channels, method_specs=specs, tune_on=TUNE_ON, val_images=TUNE_IMAGES)


def setting_level(row: dict) -> float | None:
    """The SR scale or σ of a table row's setting ("×3", "σ=25"); None for deblurring."""
    return None if row["task"] == "deblur" else float(row["setting"].lstrip("×σ="))


def row_checkpoint(row: dict, out: Path) -> Path:
    """The checkpoint a row measured (recorded since the classical rows; older rows: where ``train`` put it)."""
    if row.get("checkpoint"):
        return Path(row["checkpoint"])
    key = next(k for k, spec in SPECS.items() if spec.name == row["net"])
    run_id = f"cpu-budget-x{int(setting_level(row))}" if SPECS[key].per_scale else "cpu-budget"
    return out / "runs" / key / run_id / "checkpoints" / "last.ckpt"


def classical_rows(net_rows: Sequence[dict], out: Path, tasks: Sequence[str] = ("sr", "denoise", "deblur")) -> list[dict]:
    """Every classical method of ``CLASSICAL`` on the pairs of each setting the nets were measured on (the recipe
    and colours of the setting's first net), plus known-kernel deblurring for the deconvolutions; one row per
    method and setting; ``tasks``: the tasks measured."""
    from datamodules.recipes import KernelBlur, MotionBlur
    from restorelab.checkpointing import load_recipe
    from restorelab.evaluation import at_level
    from restorelab.predict import load_restorer

    settings: dict[tuple, dict] = {}
    for row in net_rows:
        checkpoint = row_checkpoint(row, out)
        recipe, level = load_recipe(checkpoint), setting_level(row)
        channels = "gray" if load_restorer(checkpoint).channels == "gray" else None
        key = (row["task"], row["setting"], at_level(recipe, level or 1).describe(), channels)
        settings.setdefault(key, {"recipe": recipe, "level": level, "channels": channels, "nets": []})["nets"].append(row["net"])
    settings[("deblur", "known kernel", KernelBlur().describe(), None)] = {
        "recipe": KernelBlur(), "level": None, "channels": None, "nets": []}
    rows = []
    for (task, setting, degradation, channels), group in settings.items():
        if task not in tasks or isinstance(group["recipe"], MotionBlur):  # an average of frames has no kernel to deconvolve with
            continue
        print(f"restorelab models: classical methods, {task} {setting}", file=sys.stderr)
        result = classical_benchmark(group["recipe"], group["level"], CLASSICAL[task], channels)
        means = {m: (mean([r for r in result.rows if r["method"] == m], "psnr"),
                     mean([r for r in result.rows if r["method"] == m], "ssim"))
                 for m in dict.fromkeys(r["method"] for r in result.rows)}
        baseline, *methods = means
        choices = {c.partition(":")[0]: c.partition(": ")[2] for c in result.choices}
        for method in methods:
            rows.append({"task": task, "setting": setting, "degradation": degradation, "nets": group["nets"],
                         "method": method, "psnr": means[method][0], "ssim": means[method][1],
                         "baseline": baseline, "baseline_psnr": means[baseline][0], "choice": choices.get(method, "")})
    return rows


def with_best_classical(net_rows: Sequence[dict], classical: Sequence[dict]) -> list[dict]:
    """Each net row with the best classical method (mean PSNR) measured on its setting's pairs, where one applies."""
    rows = []
    for row in net_rows:
        fitting = [c for c in classical if row["net"] in c["nets"] and c["setting"] == row["setting"]]
        best = max(fitting, key=lambda c: c["psnr"], default=None)
        rows.append({**row, "best_classical": best["method"] if best else None,
                     "best_classical_psnr": best["psnr"] if best else None,
                     "best_classical_ssim": best["ssim"] if best else None})
    return rows


def mean(rows: Sequence[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def table_row(spec: ModelSpec, run: TrainedRun, budget_seconds: float, setting: str, baseline: str,
              baseline_rows: Sequence[dict], model_rows: Sequence[dict]) -> dict:
    """One line of the table: the model's and the baseline's means over the held-out photos, per-image values kept."""
    b_psnr, b_ssim = mean(baseline_rows, "psnr"), mean(baseline_rows, "ssim")
    m_psnr, m_ssim = mean(model_rows, "psnr"), mean(model_rows, "ssim")
    return {
        "net": spec.name, "paper": spec.paper, "task": spec.task, "setting": setting, "config": spec.config,
        "experiment": spec.experiment, "budget_seconds": budget_seconds, "steps": run.steps,
        "train_seconds": round(run.seconds, 1), "threads": torch.get_num_threads(),
        "budget_note": spec.budget_note, "overrides": list(run.overrides), "baseline": baseline,
        "baseline_psnr": b_psnr, "baseline_ssim": b_ssim, "model_psnr": m_psnr, "model_ssim": m_ssim,
        "gain_db": m_psnr - b_psnr, **texture_means(baseline_rows, model_rows),
        "images": [r["image"] for r in model_rows], "checkpoint": str(run.checkpoint),
        "per_image": [{"image": m["image"], "baseline_psnr": b["psnr"], "model_psnr": m["psnr"]}
                      for b, m in zip(baseline_rows, model_rows)],
    }


def texture_means(baseline_rows: Sequence[dict], model_rows: Sequence[dict]) -> dict:
    """The texture distances to the HR/clean images (``lightning_modules.texture``), baseline and model means."""
    return {f"{tag}_{k}": mean(rows, k) for tag, rows in (("baseline", baseline_rows), ("model", model_rows))
            for k in ("spectrum", "gradient")}


def with_texture(rows: Sequence[dict], out: Path) -> list[dict]:
    """Rows measured before the texture statistics, measured again on their checkpoints for them (seconds)."""
    done = []
    for row in rows:
        if row.get("model_spectrum") is None and row_checkpoint(row, out).is_file():
            base, net = split(benchmark(row_checkpoint(row, out), setting_level(row)).rows)
            row = {**row, **texture_means(base, net)}
        done.append(row)
    return done


def split(rows: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """(baseline rows, the net's rows) of one benchmark, in image order."""
    from lightning_modules.classical import baseline_for

    task = rows[0]["task"]
    by_image = lambda label: sorted((r for r in rows if r["method"] == label), key=lambda r: r["image"])  # noqa: E731
    net = next(r["method"] for r in rows if r["method"] != baseline_for(task).label)
    return by_image(baseline_for(task).label), by_image(net)


def run_model(key: str, budget_seconds: float = DEFAULT_BUDGET_SECONDS, work_dir: str | Path = "runs/models",
              extra: Sequence[str] = (), levels: Sequence[int] | None = None) -> list[dict]:
    """Train one net for the budget and return its table rows (one per scale / baseline). ``extra`` overrides
    go after the spec's; ``levels`` replaces its measured scales (SR) or σ (denoising). A ``per_scale`` SR net
    is trained once per scale, each run with the whole budget."""
    spec = SPECS[key]
    levels = spec.levels if levels is None else tuple(levels)
    runs_dir = Path(work_dir) / "runs"
    if spec.vgg:
        vgg, words = vgg_weights(Path(work_dir))
        extra = (f"--model.init_args.vgg_weights={vgg}", *extra)
        spec = dataclasses.replace(spec, budget_note=f"{spec.budget_note}; {words}")
    if spec.task == "sr":
        rows, run = [], None
        for scale in levels:
            if spec.per_scale or run is None:
                per_scale = (f"{DATA}.scale={scale}",) if spec.per_scale else ()
                start = (f"--model.init_args.generator_init={start_checkpoint(spec, runs_dir, scale)}",) \
                    if spec.starts_from else ()
                run = train(key, budget_seconds, runs_dir, (*per_scale, *start, *extra),
                            run_id=f"cpu-budget-x{scale}" if spec.per_scale else "cpu-budget")
            base, net = split(benchmark(run.checkpoint, scale).rows)
            rows.append(table_row(spec, run, budget_seconds, f"×{scale}", "bicubic", base, net))
        return rows
    run = train(key, budget_seconds, runs_dir, extra)
    row = lambda *a: table_row(spec, run, budget_seconds, *a)  # noqa: E731
    if spec.task == "denoise":
        return [row(f"σ={sigma}", "noisy input", *split(benchmark(run.checkpoint, sigma).rows)) for sigma in levels]
    base, net = split(benchmark(run.checkpoint, None).rows)
    return [row("synthetic GoPro-style blur", "blurred input", base, net)]


def start_checkpoint(spec: ModelSpec, runs_dir: Path, scale: int) -> Path:
    """The checkpoint of the row ``spec`` starts from (``starts_from``, same scale), or one line saying to train it."""
    source = SPECS[spec.starts_from]
    run_id = f"cpu-budget-x{scale}" if source.per_scale else "cpu-budget"
    path = Path(runs_dir) / spec.starts_from / run_id / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise AnticipatedError(f"{path}: {spec.name} starts from the {source.name} ×{scale} row's checkpoint; train "
                               f"it first (restorelab models --only {spec.starts_from})")
    return path


VGG_ENV = "RESTORELAB_VGG19"


def vgg_weights(work_dir: Path) -> tuple[Path, str]:
    """The VGG19 file of the perceptual losses, and the table's words for it: ``$RESTORELAB_VGG19`` (torchvision's
    ImageNet weights, if the user has them), else random He-initialised weights made once under ``work_dir``."""
    from lightning_modules.nets.vgg import save_random_vgg

    given = os.environ.get(VGG_ENV)
    if given:
        return Path(given), f"VGG19 from ${VGG_ENV} ({Path(given).name})"
    path = Path(work_dir) / "vgg19_random_seed0.pth"
    if not path.is_file():
        save_random_vgg(path, depth=19, seed=0)
    return path, "VGG19 with random weights (seed 0; no ImageNet file here)"


# ------------------------------------------------------------------------------------------------ output

TASK_NAMES = {"sr": "SR", "denoise": "denoising", "deblur": "deblurring"}


def render_table(rows: Sequence[dict]) -> str:
    """The README section: how the numbers were made, then one markdown line per row."""
    budgets = sorted({r["budget_seconds"] for r in rows})
    threads = sorted({r.get("threads", 0) for r in rows} - {0})
    jobs = sorted({r.get("jobs", 1) for r in rows})
    at_once = (f", {' / '.join(map(str, jobs))} nets training at once, one per core" if jobs != [1] else "")
    lines = [
        f"Generated by `restorelab models` (`restorelab/model_table.py`): each net trained from its config, "
        "stacked with its CPU-budget experiment config (`configs/experiment/cpu_budget/`), for "
        f"{' / '.join(f'{b:g}' for b in budgets)} s of wall-clock time on this machine's CPU "
        f"({' / '.join(map(str, threads)) or '?'} torch thread{'s' if threads != [1] else ''}{at_once}), the budget "
        "in words and the steps reached in the budget column, no validation during training, last weights measured. "
        "Held-out photos chelsea, coffee, camera; mean over the three. SR: PSNR/SSIM on Y, border shaved by the "
        "scale, MATLAB bicubic; denoising: gray, one seeded noise draw per image, the noisy input measured "
        "unrounded; deblurring: RGB (gray photos as gray), blur synthesised from 7-13 frames along a random camera "
        "path (GoPro-style). Outputs rounded to 8 bit. The best classical method of the task is measured on the same "
        f"pairs, its free parameters chosen on {TUNE_IMAGES} training photos ({TUNE_ON}), never on the measured ones "
        "(all of them in the second table). Spectrum distance: how far the output's fine texture is from the "
        "target's (mean |Δ log10 radially averaged power| of Y over 0.25-0.5 cycles/px, in decades; lower is "
        "closer; `lightning_modules/texture.py`), which PSNR does not see. Minutes of CPU, not the papers' GPU-days: these show that each recipe "
        "learns, not the published numbers.",
        "",
        "| Net | Paper | Task | Config | CPU budget | Baseline | Baseline PSNR / SSIM | Model PSNR / SSIM "
        "| Gain (dB) | Spectrum distance: baseline → model | Best classical: PSNR / SSIM | Gain over it (dB) |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        config = f"`{r['config']}`" + (f" + `{r['experiment']}`" if r.get("experiment") else "")
        budget = f"{r['steps']} steps, {r['train_seconds'] / 60:.1f} min; {r['budget_note']}"
        lines.append(
            f"| {r['net']} | {r['paper']} | {TASK_NAMES[r['task']]} {r['setting']} | {config} | {budget} | "
            f"{r['baseline']} | {r['baseline_psnr']:.2f} / {r['baseline_ssim']:.4f} | "
            f"{r['model_psnr']:.2f} / {r['model_ssim']:.4f} | {r['gain_db']:+.2f} | {texture_cell(r)} | {best_cell(r)} |")
    return "\n".join(lines)


def texture_cell(r: dict) -> str:
    if r.get("model_spectrum") is None:
        return "—"
    return f"{r['baseline_spectrum']:.2f} → {r['model_spectrum']:.2f}"


def best_cell(r: dict) -> str:
    if r.get("best_classical") is None:
        return "none applies (no kernel: motion blur averaged from frames) | —" if r["task"] == "deblur" else "— | —"
    return (f"{r['best_classical']}: {r['best_classical_psnr']:.2f} / {r['best_classical_ssim']:.4f} | "
            f"{r['model_psnr'] - r['best_classical_psnr']:+.2f}")


def render_classical(rows: Sequence[dict]) -> str:
    """The second table: every classical method per setting, with the parameters chosen for it."""
    lines = ["Classical methods (`configs/methods/`, `restorelab benchmark --method`) on the same held-out photos "
             f"and pairs as the nets of each setting; free parameters chosen by grid on {TUNE_IMAGES} training photos "
             f"({TUNE_ON}); learners (example-based, sparse coding) learn from the training photos.", "",
             "| Task | Setting | Nets on these pairs | Method | Parameters chosen | PSNR / SSIM | vs baseline (dB) |",
             "|---|---|---|---|---|---:|---:|"]
    for r in rows:
        nets = ", ".join(r["nets"]) or f"— ({r['degradation']})"
        lines.append(f"| {TASK_NAMES[r['task']]} | {r['setting']} | {nets} | {r['method']} | {r['choice'] or '—'} | "
                     f"{r['psnr']:.2f} / {r['ssim']:.4f} | {r['psnr'] - r['baseline_psnr']:+.2f} vs {r['baseline']} |")
    return "\n".join(lines)


def rewrite_readme(path: str | Path, body: str, markers: tuple[str, str] = (START, END)) -> None:
    """Replace what lies between the ``markers`` (default: the model table's) of ``path`` by ``body``; nothing else
    changes."""
    path = Path(path)
    text = path.read_text()
    first, last = markers
    start, end = text.find(first), text.find(last)
    if start < 0 or end < start:
        raise ValueError(f"{path}: needs the markers {first} and {last}, in that order")
    path.write_text(text[: start + len(first)] + "\n" + body + "\n" + text[end:])


CSV_FIELDS = ("net", "paper", "task", "setting", "config", "experiment", "budget_seconds", "steps", "train_seconds",
              "threads", "jobs", "baseline", "baseline_psnr", "baseline_ssim", "model_psnr", "model_ssim", "gain_db",
              "baseline_spectrum", "model_spectrum", "baseline_gradient", "model_gradient",
              "best_classical", "best_classical_psnr", "best_classical_ssim", "overrides")


def write_rows(rows: Sequence[dict], out: str | Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "models.json").write_text(json.dumps(list(rows), indent=1) + "\n")
    with open(out / "models.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows({k: " ".join(r[k]) if k == "overrides" else r.get(k, "") for k in CSV_FIELDS} for r in rows)


def merge_rows(previous: Sequence[dict], new: Sequence[dict]) -> list[dict]:
    """Rows of re-run nets replace their old ones; the order follows ``SPECS``."""
    renewed = {r["net"] for r in new}
    rows = [r for r in previous if r["net"] not in renewed] + list(new)
    order = {spec.name: i for i, spec in enumerate(SPECS.values())}
    return sorted(rows, key=lambda r: order.get(r["net"], len(order)))


# ---------------------------------------------------------------------------------------------------- CLI


def _run_model_in_worker(key: str, budget_seconds: float, out: str, threads: int | None) -> list[dict]:
    if threads:
        torch.set_num_threads(threads)
    return run_model(key, budget_seconds, out)


def _trained_rows(keys: Sequence[str], budget_seconds: float, out: Path, threads: int | None, jobs: int):
    """Each net's rows as its training ends: here, one after the other, or ``jobs`` nets at once in processes; nets
    that start from another row's checkpoint (``starts_from``) after the others."""
    later = [k for k in keys if SPECS[k].starts_from in keys]
    for wave in ([k for k in keys if k not in later], later):
        if jobs <= 1:
            for key in wave:
                yield run_model(key, budget_seconds, out)
            continue
        # spawned, not forked: a forked child would inherit torch's thread pools mid-state
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_run_model_in_worker, key, budget_seconds, str(out), threads) for key in wave]
            for future in as_completed(futures):
                yield future.result()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="restorelab models", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(SPECS), default=None,
                        help="nets to (re)train; the others keep their rows from --out/models.json")
    parser.add_argument("--budget-seconds", type=float, default=DEFAULT_BUDGET_SECONDS,
                        help="wall-clock training time per net (trainer.max_time)")
    parser.add_argument("--readme", default=str(REPO / "README.md"), help="README to update ('' to leave it)")
    parser.add_argument("--out", default="runs/models", help="folder for models.json, models.csv and the runs")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's). On a CPU shared with other jobs, 1 can be "
                             "many times faster than one per core: threads of one op wait for each other")
    parser.add_argument("--jobs", type=int, default=1,
                        help="nets trained at once, each in its own process (with --threads 1: one per core)")
    classical = parser.add_mutually_exclusive_group()
    classical.add_argument("--classical_only", nargs="*", choices=list(TASK_NAMES), default=None, metavar="TASK",
                           help="train nothing: measure the classical methods on the saved nets' settings again (of "
                                "these tasks only, the others' rows kept from --out/classical.json)")
    classical.add_argument("--no_classical", action="store_true", help="the nets' table only, no classical rows")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    out = Path(args.out)
    previous = json.loads((out / "models.json").read_text()) if (out / "models.json").is_file() else []
    new = []
    only_classical = args.classical_only is not None
    keys = [] if only_classical else args.only or list(SPECS)
    if only_classical and not previous:
        raise AnticipatedError(f"{out / 'models.json'}: no nets' rows to measure the classical methods beside; "
                               "run restorelab models first")
    for key in keys:
        print(f"restorelab models: training {SPECS[key].name} for {args.budget_seconds:g} s", file=sys.stderr)
    for net_rows in _trained_rows(keys, args.budget_seconds, out, args.threads, args.jobs):
        new += [{**r, "jobs": args.jobs} for r in net_rows]
        write_rows(merge_rows(previous, new), out)  # keep what is done if a later net fails
    rows = [r for r in merge_rows(previous, new) if not r["baseline"].startswith("Gaussian filter")]  # older tables
    rows = with_texture(rows, out)
    table = render_table(rows)
    if not args.no_classical:
        # the classical rows of the tasks measured anew: those of --classical_only, or of the nets trained now
        tasks = args.classical_only or (list(dict.fromkeys(SPECS[k].task for k in keys)) if args.only else list(TASK_NAMES))
        kept = json.loads((out / "classical.json").read_text()) if (out / "classical.json").is_file() else []
        classical = [r for r in kept if r["task"] not in tasks] + classical_rows(rows, out, tasks)
        classical.sort(key=lambda r: list(TASK_NAMES).index(r["task"]))
        rows = with_best_classical(rows, classical)
        write_rows(rows, out)
        (out / "classical.json").write_text(json.dumps(classical, indent=1) + "\n")
        table = render_table(rows) + "\n\n" + render_classical(classical)
    print(table)
    if args.readme:
        try:
            rewrite_readme(args.readme, table)
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print(f"\nrows: {out / 'models.json'}, {out / 'models.csv'}, {out / 'classical.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
