"""The convolutional part of VGG16/VGG19 (Simonyan & Zisserman, ICLR 2015) for perceptual losses and LPIPS.

Our own definition because torchvision is not a dependency; its module indices are torchvision's
(``features.0`` = conv1_1, ``features.1`` = relu1_1, ...), so the state-dict files that torchvision's ImageNet
models save (``vgg19-dcbb9e9d.pth``, ``vgg16-397923af.pth``) load as they are. ReLUs are not in place: a
pre-activation feature map (BasicSR's ``conv5_4``) must survive the layer after it.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from datamodules.errors import AnticipatedError

# convs per block (torchvision's configurations "D" and "E"); every block ends in a 2×2 max-pool
CONVS_PER_BLOCK = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
WIDTHS = (64, 128, 256, 512, 512)

TORCHVISION_FILES = {16: "vgg16-397923af.pth", 19: "vgg19-dcbb9e9d.pth"}


def weights_howto(depth: int = 19) -> str:
    return (f"torchvision's ImageNet VGG{depth} weights in its state-dict layout: on a machine with internet "
            f"`pip install torchvision` and run python -c \"import torch, torchvision; "
            f"torch.save(torchvision.models.vgg{depth}(weights='IMAGENET1K_V1').state_dict(), 'vgg{depth}.pth')\" "
            f"(or fetch https://download.pytorch.org/models/{TORCHVISION_FILES[depth]}), then give its path")


VGG_WEIGHTS_HOWTO = weights_howto(19)


def check_depth(depth: int) -> None:
    if depth not in CONVS_PER_BLOCK:
        raise AnticipatedError(f"VGG depth {depth!r} must be one of {sorted(CONVS_PER_BLOCK)}")


def vgg_layer_names(depth: int = 19) -> list[str]:
    """Names of ``features[i]`` in order: conv1_1, relu1_1, conv1_2, relu1_2, pool1, conv2_1, ..."""
    check_depth(depth)
    names = []
    for block, convs in enumerate(CONVS_PER_BLOCK[depth], start=1):
        for j in range(1, convs + 1):
            names += [f"conv{block}_{j}", f"relu{block}_{j}"]
        names.append(f"pool{block}")
    return names


class VGG(nn.Module):
    """``features`` only (no classifier); ``forward_to`` stops at the layer a loss needs."""

    def __init__(self, depth: int = 19):
        super().__init__()
        self.depth = depth
        self.layer_names = vgg_layer_names(depth)
        layers, channels = [], 3
        for width, convs in zip(WIDTHS, CONVS_PER_BLOCK[depth]):
            for _ in range(convs):
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=False)]
                channels = width
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)

    def index(self, layer: str) -> int:
        if layer not in self.layer_names:
            raise AnticipatedError(f"unknown VGG{self.depth} layer {layer!r}; choose one of {self.layer_names}")
        return self.layer_names.index(layer)

    def forward_layers(self, x: torch.Tensor, layers: list[str]) -> list[torch.Tensor]:
        """The feature maps at ``layers`` (any order), running the net once up to the deepest of them."""
        wanted = {self.index(name): name for name in layers}
        found = {}
        for i in range(max(wanted) + 1):
            x = self.features[i](x)
            if i in wanted:
                found[wanted[i]] = x
        return [found[name] for name in layers]

    def forward_to(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        return self.forward_layers(x, [layer])[0]


def load_vgg(path, depth: int = 19) -> VGG:
    """A frozen VGG in eval mode from a torchvision-layout state dict. ``classifier.*`` keys are ignored; every
    ``features.*`` key of the depth must be there with its shape, and no other, so a VGG16 file given as VGG19
    (or the reverse) is refused instead of loading a net whose deep layers are wrong."""
    net = VGG(depth)
    path = Path(path)
    if not path.is_file():
        raise AnticipatedError(f"VGG weights file {path} not found; it must hold {weights_howto(depth)}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and weights-only errors all mean "not a state dict we can read"
        raise AnticipatedError(f"VGG weights file {path} is not a torch state-dict file "
                               f"({type(error).__name__}); it must hold {weights_howto(depth)}") from None
    if not isinstance(state, dict):
        raise AnticipatedError(f"VGG weights file {path} holds a {type(state).__name__}, not a state dict; "
                               f"it must hold {weights_howto(depth)}")
    expected = net.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise AnticipatedError(f"VGG weights file {path} lacks {key}: not a torchvision VGG{depth} state dict")
        if not isinstance(state[key], torch.Tensor) or state[key].shape != tensor.shape:
            shape = tuple(getattr(state[key], "shape", ()))
            raise AnticipatedError(f"VGG weights file {path}: {key} has shape {shape}, VGG{depth} needs "
                                   f"{tuple(tensor.shape)}")
    extra = sorted(k for k in state if str(k).startswith("features.") and k not in expected)
    if extra:
        raise AnticipatedError(f"VGG weights file {path} has {extra[0]}, which VGG{depth} lacks: "
                               f"is it another depth?")
    net.load_state_dict({key: state[key] for key in expected})
    net.eval().requires_grad_(False)
    return net


def save_random_vgg(path, depth: int = 19, seed: int = 0) -> None:
    """Writes the features state dict of a He-initialised VGG (torchvision's init: kaiming normal, fan_out, relu;
    zero biases), the same for a seed: a stand-in for the ImageNet file in tests and CPU runs."""
    net = VGG(depth)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.features:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu", generator=generator)
                module.bias.zero_()
    torch.save(net.state_dict(), path)
