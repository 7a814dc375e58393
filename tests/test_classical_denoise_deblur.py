"""The classical denoisers and deconvolutions of ``configs/methods``: each, built by name and called through the
restorer interface on a recipe's pair, gives its library's direct call on the same array (tolerance 1e-6; the
boundary treatment of the deconvolutions written out here another way, not borrowed from the module); a pair without σ or
kernel, or a bad parameter, is one line naming it; BM3D equals ``bm3d.bm3d`` on Set12; every method beats its
degraded input through ``evaluate``."""
from __future__ import annotations

import bm3d
import kornia.filters as K
import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data, restoration

from datamodules.errors import AnticipatedError
from datamodules.recipes import AWGN, KernelBlur, evaluation_pair
from datamodules.sources import read_image
from lightning_modules.classical import baseline_for
from restorelab.evaluation import BenchmarkSet, evaluate
from restorelab.methods import read_method

TOL = 1e-6  # the float32 round trip of a float64 result (BM3D runs single-threaded, so it is exact too)
FILTERS = ("gaussian", "median", "bilateral", "guided")
DENOISERS = FILTERS + ("nl_means", "bm3d")
DECONVOLUTIONS = ("wiener", "unsupervised_wiener", "richardson_lucy")


def bm3d_profile():
    """The package's "np" profile, single-threaded as the restorer runs it."""
    profile = bm3d.BM3DProfile()
    profile.num_threads = 1
    return profile


def build(name: str, **params):
    config, fixed = read_method(name)
    return config.build(**fixed, **params)


def crop(colour: bool, size: int = 48, at: tuple[int, int] = (100, 100)) -> torch.Tensor:
    """1×C×size×size in [0, 1] from skimage's camera (gray) or astronaut (colour)."""
    image = data.astronaut() if colour else data.camera()[..., None]
    y, x = at
    return torch.from_numpy(image[y:y + size, x:x + size].transpose(2, 0, 1).copy())[None].float() / 255


def noisy_pair(clean: torch.Tensor, sigma: float = 25.0, name: str = "crop") -> dict:
    return evaluation_pair(AWGN(sigma=float(sigma)), {"target": clean, "name": [name]}, 1, None)


def blurred_pair(clean: torch.Tensor, name: str = "crop", size: int = 15) -> dict:
    pair = evaluation_pair(KernelBlur(kernel_size=size), {"target": clean, "name": [name]}, 1, None)
    assert pair["kernel"].shape == (1, size, size)
    return pair


def numpy_image(pair: dict) -> np.ndarray:
    """The pair's degraded image as the libraries take it: H×W or H×W×C float64."""
    array = pair["degraded"][0].double().numpy()
    return array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)


def as_chw(array: np.ndarray) -> np.ndarray:
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def assert_same(out: torch.Tensor, expected: np.ndarray, like: torch.Tensor):
    assert out.shape == like.shape and out.dtype == like.dtype
    np.testing.assert_allclose(out[0].double().numpy(), as_chw(expected), rtol=0, atol=TOL)


@pytest.mark.parametrize("colour", [False, True], ids=["gray", "rgb"])
def test_filters_are_the_kornia_calls(colour):
    pair = noisy_pair(crop(colour))
    x = pair["degraded"]
    expected = {
        "gaussian": K.gaussian_blur2d(x, (7, 7), (1.0, 1.0), border_type="reflect"),
        "median": K.median_blur(x, 3, border_type="reflect"),
        "bilateral": K.bilateral_blur(x, 7, 0.3, (1.5, 1.5), border_type="reflect"),
        "guided": K.guided_blur(x, x, 3, 0.1, border_type="reflect"),
    }
    for name in FILTERS:
        restorer = build(name)
        assert restorer.task == "denoise" and restorer.channels == "any"
        out = restorer(pair)
        assert out.shape == x.shape
        torch.testing.assert_close(out, expected[name], rtol=0, atol=TOL, msg=name)
    torch.testing.assert_close(build("median", kernel_size=5)(pair), K.median_blur(x, 5), rtol=0, atol=TOL)
    torch.testing.assert_close(build("bilateral", kernel_size=3)(pair),
                               K.bilateral_blur(x, 3, 0.3, (1.5, 1.5)), rtol=0, atol=TOL)


