"""``restorelab models``: train every paper's net briefly on the CPU from its config, measure it on the held-out
bundled photos against the classical baseline, and write the README's model table (between
``<!-- model-table:start -->`` and ``<!-- model-table:end -->``) plus the rows as JSON and CSV.

Each run is ``restorelab fit --config configs/<net>.yaml`` with the CPU-budget overrides listed in ``SPECS``
(smaller width/depth/patches; Adam at a constant rate, or decayed to 0 over about the steps the budget allows
where the last weights were otherwise caught mid-spike) and ``--trainer.max_time`` = the budget; no validation
during training, so nothing is selected on the images that are measured: the last weights are evaluated.
Evaluation is the module's own test loop (``RestorationModule.test_step``: paper protocol, outputs rounded to
8 bit) on fixed degraded versions of chelsea, coffee and camera:

    SR        Y channel, border shaved by the scale, vs MATLAB bicubic at ×3 and ×4 (VDSR: one multi-scale net;
              SRResNet: one net per scale)
    denoise   gray, σ = 25 (one seeded draw per image), vs the noisy input and vs a Gaussian filter
              (kornia ``gaussian_blur2d``) whose σ is the best of ``GAUSSIAN_SIGMAS`` on these same images
    deblur    RGB, GoPro-style synthetic blur (7-13 frames along a random camera path, averaged in linear
              light), vs the blurred input

    restorelab models                                  # all nets, 600 s of training each
    restorelab models --threads 1 --jobs 2             # two nets at once, one core each (how the README's was made)
    restorelab models --only vdsr dncnn_s --budget-seconds 300

``run_model(key, budget_seconds, work_dir)`` returns a net's rows; ``render_table`` / ``rewrite_readme`` make
and place the table (the slow learning tests reuse them).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import json
import math
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
from torch import nn

from datamodules.errors import AnticipatedError

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- model-table:start -->", "<!-- model-table:end -->"
DEFAULT_BUDGET_SECONDS = 600
# Candidate σ (pixels) of the Gaussian-filter baseline; the best on the held-out photos is reported.
GAUSSIAN_SIGMAS = tuple(round(0.5 + 0.1 * i, 1) for i in range(16))  # 0.5 .. 2.0

NET = "--model.init_args.net.init_args"
MODEL = "--model.init_args"
DATA = "--data.init_args"
# CPU runs train with Adam (the papers' decays are spread over days of GPU time) and small batches: in minutes,
# more updates beat larger batches.
CONSTANT_ADAM = (f"{MODEL}.optimizer=adam", f"{MODEL}.scheduler=none")


def cosine_adam(steps: int) -> tuple[str, ...]:
    """Adam decayed to 0 over ``steps`` (about what the net reaches in the budget here; max_time still caps
    the run). For nets whose last weights, at a constant rate, were caught mid-spike after ten minutes:
    DeepDeblur (no BN) gave outputs of ±4000 on a test photo, SRResNet ×4 a 2 dB brightness drift, SRN fell
    1 dB below its input after being 0.2 dB above it in a run of the same length."""
    return (f"{MODEL}.optimizer=adam", f"{MODEL}.scheduler=cosine", f"--trainer.max_steps={steps}")


@dataclass(frozen=True)
class ModelSpec:
    name: str  # as the table shows it
    paper: str
    config: str  # relative to the repository root
    task: str  # "sr", "denoise" or "deblur"
    levels: tuple[int, ...]  # SR: scales measured; denoise: σ measured; deblur: ()
    overrides: tuple[str, ...]  # CPU-budget command-line overrides of the config
    budget_note: str  # the overrides in words, for the table
    per_scale: bool = False  # SR nets whose layers depend on the scale (sub-pixel): one training run per scale


SPECS: dict[str, ModelSpec] = {
    "srcnn": ModelSpec(
        "SRCNN", "Dong et al., TPAMI 2016", "configs/srcnn.yaml", "sr", (3,), (),
        "config as is (its CPU default: Adam 1e-3, cosine over 15 epochs)"),
    "vdsr": ModelSpec(
        "VDSR", "Kim et al., CVPR 2016", "configs/vdsr.yaml", "sr", (3, 4),
        (f"{NET}.depth=10", f"{NET}.features=32", *CONSTANT_ADAM, f"{MODEL}.lr=1e-3", f"{DATA}.batch_size=16"),
        "depth 10, 32 filters, batch 16, Adam 1e-3 (paper: 20, 64, 64, SGD 0.1)"),
    "dncnn_s": ModelSpec(
        "DnCNN-S", "Zhang et al., TIP 2017", "configs/dncnn_s.yaml", "denoise", (25,),
        (f"{NET}.depth=6", f"{NET}.features=32", *CONSTANT_ADAM, f"{MODEL}.lr=3e-3", f"{DATA}.batch_size=8"),
        "depth 6, 32 filters, batch 8, Adam 3e-3 (paper: 17, 64, 128, 1e-3 then 1e-4)"),
    "dncnn_b": ModelSpec(
        "DnCNN-B", "Zhang et al., TIP 2017", "configs/dncnn_b.yaml", "denoise", (25,),
        # batch 16 at the paper's 1e-3: BN's running statistics average over the σ of the last few batches,
        # and with batch 8 at 3e-3 the last weights were 0.4 dB below the Gaussian filter after 600 s
        (f"{NET}.depth=6", f"{NET}.features=32", *cosine_adam(5000), f"{MODEL}.lr=1e-3", f"{DATA}.batch_size=16",
         f"{DATA}.patch_size=40"),
        "blind σ∈[0, 55]; depth 6, 32 filters, 40² patches, batch 16, Adam 1e-3 cosine to 0 over 5000 steps "
        "(paper: 20, 64, 50², 128)"),
    "nlrn": ModelSpec(
        "NLRN", "Liu et al., NeurIPS 2018", "configs/nlrn.yaml", "denoise", (25,),
        (f"{NET}.features=32", f"{NET}.steps=3", f"{NET}.window=7", f"{NET}.embed_features=16", *CONSTANT_ADAM,
         f"{DATA}.batch_size=8", f"{DATA}.patch_size=32"),
        "32 features, 3 steps, 7×7 window, 32² patches, batch 8, Adam 1e-3 (paper: 128, 12, 45×45, 43², 16)"),
    "srresnet": ModelSpec(
        "SRResNet", "Ledig et al., CVPR 2017", "configs/srresnet.yaml", "sr", (3, 4),
        (f"{NET}.blocks=4", f"{NET}.features=32", *cosine_adam(5500), f"{MODEL}.lr=1e-3", f"{DATA}.patch_size=48",
         f"{DATA}.batch_size=8"),
        "4 blocks, 32 channels, 48² HR patches, batch 8, Adam 1e-3 cosine to 0 over 5500 steps "
        "(paper: 16, 64, 96², 16, 1e-4)",
        per_scale=True),
    "deepdeblur": ModelSpec(
        "DeepDeblur", "Nah et al., CVPR 2017", "configs/deepdeblur.yaml", "deblur", (),
        (f"{NET}.blocks=3", f"{NET}.features=16", *cosine_adam(5000), f"{MODEL}.lr=1e-3", f"{DATA}.patch_size=64",
         f"{DATA}.batch_size=4"),
        "3 ResBlocks of 16 channels per level, 64² patches, batch 4, Adam 1e-3 cosine to 0 over 5000 steps "
        "(paper: 19 of 64, 256², 4, 5e-5)"),
    "srn": ModelSpec(
        "SRN", "Tao et al., CVPR 2018", "configs/srn.yaml", "deblur", (),
        (f"{NET}.features=16", f"{NET}.blocks=1", *cosine_adam(2500), f"{MODEL}.lr=1e-3", f"{DATA}.patch_size=64",
         f"{DATA}.batch_size=4"),
        "16 base channels, 1 ResBlock per stage, 64² patches, batch 4, Adam 1e-3 cosine to 0 over 2500 steps "
        "(paper: 32, 3, 256², 16, 1e-4)"),
}
QUIET = ("--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false")


# ---------------------------------------------------------------------------------------------- training


@dataclass
class TrainedRun:
    checkpoint: Path
    steps: int
    seconds: float
    overrides: tuple[str, ...]


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
    """``restorelab fit`` of a net's config with its CPU overrides for ``budget_seconds`` of training, in a fresh
    ``runs_dir/<key>/<run_id>``; returns its last checkpoint, the steps reached and the wall time of the fit."""
    from restorelab.cli import main as cli

    spec = SPECS[key]
    run_dir = Path(runs_dir) / key / run_id
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = (*spec.overrides, *extra)
    args = ["fit", "--config", str(REPO / spec.config), f"--runs_dir={runs_dir}", f"--experiment={key}",
            f"--run_id={run_id}", f"--trainer.max_time={max_time(budget_seconds)}", "--trainer.limit_val_batches=0",
            "--test_after_fit=false", *QUIET, *overrides]
    start = time.perf_counter()
    with _own_run_directory():
        try:
            cli(args)
        except SystemExit as e:  # the command line always exits; only a failure is news
            if e.code:
                raise AnticipatedError(f"{key}: restorelab fit exited {e.code} (its error is printed above)") from None
    seconds = time.perf_counter() - start
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    steps = torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"]
    return TrainedRun(checkpoint, steps, seconds, overrides)


# -------------------------------------------------------------------------------------------- evaluation


class GaussianFilter(nn.Module):
    """The classical denoiser, as a net of the suite's contract, so it is measured by the same test loop."""

    def __init__(self, sigma: float, channels: int = 1):
        super().__init__()
        self.sigma = sigma
        self.kernel_size = 2 * math.ceil(3 * sigma) + 1
        self.scale, self.size_multiple = 1, 1
        self.in_channels = self.out_channels = channels
        self.receptive_field = self.kernel_size

    def forward(self, x):
        from kornia.filters import gaussian_blur2d

        return gaussian_blur2d(x, (self.kernel_size,) * 2, (self.sigma, self.sigma), border_type="reflect")


