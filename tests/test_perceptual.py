"""VGG loading, the perceptual loss and LPIPS against hand-written forward passes (with He-initialised VGG files,
since the ImageNet ones cannot be fetched here), and the texture statistics on images whose answer is known."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from datamodules.errors import AnticipatedError
from datamodules.image_ops import blur, gaussian_kernel
from lightning_modules.nets.vgg import VGG, VGG_WEIGHTS_HOWTO, load_vgg, save_random_vgg
from lightning_modules.perceptual import LPIPS, PerceptualLoss, torchmetrics_lin_weights
from lightning_modules.texture import gradient_histogram_distance, radial_power_spectrum, spectrum_distance

# torchvision's indices of the convs in ``features``, written out rather than derived from our code
VGG19_CONVS = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
VGG16_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
PER_BLOCK = {19: (2, 2, 4, 4, 4), 16: (2, 2, 3, 3, 3)}
RTOL = 1e-5  # float32, same convolutions in the same order: only summation-order noise


@pytest.fixture(scope="module")
def vgg19_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    save_random_vgg(path, depth=19, seed=0)
    return path


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    save_random_vgg(path, depth=16, seed=1)
    return path


def hand_vgg(state, x, depth, stop: tuple[int, int], after_relu: bool):
    """VGG by hand with functional ops, up to conv{block}_{j} (or its ReLU)."""
    convs = iter(VGG19_CONVS if depth == 19 else VGG16_CONVS)
    for block, n in enumerate(PER_BLOCK[depth], start=1):
        for j in range(1, n + 1):
            i = next(convs)
            x = F.conv2d(x, state[f"features.{i}.weight"], state[f"features.{i}.bias"], padding=1)
            if (block, j) == stop and not after_relu:
                return x
            x = F.relu(x)
            if (block, j) == stop:
                return x
        x = F.max_pool2d(x, 2, 2)
    raise AssertionError(stop)


def imagenet(x):
    return (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def images(n=2, size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.rand(n, 3, size, size, generator=g)


# ------------------------------------------------------------------------------------------------ VGG files

def test_random_vgg19_file_has_torchvision_layout(vgg19_file, tmp_path):
    state = torch.load(vgg19_file, weights_only=True)
    assert sorted(state) == sorted(f"features.{i}.{p}" for i in VGG19_CONVS for p in ("weight", "bias"))
    assert state["features.0.weight"].shape == (64, 3, 3, 3) and state["features.34.weight"].shape == (512, 512, 3, 3)
    assert all(not state[f"features.{i}.bias"].any() for i in VGG19_CONVS)
    std = state["features.2.weight"].std().item()  # kaiming normal, fan_out = 64·9
    assert std == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.05)
    save_random_vgg(tmp_path / "again.pth", seed=0)
    save_random_vgg(tmp_path / "other.pth", seed=1)
    assert torch.equal(torch.load(tmp_path / "again.pth")["features.34.weight"], state["features.34.weight"])
    assert not torch.equal(torch.load(tmp_path / "other.pth")["features.34.weight"], state["features.34.weight"])

    net = load_vgg(vgg19_file)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert torch.equal(net.features[34].weight, state["features.34.weight"])
    assert len(net.layer_names) == len(net.features) == 37 and net.layer_names[35] == "relu5_4"
    assert VGG(16).layer_names[29] == "relu5_3" and len(VGG(16).features) == 31


def test_classifier_keys_are_ignored(vgg19_file, tmp_path):
    state = torch.load(vgg19_file, weights_only=True)
    state["classifier.0.weight"] = torch.zeros(8, 4)
    torch.save(state, tmp_path / "full.pth")
    assert torch.equal(load_vgg(tmp_path / "full.pth").features[0].weight, state["features.0.weight"])


@pytest.mark.parametrize("damage, culprit", [
    (lambda s: s.pop("features.32.bias"), "features.32.bias"),
    (lambda s: s.__setitem__("features.0.weight", torch.zeros(64, 1, 3, 3)), "features.0.weight"),
    (lambda s: s.__setitem__("features.36.weight", torch.zeros(1)), "features.36.weight"),
])
def test_damaged_files_name_path_and_key(vgg19_file, tmp_path, damage, culprit):
    state = torch.load(vgg19_file, weights_only=True)
    damage(state)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(AnticipatedError, match=culprit) as info:
        load_vgg(tmp_path / "bad.pth")
    assert str(tmp_path / "bad.pth") in str(info.value) and "\n" not in str(info.value)


def test_other_depth_and_non_torch_files_are_refused(vgg16_file, vgg19_file, tmp_path):
    for path, depth in [(vgg16_file, 19), (vgg19_file, 16)]:
        with pytest.raises(AnticipatedError, match=str(path)):
            load_vgg(path, depth)
    (tmp_path / "notes.pth").write_text("not a tensor file")
    with pytest.raises(AnticipatedError, match="not a torch state-dict file"):
        load_vgg(tmp_path / "notes.pth")
    with pytest.raises(AnticipatedError, match="depth 11"):
        VGG(11)


def test_missing_file_and_none_give_the_howto(tmp_path):
    missing = tmp_path / "vgg19.pth"
    with pytest.raises(AnticipatedError) as info:
        load_vgg(missing)
    assert str(missing) in str(info.value) and VGG_WEIGHTS_HOWTO in str(info.value)
    for weights in (None, missing):
        with pytest.raises(AnticipatedError) as info:
            PerceptualLoss(weights).check()
        assert "model.init_args.vgg_weights" in str(info.value) and VGG_WEIGHTS_HOWTO in str(info.value)


def test_unknown_layer_names_valid_ones():
    with pytest.raises(AnticipatedError, match="conv6_1.*relu5_4"):
        VGG(19).forward_to(torch.zeros(1, 3, 8, 8), "conv6_1")
    with pytest.raises(AnticipatedError, match="conv5_4"):
        PerceptualLoss(None, layer="conv5_4", depth=16)  # VGG16 ends at conv5_3


# ------------------------------------------------------------------------------------------------ PerceptualLoss

@pytest.mark.parametrize("layer, after, stop, relu", [
    ("conv5_4", False, (5, 4), False),  # ESRGAN / BasicSR
    ("conv5_4", True, (5, 4), True),  # SRGAN φ5,4 = relu5_4
    ("relu2_2", False, (2, 2), True),
    ("conv3_3", False, (3, 3), False),
])
def test_perceptual_loss_equals_hand_computation(vgg19_file, layer, after, stop, relu):
    pred, target = images()
    loss = PerceptualLoss(str(vgg19_file), layer=layer, after_activation=after, feature_scale=1 / 12.75)
    state = torch.load(vgg19_file, weights_only=True)
    with torch.no_grad():
        fp, ft = (hand_vgg(state, imagenet(x), 19, stop, relu) / 12.75 for x in (pred, target))
    torch.testing.assert_close(loss(pred, target), F.mse_loss(fp, ft), rtol=RTOL, atol=0)
    l1 = PerceptualLoss(str(vgg19_file), layer=layer, after_activation=after, criterion="l1", feature_scale=1 / 12.75)
    torch.testing.assert_close(l1(pred, target), F.l1_loss(fp, ft), rtol=RTOL, atol=0)


def test_gray_images_are_replicated(vgg19_file):
    pred, target = images()
    loss = PerceptualLoss(str(vgg19_file), layer="relu2_2")
    gray = loss(pred[:, :1], target[:, :1])
    torch.testing.assert_close(gray, loss(pred[:, :1].expand(-1, 3, -1, -1), target[:, :1].expand(-1, 3, -1, -1)))


def test_gradient_reaches_pred_and_vgg_stays_out_of_the_module(vgg19_file):
    holder = nn.Module()
    holder.net = nn.Conv2d(3, 3, 1)
    holder.loss = PerceptualLoss(str(vgg19_file), layer="conv3_3")
    pred, target = images(1)
    pred.requires_grad_(True)
    holder.loss(pred, target).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0 and torch.isfinite(pred.grad).all()
    assert holder.loss.state_dict() == {} and list(holder.loss.parameters()) == [] and list(holder.loss.buffers()) == []
    assert list(holder.state_dict()) == ["net.weight", "net.bias"] and len(list(holder.parameters())) == 2
    vgg = holder.loss._vgg.net
    assert all(p.grad is None and not p.requires_grad for p in vgg.parameters())
    ema = copy.deepcopy(holder)  # what an EMA of the model does: the copy shares the one frozen VGG
    assert ema.loss._vgg.net is vgg and list(ema.state_dict()) == ["net.weight", "net.bias"]


# ------------------------------------------------------------------------------------------------ LPIPS

@pytest.fixture(scope="module")
def lin_file():
    path = torchmetrics_lin_weights()
    if path is None or not path.is_file():
        pytest.skip("torchmetrics' LPIPS vgg.pth not installed")
    return path


def hand_lpips(state, heads, a, b):
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    a, b = ((2 * x - 1 - shift) / scale for x in (a, b))
    total = 0
    for k, stop in enumerate([(1, 2), (2, 2), (3, 3), (4, 3), (5, 3)]):
        fa, fb = (hand_vgg(state, x, 16, stop, True) for x in (a, b))
        fa = fa / (torch.sqrt(torch.sum(fa ** 2, dim=1, keepdim=True)) + 1e-10)
        fb = fb / (torch.sqrt(torch.sum(fb ** 2, dim=1, keepdim=True)) + 1e-10)
        total = total + (((fa - fb) ** 2) * heads[k].view(1, -1, 1, 1)).sum(1).mean((1, 2))
    return total


def test_lpips_equals_hand_computation(vgg16_file, lin_file):
    a, b = images(2)
    metric = LPIPS(str(vgg16_file))
    value = metric(a, b)
    assert value.shape == (2,) and (value > 0).all()
    assert metric(a, a).abs().max() < 1e-6
    state = torch.load(vgg16_file, weights_only=True)
    lin = torch.load(lin_file, map_location="cpu", weights_only=True)
    heads = [lin[f"lin{k}.model.1.weight"].flatten() for k in range(5)]
    with torch.no_grad():
        torch.testing.assert_close(value, hand_lpips(state, heads, a, b), rtol=RTOL, atol=0)
    assert metric.state_dict() == {} and list(metric.parameters()) == []


def test_lpips_bad_files(vgg19_file, tmp_path, lin_file):
    with pytest.raises(AnticipatedError, match="backbone_weights"):
        LPIPS(None).check()
    with pytest.raises(AnticipatedError, match=str(vgg19_file)):  # a VGG19 file where VGG16 is needed
        LPIPS(str(vgg19_file)).check()
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, tmp_path / "lin.pth")
    with pytest.raises(AnticipatedError, match="lin1.model.1.weight"):
        LPIPS(str(vgg19_file), lin_weights=str(tmp_path / "lin.pth")).check()


# ------------------------------------------------------------------------------------------------ texture

def texture(size=64, seed=0):
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def slightly_noisy(x, sigma=0.002, seed=1):
    return (x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)


def test_spectrum_of_known_images():
    x = torch.arange(64.0)
    wave = (0.5 + 0.4 * torch.cos(2 * torch.pi * 10 * x / 64)).view(1, 1, 1, 64).expand(1, 1, 64, 64)
    spectrum = radial_power_spectrum(wave)
    assert spectrum.shape == (33,) and spectrum.argmax() == 10
    # white noise: flat at log10 of its variance (1/12 for U(0, 1) on a gray image)
    noise = radial_power_spectrum(texture()[:, :1])
    assert noise[8:].mean().item() == pytest.approx(torch.log10(torch.tensor(1 / 12)).item(), abs=0.15)
    # a ramp jumps from 1 to 0 across the border: without the Hann window that jump alone would put power
    # near 1e-2 into every ring; windowed, the upper half is at the floor
    ramp = torch.linspace(0, 1, 64, dtype=torch.float64).view(1, 1, 1, 64).expand(1, 1, 64, 64)
    assert radial_power_spectrum(ramp)[16:].max() < -7
    assert torch.allclose(radial_power_spectrum(ramp * 0.5 + 0.2), radial_power_spectrum(ramp * 0.5))


def test_spectrum_distance_sees_blur_not_faint_noise():
    sharp = texture()
    blurred = blur(sharp, gaussian_kernel(9, 1.5))
    assert spectrum_distance(sharp, sharp) == 0
    assert (radial_power_spectrum(blurred)[16:] < radial_power_spectrum(sharp)[16:] - 1).all()
    far, near = spectrum_distance(blurred, sharp), spectrum_distance(slightly_noisy(sharp), sharp)
    assert far > 2 and near < 0.05
    assert spectrum_distance(blur(sharp, gaussian_kernel(9, 0.7)), sharp) < far  # less blur, nearer
    with pytest.raises(AnticipatedError, match="one size"):
        spectrum_distance(sharp, sharp[..., :32])


def test_gradient_histogram_distance():
    sharp = texture()
    assert gradient_histogram_distance(sharp, sharp) == 0
    # only the distribution counts: a brighter copy or a transposed one has the same gradients
    exact = sharp.double()  # float64, so that the shift adds no rounding of its own
    assert gradient_histogram_distance(exact * 0.8 + 0.1, exact * 0.8) < 1e-12
    assert gradient_histogram_distance(sharp.transpose(-1, -2), sharp) < 1e-12
    blurred = blur(sharp, gaussian_kernel(9, 1.5))
    far, near = gradient_histogram_distance(blurred, sharp), gradient_histogram_distance(slightly_noisy(sharp), sharp)
    assert far > 0.1 and near < 0.005 and far > 20 * near
    # exact value: every gradient of a ramp of slope a is a, every gradient of a flat image 0
    ramp = (torch.arange(40, dtype=torch.float64) * 0.01).view(1, 1, 1, 40).expand(1, 1, 30, 40)
    assert gradient_histogram_distance(ramp, torch.full((1, 1, 30, 40), 0.5)) == pytest.approx(0.01, rel=1e-9)
