"""The supervised architectures (VDSR, DnCNN, NLRN, SRResNet, DeepDeblur, SRN): net contract, shapes,
parameter counts against the papers, residual behaviour, and receptive fields checked empirically.

Everything runs on tiny configurations; receptive fields are probed in float64 and eval mode (train-mode
BN couples all pixels through the batch statistics), where an output that does not depend on a
perturbed pixel is bit-identical.
"""
from __future__ import annotations

import inspect
import itertools
import typing

import pytest
import torch
from torch import nn

from datamodules.image_ops import image_pyramid
from lightning_modules.nets.common import receptive_width
from lightning_modules.nets.deepdeblur import DeepDeblur
from lightning_modules.nets.dncnn import DnCNN
from lightning_modules.nets.nlrn import NLRN, NonLocal, windowed_correlation, windowed_sum
from lightning_modules.nets.srcnn import SRCNN
from lightning_modules.nets.srn import SRN
from lightning_modules.nets.srresnet import SRResNet
from lightning_modules.nets.vdsr import VDSR

ALL_NETS = [VDSR, DnCNN, NLRN, SRResNet, DeepDeblur, SRN]


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def randomize_nonlocal_g(net: NLRN) -> NLRN:
    """g starts at zero (identity non-local modules); give it weights so attention reaches the output."""
    torch.manual_seed(1)
    nn.init.normal_(net.non_local.g.weight, std=0.3)
    return net


# ---------------------------------------------------------------------------------------------- contract

@pytest.mark.parametrize("cls", ALL_NETS)
def test_constructor_args_are_plain_typed_with_defaults(cls):
    hints = typing.get_type_hints(cls.__init__)
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    assert params
    for p in params:
        assert hints[p.name] in (int, float, bool, str), (cls.__name__, p.name, hints[p.name])
        assert p.default is not inspect.Parameter.empty, (cls.__name__, p.name)


@pytest.mark.parametrize("net, scale, channels, multiple", [
    (VDSR(), 1, 1, 1), (DnCNN(channels=3, depth=20), 1, 3, 1), (NLRN(), 1, 1, 1),
    (SRResNet(scale=3), 3, 3, 1), (DeepDeblur(), 1, 3, 4), (SRN(), 1, 3, 16), (SRN(scales=2), 1, 3, 8),
])
def test_contract_attributes(net, scale, channels, multiple):
    assert net.scale == scale
    assert net.in_channels == net.out_channels == channels
    assert net.size_multiple == multiple
    assert isinstance(net.receptive_field, int) and net.receptive_field > 0


def test_paper_receptive_fields():
    # VDSR: "41 × 41" for depth 20; DnCNN: "35 × 35" for depth 17 (both papers, Sec. 3)
    assert VDSR().receptive_field == 41
    assert DnCNN().receptive_field == 35
    assert DnCNN(depth=20).receptive_field == 41


# ------------------------------------------------------------------------------------ parameter counts

def test_vdsr_params_match_paper():
    # 20 layers of 3×3×64, 1 channel: 665,921 (665K as tabulated e.g. in DRRN, Tai et al. CVPR 2017)
    assert n_params(VDSR()) == 640 + 18 * (64 * 64 * 9 + 64) + 577 == 665_921


def test_dncnn_params_match_paper():
    # DnCNN-S, 17 layers, gray: ≈556K (conv biases dropped before BN, BN affine kept)
    net = DnCNN()
    assert n_params(net) == 640 + 15 * (64 * 64 * 9 + 2 * 64) + 577 == 556_097
    assert sum(isinstance(m, nn.Conv2d) for m in net.modules()) == 17
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 15
    assert sum(isinstance(m, nn.Conv2d) for m in DnCNN(depth=20).modules()) == 20


