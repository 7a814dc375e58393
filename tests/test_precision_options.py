"""The GPU overlays of configs/trainer/ (bf16.yaml, fp16.yaml, channels_last.yaml, compile.yaml, loader.yaml), run on
the CPU where they can run: a tiny SRCNN fit with each reaches the validation PSNR of the float32 fit within a stated
tolerance, its checkpoint loads as any other, and out-of-range options are one line naming the option.

Each fit: SRCNN 9-5-5 with 16/8 filters, 40 steps of 8 patches of 33², validated on chelsea.png, through the real
command line in-process (``restorelab.cli.main``); val/psnr_y is the last row of the run's csv/metrics.csv. Measured on
2 busy CPU cores (torch 2.13, AMD EPYC), ΔPSNR against float32 at seeds 0 / 1 / 2:
    bf16-mixed     -0.027 / -0.014 / -0.080 dB   (convolutions in bf16 in training and validation)
    channels_last   0     / -2e-5  / +4e-6  dB   (other convolution kernels, float32 rounding)
    compile         0     /  0     /  0     dB   (inductor calls the same convolution kernels)
The tolerances below are about 3x (bf16) and 50x (channels_last, compile) the largest difference measured.
"""
from __future__ import annotations

import csv
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from restorelab.cli import main
from tests.conftest import REPO

