"""DDP with two CPU processes (gloo): training runs, only rank 0 logs and checkpoints, and validation
metrics equal the single-process values on the same images (the per-image mean is not skewed by the
sampler repeating images to even out the ranks)."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO

COMMON = ["--config", "configs/srcnn.yaml", "--data.init_args.val=[skimage:chelsea.png, skimage:coffee.png, skimage:camera.png]",
          "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
          "--test_after_fit=false"]


# a limit, not a budget: each run takes about a minute on 2 idle cores; the limit only stops a hung one
def run(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("RESTORELAB_RUN_DIR", None)
    done = subprocess.run([sys.executable, "-m", "restorelab.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def last_val(run_dir, key="val/psnr_y") -> float:
    rows = [r for r in csv.DictReader(open(run_dir / "csv" / "metrics.csv")) if r.get(key)]
    return float(rows[-1][key])


@pytest.mark.timeout(2400)  # two runs of at most 900 s each (see run)
def test_ddp_two_cpu_processes_match_single_process(tmp_path):
    run(["fit", *COMMON, f"--runs_dir={tmp_path}", "--run_id=ddp", "--trainer.devices=2", "--trainer.strategy=ddp",
         "--trainer.max_steps=4", "--data.init_args.batch_size=8", "--data.init_args.patches_per_epoch=64"])
    ddp_dir = tmp_path / "srcnn" / "ddp"
    ddp_psnr, ddp_ssim = last_val(ddp_dir), last_val(ddp_dir, "val/ssim_y")
    ckpt = ddp_dir / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 4
    assert len(list((ddp_dir / "wandb").glob("offline-run-*"))) == 1  # rank 0 alone logs
    assert not list(tmp_path.glob("srcnn/*/version_*"))  # no stray per-rank logger dirs

    run(["validate", *COMMON, f"--runs_dir={tmp_path}", "--run_id=single", "--trainer.devices=1",
         f"--ckpt_path={ckpt}"])
    single_dir = tmp_path / "srcnn" / "single"
    assert abs(last_val(single_dir) - ddp_psnr) <= 1e-4
    assert abs(last_val(single_dir, "val/ssim_y") - ddp_ssim) <= 1e-6
