"""Losses by name, so a config or a sweep picks one with a string: pixel losses and the adversarial ones."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

# elementwise penalty of the difference pred - target
PENALTIES = {
    "mse": torch.square,
    "l1": torch.abs,
    # the smooth L1 that LapSRN and many deblurring papers train with
    "charbonnier": lambda d: torch.sqrt(d * d + 1e-6),
}
Reduction = Literal["mean", "sum"]


class PixelLoss(nn.Module):
    """``reduction="mean"``: the mean over every pixel (PyTorch's convention). ``"sum"``: summed over each
    sample's pixels and averaged over the batch, halved for mse: Caffe's EuclideanLoss and the 1/(2N) Σ‖·‖²
    that VDSR and DnCNN wrote their learning rates for (the mean is patch-area times smaller)."""

    def __init__(self, name: str = "mse", reduction: Reduction = "mean"):
        super().__init__()
        if name not in PENALTIES:
            raise ValueError(f"unknown loss {name!r}; choose one of {sorted(PENALTIES)}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"loss reduction {reduction!r} must be 'mean' or 'sum'")
        self.name, self.reduction = name, reduction

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        penalty = PENALTIES[self.name](pred - target)
        if self.reduction == "mean":
            return penalty.mean()
        return penalty.flatten(1).sum(1).mean() * (0.5 if self.name == "mse" else 1.0)



# ---------------------------------------------------------------------------------------------- adversarial
GanLossName = Literal["vanilla", "lsgan", "wgan_gp", "ragan"]


class GANLoss(nn.Module):
    """The two players' losses of one GAN formulation, on the discriminator's raw outputs (logits / critic values):

    * ``vanilla``: the discriminator's cross-entropy (real → 1, fake → 0); the generator's non-saturating
      −log D(G(x)) (SRGAN's l_Gen).
    * ``lsgan``: least squares (Mao et al. 2017): D (real − 1)² + fake², G (fake − 1)², each a batch mean (BasicSR).
    * ``wgan_gp``: Wasserstein (Gulrajani et al. 2017): D E[fake] − E[real] (+ λ·``gradient_penalty``, added by the
      scheme, which holds the critic), G −E[fake] (DeblurGAN).
    * ``ragan``: relativistic average (Jolicoeur-Martineau 2018, ESRGAN): each side's logit measured against the
      other side's batch mean; D ½[BCE(r − E f, 1) + BCE(f − E r, 0)], G the same with the labels swapped, so the
      generator's loss needs the logits of the real images too (``real`` in ``generator``).
    """

    def __init__(self, name: GanLossName = "vanilla"):
        super().__init__()
        if name not in GanLossName.__args__:
            raise ValueError(f"unknown GAN loss {name!r}; choose one of {', '.join(GanLossName.__args__)}")
        self.name = name

    @property
    def needs_real_for_generator(self) -> bool:
        return self.name == "ragan"

    def generator(self, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        bce = nn.functional.binary_cross_entropy_with_logits
        if self.name == "vanilla":
            return bce(fake, torch.ones_like(fake))
        if self.name == "lsgan":
            return torch.square(fake - 1).mean()
        if self.name == "wgan_gp":
            return -fake.mean()
        return 0.5 * (bce(real - fake.mean(), torch.zeros_like(real)) + bce(fake - real.mean(), torch.ones_like(fake)))

    def discriminator(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        bce = nn.functional.binary_cross_entropy_with_logits
        if self.name == "vanilla":
            return bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))
        if self.name == "lsgan":
            return torch.square(real - 1).mean() + torch.square(fake).mean()
        if self.name == "wgan_gp":
            return fake.mean() - real.mean()
        return 0.5 * (bce(real - fake.mean(), torch.ones_like(real)) + bce(fake - real.mean(), torch.zeros_like(fake)))


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP's E[(‖∇D(x̂)‖₂ − 1)²] at x̂ = ε·real + (1 − ε)·fake, ε ~ U[0, 1] per sample (Gulrajani et al.,
    Alg. 1), with a graph through the gradient so the critic's step minimises it (create_graph)."""
    eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    mixed = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return torch.square(grad.flatten(1).norm(dim=1) - 1).mean()
