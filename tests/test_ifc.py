import math
from pathlib import Path

import pytest
import torch

import torch.nn.functional as F
from skimage import data

from datamodules.errors import AnticipatedError
from datamodules.image_ops import rgb_to_y
from datamodules.sources import read_image
from lightning_modules.ifc import IFC, ifc
from restorelab.benchmark import run_benchmark, set_means
from tests.conftest import benchmark_root

SET5 = (benchmark_root() or Path("absent")) / "Set5"
needs_set5 = pytest.mark.skipif(not SET5.is_dir(), reason="Set5 not found: set RESTORELAB_DATA or put the "
                                                           "benchmark sets in ../shared/datasets")


def camera(h: int = 256, w: int = 256) -> torch.Tensor:
    """A crop of skimage's cameraman, 1×1×h×w in [0, 1], float64 so that pinned values are exact."""
    return torch.from_numpy(data.camera()[100:100 + h, 90:90 + w]).double()[None, None] / 255


def set5_y(name: str) -> torch.Tensor:
    return rgb_to_y(read_image(SET5 / name)[None].double())


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = math.ceil(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-t**2 / (2 * sigma**2))
    k = k / k.sum()
    x = F.pad(x, (radius,) * 4, mode="reflect")
    return F.conv2d(F.conv2d(x, k.view(1, 1, -1, 1)), k.view(1, 1, 1, -1))


def add_noise(x: torch.Tensor, sigma_255: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return x + sigma_255 / 255 * torch.randn(x.shape, generator=g, dtype=x.dtype)


def test_pinned_values_of_the_matlab_reference():
    # Values from a line-by-line numpy port of ifcvec.m on matlabPyrTools' own C corrDn (pyrtools 1.1.1),
    # fed these very arrays; this implementation agreed with it to 1e-13.
    x = camera()
    values = ifc(torch.cat([x, x]), torch.cat([gaussian_blur(x, 1.5), add_noise(x, 10)]))
    assert values.tolist() == pytest.approx([3.1109853141787, 3.2285738222007], rel=1e-9)


@pytest.mark.parametrize("degrade", [lambda x: gaussian_blur(x, 1.0), lambda x: add_noise(x, 5),
                                     lambda x: 0.9 * x + 0.05, lambda x: torch.round(x * 31) / 31])
def test_the_reference_itself_scores_highest(degrade):
    x = camera()
    assert ifc(x, x).item() > ifc(x, degrade(x)).item() > 0


def photos() -> list[torch.Tensor]:
    return [camera()] + ([set5_y("butterfly.png"), set5_y("woman.png")] if SET5.is_dir() else [])


@pytest.mark.parametrize("index", range(3))
def test_more_blur_strictly_lowers_ifc(index):
    images = photos()
    if index >= len(images):
        pytest.skip("Set5 not found: set RESTORELAB_DATA or put the benchmark sets in ../shared/datasets")
    x = images[index]
    values = [ifc(x, gaussian_blur(x, sigma)).item() for sigma in (0.6, 1.0, 1.6, 2.5)]
    assert all(a > b for a, b in zip(values, values[1:])), values


@pytest.mark.parametrize("index", range(3))
def test_more_noise_strictly_lowers_ifc(index):
    images = photos()
    if index >= len(images):
        pytest.skip("Set5 not found: set RESTORELAB_DATA or put the benchmark sets in ../shared/datasets")
    x = images[index]
    values = [ifc(x, add_noise(x, sigma)).item() for sigma in (2, 5, 10, 20, 40)]
    assert all(a > b for a, b in zip(values, values[1:])), values


def degraded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    x = camera(97, 131)
    distorted = torch.cat([gaussian_blur(x, 0.8), add_noise(x, 8), gaussian_blur(x, 2.0), add_noise(x, 25, seed=1)])
    return x.expand(4, -1, -1, -1), distorted


def test_batch_equals_images_one_at_a_time_on_odd_sizes():
    reference, distorted = degraded_batch()
    batched = ifc(reference, distorted)
    single = torch.cat([ifc(r[None], d[None]) for r, d in zip(reference, distorted)])
    assert torch.isfinite(batched).all() and (batched > 0).all()
    assert torch.allclose(batched, single, rtol=1e-12)
    assert len(set(batched.tolist())) == 4  # four different distortions give four different scores


def test_metric_is_the_mean_over_images_and_ignores_their_order():
    reference, distorted = degraded_batch()
    per_image = ifc(reference, distorted)

    metric = IFC()
    metric.update(distorted.float(), reference.float())
    in_one_batch = metric.compute()

    metric.reset()
    order = torch.tensor([2, 0, 3, 1])
    metric.update(distorted[order[:1]].float(), reference[order[:1]].float())
    metric.update(distorted[order[1:]].float(), reference[order[1:]].float())
    shuffled_in_two_batches = metric.compute()

    assert in_one_batch.item() == pytest.approx(per_image.mean().item(), rel=1e-5)
    assert shuffled_in_two_batches.item() == pytest.approx(in_one_batch.item(), rel=1e-12)


def test_unit_range_and_8bit_range_agree():
    x, y = camera(72, 80), gaussian_blur(camera(72, 80), 1.2)
    assert ifc(x, y).item() == pytest.approx(ifc(x * 255, y * 255, data_range=255).item(), rel=1e-12)


def test_flat_reference_gives_zero_and_tiny_images_are_refused():
    flat = torch.full((1, 1, 72, 72), 0.5, dtype=torch.float64)
    assert ifc(flat, add_noise(flat, 10)).item() == 0.0
    # the authors' 4-level pyramid cannot take a side under 72 px: one line, naming the size
    with pytest.raises(AnticipatedError, match=r"at least 72x72 pixels .* got 80x71"):
        ifc(camera(71, 80), camera(71, 80))
    ifc(camera(72, 72), gaussian_blur(camera(72, 72), 1.0))
    with pytest.raises(ValueError, match="N×1×H×W"):
        ifc(camera(), camera(200, 256))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    reference, distorted = degraded_batch()
    assert torch.allclose(ifc(reference.cuda(), distorted.cuda()).cpu(), ifc(reference, distorted), rtol=1e-9)


@needs_set5
def test_bicubic_set5_matches_the_published_scale():
    # SelfExSR's README (same ifcvec.m, MATLAB uint8 Y) reports bicubic Set5 IFC 5.72 / 3.45 / 2.28; this
    # protocol (unrounded Y, as the project's PSNR/SSIM) gives 5.994 / 3.531 / 2.316.
    rows = run_benchmark([], [str(SET5)], "sr", scales=(2, 3, 4), progress=False).rows  # the benchmark's own IFC
    means = {s: set_means(rows)[("Set5", "Bicubic", s)]["ifc"] for s in (2, 3, 4)}
    assert means[2] == pytest.approx(5.9942, abs=2e-3)
    assert means[3] == pytest.approx(3.5311, abs=2e-3)
    assert means[4] == pytest.approx(2.3155, abs=2e-3)