def held_out_data(checkpoint: Path, **overrides):
    """The checkpoint's own DataModule (class and hyper-parameters as trained), testing on its validation photos."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["datamodule_hyper_parameters"]
    module_name, _, class_name = saved["_class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**{k: v for k, v in saved.items() if not k.startswith("_")} | {"test": None} | overrides)


def test_rows(module, data) -> list[dict]:
    """Per-image rows of ``RestorationModule.test_step``: image, baseline_psnr/ssim, model_psnr/ssim."""
    import lightning as L

    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.test(module, datamodule=data, verbose=False)
    return sorted(module.test_rows, key=lambda r: r["image"])


def evaluate(checkpoint: Path, scale: int | None = None, sigma: float | None = None) -> tuple[list[dict], object]:
    """Rows of a trained checkpoint on the held-out photos (SR at ``scale``, denoising at ``sigma``), and the
    DataModule that made the pairs."""
    from lightning_modules.restoration import RestorationModule

    module = RestorationModule.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True,
                                                    **({"scale": scale} if scale else {}))
    data = held_out_data(checkpoint, **({"scale": scale} if scale else {}),
                         **({"test_sigma": float(sigma)} if sigma is not None else {}))
    return test_rows(module, data), data


def best_gaussian_filter(data, metric_space: str,
                         sigmas: Sequence[float] = GAUSSIAN_SIGMAS) -> tuple[float, list[dict]]:
    """(σ, per-image rows) of the Gaussian filter with the highest mean PSNR on the DataModule's test pairs.

    σ is picked on PSNR alone (cheap), then the chosen filter goes through the same test loop as the nets."""
    from lightning_modules.metrics import evaluation_view
    from lightning_modules.restoration import RestorationModule

    channels = 3 if data.hparams.channels == "rgb" else 1
    data.setup("test")
    pairs = [data.on_after_batch_transfer(batch, 0) for batch in data.test_dataloader()]
    view = lambda x: evaluation_view(x, 0, y_channel=metric_space == "y")  # noqa: E731

    def mean_psnr(sigma: float) -> float:
        blur = GaussianFilter(sigma, channels)
        mse = [torch.mean((view(blur(p["degraded"])) - view(p["target"])) ** 2) for p in pairs]
        return sum(-10 * math.log10(float(m)) for m in mse) / len(mse)

    sigma = max(sigmas, key=mean_psnr)
    return sigma, test_rows(RestorationModule(GaussianFilter(sigma, channels), metric_space=metric_space), data)


def mean(rows: Sequence[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def table_row(spec: ModelSpec, run: TrainedRun, budget_seconds: float, setting: str, baseline: str,
              baseline_rows: Sequence[dict], baseline_key: str, model_rows: Sequence[dict]) -> dict:
    """One line of the table: the model's and the baseline's means over the held-out photos, per-image values kept."""
    b_psnr, b_ssim = mean(baseline_rows, f"{baseline_key}_psnr"), mean(baseline_rows, f"{baseline_key}_ssim")
    m_psnr, m_ssim = mean(model_rows, "model_psnr"), mean(model_rows, "model_ssim")
    return {
        "net": spec.name, "paper": spec.paper, "task": spec.task, "setting": setting, "config": spec.config,
        "budget_seconds": budget_seconds, "steps": run.steps, "train_seconds": round(run.seconds, 1),
        "threads": torch.get_num_threads(),
        "budget_note": spec.budget_note, "overrides": list(run.overrides), "baseline": baseline,
        "baseline_psnr": b_psnr, "baseline_ssim": b_ssim, "model_psnr": m_psnr, "model_ssim": m_ssim,
        "gain_db": m_psnr - b_psnr, "images": [r["image"] for r in model_rows],
        "per_image": [{"image": m["image"], "baseline_psnr": b[f"{baseline_key}_psnr"], "model_psnr": m["model_psnr"]}
                      for b, m in zip(baseline_rows, model_rows)],
    }


def run_model(key: str, budget_seconds: float = DEFAULT_BUDGET_SECONDS, work_dir: str | Path = "runs/models",
              extra: Sequence[str] = (), levels: Sequence[int] | None = None) -> list[dict]:
    """Train one net for the budget and return its table rows (one per scale / baseline). ``extra`` overrides
    go after the spec's; ``levels`` replaces its measured scales (SR) or σ (denoising). A ``per_scale`` SR net
    is trained once per scale, each run with the whole budget."""
    spec = SPECS[key]
    levels = spec.levels if levels is None else tuple(levels)
    runs_dir = Path(work_dir) / "runs"
    if spec.task == "sr":
        rows, run = [], None
        for scale in levels:
            if spec.per_scale or run is None:
                per_scale = (f"{DATA}.scale={scale}",) if spec.per_scale else ()
                run = train(key, budget_seconds, runs_dir, (*per_scale, *extra),
                            run_id=f"cpu-budget-x{scale}" if spec.per_scale else "cpu-budget")
            images, _ = evaluate(run.checkpoint, scale=scale)
            rows.append(table_row(spec, run, budget_seconds, f"×{scale}", "bicubic", images, "baseline", images))
        return rows
    run = train(key, budget_seconds, runs_dir, extra)
    row = lambda *a: table_row(spec, run, budget_seconds, *a)  # noqa: E731
    if spec.task == "denoise":
        rows = []
        metric_space = torch.load(run.checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"][
            "metric_space"]
        for sigma in levels:
            images, data = evaluate(run.checkpoint, sigma=sigma)
            filter_sigma, filtered = best_gaussian_filter(data, metric_space)
            rows.append(row(f"σ={sigma}", "noisy input", images, "baseline", images))
            rows.append(row(f"σ={sigma}", f"Gaussian filter σ={filter_sigma:g}", filtered, "model", images))
        return rows
    images, _ = evaluate(run.checkpoint)
    return [row("synthetic GoPro-style blur", "blurred input", images, "baseline", images)]


# ------------------------------------------------------------------------------------------------ output

TASK_NAMES = {"sr": "SR", "denoise": "denoising", "deblur": "deblurring"}


def render_table(rows: Sequence[dict]) -> str:
    """The README section: how the numbers were made, then one markdown line per row."""
    budgets = sorted({r["budget_seconds"] for r in rows})
    threads = sorted({r.get("threads", 0) for r in rows} - {0})
    jobs = sorted({r.get("jobs", 1) for r in rows})
    at_once = (f", {' / '.join(map(str, jobs))} nets training at once, one per core" if jobs != [1] else "")
    lines = [
        f"Generated by `restorelab models` (`restorelab/model_table.py`): each net trained from its config for "
        f"{' / '.join(f'{b:g}' for b in budgets)} s of wall-clock time on this machine's CPU "
        f"({' / '.join(map(str, threads)) or '?'} torch thread{'s' if threads != [1] else ''}{at_once}), with the overrides "
        "stated (steps reached in the budget column), no validation during training, last weights measured. "
        "Held-out photos chelsea, coffee, camera; mean over the three. SR: PSNR/SSIM on Y, border shaved by the "
        "scale, MATLAB bicubic; denoising: gray, one seeded noise draw per image, the Gaussian filter's σ the best "
        f"of {GAUSSIAN_SIGMAS[0]}-{GAUSSIAN_SIGMAS[-1]} on these same images; deblurring: RGB, blur synthesised "
        "from 7-13 frames along a random camera path (GoPro-style). Outputs rounded to 8 bit. Minutes of CPU, "
        "not the papers' GPU-days: these show that each recipe learns, not the published numbers.",
        "",
        "| Net | Paper | Task | Config | CPU budget | Baseline | Baseline PSNR / SSIM | Model PSNR / SSIM "
        "| Gain (dB) |",
        "|---|---|---|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        budget = f"{r['steps']} steps, {r['train_seconds'] / 60:.1f} min; {r['budget_note']}"
        lines.append(
            f"| {r['net']} | {r['paper']} | {TASK_NAMES[r['task']]} {r['setting']} | `{r['config']}` | {budget} | "
            f"{r['baseline']} | {r['baseline_psnr']:.2f} / {r['baseline_ssim']:.4f} | "
            f"{r['model_psnr']:.2f} / {r['model_ssim']:.4f} | {r['gain_db']:+.2f} |")
    return "\n".join(lines)


def rewrite_readme(path: str | Path, body: str) -> None:
    """Replace what lies between the model-table markers of ``path`` by ``body``; nothing else changes."""
    path = Path(path)
    text = path.read_text()
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{path}: needs the markers {START} and {END}, in that order")
    path.write_text(text[: start + len(START)] + "\n" + body + "\n" + text[end:])


CSV_FIELDS = ("net", "paper", "task", "setting", "config", "budget_seconds", "steps", "train_seconds", "threads", "jobs",
              "baseline", "baseline_psnr", "baseline_ssim", "model_psnr", "model_ssim", "gain_db", "overrides")


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
    """Each net's rows as its training ends: here, one after the other, or ``jobs`` nets at once in processes."""
    if jobs <= 1:
        for key in keys:
            yield run_model(key, budget_seconds, out)
        return
    # spawned, not forked: a forked child would inherit torch's thread pools mid-state
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_run_model_in_worker, key, budget_seconds, str(out), threads) for key in keys]
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
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    out = Path(args.out)
    previous = json.loads((out / "models.json").read_text()) if (out / "models.json").is_file() else []
    new = []
    keys = args.only or list(SPECS)
    for key in keys:
        print(f"restorelab models: training {SPECS[key].name} for {args.budget_seconds:g} s", file=sys.stderr)
    for net_rows in _trained_rows(keys, args.budget_seconds, out, args.threads, args.jobs):
        new += [{**r, "jobs": args.jobs} for r in net_rows]
        write_rows(merge_rows(previous, new), out)  # keep what is done if a later net fails
    rows = merge_rows(previous, new)
    table = render_table(rows)
    print(table)
    if args.readme:
        try:
            rewrite_readme(args.readme, table)
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print(f"\nrows: {out / 'models.json'}, {out / 'models.csv'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
