"""One path for every method: the benchmark's rows for a checkpoint equal the test loop's rows for the same images
and recipe (same pairs, same restorer, same protocol); a classical method is scored by the same protocol code; a
net on the upsampled image is benchmarked at every scale it trained on; SR with a named kernel and deblurring
run through the same benchmark."""
from __future__ import annotations

import lightning as L
import pytest
import torch

from datamodules.recipes import AWGN, BicubicSR, ClassicalSR, MotionBlur
from datamodules.restoration import DeblurDataModule, DenoiseDataModule, SRDataModule
from lightning_modules.classical import baseline_for
from lightning_modules.classical.filters import GaussianFilter
from lightning_modules.protocol import Protocol
from restorelab.benchmark import main, run_benchmark
from restorelab.checkpointing import load_scheme
from restorelab.predict import load_restorer
from tests.test_predict import make_checkpoint

SETS = ["skimage:val"]


def variant(folder, kind: str, name: str, hyper: dict | None = None, data: dict | None = None):
    """A random-weight checkpoint of ``kind`` with some recorded hyper-parameters changed."""
    path = make_checkpoint(folder, kind)
    ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"].update(hyper or {})
    ckpt["datamodule_hyper_parameters"].update(data or {})
    torch.save(ckpt, folder / f"{name}.ckpt")
    return folder / f"{name}.ckpt"


def loop_rows(path, data) -> dict[str, dict]:
    module = load_scheme(path)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.test(module, datamodule=data, verbose=False)
    return {r["image"]: r for r in module.test_rows}


def benchmark_rows(rows, method: str) -> dict[str, dict]:
    return {r["image"]: r for r in rows if r["method"] == method}


# The same pair bytes, the same net, the same tiling plan and the same protocol code give the same float; the
# tolerance only allows for summation order inside torchmetrics between a batched and a one-image call.
SAME = 1e-6