def test_srresnet_params_match_paper():
    # ×4 RGB, 16 blocks, 64 ch: 1.5M (EDSR, Lim et al. 2017, Table 1); 2 sub-pixel ×2 stages
    net = SRResNet()
    assert 1.50e6 <= n_params(net) < 1.56e6
    shuffles = [m.upscale_factor for m in net.modules() if isinstance(m, nn.PixelShuffle)]
    assert shuffles == [2, 2]
    assert [m.upscale_factor for m in SRResNet(scale=3).modules() if isinstance(m, nn.PixelShuffle)] == [3]
    assert [m.upscale_factor for m in SRResNet(scale=2).modules() if isinstance(m, nn.PixelShuffle)] == [2]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 2 * 16 + 1
    with pytest.raises(ValueError):
        SRResNet(scale=5)


def test_deepdeblur_structure():
    net = DeepDeblur()
    assert len(net.levels) == 3 and len(net.up_convs) == 2
    level_convs = [[m for m in level.modules() if isinstance(m, nn.Conv2d)] for level in net.levels]
    assert all(len(convs) == 1 + 2 * 19 + 1 for convs in level_convs)  # 40 conv layers per scale
    assert all(c.kernel_size == (5, 5) for convs in level_convs for c in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    # finer levels read the blurred image and the up-convolved coarser estimate
    assert [convs[0].in_channels for convs in level_convs] == [6, 6, 3]
    # independent weights per scale: one more scale adds a whole level
    assert n_params(DeepDeblur(scales=3)) - n_params(DeepDeblur(scales=2)) > 3.8e6
    assert n_params(net) == 11_721_321


def test_srn_shares_weights_across_scales():
    for use_lstm in (True, False):
        nets = [SRN(scales=s, use_lstm=use_lstm) for s in (1, 2, 3)]
        assert len({n_params(n) for n in nets}) == 1
        nets[1].load_state_dict(nets[2].state_dict())  # same weights serve any number of scales
    assert n_params(SRN(use_lstm=False)) == 6_881_251
    # ConvLSTM: one 3×3 conv from [x, h] (2×128) to the 4 gates (4×128)
    assert n_params(SRN(use_lstm=True)) - n_params(SRN(use_lstm=False)) == 256 * 512 * 9 + 512


def test_nlrn_shares_weights_across_steps():
    a, b = NLRN(features=16, steps=2, window=5), NLRN(features=16, steps=5, window=5)
    # only the per-step BN (3 per step, γ and β) grows with the number of steps
    assert n_params(b) - n_params(a) == 3 * 3 * 2 * 16
    convs = [[p for m in net.modules() if isinstance(m, nn.Conv2d) for p in m.parameters()] for net in (a, b)]
    assert [p.shape for p in convs[0]] == [p.shape for p in convs[1]]


# ---------------------------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("net", [
    VDSR(depth=5, features=8), DnCNN(channels=3, depth=5, features=8),
    NLRN(channels=1, features=8, steps=2, window=5, embed_features=4),
])
@pytest.mark.parametrize("size", [(13, 17), (8, 8), (5, 11)])
def test_fully_convolutional_shapes(net, size):
    x = rand(2, net.in_channels, *size)
    for mode in (net.train, net.eval):
        mode()
        assert net(x).shape == x.shape


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_srresnet_output_shape(scale):
    net = SRResNet(channels=3, scale=scale, blocks=2, features=8).eval()
    assert net(rand(2, 3, 7, 10)).shape == (2, 3, 7 * scale, 10 * scale)


@pytest.mark.parametrize("net", [
    DeepDeblur(channels=3, blocks=1, features=8),
    SRN(channels=3, features=4, blocks=1, use_lstm=True),
    SRN(channels=1, features=4, blocks=1, use_lstm=False, scales=2),
])
def test_pyramid_nets(net):
    m = net.size_multiple
    x = rand(2, net.in_channels, 2 * m, 3 * m)
    xs = image_pyramid(x, net.scales)
    outs = net.forward_pyramid(xs)
    assert isinstance(outs, list) and [o.shape for o in outs] == [p.shape for p in xs]  # finest first
    assert torch.equal(net(x), outs[0])
    with pytest.raises(ValueError):
        net.forward_pyramid(xs[:-1])


def test_srn_rejects_sizes_the_strides_cannot_handle():
    net = SRN(features=4, blocks=1, scales=2)
    with pytest.raises(ValueError):
        net.forward_pyramid([rand(1, 3, 12, 12), rand(1, 3, 6, 6)])


