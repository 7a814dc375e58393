"""``restorelab zero-shot`` (``make zero-shot``): the comparison of MZSR (Soh et al., CVPR 2020, Table 2) at a CPU
budget: on Set5 ×2 under the kernels where bicubic-trained nets fail (g^d_0.2, g^d_2.0, g^d_ani, g^b_1.3), bicubic,
a bicubic-trained supervised net of this suite, ZSSR, and MZSR with 0, 1 and 10 test-time steps; PSNR/SSIM, updates
and seconds per image. It writes the README's zero-shot table (between ``<!-- zero-shot-table:start -->`` and
``<!-- zero-shot-table:end -->``) and the per-image rows as CSV and JSON.

What it trains, each with ``restorelab fit`` for a wall-clock budget (``--trainer.max_time``, no validation) unless
a checkpoint of the same run is already there (``--retrain`` trains anew):

    MZSR pre-training   configs/mzsr_pretrain.yaml + configs/experiment/zero_shot/mzsr_pretrain.yaml (bicubic ×2)
    MZSR meta-training  configs/mzsr.yaml + configs/experiment/zero_shot/mzsr.yaml, from the pre-training's weights
    supervised net      VDSR's CPU budget of `restorelab models` (bicubic ×2/×3/×4 on the bundled photos), or
                        --supervised CKPT

Every method is measured by ``restorelab benchmark``'s code (``run_benchmark``: the recipe ``ClassicalSR`` with the
named kernel, the restorer interface, the paper protocol); ZSSR by ``--zssr`` (a method spec, default the authors'
given-kernel configuration ``X2_GIVEN_KERNEL_CONF`` with fewer updates).

    restorelab zero-shot                                   # train what is missing, measure, rewrite the README table
    restorelab zero-shot --sets Set5 BSD100 --zssr "zssr:max_iters=3000"
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

import torch

from datamodules.errors import AnticipatedError
from datamodules.recipes import NAMED_KERNELS
from datamodules.sources import dataset_root
from lightning_modules.zero_shot.mzsr import steps_label

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- zero-shot-table:start -->", "<!-- zero-shot-table:end -->"
KERNELS = ("gd_0.2", "gd_2.0", "gd_ani", "gb_1.3")
PRETRAIN = ("mzsr_pretrain", ("configs/mzsr_pretrain.yaml", "configs/experiment/zero_shot/mzsr_pretrain.yaml"))
META = ("mzsr", ("configs/mzsr.yaml", "configs/experiment/zero_shot/mzsr.yaml"))
# the authors' X2_GIVEN_KERNEL_CONF (no ensemble, no rotations, 2 back-projections) with fewer updates than 3000
ZSSR_SPEC = "zssr:max_iters=200,ensemble=false,allow_rotation=false,back_projection_iters=2"
STEPS = (1, 10)
SUPERVISED_LABEL = "VDSR, bicubic-trained (this suite's CPU budget)"
PRETRAINED_LABEL = "MZSR pre-training only (bicubic-supervised)"


def mzsr_label(steps: int) -> str:
    return steps_label("MZSR", steps)


def trained(checkpoint: Path, train, budget_seconds: float, retrain: bool = False) -> dict:
    """The run's last ``checkpoint`` (``train()``, a ``model_table.TrainedRun``, makes it unless it exists and not
    ``retrain``), its steps and its budget (kept beside it, for a reuse)."""
    budget_file = checkpoint.parents[1] / "budget.json"
    if retrain or not checkpoint.is_file():
        print(f"restorelab zero-shot: training {checkpoint.parents[2].name} for {budget_seconds:g} s", file=sys.stderr)
        run = train()
        budget_file.write_text(json.dumps({"budget_seconds": budget_seconds}) + "\n")
        return {"checkpoint": str(run.checkpoint), "steps": run.steps, "budget_seconds": budget_seconds}
    steps = torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"]
    print(f"restorelab zero-shot: reusing {checkpoint} ({steps} steps; --retrain to train anew)", file=sys.stderr)
    budget = json.loads(budget_file.read_text())["budget_seconds"] if budget_file.is_file() else None
    return {"checkpoint": str(checkpoint), "steps": steps, "budget_seconds": budget}


def stage(name: str, configs: Sequence[str], budget_seconds: float, runs_dir: Path, extra: Sequence[str] = (),
          retrain: bool = False) -> dict:
    """An MZSR stage: ``restorelab fit`` of ``configs`` into ``runs_dir/<name>/cpu-budget``, or its reuse."""
    from restorelab.model_table import fit_for

    return trained(runs_dir / name / "cpu-budget" / "checkpoints" / "last.ckpt",
                   lambda: fit_for(name, [REPO / c for c in configs], budget_seconds, runs_dir, extra),
                   budget_seconds, retrain)


def supervised_checkpoint(given: str | None, budget_seconds: float, models_dir: Path, retrain: bool) -> dict:
    """--supervised, else VDSR's row of `restorelab models` (trained now if missing)."""
    from restorelab.model_table import train

    if given:
        return {"checkpoint": given, "steps": None, "budget_seconds": None}
    return trained(models_dir / "runs" / "vdsr" / "cpu-budget" / "checkpoints" / "last.ckpt",
                   lambda: train("vdsr", budget_seconds, models_dir / "runs"), budget_seconds, retrain)


