"""Losses and metrics on VGG features: the perceptual (content) loss of SRGAN/ESRGAN, and LPIPS.

The VGG is frozen, lives outside the module tree and is loaded on first use: it is not a parameter or buffer,
so it never enters a checkpoint, an optimizer, an EMA of the model or a ``state_dict`` comparison, and a
module holding the loss can be built (and its config checked) before the weights file is read.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from datamodules.errors import AnticipatedError
from lightning_modules.nets.vgg import VGG, check_depth, load_vgg, vgg_layer_names, weights_howto

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# LPIPS's ScalingLayer: ImageNet statistics re-expressed for inputs in [-1, 1]
LPIPS_SHIFT, LPIPS_SCALE = (-0.030, -0.088, -0.188), (0.458, 0.448, 0.450)
LPIPS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


class Frozen:
    """Holds a frozen net outside ``nn.Module``'s bookkeeping; copies (``copy.deepcopy`` of an EMA) share it."""

    def __init__(self):
        self.net = None

    def __deepcopy__(self, memo):
        return self

    def on(self, x: torch.Tensor):
        """The net on ``x``'s device and dtype (moved in place once, then free)."""
        weight = next(self.net.parameters())
        if weight.device != x.device or weight.dtype != x.dtype:
            self.net.to(device=x.device, dtype=x.dtype)
        return self.net


def three_channels(x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise AnticipatedError(f"VGG losses take N×1×H×W or N×3×H×W images, got shape {tuple(x.shape)}")
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - x.new_tensor(mean).view(1, 3, 1, 1)) / x.new_tensor(std).view(1, 3, 1, 1)


class PerceptualLoss(nn.Module):
    """Distance between VGG feature maps of pred and target (images in [0, 1], ImageNet-normalised for VGG).

    ``layer`` names the feature map; ``after_activation`` turns convX_Y into reluX_Y. SRGAN's φ5,4 is after the
    activation (``after_activation=True``, ``feature_scale=1/12.75``, its rescaling of the features);
    ESRGAN/BasicSR take conv5_4 before it (post-ReLU features are sparse and, ESRGAN found, shift the output's
    brightness). ``criterion``
    is the elementwise mean of the squared ("mse") or absolute ("l1") difference of the scaled features.
    """

    option = "model.init_args.vgg_weights"

    def __init__(self, weights: str | None, layer: str = "conv5_4", after_activation: bool = False, depth: int = 19,
                 criterion: Literal["mse", "l1"] = "mse", feature_scale: float = 1.0):
        super().__init__()
        check_depth(depth)
        self.layer = layer.replace("conv", "relu", 1) if after_activation else layer
        if self.layer not in vgg_layer_names(depth):
            raise AnticipatedError(f"unknown VGG{depth} layer {self.layer!r} for the perceptual loss; "
                                   f"choose one of {vgg_layer_names(depth)}")
        if criterion not in ("mse", "l1"):
            raise AnticipatedError(f"perceptual loss criterion {criterion!r} must be 'mse' or 'l1'")
        self.weights, self.depth, self.criterion, self.feature_scale = weights, depth, criterion, feature_scale
        self._vgg = Frozen()

    def check(self) -> None:
        """Loads the VGG now, so that a missing or bad file fails before training starts."""
        if self._vgg.net is not None:
            return
        if self.weights is None:
            raise AnticipatedError(f"the perceptual loss needs VGG weights: set {self.option} to a file of "
                                   f"{weights_howto(self.depth)}")
        try:
            self._vgg.net = load_vgg(self.weights, self.depth)
        except AnticipatedError as error:
            raise AnticipatedError(f"{self.option}: {error}") from None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = normalise(three_channels(x), IMAGENET_MEAN, IMAGENET_STD)
        return self._vgg.on(x).forward_to(x, self.layer) * self.feature_scale

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.check()
        with torch.no_grad():
            target_features = self.features(target)
        distance = F.mse_loss if self.criterion == "mse" else F.l1_loss
        return distance(self.features(pred), target_features)


