"""Adversarial training scheme: the restoration net (the generator) trained against a discriminator, as SRGAN
(Ledig et al., CVPR 2017) and DeblurGAN (Kupyn et al., CVPR 2018) do. Manual optimization, one optimizer per
player, as in Lightning's own GAN example. Per batch:

1. generator step: the weighted sum of its losses (pixel, VGG perceptual, adversarial; a weight of 0 drops a
   loss), with the discriminator's parameters frozen;
2. ``n_critic`` discriminator steps on the real targets and the *detached* output of step 1 (WGAN-GP adds
   λ·gradient penalty), with the generator's frozen.

Learning rates follow a schedule counted in generator steps (``scheduler``). Lightning's ``global_step`` counts
every optimizer step under manual optimization, so a batch is ``1 + n_critic`` of them: ``trainer.max_steps``
counts both players' steps (the configs say so where they set it).

The health rule of ``restorelab.checkpointing`` watches the *content* loss (pixel + perceptual) that the step
returns: the adversarial terms of a working GAN swing by orders of magnitude (a WGAN critic's values are
unbounded), so they would read as an explosion; every loss is still checked for non-finite values
(``guard``). ``ema_decay`` keeps an exponential moving average of the weights through Lightning's
``EMAWeightAveraging``: validation runs on the average, a checkpoint's ``state_dict`` holds it (so evaluation,
``benchmark`` and ``predict`` take it with no option) and ``current_model_state`` the raw weights.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from datamodules.errors import AnticipatedError
from lightning_modules.checkpoint_file import load_net_weights
from lightning_modules.losses import GANLoss, GanLossName, PixelLoss, gradient_penalty
from lightning_modules.perceptual import PerceptualLoss
from lightning_modules.schemes.base import RestorationScheme


class AdversarialScheme(RestorationScheme):
    def __init__(
        self,
        net: nn.Module,
        discriminator: nn.Module,
        scale: int = 1,
        pixel_weight: float = 1.0,
        pixel_loss: Literal["mse", "l1", "charbonnier"] = "l1",
        perceptual_weight: float = 0.0,
        perceptual_layer: str = "conv5_4",
        perceptual_after_activation: bool = False,
        perceptual_criterion: Literal["mse", "l1"] = "mse",
        perceptual_feature_scale: float = 1.0,
        vgg_weights: str | None = None,
        adversarial_weight: float = 1e-3,
        gan_loss: GanLossName = "vanilla",
        gp_weight: float = 10.0,
        n_critic: int = 1,
        lr: float = 1e-4,
        lr_d: float | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        scheduler: Literal["none", "multistep", "linear_decay"] = "none",
        milestones: list[int] | None = None,
        gamma: float = 0.1,
        decay_start: float = 0.5,
        clip_grad: float | None = None,
        clip_algorithm: Literal["value", "norm"] = "norm",
        ema_decay: float | None = None,
        generator_init: str | None = None,
        metric_space: Literal["y", "rgb"] = "y",
    ):
        """
        Args:
            net: the generator, a restoration net (``lightning_modules.nets``: SRResNet, DeblurGAN's ResNet).
            discriminator: its opponent (``nets.srgan.SRGANDiscriminator``, ``nets.deblurgan.PatchGANCritic``),
                on target-sized images.
            pixel_weight, perceptual_weight, adversarial_weight: the generator's loss weights (0 drops a loss).
            perceptual_layer: the VGG19 layer by name ("conv5_4", "conv2_2", "conv3_3", ...);
                ``perceptual_after_activation``: its ReLU output (SRGAN's φ5,4) instead of the conv's;
                ``perceptual_feature_scale``: features multiplied by it (SRGAN: 1/12.75).
            vgg_weights: torchvision-layout VGG19 weights, a local file (``lightning_modules.nets.vgg``); needed
                when ``perceptual_weight`` > 0, checked when fit starts.
            gan_loss: ``lightning_modules.losses.GANLoss``; ``gp_weight``: WGAN-GP's λ.
            n_critic: discriminator steps per generator step (on the same batch, as DeblurGAN's code does).
            lr, lr_d: Adam rates of generator and discriminator (``lr_d`` None: ``lr``); ``betas`` for both.
            scheduler: per generator step: "multistep" (× ``gamma`` at each of ``milestones``, generator steps),
                "linear_decay" (constant for the first ``decay_start`` of the run, then linearly to 0: DeblurGAN).
            clip_grad: gradient clipping of both players (``clip_algorithm``); Lightning's own
                ``trainer.gradient_clip_val`` does not apply under manual optimization.
            ema_decay: keep an EMA of the weights with this decay (e.g. 0.999), evaluated and saved.
            generator_init: a checkpoint (any scheme) whose net initialises the generator when fit starts from
                scratch (SRGAN starts from SRResNet).
        """
        super().__init__(net, scale, metric_space)
        self.automatic_optimization = False
        if n_critic < 1:
            raise AnticipatedError(f"model.init_args.n_critic={n_critic} must be at least 1")
        for name in ("pixel_weight", "perceptual_weight", "adversarial_weight", "gp_weight"):
            if not locals()[name] >= 0:
                raise AnticipatedError(f"model.init_args.{name}={locals()[name]} must be at least 0")
        if not 0 <= decay_start <= 1:
            raise AnticipatedError(f"model.init_args.decay_start={decay_start} must be a fraction of the run in [0, 1]")
        self.discriminator = discriminator
        self.pixel = PixelLoss(pixel_loss)
        self.perceptual = PerceptualLoss(vgg_weights, perceptual_layer, perceptual_after_activation,
                                         criterion=perceptual_criterion, feature_scale=perceptual_feature_scale)
        self.gan = GANLoss(gan_loss)
        # test rows carry the texture distances: what the adversarial term changes, and PSNR does not show
        self.protocol = dataclasses.replace(self.protocol, texture=True)

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        if self.hparams.perceptual_weight > 0:
            self.perceptual.check()
        # a resumed run takes its weights from its own checkpoint, after this
        if self.hparams.generator_init and not (self._trainer is not None and self.trainer.ckpt_path):
            load_net_weights(self.net, self.hparams.generator_init, "model.init_args.generator_init")

    def configure_callbacks(self):
        if self.hparams.ema_decay is None:
            return []
        from lightning.pytorch.callbacks import EMAWeightAveraging

        return [EMAWeightAveraging(decay=self.hparams.ema_decay)]

    def configure_optimizers(self):
        hp = self.hparams
        opt_g = torch.optim.Adam(self.net.parameters(), lr=hp.lr, betas=tuple(hp.betas))
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=hp.lr if hp.lr_d is None else hp.lr_d,
                                 betas=tuple(hp.betas))
        if hp.scheduler == "none":
            return [opt_g, opt_d]
        factor = self._schedule()
        schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, factor) for opt in (opt_g, opt_d)]
        return [opt_g, opt_d], schedulers

    def _schedule(self):
        """The rate factor after ``k`` generator steps."""
        hp = self.hparams
        if hp.scheduler == "multistep":
            milestones = sorted(hp.milestones or [])
            return lambda k: hp.gamma ** sum(k >= m for m in milestones)
        total = self.generator_steps_in_run()
        start = hp.decay_start * total
        return lambda k: 1.0 if k < start else max(0.0, (total - k) / max(1.0, total - start))

    def generator_steps_in_run(self) -> int:
        """Generator steps the run will take: max_steps counts both players' (1 + n_critic per batch)."""
        if self.trainer.max_steps not in (None, -1):
            return max(1, self.trainer.max_steps // (1 + self.hparams.n_critic))
        return self.steps_in_run()  # batches × epochs: one generator step each

    # ------------------------------------------------------------------ training
    def generator_losses(self, out: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The generator's weighted losses: "content" (pixel + perceptual) and "adversarial"."""
        hp = self.hparams
        zero = out.new_zeros(())
        content = zero
        if hp.pixel_weight > 0:
            content = content + hp.pixel_weight * self.pixel(out, target)
        if hp.perceptual_weight > 0:
            content = content + hp.perceptual_weight * self.perceptual(out, target)
        adversarial = zero
        if hp.adversarial_weight > 0:
            real = self.discriminator(target).detach() if self.gan.needs_real_for_generator else None
            adversarial = hp.adversarial_weight * self.gan.generator(self.discriminator(out), real)
        return {"content": content, "adversarial": adversarial}

    def discriminator_loss(self, out: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        real, fake = self.discriminator(target), self.discriminator(out.detach())
        losses = {"loss": self.gan.discriminator(real, fake), "real": real.detach().mean(), "fake": fake.detach().mean()}
        if self.gan.name == "wgan_gp":
            losses["gp"] = gradient_penalty(self.discriminator, target, out)
            losses["loss"] = losses["loss"] + self.hparams.gp_weight * losses["gp"]
        return losses

    def _step(self, optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad()
        self.manual_backward(loss)
        if self.hparams.clip_grad is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.clip_grad,
                                gradient_clip_algorithm=self.hparams.clip_algorithm)
        optimizer.step()

    def training_step(self, batch: dict, batch_idx: int) -> dict:
        opt_g, opt_d = self.optimizers()
        target = batch["target"]
        out = self.net(self.net_input(batch))

        self.toggle_optimizer(opt_g)  # the discriminator's parameters take no gradient here
        g = self.generator_losses(out, target)
        g_loss = self.guard(g["content"] + g["adversarial"], "generator loss")
        self._step(opt_g, g_loss)
        self.untoggle_optimizer(opt_g)

        self.toggle_optimizer(opt_d)
        for _ in range(self.hparams.n_critic):
            d = self.discriminator_loss(out, target)
            self._step(opt_d, self.guard(d["loss"], "discriminator loss"))
        self.untoggle_optimizer(opt_d)

        for scheduler in self._schedulers():
            scheduler.step()
        n = target.shape[0]
        self.log_training({"train/loss": g["content"], "train/g_adversarial": g["adversarial"], "train/d_loss": d["loss"],
                           "train/d_real": d["real"], "train/d_fake": d["fake"],
                           **({"train/gp": d["gp"]} if "gp" in d else {})}, batch_size=n)
        return {"loss": g["content"].detach()}

    def _schedulers(self) -> list:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return []
        return schedulers if isinstance(schedulers, list) else [schedulers]
