"""MATLAB-exact bicubic: the bicubic baseline reproduces reference_bicubic.json (BasicSR's port of MATLAB
imresize + its PSNR/SSIM on Y), image by image."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from datamodules.image_ops import (
    bicubic_downsample,
    bicubic_upsample,
    imresize,
    mod_crop,
    quantize,
    rgb_to_y,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)
from datamodules.sources import read_image


def bicubic_baseline(hr: torch.Tensor, s: int, gray_as_rgb: bool) -> tuple[float, float]:
    if gray_as_rgb and hr.shape[0] == 1:  # BasicSR reads gray files as three equal channels
        hr = hr.expand(3, -1, -1)
    hr = mod_crop(hr[None].double(), s)
    sr = quantize(bicubic_upsample(quantize(bicubic_downsample(hr, s)), s))
    y_sr = rgb_to_y(sr)[0, 0, s:-s, s:-s].numpy() * 255
    y_hr = rgb_to_y(hr)[0, 0, s:-s, s:-s].numpy() * 255
    psnr = 10 * math.log10(255**2 / np.mean((y_sr - y_hr) ** 2))
    ssim = structural_similarity(y_hr, y_sr, data_range=255, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)
    return psnr, ssim


@pytest.fixture(scope="module")
def reference(datasets_root):
    return json.loads((datasets_root / "reference_bicubic.json").read_text())["rows"]


@pytest.mark.parametrize("set_name", ["Set5", "Set14", "BSD100"])
def test_bicubic_matches_reference_per_image(reference, datasets_root, set_name):
    rows = [r for r in reference if r["set"] == set_name and r["image"] != "MEAN"]
    assert rows
    for r in rows:
        hr = read_image(datasets_root / set_name / r["image"])
        psnr, ssim = bicubic_baseline(hr, r["scale"], gray_as_rgb=True)
        assert abs(psnr - r["psnr_y"]) <= 0.01, (r, psnr)
        if set_name != "BSD100":  # SSIM of 300 BSD100 images would dominate the test's time
            assert abs(ssim - r["ssim_y"]) <= 2e-4, (r, ssim)


def test_set5_means(reference, datasets_root):
    expected = {2: 33.6818, 3: 30.4047, 4: 28.4314}
    for s, mean in expected.items():
        values = [bicubic_baseline(read_image(p), s, True)[0] for p in sorted((datasets_root / "Set5").glob("*.png"))]
        assert abs(np.mean(values) - mean) <= 0.005


def test_set14_gray_used_directly_gives_published_numbers(datasets_root):
    """Our convention: a gray file is its own Y (MATLAB scripts). Published Set14: 30.24/27.55/26.00."""
    files = sorted((datasets_root / "Set14").glob("*.png"))
    for s, mean in {2: 30.2357, 3: 27.5397, 4: 25.9973}.items():
        values = [bicubic_baseline(read_image(p), s, gray_as_rgb=False)[0] for p in files]
        assert abs(np.mean(values) - mean) <= 0.01


def test_float32_batched_equals_float64_per_image():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 48, 60, generator=g, dtype=torch.float64)
    for s in (2, 3, 4):
        batched = bicubic_downsample(x.float(), s)
        for i in range(3):
            assert torch.allclose(batched[i], bicubic_downsample(x[i : i + 1], s)[0].float(), atol=1e-5)
        assert bicubic_upsample(batched, s).shape == x.shape


def test_imresize_properties():
    # a constant image stays constant (weights sum to one, mirror padding)
    c = torch.full((1, 1, 30, 45), 0.3)
    assert torch.allclose(imresize(c, 1 / 3), torch.full((1, 1, 10, 15), 0.3), atol=1e-6)
    assert torch.allclose(imresize(c, 2.0), torch.full((1, 1, 60, 90), 0.3), atol=1e-6)
    # MATLAB output size is ceil(in * scale)
    assert imresize(torch.rand(1, 1, 31, 17), 0.5).shape[-2:] == (16, 9)
    # Keys' cubic reproduces straight lines exactly away from the (mirrored) borders
    ramp = torch.arange(40, dtype=torch.float64).view(1, 1, 1, 40).expand(1, 1, 4, 40)
    up = imresize(ramp, size=(4, 80))[0, 0, 0, 8:-8]
    expected = (torch.arange(80, dtype=torch.float64) + 0.5) / 2 - 0.5  # pixel-centre mapping
    assert torch.allclose(up, expected[8:-8], atol=1e-9)
    with pytest.raises(ValueError, match="not a multiple of scale 3"):
        bicubic_downsample(torch.rand(1, 1, 10, 9), 3)


def test_colour_round_trip():
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, atol=1e-5)
    assert torch.allclose(rgb_to_ycbcr(x)[:, :1], rgb_to_y(x), atol=1e-6)
    gray = torch.rand(1, 1, 8, 8)
    assert rgb_to_y(gray) is gray
