"""`restorelab benchmark`: the bicubic baseline reproduces the reference numbers, the CSV and the markdown tables
are generated with the protocol stated, denoising inputs are the same run to run, checkpoints are evaluated only
where they fit."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from datamodules.image_ops import quantize
from datamodules.recipes import AWGN, BicubicSR, evaluation_pair
from lightning_modules.classical import baseline_for
from restorelab.benchmark import main, markdown_table, run_benchmark, set_means
from restorelab.evaluation import BenchmarkSet, evaluate, load_set
from restorelab.predict import load_restorer
from tests.conftest import REPO
from tests.test_predict import make_checkpoint, run

PROTOCOL = ("PSNR/SSIM on Y (BT.601), border shaved by scale, LR = MATLAB imresize(HR, 1/s) (bicubic, antialiased), "
            "rounded to 8 bit; gray images used directly as Y")
SR_BASELINE, DENOISING_BASELINE = baseline_for("sr").label, baseline_for("denoise").label


def noisy_input(name, clean, sigma, seed=0):
    return evaluation_pair(AWGN(sigma=float(sigma)), {"target": clean, "name": [name]}, 1, None, seed)["degraded"]


@pytest.fixture(scope="module")
def trained_srcnn(tmp_path_factory):
    """A real (30-step) SRCNN x3 checkpoint from the CLI, as `make train` writes it (3 steps of 16 patches leave
    its output below MS-SSIM 0.5)."""
    from restorelab.cli import main as cli

    runs = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        with pytest.raises(SystemExit) as stop:  # restorelab's command line always exits with its status
            cli(["fit", "--config", "configs/srcnn.yaml", "--runs_dir", str(runs), "--trainer.max_steps", "30",
                 "--trainer.limit_val_batches", "1", "--test_after_fit", "false", "--trainer.enable_progress_bar",
                 "false", "--trainer.logger", "false"])
        assert stop.value.code in (0, None)
    return next(runs.glob("srcnn/*/checkpoints/last.ckpt"))


def test_set5_x3_bicubic_reproduces_reference(datasets_root):
    rows = run_benchmark([], ["Set5"], "sr", scales=[3], data_root=datasets_root, extra_metrics=False,
                         progress=False).rows
    reference = {(r["image"]): r for r in json.loads((datasets_root / "reference_bicubic.json").read_text())["rows"]
                 if r["set"] == "Set5" and r["scale"] == 3}
    assert sorted(r["image"] for r in rows) == sorted(k for k in reference if k != "MEAN")
    for row in rows:
        assert row["method"] == SR_BASELINE
        assert row["psnr"] == pytest.approx(reference[row["image"]]["psnr_y"], abs=0.01), row["image"]
        assert row["ssim"] == pytest.approx(reference[row["image"]]["ssim_y"], abs=6e-4), row["image"]
    means = set_means(rows)[("Set5", SR_BASELINE, 3)]
    assert means["psnr"] == pytest.approx(30.4047, abs=0.01)
    assert means["ssim"] == pytest.approx(0.8690, abs=6e-4)


def test_command_writes_csv_and_tables(datasets_root, trained_srcnn, tmp_path, capsys):
    code = main(["--ckpt", str(trained_srcnn), "--names", "SRCNN", "--sets", "Set5", "--scales", "2", "3",
                 "--data_root", str(datasets_root), "--out", str(tmp_path), "--no_progress", "--tile", "128"])
    captured = capsys.readouterr()
    assert code == 0
    with open(tmp_path / "benchmark.csv") as f:
        rows = list(csv.DictReader(f))
    # 5 images: bicubic at x2 and x3, the x3 checkpoint at x3 only
    assert len(rows) == 15
    assert sorted({(r["method"], r["scale"]) for r in rows}) == [("Bicubic", "2"), ("Bicubic", "3"), ("SRCNN", "3")]
    assert all(float(r["ms_ssim"]) > 0.5 and float(r["ifc"]) > 0 for r in rows)
    assert "SRCNN" in captured.err and "x3 only" in captured.err

    table = (tmp_path / "benchmark.md").read_text()
    assert table.strip() in captured.out
    assert PROTOCOL in table
    lines = table.splitlines()
    assert lines[2] == "| Method | ×2 PSNR / SSIM | ×3 PSNR / SSIM | ×2 MS-SSIM | ×3 MS-SSIM | ×2 IFC | ×3 IFC |"
    bicubic = next(line for line in lines if line.startswith("| Bicubic |"))
    assert bicubic.startswith("| Bicubic | 33.68 / 0.9305 | 30.40 / 0.8690 |")
    srcnn = next(line for line in lines if line.startswith("| SRCNN |")).split(" | ")
    assert srcnn[1] == "—" and srcnn[3] == "—" and srcnn[5] == "—"  # not evaluated at x2
    psnr = sum(float(r["psnr"]) for r in rows if r["method"] == "SRCNN") / 5
    assert srcnn[2].startswith(f"{psnr:.2f} / ")  # the table is made from the per-image rows


def test_denoising_inputs_repeat_and_noisy_psnr(datasets_root):
    first = run_benchmark([], ["Set12"], "denoise", sigmas=[25], data_root=datasets_root, progress=False).rows
    second = run_benchmark([], ["Set12"], "denoise", sigmas=[25], data_root=datasets_root, progress=False).rows
    assert first == second and len(first) == 12
    assert {r["method"] for r in first} == {DENOISING_BASELINE}
    mean = set_means(first)[("Set12", DENOISING_BASELINE, 25)]["psnr"]
    assert mean == pytest.approx(20 * math.log10(255 / 25), abs=0.1)  # float, unclipped noise

    clean = load_set("Set12", datasets_root).samples[0][1]["target"]
    noise = noisy_input("01.png", clean, 25) - clean
    assert torch.equal(noise, noisy_input("01.png", clean, 25) - clean)
    assert not torch.equal(noise, noisy_input("02.png", clean, 25) - clean)
    assert noise.std().item() * 255 == pytest.approx(25, rel=0.02)
    assert (clean + noise).min() < 0  # not clipped


def test_denoising_inputs_are_the_datamodules_test_pairs():
    from datamodules.restoration import DenoiseDataModule

    for channels in ("gray", "rgb"):
        clean = torch.rand(1, 1 if channels == "gray" else 3, 24, 20, generator=torch.Generator().manual_seed(3))
        data = DenoiseDataModule(recipe=AWGN(sigma=15.0), channels=channels, seed=7)
        expected = data.fixed_pairs({"target": clean, "name": ["a.png"]})["degraded"]
        assert torch.equal(noisy_input("a.png", clean, 15, seed=7), expected)


def test_checkpoints_run_only_where_they_fit(tmp_path, capsys):
    ckpts = {k: make_checkpoint(tmp_path, k) for k in ("srcnn_y_x3", "srresnet_rgb_x2", "dncnn_gray")}
    x3, x2 = load_restorer(ckpts["srcnn_y_x3"]), load_restorer(ckpts["srresnet_rgb_x2"])
    result = run_benchmark([x3, x2], ["skimage:camera.png"], "sr", scales=[3], extra_metrics=False, progress=False)
    assert {(r["method"], r["scale"]) for r in result.rows} == {(SR_BASELINE, 3), (x3.label, 3)}
    assert any(x2.label in note and "not evaluated" in note for note in result.notes)
    table = markdown_table(result.rows, "skimage:camera.png", result.sentences["skimage:camera.png"])
    assert "MS-SSIM" in table and PROTOCOL in table

    # a gray-only denoiser on a set with colour photos: one line, before anything runs
    code, err = run(capsys, "--ckpt", ckpts["dncnn_gray"], "--sets", "skimage:val", "--out", tmp_path / "out",
                    "--no_progress", tool="benchmark")
    assert code == 2 and len(err.splitlines()) == 1 and "gray" in err and "skimage:val" in err
    assert not (tmp_path / "out").exists()


def test_gray_image_is_its_own_y():
    """A one-channel HR is measured as Y directly, not as R=G=B, whose 16..235 Y shrinks every error by 219/255."""
    hr = quantize(torch.rand(1, 1, 48, 48, generator=torch.Generator().manual_seed(0)))
    sr = lambda image: evaluate(BenchmarkSet("set", [("x.png", {"target": image})]), BicubicSR(), "sr", 2,  # noqa: E731
                                [baseline_for("sr")], extra=False)[0]
    gray, colour = sr(hr), sr(hr.expand(1, 3, 48, 48))
    assert colour["psnr"] - gray["psnr"] == pytest.approx(20 * math.log10(255 / 219), abs=1e-3)
