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
import torch.nn.functional as F
from torch import nn

from lightning_modules.losses import pixel_loss
from lightning_modules.metrics import ImageQuality, evaluation_view


# The CLI records the net's class_path/init_args as a hyper-parameter (so a checkpoint rebuilds its own
# net); Lightning cannot tell that apart from storing the module itself and warns on every load.
warnings.filterwarnings("ignore", message="Attribute 'net' is an instance of `nn.Module`")


def center_crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    dh, dw = (x.shape[-2] - size[0]) // 2, (x.shape[-1] - size[1]) // 2
    return x[..., dh : dh + size[0], dw : dw + size[1]]


class RestorationModule(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        scale: int = 1,
        loss: Literal["mse", "l1", "charbonnier"] = "mse",
        optimizer: Literal["adam", "sgd"] = "adam",
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        lr_multipliers: dict[str, float] | None = None,
        scheduler: Literal["none", "step", "multistep", "exponential", "cosine"] = "none",
        step_size: int = 10,
        milestones: list[int] | None = None,
        gamma: float = 0.1,
        clip_grad: float | None = None,
        clip_algorithm: Literal["value", "norm"] = "norm",
        clip_grad_by_lr: bool = False,
        metric_space: Literal["y", "rgb"] = "y",
    ):
        """
        Args:
            net: the architecture (``lightning_modules.nets``); see the net contract in NOTES.md.
            scale: SR factor, linked from ``data.init_args.scale``; sets the shaved border (0 when 1).
            lr_multipliers: parameter-name regex → factor on ``lr`` (SRCNN: ``{reconstruction: 0.1}``).
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
        self.criterion = pixel_loss(loss)
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
                target = center_crop_to(target, out.shape[-2:])
            loss = self.criterion(out, target)
        if not torch.isfinite(loss):
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            raise FloatingPointError(
                f"training loss is {loss.item()} at step {self.global_step} (lr={lr:g}); "
                f"lower model.init_args.lr or set model.init_args.clip_grad, then resume with --ckpt_path last"
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["target"].shape[0])
        return loss

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        clip = self.hparams.clip_grad if self.hparams.clip_grad is not None else gradient_clip_val
        if clip is None:
            return
        if self.hparams.clip_grad_by_lr:
            clip = clip / optimizer.param_groups[0]["lr"]
        self.clip_gradients(optimizer, gradient_clip_val=clip,
                            gradient_clip_algorithm=gradient_clip_algorithm or self.hparams.clip_algorithm)

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
                raise ValueError("model.init_args.scheduler=cosine needs trainer.max_steps or trainer.max_epochs")
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, int(total)))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    # ------------------------------------------------------------------ evaluation
    def restore(self, batch: dict) -> torch.Tensor:
        return self.net(self.net_input(batch))

    def _views(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(net output, baseline, target) as the metrics see them."""
        y = self.hparams.metric_space == "y"
        out = self.restore(batch)
        view = lambda x: evaluation_view(x, self.shave, y_channel=y)  # noqa: E731
        return view(out), view(batch["upsampled"]), view(batch["target"])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out, base, target = self._views(batch)
        self.val_quality.update(out, target)
        self.val_baseline.update(base, target)

    def on_validation_epoch_end(self) -> None:
        self._log_quality("val", self.val_quality, self.val_baseline)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        out, base, target = self._views(batch)
        for i in range(out.shape[0]):
            row = {"image": batch["name"][i]}
            for tag, x in (("baseline", base), ("model", out)):
                q = ImageQuality(ms_ssim=False).to(out.device)
                q.update(x[i : i + 1], target[i : i + 1])
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
