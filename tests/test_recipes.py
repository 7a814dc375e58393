"""Degradation recipes (``datamodules.recipes``): for every recipe the benchmark's pair (``evaluation_pair`` on an
image read and mod-cropped by hand) is the test loop's pair; pairs say what made them (scale, sigma, kernel,
n_frames); the named MZSR test kernels are what the paper names and fix their order; bad options are one line
naming ``data.init_args.recipe.init_args.<option>``."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import skimage.data
import torch

from datamodules import image_ops as d
from datamodules.errors import AnticipatedError
from datamodules.image_ops import mod_crop, to_channels
from datamodules.recipes import (
    AWGN,
    JPEG,
    NAMED_KERNELS,
    BicubicSR,
    ClassicalSR,
    MotionBlur,
    evaluation_pair,
    image_seed,
)
from datamodules.restoration import DeblurDataModule, DenoiseDataModule, RestorationDataModule, SRDataModule
from datamodules.sources import read_image, resolve_source

SEED = 3  # not the default 0, so that the DataModule's seed visibly reaches evaluation_pair


def write_png(path: Path, hwc: np.ndarray) -> None:
    assert cv2.imwrite(str(path), hwc[..., ::-1] if hwc.ndim == 3 else hwc)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Three small photos, two colour and one gray, with sides that are not multiples of 2 or 3 (mod-crop shows)."""
    root = tmp_path_factory.mktemp("recipe_photos")
    write_png(root / "coffee.png", skimage.data.coffee()[100:161, 200:275])
    write_png(root / "chelsea.png", skimage.data.chelsea()[80:135, 150:217])
    write_png(root / "camera.png", skimage.data.camera()[100:159, 200:271])
    return root


@pytest.fixture(scope="module")
def kernel_files(tmp_path_factory) -> dict[str, Path]:
    """An anisotropic, rotated kernel (so a transposed or flipped read would show) as .npy and .mat."""
    root = tmp_path_factory.mktemp("kernels")
    k = d.gaussian_kernel(11, 2.0, 0.8, math.radians(30)).double().numpy() * 7  # a file's scale does not matter
    np.save(root / "k.npy", k)
    scipy.io.savemat(root / "k.mat", {"kernel": k})
    return {"npy": root / "k.npy", "mat": root / "k.mat", "kernel": torch.from_numpy(k / k.sum()).float()}


def loop_pairs(dm: RestorationDataModule) -> list[dict]:
    """The test loop's pairs: with no trainer attached, ``on_after_batch_transfer`` makes the fixed ones."""
    assert dm.trainer is None
    dm.setup("test")
    return [dm.on_after_batch_transfer(batch, 0) for batch in dm.test_dataloader()]


def benchmark_pairs(recipe, spec: str, scale: int, channels, seed: int = SEED) -> list[dict]:
    """What ``restorelab benchmark`` computes: each file read, mod-cropped to the scale (as ``FullImages`` does),
    then ``evaluation_pair`` on a batch of one, in the order the source lists the files."""
    pairs = []
    for path in resolve_source(spec):
        image = mod_crop(read_image(path), scale)
        pairs.append(evaluation_pair(recipe, {"target": image[None], "name": [path.name]}, scale, channels, seed))
    return pairs


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    for key in a:
        x, y = a[key], b[key]
        if torch.is_tensor(x):
            assert x.dtype == y.dtype and torch.equal(x, y), key
        elif isinstance(x, list) and x and torch.is_tensor(x[0]):
            assert len(x) == len(y) and all(torch.equal(u, v) for u, v in zip(x, y)), key
        else:
            assert x == y, key


