from functools import partial

import pytest
import torch
import torch.nn as nn

from lightning_modules.inference import pad_to_multiple, self_ensemble, tiled_forward

H, W = 97, 131  # odd, and not multiples of any tile or size_multiple used here


class ContractNet(nn.Module):
    """A body wrapped with the net contract's attributes (NOTES.md)."""

    def __init__(self, body: nn.Module, receptive_field: int | None, scale: int = 1, size_multiple: int = 1,
                 residual: bool = False, channels: int = 3) -> None:
        super().__init__()
        self.body, self.residual = body, residual
        self.scale, self.receptive_field, self.size_multiple = scale, receptive_field, size_multiple
        self.in_channels = self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


def conv_stack(layers: list[tuple[int, int]], padding_mode: str = "zeros", residual: bool = False) -> ContractNet:
    """Convs of (kernel, dilation) with 'same' padding; the receptive field is 1 + Σ dilation·(kernel - 1)."""
    modules, channels = [], [3] + [12] * (len(layers) - 1) + [3]
    for (k, d), c_in, c_out in zip(layers, channels, channels[1:]):
        modules += [nn.Conv2d(c_in, c_out, k, dilation=d, padding=d * (k // 2), padding_mode=padding_mode),
                    nn.LeakyReLU(0.1)]
    rf = 1 + sum(d * (k - 1) for k, d in layers)
    return ContractNet(nn.Sequential(*modules[:-1]), rf, residual=residual)


def pixel_shuffle_sr(scale: int) -> ContractNet:
    body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(16, 16, 3, padding=1),
                         nn.LeakyReLU(0.1), nn.Conv2d(16, 3 * scale**2, 3, padding=1), nn.PixelShuffle(scale))
    return ContractNet(body, receptive_field=7, scale=scale)


def deconv_sr() -> ContractNet:
    # FSRCNN-style 9×9 transposed conv: each HR pixel sees LR pixels within ±2 of its own, so 5 + 2·(2 + 1)
    body = nn.Sequential(nn.Conv2d(3, 16, 5, padding=2), nn.LeakyReLU(0.1), nn.Conv2d(16, 16, 3, padding=1),
                         nn.LeakyReLU(0.1), nn.ConvTranspose2d(16, 3, 9, stride=2, padding=4, output_padding=1))
    return ContractNet(body, receptive_field=11, scale=2)


def down_up(levels: int) -> ContractNet:
    """conv, then per level a stride-2 conv + conv, then per level a 2×2 transposed conv + conv (U-Net-like)."""
    act = partial(nn.LeakyReLU, 0.1)
    modules = [nn.Conv2d(3, 12, 3, padding=1), act()]
    for _ in range(levels):
        modules += [nn.Conv2d(12, 12, 3, stride=2, padding=1), act(), nn.Conv2d(12, 12, 3, padding=1), act()]
    for _ in range(levels):
        modules += [nn.ConvTranspose2d(12, 12, 2, stride=2), act(), nn.Conv2d(12, 12, 3, padding=1), act()]
    modules.append(nn.Conv2d(12, 3, 3, padding=1))
    # tight values, as measured by test_declared_receptive_field_is_tight (half-widths 7 and 17)
    return ContractNet(nn.Sequential(*modules), receptive_field={1: 15, 2: 35}[levels], size_multiple=2**levels,
                       residual=True)


FINITE_NETS = {
    "conv_rf3": lambda: conv_stack([(3, 1)]),
    "conv_rf9": lambda: conv_stack([(3, 1)] * 4),
    "conv_rf21_reflect": lambda: conv_stack([(5, 1)] * 5, padding_mode="reflect"),
    "conv_rf41_dilated_residual": lambda: conv_stack([(9, 1), (3, 4), (3, 8), (5, 1), (3, 1), (3, 1)],
                                                     residual=True),
    "pixel_shuffle_x2": lambda: pixel_shuffle_sr(2),
    "pixel_shuffle_x3": lambda: pixel_shuffle_sr(3),
    "deconv_x2": deconv_sr,
    "down_up_multiple2": lambda: down_up(1),
    "down_up_multiple4": lambda: down_up(2),
}


def build(name: str) -> ContractNet:
    torch.manual_seed(0)
    return FINITE_NETS[name]().eval()


def image(h: int = H, w: int = W, seed: int = 1) -> torch.Tensor:
    return torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(seed))