STEPS = 40
# the recipe written out, so that retuning configs/srcnn.yaml leaves the measured values below as they are
TINY = ["--config", "configs/srcnn.yaml", "--config", "configs/trainer/cpu.yaml",
        "--model.init_args.net.init_args.kernel_sizes=[9, 5, 5]", "--model.init_args.net.init_args.filters=[16, 8]",
        "--model.init_args.net.init_args.padding=same", "--model.init_args.optimizer=adam", "--model.init_args.lr=1e-3",
        "--model.init_args.lr_multipliers={reconstruction: 0.1}", "--model.init_args.scheduler=cosine",
        "--data.init_args.patch_size=33", "--data.init_args.batch_size=8", "--data.init_args.augment=true",
        f"--data.init_args.patches_per_epoch={8 * STEPS}", f"--trainer.max_steps={STEPS}",  # one epoch, validated
        "--trainer.max_epochs=-1", "--trainer.check_val_every_n_epoch=1",
        "--data.init_args.val=[skimage:chelsea.png]", "--seed_everything=0", "--test_after_fit=false",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
OVERLAY = {name: ["--config", f"configs/trainer/{name}.yaml"] for name in ("bf16", "fp16", "channels_last", "compile")}
OVERLAY["loader"] = ["--config", "configs/trainer/loader.yaml", "--data.init_args.num_workers=2"]  # 2 cores here
OVERLAY["fp32"] = []

BF16_TOLERANCE_DB = 0.25  # measured at most 0.080 dB
LAYOUT_TOLERANCE_DB = 1e-3  # channels_last: measured at most 2e-5 dB
COMPILE_TOLERANCE_DB = 1e-3  # measured 0 dB; fused kernels may round differently on another CPU


@dataclass
class Run:
    dir: Path  # runs/srcnn/<run id>
    psnr: float  # val/psnr_y after the last step

    @property
    def last(self) -> Path:
        return self.dir / "checkpoints" / "last.ckpt"


def cli(*args: str) -> int:
    """``restorelab ARGS`` in-process from the checkout; the environment as it was afterwards (Lightning sets
    PL_GLOBAL_SEED, the CLI WANDB_MODE)."""
    saved = dict(os.environ)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(REPO)
            for name in ("RESTORELAB_RUN_DIR", "RESTORELAB_RUN_ID", "RESTORELAB_EXPERIMENT"):
                mp.delenv(name, raising=False)
            with pytest.raises(SystemExit) as stop:
                main(list(args))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return stop.value.code or 0


def fit(runs: Path, *extra: str) -> Run:
    """The tiny fit in ``runs`` (its run id the configuration's hash), logged by a CSV logger alone (no W&B)."""
    code = cli("fit", *TINY, f"--runs_dir={runs}", "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
               f"--trainer.logger.save_dir={runs}", "--trainer.logger.name=", "--trainer.logger.version=csv", *extra)
    assert code == 0
    (run_dir,) = (runs / "srcnn").iterdir()
    rows = [r for r in csv.DictReader(open(runs / "csv" / "metrics.csv")) if r.get("val/psnr_y")]
    return Run(run_dir, float(rows[-1]["val/psnr_y"]))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``runs(name)``: the tiny fit with OVERLAY[name], made once per module."""
    made: dict[str, Run] = {}

    def run(name: str) -> Run:
        if name not in made:
            made[name] = fit(tmp_path_factory.mktemp(name), *OVERLAY[name])
        return made[name]

    return run


def saved_weights(run: Run) -> dict[str, torch.Tensor]:
    return torch.load(run.last, map_location="cpu", weights_only=True)["state_dict"]


def assert_loads_like_fp32(run: Run, fp32: Run) -> None:
    """The checkpoint holds the same weight names as a float32 run's, and rebuilds through load_scheme."""
    from restorelab.checkpointing import load_scheme

    weights = saved_weights(run)
    assert sorted(weights) == sorted(saved_weights(fp32))
    assert all(v.is_contiguous() for v in weights.values())
    module = load_scheme(run.last)
    assert type(module.net).__name__ == "SRCNN"


def test_bf16_mixed_gives_the_fp32_psnr_within_its_tolerance(runs):
    fp32, bf16 = runs("fp32"), runs("bf16")
    assert math.isfinite(bf16.psnr)
    assert abs(bf16.psnr - fp32.psnr) <= BF16_TOLERANCE_DB, (bf16.psnr, fp32.psnr)
    assert bf16.dir.name == fp32.dir.name  # trainer.precision is no part of the run id
    assert_loads_like_fp32(bf16, fp32)


def test_fp16_mixed_on_a_cpu_is_lightnings_bf16_fallback(runs):
    """Lightning has no fp16 autocast on the CPU: it warns and runs bf16-mixed, so the fit is the bf16 fit."""
    with pytest.warns(UserWarning, match="AMP with fp16 is not supported on CPU. Using `precision='bf16-mixed'`"):
        fp16 = runs("fp16")
    assert abs(fp16.psnr - runs("bf16").psnr) <= 1e-4, (fp16.psnr, runs("bf16").psnr)


def test_channels_last_gives_the_fp32_psnr_and_a_plain_checkpoint(runs):
    fp32, nhwc = runs("fp32"), runs("channels_last")
    assert abs(nhwc.psnr - fp32.psnr) <= LAYOUT_TOLERANCE_DB, (nhwc.psnr, fp32.psnr)
    assert nhwc.dir.name == fp32.dir.name
    # `callbacks+` adds NetExecution beside the CLI's own callbacks: its checkpoints are still written
    assert any(p.name.startswith("best-") for p in (nhwc.dir / "checkpoints").iterdir())
    assert_loads_like_fp32(nhwc, fp32)


def compiler_missing() -> str | None:
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        compiler = get_cpp_compiler()
    except Exception as e:  # noqa: BLE001 - any reason inductor cannot find one
        return f"torch.compile on a CPU needs a C++ compiler for inductor: {type(e).__name__}: {e}"
    return None if shutil.which(compiler) else f"torch.compile on a CPU needs a C++ compiler for inductor ({compiler})"


NO_COMPILER = compiler_missing()


# 41 s with a cold inductor cache (/tmp/torchinductor_<user>) on 2 busy cores, 11 s warm, the fp32 fit included: under
# the minute that would make it a slow test
@pytest.mark.skipif(NO_COMPILER is not None, reason=str(NO_COMPILER))
def test_compile_gives_the_fp32_psnr_and_its_checkpoint_predicts(runs, tmp_path):
    from torch._dynamo.utils import counters

    fp32 = runs("fp32")
    counters.clear()
    compiled = runs("compile")
    assert counters["stats"]["unique_graphs"] >= 1, dict(counters["stats"])  # the training forward was compiled
    assert abs(compiled.psnr - fp32.psnr) <= COMPILE_TOLERANCE_DB, (compiled.psnr, fp32.psnr)
    assert compiled.dir.name == fp32.dir.name
    assert_loads_like_fp32(compiled, fp32)  # no `_orig_mod.` in the weight names
    import cv2

    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (24, 30, 3), dtype=np.uint8))
    assert cli("predict", "--ckpt", str(compiled.last), "--input", str(image), "--output", str(tmp_path / "out")) == 0
    assert cv2.imread(str(tmp_path / "out" / "photo.png")).shape == (72, 90, 3)


