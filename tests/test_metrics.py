"""Our torchmetrics path equals scikit-image's reference implementations on real photos."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from datamodules.image_ops import bicubic_downsample, bicubic_upsample, mod_crop, quantize
from datamodules.sources import read_image, resolve_source
from lightning_modules.protocol import ImageQuality, evaluation_view


@pytest.fixture(scope="module")
def pairs():
    """(restored, target) views of real photos: bicubic x3 on the bundled held-out photos."""
    out = []
    for path in resolve_source("skimage:val"):
        hr = mod_crop(read_image(path)[None], 3)
        sr = bicubic_upsample(quantize(bicubic_downsample(hr, 3)), 3)
        out.append((evaluation_view(sr, 3), evaluation_view(hr, 3)))
    return out


def test_psnr_ssim_match_scikit_image(pairs):
    q = ImageQuality(ms_ssim=True)
    ref_psnr, ref_ssim = [], []
    for sr, hr in pairs:
        a, b = hr[0, 0].double().numpy(), sr[0, 0].double().numpy()
        p = peak_signal_noise_ratio(a, b, data_range=1.0)
        s = structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        single = ImageQuality(ms_ssim=False)
        single.update(sr, hr)
        one = single.compute()
        assert abs(float(one["psnr"]) - p) <= 1e-3
        assert abs(float(one["ssim"]) - s) <= 1e-3
        ref_psnr.append(p)
        ref_ssim.append(s)
        q.update(sr, hr)
    out = q.compute()
    # the mean of per-image values, not the PSNR of the pooled error
    assert abs(float(out["psnr"]) - np.mean(ref_psnr)) <= 1e-3
    assert abs(float(out["ssim"]) - np.mean(ref_ssim)) <= 1e-3
    assert 0.5 < float(out["ms_ssim"]) <= 1.0


def test_evaluation_view_shaves_rounds_and_converts():
    x = torch.rand(1, 3, 20, 24)
    v = evaluation_view(x, 4)
    assert v.shape == (1, 1, 12, 16)
    assert torch.equal(evaluation_view(x, 0, y_channel=False), quantize(x))


def test_identical_images_give_infinite_psnr_and_unit_ssim():
    x = quantize(torch.rand(1, 1, 32, 32))
    q = ImageQuality(ms_ssim=False)
    q.update(x, x)
    out = q.compute()
    assert torch.isinf(out["psnr"]) and abs(float(out["ssim"]) - 1) < 1e-6