@pytest.mark.parametrize("colour", [False, True], ids=["gray", "rgb"])
def test_nl_means_is_the_skimage_call_with_the_pairs_sigma(colour):
    pair = noisy_pair(crop(colour), sigma=15)
    s = 15 / 255
    expected = restoration.denoise_nl_means(numpy_image(pair), patch_size=5, patch_distance=6, h=0.6 * s,
                                            fast_mode=True, sigma=s, channel_axis=-1 if colour else None)
    assert_same(build("nl_means")(pair), expected, pair["degraded"])
    slow = restoration.denoise_nl_means(numpy_image(pair), patch_size=3, patch_distance=2, h=1.1 * s,
                                        fast_mode=False, sigma=s, channel_axis=-1 if colour else None)
    assert_same(build("nl_means", h_factor=1.1, patch_size=3, patch_distance=2, fast_mode=False)(pair), slow,
                pair["degraded"])


@pytest.mark.parametrize("colour", [False, True], ids=["gray → bm3d", "rgb → bm3d_rgb"])
def test_bm3d_is_the_packages_call_with_the_pairs_sigma(colour):
    pair = noisy_pair(crop(colour, size=40), sigma=25)
    call = bm3d.bm3d_rgb if colour else bm3d.bm3d
    assert_same(build("bm3d")(pair), call(numpy_image(pair), 25 / 255, bm3d_profile()), pair["degraded"])


def test_bm3d_on_set12_is_bm3d_called_directly(datasets_root):
    """Two Set12 images at σ = 25 (96×96 crops, the pairs of the benchmark's recipe), and better than the input."""
    restorer = build("bm3d")
    for name in ("01.png", "05.png"):
        path = datasets_root / "Set12" / name
        if not path.is_file():
            pytest.skip(f"{path} not found: set RESTORELAB_DATA or put the benchmark sets in ../shared/datasets")
        clean = read_image(path)[None][..., 64:160, 64:160]
        assert clean.shape == (1, 1, 96, 96)
        pair = noisy_pair(clean, 25, name)
        out = restorer(pair)
        assert_same(out, bm3d.bm3d(numpy_image(pair), 25 / 255, bm3d_profile()), pair["degraded"])
        assert ((out - clean) ** 2).mean() < 0.5 * ((pair["degraded"] - clean) ** 2).mean(), name