CASES = {
    "bicubic_x3": ("srcnn_y_x3", {}, BicubicSR(), 3, "y", "sr"),
    "gd_2.0_x2": ("srcnn_y_x3", {"scale": 2}, ClassicalSR(kernel="gd_2.0"), 2, "y", "sr"),
    "awgn_25": ("dncnn_gray", {}, AWGN(sigma=25.0), 1, "gray", "denoise"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_benchmark_rows_equal_the_test_loop_rows(case, tmp_path):
    kind, changes, recipe, scale, channels, task = CASES[case]
    recipe_path = f"datamodules.recipes.{type(recipe).__name__}"
    path = variant(tmp_path, kind, case, hyper=changes,
                   data={**changes, "recipe": {"class_path": recipe_path, "init_args": {}}})
    sets = ["skimage:camera.png"] if channels == "gray" else SETS  # a gray denoiser takes gray photos only
    data_class = SRDataModule if task == "sr" else DenoiseDataModule
    data = data_class(recipe=recipe, scale=scale, val=sets, channels=channels, patch_size=12 * scale)
    loop = loop_rows(path, data)

    restorer = load_restorer(path)
    result = run_benchmark([restorer], sets, task, scales=[scale], sigmas=[25], extra_metrics=False,
                           progress=False, recipe=recipe)
    bench = benchmark_rows(result.rows, restorer.label)
    base = benchmark_rows(result.rows, baseline_for(task).label)
    assert sorted(bench) == sorted(loop) and len(loop) == len(sets) * (3 if sets == SETS else 1)
    for image, row in loop.items():
        assert bench[image]["psnr"] == pytest.approx(row["model_psnr"], abs=SAME), image
        assert bench[image]["ssim"] == pytest.approx(row["model_ssim"], abs=SAME), image
        # Bicubic runs in the image's own colours in the benchmark (its RGB rounded to 8 bit before Y, as a saved
        # file), in the training colours (Y) in a "y" test loop: one 8-bit rounding apart, a few thousandths of a dB.
        # The noisy input: the benchmark measures it unrounded, as the nets receive it; the test loop as an output.
        if task == "sr":
            assert base[image]["psnr"] == pytest.approx(row["baseline_psnr"], abs=0.02), image


def test_a_classical_method_and_a_checkpoint_are_scored_by_the_same_protocol(tmp_path, monkeypatch):
    path = make_checkpoint(tmp_path, "dncnn_gray")
    scored = []
    original = Protocol.score

    def spy(self, pred, target):
        scored.append(self)
        return original(self, pred, target)

    monkeypatch.setattr(Protocol, "score", spy)
    methods = [load_restorer(path), GaussianFilter(1.0)]
    rows = run_benchmark(methods, ["skimage:camera.png"], "denoise", sigmas=[25], progress=False).rows
    assert [r["method"] for r in rows] == ["Noisy input", methods[0].label, "Gaussian filter σ=1"]
    assert len(scored) == 3 and len(set(scored)) == 1  # one protocol object for every method of the table
    assert rows[2]["psnr"] > rows[0]["psnr"]  # the filter removes some of σ=25's noise


def test_a_net_on_the_upsampled_image_is_benchmarked_at_every_scale_it_trained_on(tmp_path):
    path = variant(tmp_path, "srcnn_y_x3", "multi", data={"scales": [2, 3, 4]})
    restorer = load_restorer(path)
    assert restorer.scales == (2, 3, 4)
    result = run_benchmark([restorer], ["skimage:camera.png"], "sr", scales=[2, 3, 4], extra_metrics=False,
                           progress=False)
    assert {r["scale"] for r in result.rows if r["method"] == restorer.label} == {2, 3, 4}
    single = run_benchmark([load_restorer(make_checkpoint(tmp_path, "srcnn_y_x3"))], ["skimage:camera.png"], "sr",
                           scales=[2, 3], extra_metrics=False, progress=False)
    assert any("x3 only" in note for note in single.notes)


def test_sr_with_a_named_kernel_from_the_command_line(tmp_path, capsys):
    path = variant(tmp_path, "srcnn_y_x3", "x2", hyper={"scale": 2}, data={"scale": 2})
    code = main(["--ckpt", str(path), "--sets", "skimage:camera.png", "--scales", "2", "--kernel", "gd_2.0",
                 "--no_extra_metrics", "--no_progress", "--out", str(tmp_path / "out")])
    assert code == 0
    table = (tmp_path / "out" / "benchmark.md").read_text()
    assert "MZSR g^d_2.0" in table and "| Bicubic |" in table
    # the LR of g^d_2.0 (blur σ=2, direct ↓2) is blurrier than bicubic's: the bicubic row falls
    bicubic = run_benchmark([], ["skimage:camera.png"], "sr", scales=[2], extra_metrics=False, progress=False).rows
    blurred = run_benchmark([], ["skimage:camera.png"], "sr", scales=[2], extra_metrics=False, progress=False,
                            kernel="gd_2.0").rows
    assert blurred[0]["psnr"] < bicubic[0]["psnr"] - 1


def test_a_deblurring_checkpoint_on_synthetic_blur(tmp_path):
    path = variant(tmp_path, "srresnet_rgb_x2", "deblur", hyper={"scale": 1, "metric_space": "rgb"}, data={
        "scale": 1, "channels": "rgb", "recipe": {"class_path": "datamodules.recipes.MotionBlur", "init_args": {}}})
    ckpt = torch.load(path, weights_only=True)  # a scale-1 RGB net: DnCNN's layers with 3 channels
    ckpt["hyper_parameters"]["net"] = {"class_path": "lightning_modules.nets.dncnn.DnCNN",
                                       "init_args": {"channels": 3, "depth": 3, "features": 8}}
    from lightning_modules.nets.dncnn import DnCNN

    torch.manual_seed(0)
    ckpt["state_dict"] = {f"net.{k}": v for k, v in DnCNN(channels=3, depth=3, features=8).state_dict().items()}
    torch.save(ckpt, path)
    restorer = load_restorer(path)
    assert restorer.task == "deblur"
    result = run_benchmark([restorer], SETS, progress=False)  # the task comes from the checkpoint's recipe
    assert {r["method"] for r in result.rows} == {"Blurred input", restorer.label}
    loop = loop_rows(path, DeblurDataModule(recipe=MotionBlur(), val=SETS, channels="rgb"))
    bench = benchmark_rows(result.rows, restorer.label)
    for image, row in loop.items():
        assert bench[image]["psnr"] == pytest.approx(row["model_psnr"], abs=SAME), image


def test_deblurring_on_real_gopro_pairs_from_the_command_line(tmp_path, capsys):
    from tests.test_datamodules import u8, write_png

    split = tmp_path / "GOPRO_Large" / "test"
    for sequence in ("GOPR0384_11_00", "GOPR0385_11_01"):
        for kind in ("blur_gamma", "sharp"):
            (split / sequence / kind).mkdir(parents=True)
        rng = torch.Generator().manual_seed(len(sequence))
        sharp = u8((torch.rand(40, 36, 3, generator=rng) * 255).numpy())
        write_png(split / sequence / "sharp" / "000001.png", sharp)
        write_png(split / sequence / "blur_gamma" / "000001.png", 255 - sharp)  # a "blur" no method undoes
    code = main(["--task", "deblur", "--blur", "gopro", "--sets", str(split), "--no_progress",
                 "--out", str(tmp_path / "out")])
    assert code == 0
    table = (tmp_path / "out" / "benchmark.md").read_text()
    assert "**test** (2 images)" in table and "real GoPro_Large pairs (blur_gamma)" in table
    assert "| Blurred input |" in table
