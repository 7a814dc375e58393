"""MZSR at test time: Soh, Cho & Cho, "Meta-Transfer Learning for Zero-Shot Super-Resolution", CVPR 2020.

A trained net (the meta-learned initialisation of ``schemes.meta_transfer.MetaTransferScheme``, or any net on the
upsampled image) takes a few plain gradient steps on the test image's own example before it super-resolves it:
the *father* is the whole LR input, its *son* the father degraded by the pair's kernel (ZSSR's ``make_son``: the
recipe's own degradation function, in the pair's order), and the net learns bicubic↑(son) → father with L1.
Facts from the authors' code (github.com/JWSoh/MZSR ``test.py``, ``main.py``):

* plain SGD (``tf.train.GradientDescentOptimizer``) on the whole image, one update per step, ``--num`` 1 or 10;
* the rate per step of the "direct" ×2 model: 2e-2 at the first update, 1e-2 for the next three, then 5e-3
  (``DIRECT_RATES``); the "bicubic" model: 1e-2 for three updates, then 1e-3 (``test_rates: [1e-2, 1e-2, 1e-2,
  1e-3]`` of a meta-training on bicubic tasks);
* no noise on the son (``noise_level = 0``), no back-projection (``back_projection = False``), no self-ensemble;
  output = the adapted net on bicubic↑(LR), clipped.

Not from the authors: the net is adapted on a copy per image, so every image starts from the same weights (the
authors reload the checkpoint per image: the same); the LR is cropped to a multiple of the scale for the son pair,
as ZSSR's reconstruction test does, so that son sizes are exact. ``last_budget`` records the updates and seconds
of the last image, as ZSSR's does.
"""
from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from datamodules.errors import AnticipatedError
from datamodules.image_ops import DEGRADATION_ORDERS, imresize
from lightning_modules.classical import degradation
from lightning_modules.restorer import NetRestorer, Restorer, pair_scale
from lightning_modules.zero_shot.zssr import make_son

DIRECT_RATES = (2e-2, 1e-2, 1e-2, 1e-2, 5e-3)  # test.py, method 0 ("direct" x2): the last one repeats


def steps_label(label: str, steps: int) -> str:
    """A table row's name for ``label`` adapted ``steps`` times."""
    return f"{label}, {steps} step{'s' if steps != 1 else ''}"


def check_steps(steps, option: str = "--steps") -> int:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise AnticipatedError(f"{option}={steps!r} must be an integer >= 0 (gradient steps on each test image)")
    return steps


def adaptation_pair(lr: torch.Tensor, scale: int, kernel: torch.Tensor | None,
                    order: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(net input, target) of the test image's own example: the son of the LR (cropped to a multiple of the scale)
    by ``kernel`` in ``order`` (bicubic without one), bicubic-upsampled back to the LR's size."""
    h, w = lr.shape[-2] // scale * scale, lr.shape[-1] // scale * scale
    father = lr[..., :h, :w]
    return imresize(make_son(father, scale, kernel, order), size=(h, w)), father


def adapt(net: nn.Module, inputs: torch.Tensor, target: torch.Tensor, steps: int,
          rates: tuple[float, ...] = DIRECT_RATES) -> int:
    """``steps`` plain SGD updates of ``net`` on L1(net(inputs), target), the ``i``-th at ``rates[i]`` (the last
    rate repeats); the updates made. Leaves the net in eval mode."""
    if steps == 0:
        return 0
    optimizer = torch.optim.SGD(net.parameters(), lr=rates[0])
    net.train()
    with torch.enable_grad():
        for i in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = rates[min(i, len(rates) - 1)]
            loss = F.l1_loss(net(inputs), target)
            if not torch.isfinite(loss):
                raise AnticipatedError(f"test-time adaptation: the L1 loss is {loss.item()} at step {i + 1} "
                                       f"(lr={rates[min(i, len(rates) - 1)]:g}); lower the rates")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    net.eval()
    return steps


class TestTimeAdaptation(Restorer):
    """A trained net's restorer (``NetRestorer``) with ``steps`` updates on each test image first (module docstring).
    ``use_kernel``: None uses the pair's kernel where it has one (bicubic sons otherwise), True requires it (one
    line where the pair has none), False always makes bicubic sons. ``order``: None takes the pair's (the recipe
    that made it), else the given one."""

    task = "sr"

    def __init__(self, restorer: NetRestorer, steps: int, rates: tuple[float, ...] | list[float] = DIRECT_RATES,
                 order: str | None = None, use_kernel: bool | None = None, label: str | None = None):
        self.restorer = restorer
        self.steps = check_steps(steps)
        if not rates or any(not isinstance(r, (int, float)) or isinstance(r, bool) or r <= 0 for r in rates):
            raise AnticipatedError(f"test-time rates={rates!r} must be a non-empty list of positive numbers")
        self.rates = tuple(float(r) for r in rates)
        if order is not None and order not in DEGRADATION_ORDERS:
            raise AnticipatedError(f"order={order!r} must be one of {', '.join(map(repr, DEGRADATION_ORDERS))}")
        self.order, self.use_kernel = order, use_kernel
        self.channels, self.scales = restorer.channels, restorer.scales
        if getattr(restorer.net, "scale", 1) != 1 and steps:
            raise AnticipatedError(f"{getattr(restorer, 'path', restorer.label)}: --steps adapts nets on the "
                                   "upsampled image (scale 1); this net upsamples itself")
        self.label = label or steps_label(restorer.label, steps)
        self.path = getattr(restorer, "path", None)
        self.last_budget: dict | None = None

    @property
    def on_tile(self):
        return self.restorer.on_tile

    @on_tile.setter
    def on_tile(self, callback) -> None:  # predict's progress bar reaches the net's tiles
        self.restorer.on_tile = callback

    def run(self, pair: dict, what: str) -> torch.Tensor:
        started, updates = time.perf_counter(), 0
        try:
            scale = pair_scale(pair)
            kernels = None
            if self.use_kernel or (self.use_kernel is None and pair.get("kernel") is not None):
                kernels = degradation(pair, "kernel", self, what)
            order = self.order or pair.get("order") or "blur_decimate"
            device = self.restorer.device
            outs = []
            for i in range(len(pair["degraded"])):
                adapted = self.restorer
                if self.steps:
                    # a copy per image, made outside inference mode (a scheme's validation), whose tensors cannot train
                    with torch.inference_mode(False):
                        adapted = copy.copy(self.restorer)
                        adapted.net = copy.deepcopy(self.restorer.net)
                        lr = pair["degraded"][i:i + 1].to(device, torch.float32).clone()
                        kernel = None if kernels is None else kernels[min(i, len(kernels) - 1)].to(device, torch.float32).clone()
                        inputs, target = adaptation_pair(lr, scale, kernel, order)
                        updates += adapt(adapted.net, inputs, target, self.steps, self.rates)
                image = {k: v[i:i + 1] if torch.is_tensor(v) and v.ndim == 4 else v for k, v in pair.items()}
                outs.append(adapted.run(image, what).clamp(0, 1))
            return torch.cat(outs).to(pair["degraded"].dtype)
        finally:
            self.last_budget = {"updates": updates, "seconds": time.perf_counter() - started}