# (DataModule, its recipe, scale, channels, val spec) per recipe kind; "folder" is the fixture above
CASES = {
    "bicubic_x2_skimage_val": (SRDataModule, lambda f: BicubicSR(), 2, "y", "skimage:val"),
    "bicubic_x3_rgb": (SRDataModule, lambda f: BicubicSR(), 3, "rgb", "folder"),
    "gd_0.2_x2": (SRDataModule, lambda f: ClassicalSR(kernel="gd_0.2"), 2, "y", "folder"),
    "gd_2.0_x2": (SRDataModule, lambda f: ClassicalSR(kernel="gd_2.0"), 2, "rgb", "folder"),
    "gd_ani_x3": (SRDataModule, lambda f: ClassicalSR(kernel="gd_ani"), 3, "y", "folder"),
    "gb_1.3_x3": (SRDataModule, lambda f: ClassicalSR(kernel="gb_1.3"), 3, "y", "folder"),
    "random_gaussian_noise_x3": (SRDataModule, lambda f: ClassicalSR(kernel="random_gaussian", kernel_size=15,
                                                                     noise_sigma=(0, 15)), 3, "y", "folder"),
    "kernel_npy_x2": (SRDataModule, lambda f: ClassicalSR(kernel="file", kernel_file=str(f["npy"])), 2, "y", "folder"),
    "kernel_mat_x2": (SRDataModule, lambda f: ClassicalSR(kernel="file", kernel_file=str(f["mat"]),
                                                          order="blur_decimate"), 2, "rgb", "folder"),
    "awgn_fixed": (DenoiseDataModule, lambda f: AWGN(sigma=25), 1, "gray", "folder"),
    "awgn_blind": (DenoiseDataModule, lambda f: AWGN(sigma=(0, 55)), 1, "rgb", "folder"),
    "awgn_blind_test_sigma_jpeg": (DenoiseDataModule, lambda f: AWGN(sigma=(0, 55), test_sigma=15,
                                                                     jpeg_quality=(30, 60)), 1, "rgb", "folder"),
    "jpeg": (DenoiseDataModule, lambda f: JPEG(jpeg_quality=(10, 30)), 1, "gray", "folder"),
    "motion_synthetic": (DeblurDataModule, lambda f: MotionBlur(source="synthetic", n_frames=(5, 9)), 1, "rgb",
                         "folder"),
}


