"""The GAN nets: the SRGAN discriminator and DeblurGAN's generator and PatchGAN critic. Shapes, parameter
counts, the generator's net contract and receptive field (probed as in test_nets_seeds), and one-line
option errors naming the option where it is configured (discriminators under model.init_args.discriminator).
"""
from __future__ import annotations

import inspect
import typing

import pytest
import torch
from torch import nn

from datamodules.errors import AnticipatedError
from lightning_modules.nets.deblurgan import DeblurGANGenerator, PatchGANCritic
from lightning_modules.nets.srgan import SRGANDiscriminator
from tests.test_nets_seeds import assert_receptive_field, n_params, rand

DISCRIMINATOR = "model.init_args.discriminator.init_args"
NET = "model.init_args.net.init_args"


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(AnticipatedError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    return message


@pytest.mark.parametrize("cls", [SRGANDiscriminator, DeblurGANGenerator, PatchGANCritic])
def test_constructor_args_are_plain_typed_with_defaults(cls):
    hints = typing.get_type_hints(cls.__init__)
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    for p in params:
        assert hints[p.name] in (int, float, bool, str), (cls.__name__, p.name, hints[p.name])
        assert p.default is not inspect.Parameter.empty, (cls.__name__, p.name)


# ------------------------------------------------------------------------------------ SRGAN discriminator

def test_srgan_discriminator_paper_size():
    net = SRGANDiscriminator()
    assert net.in_channels == 3 and net.input_size == 96
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1, 2]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 7
    # 1,792 for the first conv (with bias); bias-free convs + BN (γ, β) for the seven blocks; 512·6·6 -> 1024 -> 1
    blocks = sum(9 * cin * cout + 2 * cout for cin, cout in
                 [(64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)])
    assert n_params(net) == 1_792 + blocks + (512 * 36 * 1024 + 1024) + 1025 == 23_563_649
    net.eval()
    with torch.no_grad():
        logits = net(rand(2, 3, 96, 96))
    assert logits.shape == (2, 1)
    assert not isinstance(net.classifier[-1], nn.Sigmoid)


def test_srgan_discriminator_other_size_and_width():
    net = SRGANDiscriminator(channels=1, input_size=48, features=8)
    assert net(rand(2, 1, 48, 48)).shape == (2, 1)
    message = one_line_error(net, rand(2, 1, 96, 96))
    assert "built for 48×48" in message and f"{DISCRIMINATOR}.input_size=48" in message


@pytest.mark.parametrize("kwargs, option", [
    ({"input_size": 40}, "input_size=40"), ({"input_size": 0}, "input_size=0"), ({"input_size": 96.0}, "input_size"),
    ({"features": 0}, "features=0"), ({"channels": 2}, "channels=2"),
])
def test_srgan_discriminator_bad_options(kwargs, option):
    assert one_line_error(SRGANDiscriminator, **kwargs).startswith(f"{DISCRIMINATOR}.{option}")


# -------------------------------------------------------------------------------------- DeblurGAN generator

def test_deblurgan_generator_paper_size():
    net = DeblurGANGenerator()
    assert (net.scale, net.in_channels, net.out_channels, net.size_multiple) == (1, 3, 3, 4)
    assert net.receptive_field == 175  # reach 3 + 1.5 + 3 + 18·4 + 3 + 1.5 + 3 = 87
    # the authors' resnet_9blocks with affine-free instance norm and biases everywhere (as pix2pix/CycleGAN's)
    assert n_params(net) == 11_378_179
    assert sum(isinstance(m, nn.Dropout) and m.p == 0.5 for m in net.modules()) == 9
    norms = [m for m in net.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == 3 + 2 * 9 + 2 and all(not m.affine and m.track_running_stats for m in norms)
    x = rand(1, 3, 64, 64)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1


def test_deblurgan_generator_maps_01_to_01_through_the_global_skip():
    net = DeblurGANGenerator(features=4, blocks=1, dropout=0.0)
    nn.init.zeros_(net.body[-2].weight)  # tanh(0) = 0: the net is the identity on [0, 1]
    x = rand(2, 3, 16, 16)
    assert torch.allclose(net(x), x, atol=1e-6)
    # tanh -> ±1 adds ±1 in [-1, 1], ±0.5 in [0, 1], clamped to the image range
    nn.init.constant_(net.body[-2].bias, 20.0)
    assert torch.allclose(net(x), (x + 0.5).clamp(max=1), atol=1e-6)
    nn.init.constant_(net.body[-2].bias, -20.0)
    assert torch.allclose(net(x), (x - 0.5).clamp(min=0), atol=1e-6)


def test_deblurgan_generator_dropout_only_in_training():
    net = DeblurGANGenerator(channels=1, features=4, blocks=2)
    x = rand(1, 1, 16, 16)
    torch.manual_seed(0)
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))


