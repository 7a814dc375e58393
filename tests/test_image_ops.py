"""Synthetic degradations: kernels, the three classical SR orders against scipy references, noise statistics,
JPEG, GoPro-style frame averaging and the GoPro / video-frame file listings."""
import math
import re

import numpy as np
import pytest
import scipy.ndimage as ndimage
import skimage.data
import torch

from datamodules import image_ops as d
from datamodules.gopro import frame_windows, gopro_pairs
from restorelab.bench_degradations import KINDS, measure_synthesis_rate


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def moments(kernel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroid (x, y) and 2×2 covariance of a K×K kernel, in the kernel coordinates (x right, y up)."""
    k = kernel.double()
    x, y = d._kernel_grid(k.shape[-1], "cpu")
    mean = torch.stack([(k * x).sum(), (k * y).sum()])
    dx, dy = x - mean[0], y - mean[1]
    cov = torch.stack([torch.stack([(k * dx * dx).sum(), (k * dx * dy).sum()]),
                       torch.stack([(k * dx * dy).sum(), (k * dy * dy).sum()])])
    return mean, cov


def covariance(sigma1, sigma2, theta) -> torch.Tensor:
    c, s = math.cos(theta), math.sin(theta)
    r = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    return r @ torch.diag(torch.tensor([sigma1 ** 2, sigma2 ** 2], dtype=torch.float64)) @ r.T


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    """1×3×96×96 crop of a real photo (face and suit edges), float32 [0, 1]."""
    image = skimage.data.astronaut()[40:136, 160:256].astype(np.float32) / 255.0
    return torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()


# ------------------------------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("sigma1, sigma2, theta", [(2.0, None, 0.0), (3.0, 1.0, math.radians(30)),
                                                   (1.2, 4.0, math.radians(115))])
def test_gaussian_kernel_has_requested_covariance(sigma1, sigma2, theta):
    k = d.gaussian_kernel(41, sigma1, sigma2, theta)
    assert k.shape == (41, 41) and k.dtype == torch.float32
    assert k.sum().item() == pytest.approx(1.0, abs=1e-6)
    mean, cov = moments(k)
    expected = covariance(sigma1, sigma1 if sigma2 is None else sigma2, theta)
    assert mean.abs().max() < 1e-6
    assert torch.linalg.norm(cov - expected) / torch.linalg.norm(expected) < 0.02
    assert torch.allclose(torch.diagonal(cov), torch.diagonal(expected), rtol=0.02)


def test_gaussian_kernel_batched_matches_scalar_calls():
    s1, s2, th = torch.tensor([1.0, 2.5]), torch.tensor([0.5, 2.0]), torch.tensor([0.3, 2.0])
    batch = d.gaussian_kernel(21, s1, s2, th)
    assert batch.shape == (2, 21, 21)
    for i in range(2):
        assert torch.allclose(batch[i], d.gaussian_kernel(21, s1[i].item(), s2[i].item(), th[i].item()), atol=1e-7)


def test_random_gaussian_kernels_stay_in_their_range():
    low, high = 0.7, 3.0  # below ~0.7 px a sampled Gaussian's variance falls short of sigma² (0.86 σ² at 0.5)
    kernels = d.random_gaussian_kernel(64, size=41, sigma_range=(low, high), generator=seeded(0))
    assert kernels.shape == (64, 41, 41)
    assert torch.allclose(kernels.sum(dim=(1, 2)), torch.ones(64), atol=1e-6)
    variances = torch.stack([torch.linalg.eigvalsh(moments(k)[1]) for k in kernels])
    assert variances.min() > 0.98 * low ** 2 and variances.max() < 1.02 * high ** 2
    assert not torch.allclose(kernels[0], kernels[1])
    iso = d.random_gaussian_kernel(8, size=41, isotropic=True, generator=seeded(0))
    for k in iso:
        lam = torch.linalg.eigvalsh(moments(k)[1])
        assert lam[1] / lam[0] < 1.01


def test_mzsr_kernels_follow_the_paper_distribution():
    scale = 2
    kernels = d.random_mzsr_kernel(200, scale, size=41, generator=seeded(1))
    assert d.random_mzsr_kernel(1, scale).shape == (1, 15, 15)  # MZSR's support
    lam = torch.stack([torch.linalg.eigvalsh(moments(k)[1]) for k in kernels])  # ascending: lambda2, lambda1
    assert lam.min() > 0.98 and lam.max() < 1.02 * 2.5 * scale
    # lambda1 ~ U[1, 5] has mean 3; lambda2 ~ U[1, lambda1] has mean 2
    assert lam[:, 1].mean().item() == pytest.approx(3.0, abs=0.25)
    assert lam[:, 0].mean().item() == pytest.approx(2.0, abs=0.25)


def test_motion_kernel_is_a_centred_segment_of_the_requested_length_and_angle():
    length, angle = 20.0, 30.0
    k = d.motion_kernel(31, length, angle)
    assert k.sum().item() == pytest.approx(1.0, abs=1e-6)
    mean, cov = moments(k)
    assert mean.abs().max() < 1e-6
    lam, vec = torch.linalg.eigh(cov)
    # a uniform segment has variance length²/12 along it; bilinear splatting adds about 1/6
    assert lam[1].item() == pytest.approx(length ** 2 / 12 + 1 / 6, rel=0.02)
    assert lam[0].item() < 0.3
    direction = math.degrees(math.atan2(vec[1, 1], vec[0, 1])) % 180
    assert direction == pytest.approx(angle, abs=0.5)
    with pytest.raises(ValueError, match="length"):
        d.motion_kernel(15, 20.0, 0.0)


def test_random_motion_kernels_are_centred_deterministic_and_varied():
    a = d.random_motion_kernel(16, size=31, generator=seeded(3))
    b = d.random_motion_kernel(16, size=31, generator=seeded(3))
    c = d.random_motion_kernel(16, size=31, generator=seeded(4))
    assert a.shape == (16, 31, 31) and torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.allclose(a.sum(dim=(1, 2)), torch.ones(16), atol=1e-6)
    assert (a >= 0).all()
    for k in a:
        mean, cov = moments(k)
        assert mean.abs().max() < 1e-4  # centred on its centroid: the blur does not shift the image
        assert torch.trace(cov) > 1.0  # actually a blur, not a delta
    assert len({tuple(k.flatten().tolist()) for k in a}) == 16


def test_load_kernel_reads_and_normalises_each_format(tmp_path):
    k = d.gaussian_kernel(9, 1.5, 0.8, 0.4).numpy() * 7.0
    np.save(tmp_path / "k.npy", k)
    np.savetxt(tmp_path / "k.txt", k)
    from PIL import Image
    Image.fromarray((k / k.max() * 255).round().astype(np.uint8)).save(tmp_path / "k.png")
    from scipy.io import savemat
    savemat(tmp_path / "k.mat", {"kernel": k})
    for name in ("k.npy", "k.txt", "k.mat"):
        loaded = d.load_kernel(tmp_path / name)
        assert torch.allclose(loaded, torch.from_numpy(k / k.sum()).float(), atol=1e-6), name
    png = d.load_kernel(tmp_path / "k.png")
    assert png.shape == (9, 9) and png.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(png, torch.from_numpy(k / k.sum()).float(), atol=2e-3)


@pytest.mark.parametrize("name, content", [("bad.txt", "not a kernel\n"), ("zeros.npy", np.zeros((5, 5))),
                                           ("cube.npy", np.ones((3, 3, 3))), ("empty.png", b"")])
def test_bad_kernel_file_error_names_the_file(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    else:
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(ValueError) as err:
        d.load_kernel(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message


# ------------------------------------------------------------------------------------------ classical model


def scipy_blur(image: torch.Tensor, kernel: torch.Tensor) -> np.ndarray:
    """Reference blur of one C×H×W image: scipy convolution, per channel, mirror = torch 'reflect'."""
    k = kernel.double().numpy()
    return np.stack([ndimage.convolve(ch, k, mode="mirror") for ch in image.double().numpy()])


@pytest.mark.parametrize("order", d.DEGRADATION_ORDERS)
def test_classical_degradation_matches_scipy_reference(astronaut, order):
    scale = 3
    # asymmetric kernel: catches correlation vs convolution and flipped axes
    kernel = d.random_motion_kernel(1, size=13, length_range=(6.0, 9.0), generator=seeded(7))[0]
    lr = d.classical_degradation(astronaut, scale, kernel, order)
    if order == "blur_bicubic":
        blurred = torch.from_numpy(scipy_blur(astronaut[0], kernel))[None]
        expected = d.bicubic_downsample(blurred, scale)[0].numpy()
    elif order == "bicubic_blur":
        expected = scipy_blur(d.bicubic_downsample(astronaut, scale)[0], kernel)
    else:
        expected = scipy_blur(astronaut[0], kernel)[:, ::scale, ::scale]
    assert lr.shape == (1, 3, 32, 32)
    np.testing.assert_allclose(lr[0].numpy(), expected, atol=2e-6)


def test_classical_orders_differ_as_expected(astronaut):
    scale = 2
    hr = astronaut.expand(2, -1, -1, -1)
    delta = torch.zeros(15, 15)
    delta[7, 7] = 1
    # without blur the orders reduce to bicubic (twice) and plain decimation
    assert torch.allclose(d.classical_degradation(hr, scale, delta, "blur_bicubic"), d.bicubic_downsample(hr, scale))
    assert torch.allclose(d.classical_degradation(hr, scale, delta, "bicubic_blur"), d.bicubic_downsample(hr, scale))
    assert torch.equal(d.classical_degradation(hr, scale, delta, "blur_decimate"), hr[..., ::2, ::2])

    kernel = d.gaussian_kernel(15, 1.6)
    out = {order: d.classical_degradation(hr, scale, kernel, order) for order in d.DEGRADATION_ORDERS}
    for a in d.DEGRADATION_ORDERS:
        for b in d.DEGRADATION_ORDERS:
            if a < b:
                assert (out[a] - out[b]).abs().mean() > 2e-3, (a, b)

    def detail(x):  # mean absolute horizontal gradient: high-frequency content left
        return (x[..., 1:] - x[..., :-1]).abs().mean().item()

    # blurring at LR resolution is s times wider in HR pixels; bicubic's antialiasing removes what decimation keeps
    assert detail(out["bicubic_blur"]) < detail(out["blur_bicubic"]) < detail(out["blur_decimate"])


def test_per_image_kernels_and_noise_in_classical_degradation(astronaut):
    hr = torch.cat([astronaut, astronaut.flip(-1)])
    kernels = d.random_gaussian_kernel(2, size=15, generator=seeded(5))
    lr = d.classical_degradation(hr, 2, kernels, "blur_decimate")
    for i in range(2):
        np.testing.assert_allclose(lr[i].numpy(), scipy_blur(hr[i], kernels[i])[:, ::2, ::2], atol=2e-6)
    noisy = d.classical_degradation(hr, 2, kernels, "blur_decimate", noise_sigma=torch.tensor([5.0, 30.0]),
                                    generator=seeded(6))
    again = d.classical_degradation(hr, 2, kernels, "blur_decimate", noise_sigma=torch.tensor([5.0, 30.0]),
                                    generator=seeded(6))
    assert torch.equal(noisy, again)
    measured = ((noisy - lr) * 255).flatten(1).std(dim=1)
    assert measured[0].item() == pytest.approx(5.0, rel=0.05) and measured[1].item() == pytest.approx(30.0, rel=0.05)
    with pytest.raises(ValueError, match="order"):
        d.classical_degradation(hr, 2, kernels, "decimate_blur")


def test_blur_padding_modes_match_scipy_modes():
    image = torch.rand(1, 1, 20, 24, generator=seeded(0))
    kernel = d.random_motion_kernel(1, size=7, length_range=(3, 5), generator=seeded(1))[0]
    for torch_mode, scipy_mode in (("reflect", "mirror"), ("replicate", "nearest"), ("circular", "wrap")):
        expected = ndimage.convolve(image[0, 0].double().numpy(), kernel.double().numpy(), mode=scipy_mode)
        np.testing.assert_allclose(d.blur(image, kernel, torch_mode)[0, 0].numpy(), expected, atol=1e-6)


# ------------------------------------------------------------------------------------------------- noise


@pytest.mark.parametrize("channels", [1, 3])
def test_gaussian_noise_has_requested_sigma(channels):
    x = torch.full((1, channels, 384, 384), 0.5)
    noisy = d.add_gaussian_noise(x, 25.0, seeded(0))
    assert ((noisy - x) * 255).std().item() == pytest.approx(25.0, rel=0.02)
    assert ((noisy - x) * 255).mean().abs().item() < 0.2
    assert torch.equal(noisy, d.add_gaussian_noise(x, 25.0, seeded(0)))
    assert not torch.equal(noisy, d.add_gaussian_noise(x, 25.0, seeded(1)))
    unseeded = d.add_gaussian_noise(x, 25.0)  # torch's global RNG on x's device
    assert ((unseeded - x) * 255).std().item() == pytest.approx(25.0, rel=0.02)


def test_noise_is_unclipped_by_default_and_clipped_on_request():
    x = torch.full((1, 1, 64, 64), 0.02)
    assert d.add_gaussian_noise(x, 50.0, seeded(0)).min() < 0
    clipped = d.add_gaussian_noise(x, 50.0, seeded(0), clip=True)
    assert clipped.min() == 0 and clipped.max() <= 1


def test_blind_noise_levels_span_their_range_and_apply_per_image():
    sigmas = d.sample_sigma(5000, 0.0, 55.0, seeded(0))
    assert sigmas.min() >= 0 and sigmas.max() <= 55
    assert sigmas.min() < 0.5 and sigmas.max() > 54.5
    assert sigmas.mean().item() == pytest.approx(27.5, abs=1.0)
    levels = torch.tensor([0.0, 5.0, 15.0, 50.0])
    x = torch.full((4, 3, 128, 128), 0.5)
    measured = ((d.add_gaussian_noise(x, levels, seeded(2)) - x) * 255).flatten(1).std(dim=1)
    assert measured[0] == 0
    assert torch.allclose(measured[1:], levels[1:], rtol=0.02)


def test_jpeg_round_trip_makes_real_blocking_artefacts(astronaut):
    gray = d.rgb_to_y(astronaut)
    for x in (astronaut, gray):
        low, high = d.jpeg_compress(x, 10), d.jpeg_compress(x, 90)
        assert low.shape == x.shape
        assert torch.equal(low, d.quantize(low))  # decoded 8-bit image
        mse = lambda y: ((y - x) ** 2).mean().item()  # noqa: E731
        assert mse(high) < mse(low)
        assert 20 < -10 * math.log10(mse(low)) < 32
        differentiable = d.jpeg_compress(x, 10, backend="kornia")
        assert differentiable.shape == x.shape
        assert ((differentiable - low) ** 2).mean() < 0.2 * mse(low)  # kornia's model is close to libjpeg
    per_image = d.jpeg_compress(torch.cat([astronaut, astronaut]), torch.tensor([10, 90]))
    assert torch.equal(per_image[0], d.jpeg_compress(astronaut, 10)[0])
    assert torch.equal(per_image[1], d.jpeg_compress(astronaut, 90)[0])


# ----------------------------------------------------------------------------------------------- motion blur


def test_average_frames_is_the_mean_in_linear_light():
    frames = torch.rand(2, 7, 3, 8, 8, generator=seeded(0))
    linear = frames.double().numpy() ** 2.2
    expected = linear.mean(axis=1) ** (1 / 2.2)
    np.testing.assert_allclose(d.average_frames(frames).numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d.average_frames(frames, gamma=1.0).numpy(), frames.mean(1).numpy(), atol=1e-6)
    assert not torch.allclose(d.average_frames(frames), frames.mean(1), atol=1e-3)


def test_trajectories_are_smooth_deterministic_and_bounded():
    a = d.synthesize_trajectory(11, seeded(0), max_shift=2.0, max_rotation=0.2, batch=4)
    assert a.shape == (4, 11, 3)
    assert torch.equal(a, d.synthesize_trajectory(11, seeded(0), max_shift=2.0, max_rotation=0.2, batch=4))
    assert not torch.allclose(a, d.synthesize_trajectory(11, seeded(1), max_shift=2.0, max_rotation=0.2, batch=4))
    assert torch.equal(a[:, 5], torch.zeros(4, 3))  # middle frame is the sharp one
    steps = a.diff(dim=1)
    assert steps[..., :2].abs().max() <= 2.0 + 1e-5 and steps[..., 2].abs().max() <= 0.2 + 1e-6
    assert steps[..., :2].abs().max() > 0.2  # it does move
    # constant acceleration: second differences are the same for every frame
    second = steps.diff(dim=1)
    assert torch.allclose(second, second[:, :1].expand_as(second), atol=1e-5)


def test_render_frames_moves_content_by_the_trajectory(astronaut):
    trajectory = torch.tensor([[[-3.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 2.0]]])
    frames = d.render_frames(astronaut, trajectory)
    assert frames.shape == (1, 4, 3, 96, 96)
    assert torch.allclose(frames[0, 1], astronaut[0], atol=1e-5)
    assert torch.allclose(frames[0, 0, :, :, :-3], astronaut[0, :, :, 3:], atol=1e-5)  # dx = -3: content left
    assert torch.allclose(frames[0, 2, :, 1:, 2:], astronaut[0, :, :-1, :-2], atol=1e-5)  # right 2, down 1
    centre = frames[0, 3, :, 46:50, 46:50]  # rotation about the centre leaves the centre nearly in place
    assert (centre - astronaut[0, :, 46:50, 46:50]).abs().max() < 0.05
    assert (frames[0, 3] - astronaut[0]).abs().mean() > 0.005


def test_synthetic_motion_blur_is_deterministic_per_seed(astronaut):
    sharp = torch.cat([astronaut, astronaut.flip(-1)])
    blurred, target = d.synthetic_motion_blur(sharp, generator=seeded(0))
    again, _ = d.synthetic_motion_blur(sharp, generator=seeded(0))
    other, _ = d.synthetic_motion_blur(sharp, generator=seeded(1))
    assert torch.equal(target, sharp) and blurred.shape == sharp.shape
    assert torch.equal(blurred, again) and not torch.allclose(blurred, other)
    assert blurred.min() >= 0 and blurred.max() <= 1
    assert (blurred - sharp).abs().mean() > 0.01
    # the blur is the linear-light average of the rendered frames of the same path
    g = seeded(5)
    blurred, _ = d.synthetic_motion_blur(sharp, n_frames=9, generator=g, max_shift=2.0)
    frames = d.render_frames(sharp, d.synthesize_trajectory(9, seeded(5), max_shift=2.0, batch=2))
    assert torch.allclose(blurred, d.average_frames(frames), atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_synthesis_benchmark_runs_every_kind(kind):
    assert measure_synthesis_rate(kind, "cpu", batch=2, patch=32, seconds=0.0) > 0


def test_image_pyramid_shapes():
    levels = d.image_pyramid(torch.rand(2, 3, 64, 48), 3)
    assert [tuple(x.shape) for x in levels] == [(2, 3, 64, 48), (2, 3, 32, 24), (2, 3, 16, 12)]


# ---------------------------------------------------------------------------------------------- file listings


def make_gopro(root, split="train", sequences=("GOPR0372_07_00", "GOPR0374_11_01"), frames=3):
    for sequence in sequences:
        for kind in ("blur", "blur_gamma", "sharp"):
            folder = root / split / sequence / kind
            folder.mkdir(parents=True)
            for i in range(frames):
                (folder / f"{i + 47:06d}.png").write_bytes(b"")


def test_gopro_pairs_lists_matching_blur_and_sharp_frames(tmp_path):
    make_gopro(tmp_path)
    pairs = gopro_pairs(tmp_path, "train")
    assert len(pairs) == 6
    blurred, sharp = pairs[4]
    assert blurred == tmp_path / "train" / "GOPR0374_11_01" / "blur_gamma" / "000048.png"
    assert sharp == tmp_path / "train" / "GOPR0374_11_01" / "sharp" / "000048.png"
    assert gopro_pairs(tmp_path, "train", blur="blur")[0][0].parent.name == "blur"


def test_gopro_layout_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "test"))):
        gopro_pairs(tmp_path, "test")
    make_gopro(tmp_path)
    sharp = tmp_path / "train" / "GOPR0374_11_01" / "sharp"
    (sharp / "000047.png").unlink()
    with pytest.raises(ValueError, match="GOPR0374_11_01"):
        gopro_pairs(tmp_path, "train")
    for f in sharp.iterdir():
        f.unlink()
    sharp.rmdir()
    with pytest.raises(FileNotFoundError, match=re.escape(str(sharp))):
        gopro_pairs(tmp_path, "train")


def test_frame_windows_are_consecutive_in_natural_order(tmp_path):
    for i in range(12):
        (tmp_path / f"frame_{i}.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("ignored")
    windows = frame_windows(tmp_path, 7)
    assert len(windows) == 6
    assert [p.name for p in windows[0]] == [f"frame_{i}.png" for i in range(7)]
    assert windows[0][7 // 2].name == "frame_3.png"
    assert [w[0].name for w in frame_windows(tmp_path, 5, stride=3)] == ["frame_0.png", "frame_3.png", "frame_6.png"]
    with pytest.raises(ValueError, match=re.escape(str(tmp_path))):
        frame_windows(tmp_path, 13)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "missing"))):
        frame_windows(tmp_path / "missing", 7)