def full_pass(net: ContractNet, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = net(pad_to_multiple(x, net.size_multiple))
    return out[..., : x.shape[-2] * net.scale, : x.shape[-1] * net.scale]


@pytest.mark.parametrize("name", FINITE_NETS)
def test_declared_receptive_field_is_tight(name):
    # so that the tiling tests below run with the smallest halo the contract allows
    net = build(name)
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    measured = 0  # farthest input row (from the output pixel's own input row) with a nonzero gradient
    for q in range(30 * net.scale, 30 * net.scale + net.size_multiple * net.scale + 1):  # every phase w.r.t. strides
        (grad,) = torch.autograd.grad(net(x)[0, :, q, q].sum(), x)
        rows = grad.abs().sum((0, 1, 3)).nonzero().flatten()
        measured = max(measured, (rows - q // net.scale).abs().max().item())
    assert measured == net.receptive_field // 2


@pytest.mark.parametrize("tile", [32, 45])
@pytest.mark.parametrize("name", FINITE_NETS)
def test_tiled_equals_full_pass(name, tile):
    net, x = build(name), image()
    tiled = tiled_forward(net, x, tile=tile)
    assert tiled.shape == (2, 3, H * net.scale, W * net.scale)
    assert (tiled - full_pass(net, x)).abs().max().item() <= 1e-5


def test_too_little_overlap_is_caught():
    net, x = build("conv_rf41_dilated_residual"), image()
    assert (tiled_forward(net, x, tile=32, overlap=4) - full_pass(net, x)).abs().max().item() > 1e-3


class Recorder(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.sizes = net, []
        self.scale, self.receptive_field = net.scale, net.receptive_field
        self.size_multiple = net.size_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(x.shape[-2:]))
        return self.net(x)


def test_tiles_hold_at_most_tile_plus_halo_and_are_aligned():
    net = Recorder(build("down_up_multiple4"))  # rf 35 -> halo 17, rounded up to 20
    out = tiled_forward(net, image(), tile=30)  # core rounded up to 32
    assert out.shape == (2, 3, H, W)
    assert len(net.sizes) == 4 * 5  # padded 100×132 in 32-pixel cores
    assert all(h <= 32 + 2 * 20 and w <= 32 + 2 * 20 and h % 4 == 0 and w % 4 == 0 for h, w in net.sizes)


class GlobalGate(nn.Module):
    """Channel attention from the global mean: every output pixel depends on the whole image."""

    scale, receptive_field, size_multiple, in_channels, out_channels = 1, None, 1, 3, 3

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.sigmoid(x.mean((-2, -1), keepdim=True))


def test_global_receptive_field_runs_in_one_pass():
    torch.manual_seed(0)
    net, x = Recorder(GlobalGate().eval()), image()
    assert torch.equal(tiled_forward(net, x, tile=32), net.net(x))
    assert net.sizes == [(H, W)]
    tiled_forward(net, x, tile=32, overlap=8)  # an explicit overlap asks for (approximate) tiles
    assert len(net.sizes) == 1 + 4 * 5


def transforms(x: torch.Tensor) -> list[torch.Tensor]:
    return [torch.rot90(x, k, dims=(-2, -1)).flip(-1) if flip else torch.rot90(x, k, dims=(-2, -1))
            for k in range(4) for flip in (False, True)]


class Identity(nn.Identity):
    scale, receptive_field, size_multiple, in_channels, out_channels = 1, 1, 1, 3, 3


def dihedral_symmetric_net() -> ContractNet:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.LeakyReLU(0.1), nn.Conv2d(8, 3, 3, padding=1))
    with torch.no_grad():
        for conv in (body[0], body[2]):
            conv.weight.copy_(torch.stack(transforms(conv.weight)).mean(0))
    return ContractNet(body, receptive_field=7).eval()


@pytest.mark.parametrize("net", [Identity(), dihedral_symmetric_net()], ids=["identity", "dihedral_conv"])
def test_self_ensemble_of_an_equivariant_net_is_the_net(net):
    x = image()
    assert (self_ensemble(net, x) - net(x)).abs().max().item() <= 1e-5


def test_self_ensemble_is_equivariant_even_when_the_net_is_not():
    net, x = build("pixel_shuffle_x2"), image(40, 56)
    ensembled = self_ensemble(net, x)
    assert (ensembled - full_pass(net, x)).abs().max().item() > 1e-3  # the net itself is not equivariant
    for tx, t_ensembled in zip(transforms(x), transforms(ensembled)):
        assert (self_ensemble(net, tx) - t_ensembled).abs().max().item() <= 1e-5


def test_self_ensemble_with_tiled_forward_matches_plain_forward():
    net, x = build("pixel_shuffle_x3"), image()[:1]
    plain = self_ensemble(net, x)
    tiled = self_ensemble(net, x, forward=partial(tiled_forward, net, tile=32))
    assert tiled.shape == (1, 3, 3 * H, 3 * W)
    assert (tiled - plain).abs().max().item() <= 1e-5