def test_channels_last_and_compile_overlays_add_up(tmp_path):
    """``callbacks+`` appends: the two overlays together give both NetExecution callbacks (with plain ``callbacks:``
    the second file would replace the first's)."""
    from restorelab.lightning_cli import build_parser

    cfg = build_parser().parse_args(["fit", *TINY, *OVERLAY["channels_last"], *OVERLAY["compile"],
                                     *OVERLAY["bf16"]]).fit
    # (after make train's own callback in configs/srcnn.yaml, ScheduleWithinMaxTime)
    options = [dict(c.init_args) for c in cfg.trainer.callbacks if c.class_path.endswith(".NetExecution")]
    assert [o["memory_format"] for o in options] == ["channels_last", "contiguous"]
    assert [o["compile"] for o in options] == [False, True]
    assert cfg.trainer.precision == "bf16-mixed"


def test_loader_options_run_end_to_end_and_keep_the_run_id(runs):
    """Two persistent workers, pinned batches (on a CPU-only machine torch warns and does not pin). The workers draw
    other patches than the main process, so the PSNR differs from the fp32 run's (-0.54 dB measured), as another
    seed's would; only that it trained is checked."""
    fp32, loaded = runs("fp32"), runs("loader")
    assert math.isfinite(loaded.psnr) and loaded.psnr > 15
    assert loaded.dir.name == fp32.dir.name  # loader options are no part of the run id
    data = torch.load(loaded.last, map_location="cpu", weights_only=True)["datamodule_hyper_parameters"]
    assert (data["num_workers"], data["pin_memory"], data["persistent_workers"]) == (2, True, True)


def one_line_error(capfd, *args: str) -> str:
    capfd.readouterr()
    code = cli("fit", *TINY, "--trainer.logger=false", *args)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("restorelab: error:")]
    assert code == 2 and "Traceback" not in err and len(lines) == 1, err[-3000:]
    return lines[0]


def overlay(folder: Path, **init_args) -> str:
    path = folder / "net_execution.yaml"
    body = "".join(f"        {k}: {v}\n" for k, v in init_args.items())
    path.write_text("trainer:\n  callbacks+:\n    - class_path: lightning_modules.schemes.base.NetExecution\n"
                    f"      init_args:\n{body}")
    return str(path)


@pytest.mark.parametrize("args, names", [
    (["--data.init_args.num_workers=-1"], ["data.init_args.num_workers=-1"]),
    (["--data.init_args.num_workers=0", "--data.init_args.persistent_workers=true"],
     ["data.init_args.persistent_workers=true", "num_workers"]),
    (["--data.init_args.pin_memory=maybe"], ["data.init_args.pin_memory"]),
    ({"memory_format": "foo"}, ["NetExecution", "memory_format='foo'", "channels_last"]),
    ({"compile": "true", "compile_mode": "fastest"}, ["NetExecution", "compile_mode='fastest'", "max-autotune"]),
], ids=["workers", "persistent-without-workers", "pin", "memory-format", "compile-mode"])
def test_out_of_range_options_are_one_line(capfd, tmp_path, args, names):
    line = one_line_error(capfd, *(["--config", overlay(tmp_path, **args)] if isinstance(args, dict) else args))
    for name in names:
        assert name in line, line
