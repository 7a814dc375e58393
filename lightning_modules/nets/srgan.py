"""The SRGAN discriminator (Ledig et al., "Photo-Realistic Single Image Super-Resolution Using a Generative
Adversarial Network", CVPR 2017, Fig. 4); the generator is ``srresnet.SRResNet``.

A VGG-style classifier of HR patches: a 3×3 conv (64 channels, stride 1) + LeakyReLU(0.2) without BN, then
seven 3×3 conv-BN-LeakyReLU(0.2) blocks, 64 s2, 128 s1, 128 s2, 256 s1, 256 s2, 512 s1, 512 s2 (eight convs,
64 -> 512 channels, four stride-2 halvings), then dense 1024 + LeakyReLU(0.2) + dense 1. The paper's closing
sigmoid is left to the loss (BCE with logits): ``forward`` returns N×1 logits. The dense layer sees
512 · (input_size/16)² features, so the net is built for one patch side, ``input_size`` (96 in the paper).
Convs followed by BN carry no bias (BN's shift is one). ``features`` is the first conv's width (64 in the
paper; it doubles as in Fig. 4) for smaller variants.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from datamodules.errors import AnticipatedError

from .common import NET_OPTION, bad_option, check_channels, check_int

# how a discriminator's (critic's) options are written: it is configured under model.init_args.discriminator
DISCRIMINATOR_OPTION = "model.init_args.discriminator.init_args"


@contextmanager
def discriminator_options():
    """Run ``common``'s option checks for a discriminator: their errors name the option under
    ``model.init_args.discriminator.init_args`` instead of ``model.init_args.net.init_args``."""
    try:
        yield
    except AnticipatedError as error:
        message = str(error)
        if message.startswith(NET_OPTION + "."):
            raise AnticipatedError(DISCRIMINATOR_OPTION + message[len(NET_OPTION):]) from None
        raise


class SRGANDiscriminator(nn.Module):
    def __init__(self, channels: int = 3, input_size: int = 96, features: int = 64):
        super().__init__()
        with discriminator_options():
            check_channels(channels)
            check_int("features", features)
            check_int("input_size", input_size, 16, net="SRGANDiscriminator")
            if input_size % 16:
                raise bad_option("input_size", input_size, "SRGANDiscriminator needs a multiple of 16 "
                                 "(four stride-2 convs), the side of the HR patches it judges")
        f = features
        widths = [(f, f, 2), (f, 2 * f, 1), (2 * f, 2 * f, 2), (2 * f, 4 * f, 1), (4 * f, 4 * f, 2),
                  (4 * f, 8 * f, 1), (8 * f, 8 * f, 2)]  # (in, out, stride) of the seven BN blocks
        self.features = nn.Sequential(
            nn.Conv2d(channels, f, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
            *[nn.Sequential(nn.Conv2d(cin, cout, 3, stride=s, padding=1, bias=False), nn.BatchNorm2d(cout),
                            nn.LeakyReLU(0.2, inplace=True))
              for cin, cout, s in widths])
        side = input_size // 16
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(8 * f * side * side, 1024),
                                        nn.LeakyReLU(0.2, inplace=True), nn.Linear(1024, 1))
        self.in_channels = channels
        self.input_size = input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-2:] != (self.input_size, self.input_size):
            raise AnticipatedError(
                f"SRGANDiscriminator was built for {self.input_size}×{self.input_size} patches "
                f"({DISCRIMINATOR_OPTION}.input_size={self.input_size}), got an input of shape {list(x.shape)}: "
                "set input_size to the HR patch side")
        return self.classifier(self.features(x))