def edgetaper(image: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """MATLAB's edgetaper written out another way (linear autocorrelations, scipy's wrap-around convolution)."""
    k = psf.shape[0]
    weights = []
    for axis, n in enumerate(image.shape):
        projection = psf.sum(axis=1 - axis)
        autocorrelation = np.correlate(projection, projection, "full")  # 2K-1, peak in the middle
        beta = np.zeros(n - 1)
        beta[:k], beta[n - k:] = autocorrelation[k - 1:], autocorrelation[:k - 1]
        beta = np.append(beta, beta[0]) / autocorrelation.max()
        weights.append(1 - beta)
    alpha = np.outer(*weights)
    return alpha * image + (1 - alpha) * ndimage.convolve(image, psf, mode="wrap")


@pytest.mark.parametrize("colour", [False, True], ids=["gray", "rgb"])
def test_deconvolutions_are_the_skimage_calls_with_the_pairs_kernel(colour):
    pair = blurred_pair(crop(colour))
    psf = pair["kernel"][0].double().numpy()
    k = psf.shape[0]
    channels = as_chw(numpy_image(pair))
    # the Wiener filters see the image edge-tapered; Richardson–Lucy the image clipped and mirrored by K on every
    # side, the frame cropped after
    tapered = [edgetaper(c, psf) for c in channels]
    padded = [np.pad(np.clip(c, 0, 1), k, mode="reflect") for c in channels]
    expected = {
        "wiener": [restoration.wiener(t, psf, 0.03) for t in tapered],
        "unsupervised_wiener": [restoration.unsupervised_wiener(t, psf, rng=np.random.default_rng(0))[0]
                                for t in tapered],
        "richardson_lucy": [restoration.richardson_lucy(p, psf, num_iter=20)[k:-k, k:-k] for p in padded],
    }
    for name in DECONVOLUTIONS:
        restorer = build(name)
        assert restorer.task == "deblur" and restorer.channels == "any"
        out = restorer(pair)
        assert out.shape == pair["degraded"].shape
        np.testing.assert_allclose(out[0].double().numpy(), np.stack(expected[name]), rtol=0, atol=TOL, err_msg=name)
    assert torch.equal(build("unsupervised_wiener")(pair), build("unsupervised_wiener")(pair))  # seeded
    plain = [restoration.wiener(c, psf, 0.1) for c in channels]
    np.testing.assert_allclose(build("wiener", balance=0.1, boundary="none")(pair)[0].double().numpy(),
                               np.stack(plain), rtol=0, atol=TOL)


@pytest.mark.parametrize("name", ["bm3d", "nl_means"])
def test_denoiser_without_sigma_is_one_line(name):
    pair = noisy_pair(crop(False, size=32))
    for bad in ({k: v for k, v in pair.items() if k != "sigma"}, pair | {"sigma": torch.zeros(1)}):
        with pytest.raises(AnticipatedError, match="needs the noise σ of the degradation, and the pair of x.png") as e:
            build(name).restore(bad, what="x.png")
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", DECONVOLUTIONS)
def test_deconvolution_without_kernel_is_one_line(name):
    pair = {k: v for k, v in blurred_pair(crop(False, size=32)).items() if k != "kernel"}
    with pytest.raises(AnticipatedError, match="needs the blur kernel of the degradation") as e:
        build(name)(pair)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("spec, message", [
    ("median:kernel_size=4", "MedianFilter: kernel_size=4 must be a positive odd integer"),
    ("bilateral:sigma_color=0", "BilateralFilter: sigma_color=0 must be positive"),
    ("guided:radius=0", "GuidedFilter: radius=0 must be a positive integer"),
    ("gaussian:sigma=-1", "GaussianFilter: sigma=-1 must be positive"),
    ("nl_means:h_factor=0", "NonLocalMeans: h_factor=0 must be positive"),
    ("bm3d:profile=fast", "BM3D: profile='fast' must be one of np, refilter"),
    ("wiener:balance=-0.1", "Wiener: balance=-0.1 must be positive"),
    ("richardson_lucy:num_iter=2.5", "RichardsonLucy: num_iter=2.5 must be a positive integer"),
    ("unsupervised_wiener:seed=-1", "UnsupervisedWiener: seed=-1 must be a non-negative integer"),
    ("wiener:boundary=wrap", "Wiener: boundary='wrap' must be one of taper, reflect, none"),
])
def test_bad_parameter_is_one_line(spec, message):
    with pytest.raises(AnticipatedError, match=message.replace("(", r"\(")):
        build(spec)


def test_every_config_has_its_label_and_a_modest_grid():
    labels = {"median": "Median filter", "bilateral": "Bilateral filter", "guided": "Guided filter",
              "nl_means": "Non-local means", "bm3d": "BM3D", "wiener": "Wiener",
              "unsupervised_wiener": "Unsupervised Wiener", "richardson_lucy": "Richardson–Lucy"}
    for name, label in labels.items():
        config, _ = read_method(name)
        assert config.label == label and build(name).label == label
        assert len(config.grid_points()) <= 9, name
        for point in config.grid_points():
            config.build(**point)  # every grid point is a valid parameter set
    assert read_method("bm3d")[0].grid_points() == [{}]


def test_every_denoiser_beats_the_noisy_input():
    bench = BenchmarkSet("crops", [("camera", {"target": crop(False, 64, (150, 200))}),
                                   ("astronaut", {"target": crop(True, 48, (30, 180))})])
    methods = [baseline_for("denoise")] + [build(n) for n in DENOISERS]
    rows = evaluate(bench, AWGN(sigma=25.0), "denoise", 25, methods, extra=False)
    for image in ("camera", "astronaut"):
        psnr = {r["method"]: r["psnr"] for r in rows if r["image"] == image}
        noisy = psnr.pop("Noisy input")
        assert set(psnr) == {build(n).label for n in DENOISERS}
        assert all(p > noisy + 1 for p in psnr.values()), (image, noisy, psnr)


def test_every_deconvolution_beats_the_blurred_input():
    bench = BenchmarkSet("crops", [("camera", {"target": crop(False, 96, (150, 200))})])
    methods = [baseline_for("deblur")] + [build(n) for n in DECONVOLUTIONS]
    rows = evaluate(bench, KernelBlur(kernel_size=15), "deblur", 1, methods, extra=False)
    psnr = {r["method"]: r["psnr"] for r in rows}
    blurred = psnr.pop("Blurred input")
    assert len(psnr) == 3 and all(p > blurred + 1 for p in psnr.values()), (blurred, psnr)