@pytest.mark.parametrize("case", CASES)
def test_benchmark_pair_equals_the_test_loop_pair(folder, kernel_files, case):
    """For every recipe, a benchmark pair equals the test-loop pair.

    Byte-identical (torch.equal), not close: both sides are literally the same function (``evaluation_pair``) on
    the same bytes (the same file read by ``read_image``, the same mod-crop) with the same CPU generator seeded by
    ``image_seed(name, seed)``, so nothing may differ, not even in the last bit.
    """
    cls, make_recipe, scale, channels, spec = CASES[case]
    spec = str(folder) if spec == "folder" else spec
    recipe = make_recipe(kernel_files)
    extra = {"scale": scale, "patch_size": 6 * 8} if cls is SRDataModule else {}
    dm = cls(recipe=recipe, val=[spec], channels=channels, seed=SEED, **extra)
    loop = loop_pairs(dm)
    bench = benchmark_pairs(recipe, spec, scale, channels)
    assert [p["name"] for p in loop] == [p["name"] for p in bench] == [[p.name] for p in resolve_source(spec)]
    for a, b in zip(loop, bench):
        assert_identical(a, b)
        n = 1
        assert torch.equal(a["scale"], torch.full((n,), scale)) and a["scale"].dtype == torch.long
        assert a["sigma"].shape == (n,) and a["sigma"].dtype == torch.float32
        assert a["degraded"].shape[-3] == (3 if channels == "rgb" else 1)
        # "y" keeps the target in the file's colours: the protocol takes its Y unrounded, as the benchmark does
        assert a["target"].shape[-3] == (a["gray"].logical_not().long().item() * 2 + 1 if channels == "y" else
                                         a["degraded"].shape[-3])
        assert a["degraded"].shape[-2:] == tuple(s // scale for s in a["target"].shape[-2:])
        assert (a["upsampled"] - to_channels(a["target"], channels)).abs().mean() > 1e-3  # a real degradation
        assert ("kernel" in a) == isinstance(recipe, ClassicalSR)
        assert ("n_frames" in a) == isinstance(recipe, MotionBlur)
    # another seed changes the pairs exactly where something is drawn (BicubicSR and noise-free fixed kernels
    # draw nothing)
    other = benchmark_pairs(recipe, spec, scale, channels, seed=SEED + 1)
    draws = not (type(recipe) is BicubicSR or (isinstance(recipe, ClassicalSR) and recipe.fixed_kernel is not None
                                                and recipe.noise_range[1] == 0))
    assert draws == any(not torch.equal(a["degraded"], b["degraded"]) for a, b in zip(loop, other))


def pairs_of(recipe, folder: Path, scale: int, channels="rgb") -> list[dict]:
    return benchmark_pairs(recipe, str(folder), scale, channels)


@pytest.mark.parametrize("name, sigma1, sigma2, theta, order", [
    ("gd_0.2", 0.2, 0.2, 0.0, "blur_decimate"),
    ("gd_2.0", 2.0, 2.0, 0.0, "blur_decimate"),
    ("gd_ani", 2.0, 1.0, -0.5, "blur_decimate"),  # MZSR's λ1 = 4, λ2 = 1 are variances: σ = 2, 1
    ("gb_1.3", 1.3, 1.3, 0.0, "blur_bicubic"),
])
def test_named_kernels_are_mzsrs_test_kernels_and_fix_the_order(folder, name, sigma1, sigma2, theta, order):
    recipe = ClassicalSR(kernel=name)
    assert recipe.applied_order == order and recipe.size == 15 and NAMED_KERNELS[name].order == order
    kernel = d.gaussian_kernel(15, sigma1, sigma2, theta)
    assert torch.equal(recipe.fixed_kernel, kernel)
    for pair in pairs_of(recipe, folder, 2):
        assert torch.equal(pair["kernel"], kernel[None])  # the same kernel for every image, carried in the pair
        assert torch.equal(pair["sigma"], torch.zeros(1))
    assert ClassicalSR(kernel=name, order=order).applied_order == order  # naming its own order is fine
    other = next(o for o in ("blur_bicubic", "bicubic_blur", "blur_decimate") if o != order)
    with pytest.raises(AnticipatedError, match=rf"data.init_args.recipe.init_args.order='{other}' contradicts "
                                               rf"kernel='{name}', which is applied by '{order}'") as e:
        ClassicalSR(kernel=name, order=other)
    assert "\n" not in str(e.value)


def test_gd_2_0_at_x2_is_blur_then_direct_decimation_in_8_bit(folder):
    kernel = d.gaussian_kernel(15, 2.0)
    for path, pair in zip(resolve_source(str(folder)), pairs_of(ClassicalSR(kernel="gd_2.0"), folder, 2)):
        hr = to_channels(mod_crop(read_image(path), 2)[None], "rgb")  # the gray file replicated, as the pair is
        lr = d.quantize(d.classical_degradation(hr, 2, kernel, "blur_decimate"))
        assert torch.equal(pair["degraded"], lr)
        assert torch.equal(pair["upsampled"], d.bicubic_upsample(lr, 2))
        assert torch.equal(pair["target"], hr) and torch.equal(pair["kernel"], kernel[None])


def test_file_kernels_are_the_files_kernel(folder, kernel_files):
    for suffix in ("npy", "mat"):
        recipe = ClassicalSR(kernel="file", kernel_file=str(kernel_files[suffix]))
        assert torch.allclose(recipe.fixed_kernel, kernel_files["kernel"], atol=1e-7) and recipe.size == 11
        (pair, *_) = pairs_of(recipe, folder, 2)
        assert torch.equal(pair["kernel"], recipe.fixed_kernel[None])


def test_random_kernels_and_noise_are_drawn_per_image_in_that_order(folder):
    """Kernel, then noise, from the image's own generator; the pair carries both."""
    recipe = ClassicalSR(kernel="random_gaussian", kernel_size=15, sigma_range=(0.5, 3.0), noise_sigma=(5, 10))
    pairs = pairs_of(recipe, folder, 3, "y")
    for path, pair in zip(resolve_source(str(folder)), pairs):
        g = torch.Generator().manual_seed(image_seed(path.name, SEED))
        kernel = d.random_gaussian_kernel(1, 15, (0.5, 3.0), False, g)
        hr = mod_crop(read_image(path), 3)[None]
        lr = to_channels(d.quantize(d.classical_degradation(hr, 3, kernel, "blur_bicubic")), "y")
        sigma = d.sample_sigma(1, 5, 10, g)
        assert torch.equal(pair["kernel"], kernel) and torch.equal(pair["sigma"], sigma)
        assert torch.equal(pair["degraded"], d.add_gaussian_noise(lr, sigma, g))
        assert 5 <= pair["sigma"].item() <= 10
    assert not torch.equal(pairs[0]["kernel"], pairs[1]["kernel"])  # one kernel per image


def test_awgn_pairs_carry_their_sigma(folder):
    """AWGN: σ = test_sigma for every image when given; blind: one σ per image, within the range."""
    for pair in pairs_of(AWGN(sigma=(0, 55), test_sigma=25), folder, 1):
        assert torch.equal(pair["sigma"], torch.tensor([25.0]))
        assert (pair["degraded"] - pair["target"]).std().item() * 255 == pytest.approx(25, rel=0.1)
    blind = [p["sigma"].item() for p in pairs_of(AWGN(sigma=(0, 55)), folder, 1)]
    assert all(0 <= s <= 55 for s in blind) and len(set(blind)) == len(blind)
    for path, sigma in zip(resolve_source(str(folder)), blind):
        g = torch.Generator().manual_seed(image_seed(path.name, SEED))
        assert sigma == d.sample_sigma(1, 0, 55, g).item()  # σ is the generator's first draw
    assert [p["sigma"].item() for p in pairs_of(AWGN(sigma=15), folder, 1)] == [15.0] * 3
    assert AWGN(sigma=(0, 55)).at_sigma(50).test_range == (50.0, 50.0)


def test_jpeg_is_awgn_without_noise(folder):
    """JPEG(q) = AWGN(σ 0, q): the same draws (σ, noise, quality), so the same pairs; σ is 0."""
    a, b = pairs_of(JPEG(jpeg_quality=(10, 30)), folder, 1), pairs_of(AWGN(sigma=0, jpeg_quality=(10, 30)), folder, 1)
    for x, y in zip(a, b):
        assert_identical(x, y)
        assert torch.equal(x["sigma"], torch.zeros(1))
    plain = pairs_of(JPEG(jpeg_quality=10), folder, 1)[0]
    assert torch.equal(plain["degraded"], d.jpeg_compress(plain["target"], 10))


def test_motion_blur_pairs_carry_odd_frame_counts(folder):
    recipe = MotionBlur(n_frames=(4, 10))
    assert recipe.frame_range == (4, 9) and recipe.window == 9
    for path, pair in zip(resolve_source(str(folder)), pairs_of(recipe, folder, 1)):
        g = torch.Generator().manual_seed(image_seed(path.name, SEED))
        count = 5 + 2 * int(torch.randint(0, 3, (1,), generator=g))  # counts first: 5, 7 or 9 ...
        assert torch.equal(pair["n_frames"], torch.tensor([count]))
        sharp = to_channels(read_image(path)[None], "rgb")
        blurred = d.synthetic_motion_blur(sharp, count, g)[0]  # ... then the trajectory
        assert torch.equal(pair["degraded"], blurred) and torch.equal(pair["target"], sharp)
        assert torch.equal(pair["sigma"], torch.zeros(1))


def test_evaluation_pair_without_channels_keeps_the_images_own(folder):
    path = Path(folder) / "camera.png"
    image = read_image(path)[None]
    pair = evaluation_pair(AWGN(sigma=10), {"target": image, "name": [path.name]}, 1, None)
    assert pair["degraded"].shape == image.shape and torch.equal(pair["target"], image)
    assert pair["gray"].tolist() == [True] and pair["name"] == ["camera.png"]


def test_describe_names_the_degradation():
    assert "imresize" in BicubicSR().describe()
    assert "g^d_2.0" in ClassicalSR(kernel="gd_2.0").describe()
    assert "σ=U[0, 15]" in ClassicalSR(kernel="random_gaussian", noise_sigma=(0, 15)).describe()
    assert "σ=25" in AWGN(sigma=(0, 55), test_sigma=25).describe()
    assert "JPEG quality 10" in JPEG().describe()
    assert "7-13 frames" in MotionBlur().describe() and "blur_gamma" in MotionBlur(source="gopro").describe()


# ----------------------------------------------------------------------------------------------- bad options

P = "data.init_args.recipe.init_args."
BAD_OPTIONS = [
    (ClassicalSR, {"kernel": "gauss"}, f"{P}kernel='gauss' must be one of"),
    (ClassicalSR, {"kernel": "random_gaussian", "order": "decimate"}, f"{P}order='decimate' must be one of"),
    (ClassicalSR, {"noise_sigma": (10, 5)}, rf"{P}noise_sigma=\(10, 5\) must be a number or a \[low, high\]"),
    (ClassicalSR, {"kernel": "file"}, f"{P}kernel_file is required when kernel='file'"),
    (ClassicalSR, {"kernel": "file", "kernel_file": "/nowhere/k.npy"}, "cannot read a kernel from /nowhere/k.npy"),
    (ClassicalSR, {"kernel": "gaussian", "sigma": -1.0}, f"{P}sigma=-1.0 and sigma2=None must be positive"),
    (ClassicalSR, {"kernel_size": 0, "kernel": "gaussian"}, f"{P}kernel_size=0 must be a positive integer"),
    (ClassicalSR, {"kernel": "random_gaussian", "sigma_range": (0, 2)}, rf"{P}sigma_range=\(0, 2\) must be"),
    (ClassicalSR, {"kernel": "gd_2.0", "order": "blur_bicubic"}, f"{P}order='blur_bicubic' contradicts"),
    (AWGN, {"sigma": -5}, f"{P}sigma=-5 must be a number"),
    (AWGN, {"test_sigma": 300}, f"{P}test_sigma=300 must be a number"),
    (AWGN, {"jpeg_quality": (0, 50)}, rf"{P}jpeg_quality=\(0, 50\) must be"),
    (JPEG, {"jpeg_quality": None}, f"{P}jpeg_quality is required for the JPEG recipe"),
    (MotionBlur, {"source": "video"}, f"{P}source='video' must be one of 'synthetic', 'frames', 'gopro'"),
    (MotionBlur, {"n_frames": (8, 8)}, rf"{P}n_frames=\(8, 8\) must include an odd count"),
    (MotionBlur, {"gopro_blur": "sharp"}, f"{P}gopro_blur='sharp' must be one of"),
    (MotionBlur, {"camera_gamma": 0}, f"{P}camera_gamma=0 must be positive"),
    (MotionBlur, {"frame_stride": 0}, f"{P}frame_stride=0 must be a positive integer"),
]


@pytest.mark.parametrize("cls, kwargs, message", BAD_OPTIONS,
                         ids=[f"{c.__name__}-{m.replace(P, '').split(' ')[0]}" for c, _, m in BAD_OPTIONS])
def test_bad_options_raise_one_line_naming_the_recipe_option(cls, kwargs, message):
    with pytest.raises(ValueError, match=message) as e:
        cls(**kwargs)
    assert "\n" not in str(e.value)