# --------------------------------------------------------------------------------------------- residual

@pytest.mark.parametrize("net, last", [
    (VDSR(depth=5, features=8), lambda n: n.residual[-1]),
    (DnCNN(depth=5, features=8), lambda n: n.noise[-1]),
    (NLRN(features=8, steps=2, window=3, embed_features=4), lambda n: n.tail[-1]),
])
def test_residual_learning(net, last):
    x = rand(2, 1, 9, 10)
    assert not torch.allclose(net(x), x)
    nn.init.zeros_(last(net).weight)
    nn.init.zeros_(last(net).bias)
    assert torch.equal(net(x), x)


def test_dncnn_subtracts_the_predicted_noise():
    net = DnCNN(depth=4, features=8).eval()
    x = rand(1, 1, 9, 9)
    assert torch.allclose(net(x), x - net.noise(x))


# --------------------------------------------------------------------------------------------- NLRN bits

def test_windowed_ops_match_brute_force():
    q, k, v = rand(2, 3, 6, 7, seed=1), rand(2, 3, 6, 7, seed=2), rand(2, 4, 6, 7, seed=3)
    w = rand(2, 6, 7, 9, seed=4)
    corr, acc = torch.zeros(2, 6, 7, 9), torch.zeros(2, 4, 6, 7)
    for (dy, dx), i, j in itertools.product(itertools.product(range(3), repeat=2), range(6), range(7)):
        ii, jj = i + dy - 1, j + dx - 1
        if 0 <= ii < 6 and 0 <= jj < 7:
            corr[:, i, j, dy * 3 + dx] = (q[:, :, i, j] * k[:, :, ii, jj]).sum(1)
            acc[:, :, i, j] += w[:, i, j, dy * 3 + dx, None] * v[:, :, ii, jj]
    assert torch.allclose(windowed_correlation(q, k, 3), corr, atol=1e-6)
    assert torch.allclose(windowed_sum(w, v, 3), acc, atol=1e-6)


def test_nonlocal_starts_as_identity_and_uses_propagated_correlation():
    block = NonLocal(features=4, embed_features=2, window=3)
    x = rand(1, 4, 6, 6)
    y, corr = block(x, None)
    assert torch.equal(y, x) and corr.shape == (1, 6, 6, 9)
    nn.init.normal_(block.g.weight)
    g = block.g(x)
    # a dominant earlier correlation towards the right-hand neighbour makes every pixel read it
    previous = torch.zeros(1, 6, 6, 9)
    previous[..., 1 * 3 + 2] = 1e4
    y, corr = block(x, previous)
    assert torch.allclose(corr, previous + windowed_correlation(block.theta(x), block.phi(x), 3))
    assert torch.allclose(y[..., :-1], x[..., :-1] + g[..., 1:], atol=1e-5)


# ------------------------------------------------------------------------------------- receptive fields

def probe_reach(net: nn.Module, size: int) -> float:
    """Largest distance (input pixels, between centres, per axis) from the perturbed centre input pixel
    to an output pixel that changed."""
    net = net.double().eval()
    assert size > net.receptive_field, "the probe must not be clipped by the borders"
    x = rand(1, net.in_channels, size, size, dtype=torch.float64)
    c = size // 2
    bumped = x.clone()
    bumped[..., c, c] += 1.0
    with torch.no_grad():
        changed = (net(bumped) != net(x)).any(dim=1)[0].nonzero().double()
    assert len(changed)
    return ((changed + 0.5) / net.scale - (c + 0.5)).abs().max().item()


def assert_receptive_field(net: nn.Module, size: int, exact: bool = False):
    reach = probe_reach(net, size)
    claimed = net.receptive_field
    assert reach < claimed / 2, f"output changed {reach} px away, outside the claimed {claimed} window"
    assert claimed <= 2 * receptive_width(reach), f"claimed {claimed} vs empirical {receptive_width(reach)}"
    if exact:
        assert receptive_width(reach) == claimed


