"""DeblurGAN (Kupyn, Budzan, Mykhailych, Mishkin & Matas, "DeblurGAN: Blind Motion Deblurring Using
Conditional Adversarial Networks", CVPR 2018): the generator and the WGAN-GP critic, with the details of
the authors' PyTorch code (KupynOrest/DeblurGAN, ``models/networks.py`` and ``options/``).

Generator (``ResnetGenerator``, 'resnet_9blocks'): ReflectionPad(3) + 7×7 conv (64) + IN + ReLU; two stride-2
3×3 convs (128, 256) + IN + ReLU; 9 ResBlocks at 256 channels (reflect pad, 3×3 conv, IN, ReLU, dropout 0.5,
reflect pad, 3×3 conv, IN, plus the identity); two stride-2 3×3 transposed convs (output_padding 1; 128, 64)
+ IN + ReLU; ReflectionPad(3) + 7×7 conv to the image + tanh; and the global skip of ``--learn_residual``
(used by the authors' test command): output = clamp(input + tanh(·), -1, 1). The authors' images live in
[-1, 1]; ours in [0, 1], so the net maps its input to [-1, 1] first and its output back to [0, 1]: its
contract is [0, 1] -> [0, 1].

Authors' defaults kept: instance norm everywhere (``--norm instance``), ``InstanceNorm2d(affine=False,
track_running_stats=True)``, so training normalises each image by its own statistics and eval mode uses the
running averages (this makes the eval-mode net local, hence ``receptive_field`` and tiled inference); every
conv has a bias (``use_bias`` is set for instance norm); dropout 0.5 in each ResBlock (``--no_dropout`` off);
weights N(0, 0.02), biases 0 (``weights_init``). The ResBlock has two convs with dropout between, as the
``build_conv_block`` left commented out in that file (from pix2pix) writes it; the live code's
``a + [dropout] if use_dropout else [] + b`` parses as a conditional and keeps one conv either way.
``features`` (``--ngf``) sets the widths f, 2f, 4f (the authors hard-code 64, 128, 256).

Critic (``NLayerDiscriminator``, 'basic', n_layers 3): a PatchGAN of 4×4 convs with padding 2 (the authors'
ceil((4-1)/2)), LeakyReLU(0.2): stride-2 convs at f, 2f, 4f, ... (capped at 8f; the first without norm), a
stride-1 conv with norm, and a stride-1 conv to one channel; no sigmoid (WGAN-GP). It sees the image alone
(``define_D(output_nc, ...)``), not the blurred input. The authors pass the same ``--norm`` to it, so their
WGAN-GP critic uses instance norm; we keep that default: batch norm would couple the samples of a batch,
while the gradient penalty assumes each critic value depends on its own sample only (WGAN-GP, Gulrajani et
al. 2017, advise against it). Instance norm normalises each sample alone, so the penalty stays per-sample;
``norm="none"`` drops it (as the WGAN-GP paper's critics). Unlike the authors' shared ``get_norm_layer``, the
critic's instance norm keeps no running statistics: training is unchanged (train mode ignores them) and an
eval-mode critic scores as the trained one did.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .common import bad_option, check_channels, check_int, receptive_width
from .srgan import discriminator_options

# in pixels of the finer side: a stride-2 3×3 conv reads 1 + 0.5 fine pixels from the coarse centre; a fine
# pixel of a ×2 3×3 transposed conv (padding 1, output_padding 1) reads coarse centres up to 1.5 fine px away
STRIDED_CONV_REACH = 1.5
TRANSPOSED_CONV_REACH = 1.5


def instance_norm(channels: int) -> nn.InstanceNorm2d:
    """The authors' generator norm: no affine parameters, running statistics for eval mode."""
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=True)