def loud(net: nn.Module) -> nn.Module:
    """He-normal convs: with the authors' N(0, 0.02) the ResBlocks' contributions fall below float64 rounding
    next to the identity path long before the receptive field's edge."""
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net


@pytest.mark.parametrize("blocks, size", [(1, 64), (9, 184)])
def test_deblurgan_generator_receptive_field(blocks, size):
    net = loud(DeblurGANGenerator(channels=1, features=4, blocks=blocks))
    assert net.receptive_field == 2 * (3 + 1.5 + 3 + 8 * blocks + 3 + 1.5 + 3) + 1
    assert_receptive_field(net, size=size)


def test_deblurgan_generator_needs_multiples_of_4():
    with pytest.raises(ValueError, match="multiples of 4"):
        DeblurGANGenerator(features=4, blocks=1)(rand(1, 3, 18, 16))


@pytest.mark.parametrize("kwargs, option", [
    ({"blocks": 0}, "blocks=0"), ({"features": -1}, "features=-1"), ({"channels": 4}, "channels=4"),
    ({"dropout": 1.0}, "dropout=1.0"), ({"dropout": True}, "dropout=True"),
])
def test_deblurgan_generator_bad_options(kwargs, option):
    assert one_line_error(DeblurGANGenerator, **kwargs).startswith(f"{NET}.{option}")


# --------------------------------------------------------------------------------------- PatchGAN critic

def test_patchgan_critic_paper_size():
    net = PatchGANCritic()
    assert net.in_channels == 3
    assert n_params(net) == 2_764_737  # pix2pix's 70×70 PatchGAN
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.stride[0], c.padding[0]) for c in convs] == [
        (64, 2, 2), (128, 2, 2), (256, 2, 2), (512, 1, 2), (1, 1, 2)]
    assert not any(isinstance(m, (nn.Sigmoid, nn.BatchNorm2d)) for m in net.modules())
    with torch.no_grad():
        # 64 -> 33 -> 17 -> 9 (stride 2, pad 2), -> 10 -> 11 (stride 1, pad 2)
        assert net(rand(1, 3, 64, 64)).shape == (1, 1, 11, 11)


@pytest.mark.parametrize("norm", ["instance", "none"])
def test_patchgan_critic_scores_each_sample_alone(norm):
    """What the gradient penalty assumes: a sample's scores do not depend on the rest of the batch."""
    net = PatchGANCritic(channels=1, features=4, n_layers=2, norm=norm)
    x = rand(3, 1, 32, 32)
    other = x.clone()
    other[1:] = rand(2, 1, 32, 32, seed=1)
    assert torch.allclose(net(x)[0], net(other)[0], atol=1e-6)
    assert net(x).shape == (3, 1, 11, 11)  # n_layers 2: 32 -> 17 -> 9 (stride 2), -> 10 -> 11 (stride 1)


@pytest.mark.parametrize("kwargs, option", [
    ({"norm": "batch"}, "norm=batch"), ({"n_layers": 0}, "n_layers=0"), ({"features": 0}, "features=0"),
    ({"channels": 2}, "channels=2"),
])
def test_patchgan_critic_bad_options(kwargs, option):
    assert one_line_error(PatchGANCritic, **kwargs).startswith(f"{DISCRIMINATOR}.{option}")


def test_deblurgan_identity_init_starts_from_its_input():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32)
    # the output passes through the net's own [-1, 1] mapping and back: equal up to float32 rounding
    assert (DeblurGANGenerator(features=8, blocks=1, identity_init=True)(x) - x).abs().max() < 1e-6
    assert (DeblurGANGenerator(features=8, blocks=1)(x) - x).abs().mean() > 0.01  # the authors' init does not