@pytest.mark.parametrize("net", [VDSR(depth=6, features=8), DnCNN(depth=6, features=8)])
def test_plain_conv_receptive_field_is_exact(net):
    assert_receptive_field(net, size=21, exact=True)


@pytest.mark.parametrize("steps, window", [(1, 9), (3, 5)])
def test_nlrn_receptive_field_is_exact(steps, window):
    net = randomize_nonlocal_g(NLRN(features=8, steps=steps, window=window, embed_features=4))
    assert_receptive_field(net, size=net.receptive_field + 8, exact=True)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_srresnet_receptive_field(scale):
    assert_receptive_field(SRResNet(channels=1, scale=scale, blocks=2, features=8), size=32)


def test_deepdeblur_receptive_field():
    net = DeepDeblur(channels=1, blocks=1, features=4)
    assert_receptive_field(net, size=176)


@pytest.mark.parametrize("use_lstm", [True, False])
def test_srn_receptive_field(use_lstm):
    net = SRN(channels=1, scales=2, features=4, blocks=1, kernel_size=3, use_lstm=use_lstm)
    assert_receptive_field(net, size=288)


# ------------------------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("net, size", [
    (VDSR(depth=4, features=8), 9), (DnCNN(depth=4, features=8), 9),
    (NLRN(features=8, steps=2, window=3, embed_features=4), 9), (SRResNet(blocks=1, features=8), 6),
    (DeepDeblur(blocks=1, features=8), 16), (SRN(features=4, blocks=1), 32),
])
def test_trains(net, size):
    net.train()
    net(rand(2, net.in_channels, size, size)).square().mean().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_srn_feeds_the_previous_estimate_without_gradient():
    # as the reference (tf.stop_gradient): without the LSTM, the finest output gets no gradient
    # through the coarser scale
    net = SRN(channels=1, scales=2, features=4, blocks=1, use_lstm=False)
    fine, coarse = [p.requires_grad_() for p in image_pyramid(rand(1, 1, 16, 16), 2)]
    net.forward_pyramid([fine, coarse])[0].sum().backward()
    assert coarse.grad is None and fine.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------ impossible sizes

IMPOSSIBLE = [  # (net, options, the option as the user writes it)
    (SRCNN, {"filters": [0, 4]}, "filters=[0, 4]"),
    (SRCNN, {"filters": [64, -1]}, "filters=[64, -1]"),
    (SRCNN, {"kernel_sizes": [9, 4, 5]}, "kernel_sizes=[9, 4, 5]"),
    (SRCNN, {"kernel_sizes": [9, 1, 5], "filters": [64]}, "filters=[64]"),
    (SRCNN, {"channels": 2}, "channels=2"),
    (VDSR, {"depth": 1}, "depth=1"),
    (VDSR, {"features": 0}, "features=0"),
    (VDSR, {"channels": 4}, "channels=4"),
    (DnCNN, {"depth": 0}, "depth=0"),
    (DnCNN, {"features": -8}, "features=-8"),
    (SRResNet, {"scale": 5}, "scale=5"),
    (SRResNet, {"scale": 0}, "scale=0"),
    (SRResNet, {"blocks": 0}, "blocks=0"),
    (SRResNet, {"features": 0}, "features=0"),
    (DeepDeblur, {"kernel_size": 4}, "kernel_size=4"),
    (DeepDeblur, {"scales": 0}, "scales=0"),
    (DeepDeblur, {"blocks": -1}, "blocks=-1"),
    (SRN, {"kernel_size": 0}, "kernel_size=0"),
    (SRN, {"features": 0}, "features=0"),
    (SRN, {"channels": 0}, "channels=0"),
]


@pytest.mark.parametrize("net, options, named", IMPOSSIBLE, ids=[f"{n.__name__}-{w}" for n, _, w in IMPOSSIBLE])
def test_impossible_sizes_are_one_line_naming_the_option(net, options, named):
    from datamodules.errors import AnticipatedError

    with pytest.raises(AnticipatedError) as err:
        net(**options)
    message = str(err.value)
    assert message.startswith(f"model.init_args.net.init_args.{named}: ") and "\n" not in message, message