def normal_init_(net: nn.Module) -> None:
    """The authors' ``weights_init``: conv and transposed-conv weights N(0, 0.02), biases 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ResnetBlock(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(width, width, 3), instance_norm(width), nn.ReLU(inplace=True),
            *([nn.Dropout(dropout)] if dropout else []),
            nn.ReflectionPad2d(1), nn.Conv2d(width, width, 3), instance_norm(width),
        )

    def forward(self, x):
        return x + self.body(x)


class DeblurGANGenerator(nn.Module):
    def __init__(self, channels: int = 3, features: int = 64, blocks: int = 9, dropout: float = 0.5,
                 identity_init: bool = False):
        """``identity_init``: the last conv starts at zero, so the net starts as the identity (the global skip
        passes the blurred input through) instead of input + tanh(noise): not the authors' N(0, 0.02) init,
        whose first outputs are some 0.25 away from the input, a start a few CPU minutes do not recover from."""
        super().__init__()
        check_channels(channels)
        check_int("features", features)
        check_int("blocks", blocks)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise bad_option("dropout", dropout, "must be a probability in [0, 1) (0.5 in DeblurGAN, 0 = none)")
        f = features

        def down(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride=2, padding=1), instance_norm(cout), nn.ReLU(inplace=True)]

        def up(cin: int, cout: int) -> list[nn.Module]:
            return [nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1), instance_norm(cout),
                    nn.ReLU(inplace=True)]

        self.body = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(channels, f, 7), instance_norm(f), nn.ReLU(inplace=True),
            *down(f, 2 * f), *down(2 * f, 4 * f),
            *[ResnetBlock(4 * f, float(dropout)) for _ in range(blocks)],
            *up(4 * f, 2 * f), *up(2 * f, f),
            nn.ReflectionPad2d(3), nn.Conv2d(f, channels, 7), nn.Tanh(),
        )
        normal_init_(self)
        if identity_init:
            nn.init.zeros_(self.body[-2].weight)
            nn.init.zeros_(self.body[-2].bias)

        self.scale = 1
        self.in_channels = self.out_channels = channels
        self.size_multiple = 4  # two stride-2 convs, undone by two ×2 transposed convs
        # reach in input pixels (eval mode: IN uses running statistics, dropout is off)
        reach = (3 + STRIDED_CONV_REACH + 2 * STRIDED_CONV_REACH  # 7×7, then the halvings to 1/2 and 1/4
                 + 4 * 2 * blocks                                  # 2·blocks 3×3 convs at 1/4 resolution
                 + 2 * TRANSPOSED_CONV_REACH + TRANSPOSED_CONV_REACH + 3)  # back to 1/2 and 1, 7×7
        self.receptive_field = receptive_width(reach)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % 4 or x.shape[-1] % 4:
            raise ValueError(f"DeblurGANGenerator needs input sides that are multiples of 4, got {tuple(x.shape)}")
        x = 2 * x - 1
        return (torch.clamp(x + self.body(x), -1, 1) + 1) / 2


NORMS = ("instance", "none")


class PatchGANCritic(nn.Module):
    def __init__(self, channels: int = 3, features: int = 64, n_layers: int = 3, norm: str = "instance"):
        super().__init__()
        with discriminator_options():
            check_channels(channels)
            check_int("features", features)
            check_int("n_layers", n_layers, net="PatchGANCritic")
            if norm not in NORMS:
                raise bad_option("norm", norm, "PatchGANCritic supports 'instance' (DeblurGAN's) or 'none' (batch "
                                 "norm would couple the samples the gradient penalty treats one by one)")
        kw, padw = 4, math.ceil((4 - 1) / 2)

        def block(cin: int, cout: int, stride: int, normed: bool = True) -> list[nn.Module]:
            # the authors' use_bias is True for instance norm, and the convs without norm have a bias anyway
            return [nn.Conv2d(cin, cout, kw, stride=stride, padding=padw),
                    *([nn.InstanceNorm2d(cout)] if normed and norm == "instance" else []),
                    nn.LeakyReLU(0.2, inplace=True)]

        widths = [features * min(2**n, 8) for n in range(n_layers + 1)]
        layers = block(channels, widths[0], 2, normed=False)
        for n in range(1, n_layers):
            layers += block(widths[n - 1], widths[n], 2)
        layers += block(widths[n_layers - 1], widths[n_layers], 1)
        layers.append(nn.Conv2d(widths[n_layers], 1, kw, stride=1, padding=padw))
        self.model = nn.Sequential(*layers)
        normal_init_(self)
        self.in_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N×C×H×W image -> N×1×h×w critic scores, one per overlapping patch (70×70 for n_layers 3)."""
        return self.model(x)