def measure(runs: dict, sets: Sequence[str], kernels: Sequence[str], zssr: str, steps: Sequence[int],
            data_root: str | None, progress: bool) -> list[dict]:
    """Per-image rows of every method under every kernel at ×2."""
    from restorelab.benchmark import run_benchmark
    from restorelab.predict import load_restorer

    methods = [load_restorer(runs["supervised"]["checkpoint"])]
    methods[0].label = SUPERVISED_LABEL
    # the pre-trained net adapted as MZSR is, without the meta-learning: what meta-transfer adds
    for n in (0, max(steps)):
        methods.append(load_restorer(runs["pretrain"]["checkpoint"], steps=n))
        methods[-1].label = steps_label(PRETRAINED_LABEL, n)
    for n in (0, *steps):
        methods.append(load_restorer(runs["meta"]["checkpoint"], steps=n))
        methods[-1].label = mzsr_label(n)
    rows = []
    for kernel in kernels:
        result = run_benchmark(methods, sets, "sr", scales=[2], data_root=data_root, extra_metrics=False,
                               progress=progress, kernel=kernel, method_specs=[zssr])
        rows += [{**r, "kernel": kernel} for r in result.rows]
    return rows


# ---------------------------------------------------------------------------------------------------- table


def order_of(label: str) -> tuple[int, str]:
    """Bicubic, the supervised net, the pre-trained net by steps, ZSSR, MZSR by steps."""
    steps = label.rsplit(", ", 1)[-1].split()[0]
    by_steps = f"{int(steps):04d}" if steps.isdigit() else label
    for rank, start in enumerate(("Bicubic", SUPERVISED_LABEL, PRETRAINED_LABEL, "ZSSR", "MZSR, ")):
        if label.startswith(start):
            return rank, by_steps
    return 5, label


def render_table(rows: Sequence[dict], runs: dict, zssr: str, threads: int, csv_path: str = "zero_shot.csv") -> str:
    """One table per set: a row per method, a PSNR / SSIM column per kernel, then updates and seconds per image
    (means over the images and kernels)."""
    kernels = list(dict.fromkeys(r["kernel"] for r in rows))
    out = []
    for name in dict.fromkeys(r["set"] for r in rows):
        mine = [r for r in rows if r["set"] == name]
        images = len({r["image"] for r in mine})
        head = [f"**{name}** ×2 ({images} images). PSNR (dB) / SSIM on Y (BT.601), border shaved by 2, outputs "
                "rounded to 8 bit; LR = (HR ⊗ k)↓2 rounded to 8 bit, k one of MZSR's test kernels (g^d: blur then "
                "direct subsampling, g^b: blur then MATLAB bicubic; 15×15). Updates and seconds: per image, mean over "
                f"images and kernels, {threads} CPU threads.", "",
                "| Method | " + " | ".join(NAMED_KERNELS[k].about.split(":")[0].replace("MZSR ", "") for k in kernels)
                + " | updates / image | s / image |",
                "|---|" + "---:|" * (len(kernels) + 2)]
        for label in sorted(dict.fromkeys(r["method"] for r in mine), key=order_of):
            cells = []
            for k in kernels:
                got = [r for r in mine if r["method"] == label and r["kernel"] == k]
                cells.append(f"{sum(r['psnr'] for r in got) / len(got):.2f} / {sum(r['ssim'] for r in got) / len(got):.4f}"
                             if got else "—")
            every = [r for r in mine if r["method"] == label]
            updates = [r["updates"] for r in every if r.get("updates") is not None]
            seconds = [r["seconds"] for r in every if r.get("seconds") is not None]
            cells.append(f"{sum(updates) / len(updates):.0f}" if updates else "—")
            cells.append(f"{sum(seconds) / len(seconds):.1f}" if seconds else "—")
            head.append(f"| {label} | " + " | ".join(cells) + " |")
        out += head + [""]
    budget = ", ".join(
        f"{what} {run['steps']} steps" + (f" in {run['budget_seconds'] / 60:g} min" if run.get("budget_seconds") else "")
        for what, run in (("MZSR pre-training", runs["pretrain"]), ("MZSR meta-training", runs["meta"]),
                          ("VDSR", runs["supervised"])) if run.get("steps") is not None)
    out.append(f"Budgets: {budget}{' (wall clock)' if ' min' in budget else ''}; ZSSR `{zssr}`. Made by `restorelab zero-shot` "
               f"(`make zero-shot`); the per-image rows are in {csv_path}.")
    return "\n".join(out)


