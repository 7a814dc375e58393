"""The classical SR rows (lightning_modules/classical/{interpolation,example_based,sparse_coding}.py) against the
libraries' direct calls: nearest/bilinear = torch and OpenCV, Lanczos-3 = PIL away from the borders, the example
database's look-up = scikit-learn's NearestNeighbors, the sparse codes = sklearn's sparse_encode; back-projection
moves the estimate towards the LR constraint; example-based SR beats bicubic on a texture like its training image;
every config loads by name and builds. Small images and tiny databases/dictionaries: no dataset is needed except
where a test says so (it skips without one)."""
from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from datamodules.errors import AnticipatedError
from datamodules.image_ops import bicubic_downsample, bicubic_upsample, imresize
from datamodules.sources import read_image, resolve_source
from lightning_modules.classical.example_based import ExampleBased, patch_grid
from lightning_modules.classical.interpolation import Bicubic, Bilinear, Lanczos, Nearest
from lightning_modules.classical.sparse_coding import SparseCoding, back_project, gradient_features, patches_at
from restorelab.evaluation import BenchmarkSet, evaluate, task_recipe
from restorelab.methods import read_method

SR_CONFIGS = ("nearest", "bilinear", "lanczos", "example_based", "sparse_coding")


def lr_pair(c: int = 3, h: int = 11, w: int = 13, s: int = 3, seed: int = 0) -> dict:
    lr = torch.rand(1, c, h, w, generator=torch.Generator().manual_seed(seed))
    return {"degraded": lr, "upsampled": bicubic_upsample(lr, s), "scale": torch.tensor([s])}


def write_png(path, image: torch.Tensor) -> None:
    """A C×H×W image in [0, 1] as an 8-bit PNG (cv2 wants BGR)."""
    array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    cv2.imwrite(str(path), array[..., ::-1] if array.shape[-1] == 3 else array[..., 0])


def photo(name: str) -> torch.Tensor:
    return read_image(resolve_source(f"skimage:{name}")[0])


# ------------------------------------------------------------------------------------------- interpolation


