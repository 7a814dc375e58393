"""Supervised training scheme: a plain ``nn.Module`` net learns degraded → clean with a pixel loss, under
automatic optimization (the scheme of every paper config: SRCNN, VDSR, DnCNN, NLRN, SRResNet, DeepDeblur, SRN).
Evaluation, logging and checkpoint contents come from ``RestorationScheme``."""
from __future__ import annotations

import re
from typing import Literal

import torch
from torch import nn

from datamodules.image_ops import center_crop
from lightning_modules.losses import PixelLoss, Reduction
from lightning_modules.schemes.base import RestorationScheme


class SupervisedScheme(RestorationScheme):
    def __init__(
        self,
        net: nn.Module,
        scale: int = 1,
        loss: Literal["mse", "l1", "charbonnier"] = "mse",
        loss_reduction: Reduction = "mean",
        optimizer: Literal["adam", "sgd"] = "adam",
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        lr_multipliers: dict[str, float] | None = None,
        scheduler: Literal["none", "step", "multistep", "exponential", "cosine", "poly"] = "none",
        step_size: int = 10,
        milestones: list[int] | None = None,
        gamma: float = 0.1,
        power: float = 1.0,
        clip_grad: float | None = None,
        clip_algorithm: Literal["value", "norm", "tensor_norm"] = "norm",
        clip_grad_by_lr: bool = False,
        metric_space: Literal["y", "rgb"] = "y",
    ):
        """
        Args:
            net: the architecture (``lightning_modules.nets``); see the net contract in NOTES.md.
            scale: SR factor, linked from ``data.init_args.scale``; sets the shaved border (0 when 1).
            loss_reduction: "mean" over pixels, or "sum" over each sample's pixels (Caffe-style, ½ for mse),
                the loss the SGD rates of VDSR and DnCNN were set for.
            lr_multipliers: parameter-name regex → factor on ``lr`` (SRCNN: ``{reconstruction: 0.1}``).
            scheduler: "step"/"multistep"/"exponential" per epoch; "cosine" and "poly" (lr·(1 - t/T)^power,
                SRN's decay to 0) per step over the whole run.
            clip_algorithm: "value", "norm" (global norm), or "tensor_norm" (each parameter's gradient norm
                clipped on its own, as NLRN's TensorFlow code does).
            clip_grad_by_lr: VDSR's adjustable clipping: the clip value is ``clip_grad / current lr``.
            metric_space: "y" (SR papers, BT.601 luma) or "rgb" (colour denoising papers).
        """
        super().__init__(net, scale, metric_space)
        self.criterion = PixelLoss(loss, loss_reduction)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if hasattr(self.net, "forward_pyramid") and "degraded_pyramid" in batch:
            outputs = self.net.forward_pyramid(batch["degraded_pyramid"])
            loss = sum(self.criterion(o, t) for o, t in zip(outputs, batch["target_pyramid"])) / len(outputs)
        else:
            out = self.net(self.net_input(batch))
            target = batch["target"]
            if out.shape[-2:] != target.shape[-2:]:  # 'valid' convolutions: loss on the centre only
                target = center_crop(target, out.shape[-2:])
            loss = self.criterion(out, target)
        self.guard(loss)
        self.log_training({"train/loss": loss}, batch_size=batch["target"].shape[0])
        return loss

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        clip = self.hparams.clip_grad if self.hparams.clip_grad is not None else gradient_clip_val
        if clip is None:
            return
        if self.hparams.clip_grad_by_lr:
            clip = clip / optimizer.param_groups[0]["lr"]
        algorithm = gradient_clip_algorithm or self.hparams.clip_algorithm
        if algorithm == "tensor_norm":
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        torch.nn.utils.clip_grad_norm_(p, clip)
            return
        self.clip_gradients(optimizer, gradient_clip_val=clip,
                            gradient_clip_algorithm=algorithm)

    def configure_optimizers(self):
        hp = self.hparams
        groups: dict[float, list[nn.Parameter]] = {}
        for name, p in self.net.named_parameters():
            factor = next((f for pat, f in (hp.lr_multipliers or {}).items() if re.search(pat, name)), 1.0)
            groups.setdefault(factor, []).append(p)
        params = [{"params": ps, "lr": hp.lr * f} for f, ps in groups.items()]
        if hp.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        if hp.scheduler == "none":
            return opt
        if hp.scheduler == "step":
            sched = torch.optim.lr_scheduler.StepLR(opt, hp.step_size, hp.gamma)
        elif hp.scheduler == "multistep":
            sched = torch.optim.lr_scheduler.MultiStepLR(opt, hp.milestones or [], hp.gamma)
        elif hp.scheduler == "exponential":
            sched = torch.optim.lr_scheduler.ExponentialLR(opt, hp.gamma)
        else:  # per step, over the whole run: max_epochs may be -1 when max_steps bounds the run
            total = self.steps_in_run()
            if hp.scheduler == "cosine":
                sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
            else:
                sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=total, power=hp.power)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