def rewrite_readme(path: str | Path, body: str) -> None:
    """Replace what lies between the zero-shot markers of ``path`` by ``body``; one line without them."""
    from restorelab.model_table import rewrite_readme as rewrite_between

    try:
        rewrite_between(path, body, (START, END))
    except ValueError as e:
        raise AnticipatedError(str(e)) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="restorelab zero-shot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=["Set5"], help="benchmark sets (default Set5)")
    parser.add_argument("--kernels", nargs="+", choices=list(NAMED_KERNELS), default=list(KERNELS))
    parser.add_argument("--steps", nargs="+", type=int, default=list(STEPS),
                        help="MZSR's test-time steps, one row each beside 0 (default 1 10)")
    parser.add_argument("--zssr", default=ZSSR_SPEC, help=f"ZSSR's method spec (default {ZSSR_SPEC})")
    parser.add_argument("--pretrain-seconds", type=float, default=600, help="MZSR pre-training budget")
    parser.add_argument("--meta-seconds", type=float, default=1200, help="MZSR meta-training budget")
    parser.add_argument("--supervised", default=None,
                        help="a bicubic-trained SR checkpoint (default: VDSR's of `restorelab models`, trained "
                             "for --pretrain-seconds if missing)")
    parser.add_argument("--retrain", action="store_true", help="train the MZSR stages (and VDSR) anew")
    parser.add_argument("--data_root", default=None, help="benchmark folder (default: $RESTORELAB_DATA)")
    parser.add_argument("--out", default="runs/zero_shot", help="folder for the runs, zero_shot.csv and .json")
    parser.add_argument("--models_dir", default="runs/models", help="`restorelab models`' folder (its VDSR run)")
    parser.add_argument("--readme", default=str(REPO / "README.md"), help="README to update ('' to leave it)")
    parser.add_argument("--no_progress", action="store_true")
    args = parser.parse_args(argv)
    for n in args.steps:
        if n < 1:
            raise AnticipatedError(f"--steps {n} must be >= 1 (0 steps is always measured)")

    root = dataset_root(args.data_root)  # one line where there is none: the stages train on its T91 + BSD200
    if not root.is_dir():
        raise AnticipatedError(f"{root}: no such benchmark folder (--data_root or RESTORELAB_DATA)")
    saved = os.environ.get("RESTORELAB_DATA")
    os.environ["RESTORELAB_DATA"] = str(root)  # what the training stages read; restored for the caller after
    try:
        return run(args)
    finally:
        if saved is None:
            os.environ.pop("RESTORELAB_DATA", None)
        else:
            os.environ["RESTORELAB_DATA"] = saved


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    runs_dir = out / "runs"
    runs = {"pretrain": stage(*PRETRAIN, args.pretrain_seconds, runs_dir, retrain=args.retrain)}
    runs["meta"] = stage(*META, args.meta_seconds, runs_dir,
                         [f"--model.init_args.init_from={runs['pretrain']['checkpoint']}"], args.retrain)
    runs["supervised"] = supervised_checkpoint(args.supervised, args.pretrain_seconds, Path(args.models_dir),
                                               args.retrain)
    rows = measure(runs, args.sets, args.kernels, args.zssr, args.steps, args.data_root, not args.no_progress)
    out.mkdir(parents=True, exist_ok=True)
    (out / "zero_shot.json").write_text(json.dumps({"runs": runs, "zssr": args.zssr, "rows": rows}, indent=1) + "\n")
    from restorelab.benchmark import CSV_FIELDS, write_csv

    write_csv([{k: r.get(k) for k in CSV_FIELDS} for r in rows], out / "zero_shot.csv")
    table = render_table(rows, runs, args.zssr, torch.get_num_threads(), str(out / "zero_shot.csv"))
    print(table)
    if args.readme:
        rewrite_readme(args.readme, table)
    return 0


if __name__ == "__main__":
    from restorelab.cli import main as restorelab_main

    restorelab_main(["zero-shot", *sys.argv[1:]])