@pytest.mark.parametrize("s", [2, 3, 4])
def test_nearest_is_pixel_replication_as_torch_and_opencv(s):
    pair = lr_pair(s=s)
    out = Nearest().run(pair, "")
    lr = pair["degraded"]
    assert torch.equal(out, F.interpolate(lr, scale_factor=s, mode="nearest"))
    assert torch.equal(out, lr.repeat_interleave(s, -2).repeat_interleave(s, -1))
    cv = cv2.resize(lr[0].permute(1, 2, 0).numpy(), None, fx=s, fy=s, interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(out[0].permute(1, 2, 0).numpy(), cv)  # exact: both copy pixels


@pytest.mark.parametrize("s", [2, 3, 4])
def test_bilinear_is_torch_opencv_and_matlab_bilinear(s):
    pair = lr_pair(s=s)
    out = Bilinear().run(pair, "")
    lr = pair["degraded"]
    assert torch.equal(out, F.interpolate(lr, scale_factor=s, mode="bilinear", align_corners=False))
    cv = cv2.resize(lr[0].permute(1, 2, 0).numpy(), None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
    assert np.abs(out[0].permute(1, 2, 0).numpy() - cv).max() < 1e-5  # float32 arithmetic on both sides
    matlab = imresize(lr.double(), s, kernel="triangle")  # MATLAB imresize(x, s, 'bilinear')
    assert (out.double() - matlab).abs().max() < 1e-6


@pytest.mark.parametrize("scale", [2, 3, 4, 0.5, 1 / 3, 0.37])
def test_kernel_imresize_with_the_cubic_kernel_is_our_matlab_bicubic(scale):
    x = torch.rand(2, 1, 17, 23, dtype=torch.float64)
    assert torch.equal(imresize(x, scale, kernel="cubic"), imresize(x, scale))  # the default kernel is MATLAB's bicubic


@pytest.mark.parametrize("s", [2, 3, 4])
def test_lanczos3_matches_pil_away_from_borders(s):
    # PIL truncates the kernel at the border and renormalises, MATLAB mirrors: equal where the 6-tap window fits
    x = torch.rand(31, 37, generator=torch.Generator().manual_seed(s))
    pil = np.asarray(Image.fromarray(x.numpy(), mode="F").resize((37 * s, 31 * s), Image.LANCZOS))
    out = Lanczos().run({"degraded": x[None, None], "scale": torch.tensor([s])}, "")[0, 0].numpy()
    b = 3 * s
    assert np.abs(pil - out)[b:-b, b:-b].max() < 1e-5  # PIL's F mode is float32


def test_lanczos3_on_constant_and_ramp():
    s = 3
    constant = torch.full((1, 1, 9, 10), 0.3, dtype=torch.float64)
    assert (imresize(constant, s, kernel="lanczos3") - 0.3).abs().max() < 1e-12
    # Lanczos-3 with normalised weights reproduces a ramp only approximately (its taps are not symmetric about an
    # off-grid output pixel): measured 0.016 LR px at x3; MATLAB's kernel is the same function
    n = 40
    ramp = torch.arange(n, dtype=torch.float64).expand(1, 1, 8, n)
    out = imresize(ramp, size=(8 * s, n * s), kernel="lanczos3")[0, 0, 4]
    exact = torch.arange(1, n * s + 1, dtype=torch.float64) / s + 0.5 * (1 - 1 / s) - 1
    assert (out - exact)[3 * s:-3 * s].abs().max() < 0.025


def test_interpolation_rows_rank_on_photos():
    bench = BenchmarkSet("photos", [(n, {"target": photo(n)[None, :, :120, :150]}) for n in ("coffee.png", "camera.png")])
    rows = evaluate(bench, task_recipe("sr"), "sr", 3, [Nearest(), Bilinear(), Bicubic(), Lanczos()], extra=False)
    mean = {m: np.mean([r["psnr"] for r in rows if r["method"] == m]) for m in {r["method"] for r in rows}}
    assert mean["Nearest neighbour"] < mean["Bilinear"] < mean["Bicubic"]
    assert abs(mean["Lanczos-3"] - mean["Bicubic"]) < 0.5


# ------------------------------------------------------------------------------------------- example-based


@pytest.fixture(scope="module")
def brick_folder(tmp_path_factory):
    """The top half of the bundled brick photo: training images for a tiny database."""
    folder = tmp_path_factory.mktemp("brick")
    image = photo("brick.png")
    write_png(folder / "brick_top.png", image[:, : image.shape[-2] // 2])
    return folder


def test_example_lookup_is_sklearn_nearest_neighbors(brick_folder):
    from sklearn.neighbors import NearestNeighbors

    method = ExampleBased(train=str(brick_folder), patches=600, k=3)
    db = method.database(3)
    assert db.features.shape == (600, 49) and db.targets.shape == (600, 25)
    up = bicubic_upsample(bicubic_downsample(photo("brick.png")[None, :, 300:330, 300:330].double(), 3), 3)[0, 0].numpy()
    rows, cols = np.meshgrid(patch_grid(30, 5, 2), patch_grid(30, 5, 2), indexing="ij")
    features, _ = method.features_at(method.bands(up, 3), rows.ravel(), cols.ravel())
    dist, idx = db.lookup(features, 3)
    ref_dist, ref_idx = NearestNeighbors(n_neighbors=3).fit(db.features).kneighbors(features.astype(np.float32))
    assert np.array_equal(idx, ref_idx)
    assert np.allclose(dist, ref_dist ** 2, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, box", [("brick.png", (300, 396, 200, 296)), ("coffee.png", (250, 346, 252, 348))])
def test_example_based_beats_bicubic_on_training_like_crop(tmp_path, name, box):
    image = photo(name)
    write_png(tmp_path / "top.png", image[:, : image.shape[-2] // 2])  # the test crop lies in the bottom half
    r0, r1, c0, c1 = box
    bench = BenchmarkSet("crop", [("crop.png", {"target": image[None, :, r0:r1, c0:c1]})])
    method = ExampleBased(train=str(tmp_path), patches=4000, k=8)
    rows = evaluate(bench, task_recipe("sr"), "sr", 3, [Bicubic(), method], extra=False)
    bicubic, example = (r["psnr"] for r in rows)
    assert example > bicubic + 0.2, (bicubic, example)


def test_example_one_pass_and_cache(brick_folder, tmp_path):
    method = ExampleBased(train=str(brick_folder), patches=500, k=4, alpha=0.54, cache=tmp_path)
    out = method.run(lr_pair(c=1, h=12, w=12), "")
    assert out.shape == (1, 1, 36, 36) and torch.isfinite(out).all()
    assert len(list(tmp_path.glob("example_based_x3_*.npz"))) == 1
    again = ExampleBased(train=str(brick_folder), patches=500, k=4, cache=tmp_path)
    again.build = None  # would fail if called: the cached database must be read instead
    assert np.array_equal(again.database(3).features, method.database(3).features)


def test_missing_training_folder_is_one_line(tmp_path):
    with pytest.raises(AnticipatedError, match="train=.*gives no training images"):
        ExampleBased(train=str(tmp_path / "none"))
    with pytest.raises(AnticipatedError, match="context=4"):
        ExampleBased(train=str(tmp_path), context=4)


# --------------------------------------------------------------------------------------------- sparse coding


@pytest.fixture(scope="module")
def tiny_sc(brick_folder, tmp_path_factory):
    """A 32-atom coupled dictionary from 3000 brick patches (a second or two)."""
    method = SparseCoding(train=str(brick_folder), atoms=32, patches=3000, lam=0.1, backprojection=5,
                          cache=tmp_path_factory.mktemp("sc_cache"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        method.dictionaries(3)
    return method


def test_sparse_codes_are_sklearn_sparse_encode(tiny_sc):
    from sklearn.decomposition import sparse_encode

    _, dl = tiny_sc.dictionaries(3)
    up = 255 * bicubic_upsample(bicubic_downsample(photo("brick.png")[None, :, 300:330, 300:330].double(), 3), 3)[0, 0].numpy()
    rows, cols = np.meshgrid(np.arange(2, 22, 3), np.arange(2, 22, 3), indexing="ij")
    features = tiny_sc.normalise_features(patches_at(gradient_features(up), rows.ravel(), cols.ravel(), 5))
    assert features.shape == (49, 100)
    d = dl / np.linalg.norm(dl, axis=1, keepdims=True)
    reference = sparse_encode(features, d, algorithm="lasso_lars", alpha=0.1)
    codes = tiny_sc.encode(features, dl)
    assert np.abs(codes - reference).max() < 1e-8
    assert 0 < (codes != 0).sum(axis=1).mean() < 32


def test_gradient_features_are_matlab_conv2_same():
    x = np.random.default_rng(0).random((6, 7))
    features = gradient_features(x)
    padded = np.pad(x, 2)
    # conv2(x, [-1 0 1], 'same')(i, j) = x(i, j-1) - x(i, j+1); [1 0 -2 0 1] is symmetric
    assert np.allclose(features[0], padded[2:-2, 1:-3] - padded[2:-2, 3:-1])
    assert np.allclose(features[1], padded[1:-3, 2:-2] - padded[3:-1, 2:-2])
    assert np.allclose(features[2], padded[2:-2, :-4] - 2 * x + padded[2:-2, 4:])
    assert np.allclose(features[3], padded[:-4, 2:-2] - 2 * x + padded[4:, 2:-2])


def test_back_projection_reduces_the_lr_residual():
    hr = photo("camera.png")[None, :, 100:148, 100:148].double()
    lr = bicubic_downsample(hr, 3)
    start = (bicubic_upsample(lr, 3) + 0.05 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(0)))
    residual = [np.linalg.norm(bicubic_downsample(torch.from_numpy(x)[None, None], 3)[0, 0].numpy() - lr[0, 0].numpy())
                for x in (start[0, 0].numpy(), back_project(start[0, 0].numpy(), lr[0, 0].numpy(), 3, 1),
                          back_project(start[0, 0].numpy(), lr[0, 0].numpy(), 3, 10))]
    assert residual[0] > residual[1] > residual[2] and residual[2] < 0.3 * residual[0], residual


def test_sparse_coding_learns_deterministically_and_caches(tiny_sc, brick_folder, tmp_path):
    dh, dl = tiny_sc.dictionaries(3)
    assert dh.shape == (32, 25) and dl.shape == (32, 100)
    cached = SparseCoding(train=str(brick_folder), atoms=32, patches=3000, cache=tiny_sc.cache)
    cached.learn = None  # would fail if called: the dictionary must come from the cache file
    assert np.array_equal(cached.dictionaries(3)[0], dh)
    fresh = SparseCoding(train=str(brick_folder), atoms=32, patches=3000, cache=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = fresh.learn(3)
    assert np.allclose(again[0], dh, atol=1e-10) and np.allclose(again[1], dl, atol=1e-10)


def test_sparse_coding_restores_and_beats_bicubic(tiny_sc):
    hr = photo("brick.png")[None, :, 300:360, 300:360]
    bench = BenchmarkSet("crop", [("crop.png", {"target": hr})])
    rows = evaluate(bench, task_recipe("sr"), "sr", 3, [Bicubic(), tiny_sc], extra=False)
    bicubic, sparse = (r["psnr"] for r in rows)
    assert sparse > bicubic, (bicubic, sparse)


# -------------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", SR_CONFIGS)
def test_configs_load_by_name_and_build(name, tmp_path):
    config, fixed = read_method(name)
    assert fixed == {} and config.label
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        restorer = config.build(tmp_path)  # a data folder without T91: the learned methods fall back, saying so
        for point in config.grid_points():
            assert config.build(tmp_path, **point) is not None
    assert restorer.task == "sr" and restorer.label.startswith(config.label)
    if name in ("example_based", "sparse_coding"):
        assert "[trained on skimage:train]" in restorer.label
        assert any("skimage:train" in str(w.message) for w in caught)


def test_learned_methods_train_on_t91_when_present(datasets_root):
    for name in ("example_based", "sparse_coding"):
        config, _ = read_method(name)
        restorer = config.build(datasets_root)
        assert restorer.label == config.label and len(restorer.paths) == 91


def test_a_training_set_fixed_by_name_is_said_once(tmp_path):
    config, fixed = read_method("example_based:train=skimage:train")
    restorer = config.build(tmp_path, **fixed)
    restorer.label = config.label_with(fixed)
    assert restorer.label.count("skimage:train") == 1, restorer.label
