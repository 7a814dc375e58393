"""Supervised training scheme: a plain ``nn.Module`` net learns degraded → clean with a pixel loss.

Evaluation follows the papers: outputs rounded to 8 bit, metrics on Y (or RGB) with the border shaved by
the scale, one value per image, averaged; the interpolation baseline (bicubic for SR, the noisy/blurred
input otherwise) is measured on the same images beside the net.
"""
from __future__ import annotations

import math
import re
import warnings
from typing import Literal

import lightning as L
import torch
import torch.distributed as dist
from torch import nn

from datamodules.image_ops import center_crop, rgb_to_gray
from datamodules.errors import DivergenceError
from lightning_modules.losses import PixelLoss, Reduction
from lightning_modules.metrics import ImageQuality, evaluation_view


# The CLI records the net's class_path/init_args as a hyper-parameter (so a checkpoint rebuilds its own
# net); Lightning cannot tell that apart from storing the module itself and warns on every load.
warnings.filterwarnings("ignore", message="Attribute 'net' is an instance of `nn.Module`")


class RestorationModule(L.LightningModule):
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
        super().__init__()
        self.save_hyperparameters()  # under the CLI this records the net's class_path/init_args, not weights
        net_scale = getattr(net, "scale", 1)
        if net_scale not in (1, scale):
            raise ValueError(f"{type(net).__name__} upsamples x{net_scale} but the data scale is x{scale}")
        self.net = net
        self.scale = scale
        self.criterion = PixelLoss(loss, loss_reduction)
        self.shave = scale if scale > 1 else 0
        suffix = "y" if metric_space == "y" else "rgb"
        self.monitor = f"val/psnr_{suffix}"
        self.val_quality, self.val_baseline = ImageQuality(ms_ssim=False), ImageQuality(ms_ssim=False)
        self.test_quality, self.test_baseline = ImageQuality(), ImageQuality()
        self.test_rows: list[dict] = []

    # ------------------------------------------------------------------ forward
    def net_input(self, batch: dict) -> torch.Tensor:
        """Nets with scale 1 refine the upsampled image; others take the degraded image itself."""
        return batch["upsampled"] if getattr(self.net, "scale", 1) == 1 else batch["degraded"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # ------------------------------------------------------------------ training
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
        if not torch.isfinite(loss):
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            raise DivergenceError(f"training loss is {loss.item()} at step {self.global_step} (lr={lr:g})",
                                  lr=self.hparams.lr)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["target"].shape[0])
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
            total = self.trainer.estimated_stepping_batches
            if not math.isfinite(total):
                raise ValueError(f"model.init_args.scheduler={hp.scheduler} needs trainer.max_steps or trainer.max_epochs")
            total = max(1, int(total))
            if hp.scheduler == "cosine":
                sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
            else:
                sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=total, power=hp.power)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    # ------------------------------------------------------------------ evaluation
    # bytes one evaluation pass may take; None: $RESTORELAB_MEMORY_BUDGET GB, else the device's default
    # (lightning_modules.inference.default_budget). Set it on the module; not a hyper-parameter, so it does not
    # change run ids.
    memory_budget: int | None = None

    def restore(self, batch: dict) -> torch.Tensor:
        """The net on the batch's input: in eval mode in one pass or exact tiles within ``memory_budget``
        (``lightning_modules.inference``; one line naming RESTORELAB_MEMORY_BUDGET where neither fits), one
        pass in train mode (batch statistics would differ per tile)."""
        from lightning_modules.inference import BUDGET_ENV, budgeted_forward

        x = self.net_input(batch)
        if self.net.training or torch.is_grad_enabled():
            return self.net(x)
        names = batch.get("name")
        what = ", ".join(map(str, names)) if isinstance(names, (list, tuple)) else ""
        return budgeted_forward(self.net, x, self.memory_budget, on_tile=self._between_tiles,
                                options=("an explicit tile", BUDGET_ENV), what=what)

    def _between_tiles(self, done: int, total: int) -> None:
        """After each tile of an evaluation pass: answer a SIGTERM now rather than after the image, and show
        the tile count on the progress bar of the running loop (TQDM bar only)."""
        trainer = self._trainer
        if trainer is None:
            return
        if trainer.received_sigterm:
            from lightning.pytorch.utilities.exceptions import SIGTERMException

            raise SIGTERMException
        if total > 1:
            stage = "test" if trainer.testing else "predict" if trainer.predicting else "val"
            try:
                getattr(trainer.progress_bar_callback, f"{stage}_progress_bar").set_postfix_str(f"tile {done}/{total}")
            except (AttributeError, TypeError):
                pass

    def _views(self, batch: dict) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per image, (net output, baseline, target) as the metrics see them. On Y, a gray file that an RGB
        net saw replicated is measured as gray (the MATLAB convention: a gray image is its own Y), so its
        score does not depend on the net's colour space."""
        y = self.hparams.metric_space == "y"
        out = self.restore(batch)
        gray = batch.get("gray", torch.zeros(len(out), dtype=torch.bool))
        views = []
        for i in range(len(out)):
            as_gray = y and bool(gray[i])

            def view(x: torch.Tensor) -> torch.Tensor:
                x = x[i : i + 1]
                return evaluation_view(rgb_to_gray(x) if as_gray else x, self.shave, y_channel=y)

            views.append((view(out), view(batch["upsampled"]), view(batch["target"])))
        return views

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        for out, base, target in self._views(batch):
            self.val_quality.update(out, target)
            self.val_baseline.update(base, target)

    def on_validation_epoch_end(self) -> None:
        self._log_quality("val", self.val_quality, self.val_baseline)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        for name, (out, base, target) in zip(batch["name"], self._views(batch)):
            row = {"image": name}
            for tag, x in (("baseline", base), ("model", out)):
                q = ImageQuality(ms_ssim=False).to(out.device)
                q.update(x, target)
                row.update({f"{tag}_{k}": float(v) for k, v in q.compute().items()})
            self.test_rows.append(row)
            self.test_quality.update(out, target)
            self.test_baseline.update(base, target)

    def on_test_epoch_start(self) -> None:
        self.test_rows = []

    def on_test_epoch_end(self) -> None:
        self._log_quality("test", self.test_quality, self.test_baseline)
        if dist.is_available() and dist.is_initialized():
            gathered: list[list[dict]] = [None] * dist.get_world_size()  # type: ignore[list-item]
            dist.all_gather_object(gathered, self.test_rows)
            self.test_rows = sorted((r for rows in gathered for r in rows), key=lambda r: r["image"])

    def _log_quality(self, stage: str, quality: ImageQuality, baseline: ImageQuality) -> None:
        suffix = self.monitor.rsplit("_", 1)[1]
        for tag, q in (("", quality), ("baseline_", baseline)):
            for k, v in q.compute().items():
                self.log(f"{stage}/{tag}{k}_{suffix}", v, prog_bar=(stage == "val" and not tag and k == "psnr"))
            q.reset()

    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.restore(batch).clamp(0, 1)