def torchmetrics_lin_weights() -> Path | None:
    """The LPIPS v0.1 VGG linear heads that torchmetrics ships (found without importing torchmetrics)."""
    spec = importlib.util.find_spec("torchmetrics")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "functional" / "image" / "lpips_models" / "vgg.pth"


def load_lin_heads(path) -> list[torch.Tensor]:
    """The five 1×C×1×1 weights ``lin{k}.model.{i}.weight`` of an LPIPS state dict (i = 1 after the dropout of
    the released files, 0 without it)."""
    path = Path(path)
    if not path.is_file():
        raise AnticipatedError(f"LPIPS linear-head file {path} not found; give the LPIPS v0.1 vgg.pth "
                               f"(torchmetrics ships it in torchmetrics/functional/image/lpips_models)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise AnticipatedError(f"LPIPS linear-head file {path} is not a torch state-dict file "
                               f"({type(error).__name__})") from None
    heads = []
    for k, channels in enumerate((64, 128, 256, 512, 512)):
        keys = [f"lin{k}.model.1.weight", f"lin{k}.model.0.weight"]
        found = [state[key] for key in keys if isinstance(state, dict) and key in state]
        if not found or tuple(found[0].shape) != (1, channels, 1, 1):
            raise AnticipatedError(f"LPIPS linear-head file {path} lacks {keys[0]} of shape (1, {channels}, 1, 1): "
                                   f"not an LPIPS VGG file")
        heads.append(found[0].float())
    return heads


class LPIPS(nn.Module):
    """LPIPS v0.1 with the VGG16 trunk (Zhang et al., CVPR 2018), one value per image, for inputs in [0, 1].

    Our own code after richzhang/PerceptualSimilarity because torchmetrics' LPIPS needs torchvision: inputs to
    [-1, 1], the LPIPS scaling layer, VGG16 features at relu1_2 ... relu5_3, each unit-normalised over
    channels (x / (‖x‖ + 1e-10), the reference's eps; torchmetrics uses x / √(‖x‖² + 1e-8)), squared
    difference, a learned 1×1 conv without bias, spatial mean, summed over the five layers. Gray images are
    replicated to three channels. The backbone and heads stay out of ``state_dict`` like PerceptualLoss's VGG.
    """

    def __init__(self, backbone_weights: str | None, lin_weights: str | None = None):
        super().__init__()
        self.backbone_weights, self.lin_weights = backbone_weights, lin_weights
        self._nets = Frozen()

    def check(self) -> None:
        if self._nets.net is not None:
            return
        if self.backbone_weights is None:
            raise AnticipatedError(f"LPIPS needs backbone_weights, a file of {weights_howto(16)}")
        lin_path = self.lin_weights or torchmetrics_lin_weights()
        if lin_path is None:
            raise AnticipatedError("LPIPS linear heads not found: torchmetrics is not installed; give lin_weights")
        heads = load_lin_heads(lin_path)
        try:
            backbone = load_vgg(self.backbone_weights, depth=16)
        except AnticipatedError as error:
            raise AnticipatedError(f"LPIPS backbone_weights: {error}") from None
        # the heads ride on the backbone so that one .to() moves both
        backbone.lpips_heads = nn.ParameterList([nn.Parameter(h, requires_grad=False) for h in heads])
        self._nets.net = backbone

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        self.check()
        a, b = (normalise(three_channels(x) * 2 - 1, LPIPS_SHIFT, LPIPS_SCALE) for x in (a, b))
        net: VGG = self._nets.on(a)
        total = 0.0
        for fa, fb, head in zip(net.forward_layers(a, LPIPS_LAYERS), net.forward_layers(b, LPIPS_LAYERS),
                                net.lpips_heads):
            fa = fa / (fa.square().sum(1, keepdim=True).sqrt() + 1e-10)
            fb = fb / (fb.square().sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + F.conv2d((fa - fb).square(), head).mean((1, 2, 3))
        return total
