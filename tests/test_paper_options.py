"""The paper-script options of the protocol: off by default, each changing exactly what it says, and stated in the
table header when on."""
import numpy as np
import pytest
import torch

from datamodules.errors import AnticipatedError
from datamodules.image_ops import bicubic_downsample, rgb_to_y
from datamodules.recipes import AWGN, BicubicSR, evaluation_pair
from datamodules.sources import read_image, resolve_source
from lightning_modules.protocol import Protocol
from restorelab.benchmark import main


def photo() -> torch.Tensor:
    return read_image(resolve_source("skimage:val")[0])[None][..., :96, :96]


def test_round_y_rounds_the_luma_as_matlab_rgb2ycbcr_on_uint8():
    x = photo()
    exact, rounded = Protocol("y").view(x), Protocol("y", round_y=True).view(x)
    # a tolerance far below one 8-bit step (1/255): the rounding is checked, not the float's last bits
    assert torch.allclose(rounded, (rgb_to_y(x) * 255).round() / 255, rtol=0, atol=1e-6)
    assert 0 < (exact - rounded).abs().max() <= 0.5 / 255 + 1e-7
    assert "Y rounded to 8 bit" in Protocol("y", round_y=True).sentence()
    assert "Y rounded" not in Protocol("y").sentence()


def test_lr_unrounded_keeps_matlab_bicubic_in_float():
    x = photo()
    batch = {"target": x, "name": ["a.png"]}
    rounded = evaluation_pair(BicubicSR(), batch, 3, None)["degraded"]
    kept = evaluation_pair(BicubicSR(round_lr=False), batch, 3, None)["degraded"]
    assert torch.allclose(kept, bicubic_downsample(x, 3), atol=1e-7)
    assert torch.allclose(rounded, (kept * 255).round().clamp(0, 255) / 255, rtol=0, atol=1e-6)
    assert "NOT rounded" in BicubicSR(round_lr=False).describe()


def test_numpy_noise_is_the_dncnn_test_scripts_noise():
    clean = read_image(resolve_source("skimage:val")[0])[None]
    gray = clean.mean(1, keepdim=True)[..., :50, :60]
    pair = evaluation_pair(AWGN(test_noise="numpy").at_sigma(25), {"target": gray, "name": ["x.png"]}, 1, None)
    x = gray[0, 0].numpy().astype(np.float32)
    np.random.seed(seed=0)  # cszn/DnCNN main_test.py, image by image
    y = (x + np.random.normal(0, 25 / 255.0, x.shape)).astype(np.float32)
    assert np.array_equal(pair["degraded"][0, 0].numpy(), y)
    colour = evaluation_pair(AWGN(test_noise="numpy").at_sigma(15), {"target": clean[..., :20, :30], "name": ["c"]}, 1, None)
    hwc = clean[0, :, :20, :30].permute(1, 2, 0).numpy().astype(np.float32)
    expected = (hwc + np.random.RandomState(0).normal(0, 15 / 255.0, hwc.shape)).astype(np.float32)
    assert np.array_equal(colour["degraded"][0].permute(1, 2, 0).numpy(), expected)
    with pytest.raises(AnticipatedError, match="test_noise"):
        AWGN(test_noise="matlab")


def test_options_are_stated_in_the_header_and_refused_for_other_tasks(tmp_path, capsys):
    main(["--sets", "skimage:val", "--scales", "3", "--lr_unrounded", "--round_y", "--no_extra_metrics",
          "--no_progress", "--out", str(tmp_path)])
    header = (tmp_path / "benchmark.md").read_text().splitlines()[0]
    assert "NOT rounded to 8 bit" in header and "Y rounded to 8 bit" in header
    main(["--task", "denoise", "--sets", "skimage:val", "--sigmas", "25", "--numpy_noise", "--no_progress",
          "--out", str(tmp_path / "d")])
    assert "NumPy, seed 0 per image" in (tmp_path / "d" / "benchmark.md").read_text()
    with pytest.raises(AnticipatedError, match="--numpy_noise is for denoising"):
        main(["--sets", "skimage:val", "--numpy_noise", "--no_progress", "--out", str(tmp_path / "x")])
