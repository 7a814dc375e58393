"""The base of every training scheme: a net, its evaluation under the paper protocol, the logged names, the
non-finite-loss guard and what a checkpoint records. A scheme adds its training step and its optimizers
(``training_step``, ``configure_optimizers``; with ``automatic_optimization = False`` for adversarial or
meta-learning schemes) and nothing else.

Evaluation follows the papers (``lightning_modules.protocol``): outputs rounded to 8 bit, metrics on Y (or RGB)
with the border shaved by the scale, one value per image, averaged; the baseline (``baseline(batch)``: bicubic
for SR, the noisy/blurred input otherwise) is measured on the same images beside the net. Logged names:
``{val,test}/{,baseline_}{psnr,ssim[,ms_ssim]}_{y,rgb}``; ``monitor`` names the one checkpoints are chosen by.
"""
from __future__ import annotations

import math
import warnings
from typing import Literal

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from torch import nn

from datamodules.errors import AnticipatedError, DivergenceError
from lightning_modules.classical import baseline_for
from lightning_modules.protocol import ImageQuality, Protocol

# The CLI records the nets' class_path/init_args as a hyper-parameter (so a checkpoint rebuilds its own
# net); Lightning cannot tell that apart from storing the module itself and warns on every load.
warnings.filterwarnings("ignore", message="Attribute '(net|discriminator)' is an instance of `nn.Module`")


class RestorationScheme(L.LightningModule):
    # bytes one evaluation pass may take; None: $RESTORELAB_MEMORY_BUDGET GB, else the device's default
    # (lightning_modules.inference.default_budget). Set it on the module; not a hyper-parameter, so it does not
    # change run ids.
    memory_budget: int | None = None

    def __init__(self, net: nn.Module, scale: int = 1, metric_space: Literal["y", "rgb"] = "y"):
        """
        Args:
            net: the architecture (``lightning_modules.nets``); see the net contract in NOTES.md.
            scale: SR factor, linked from ``data.init_args.scale``; sets the shaved border (0 when 1).
            metric_space: "y" (SR papers, BT.601 luma) or "rgb" (colour denoising papers).

        Every constructor argument of the subclass too is recorded in the checkpoint (under the CLI, with the
        class path, so ``restorelab.checkpointing.load_scheme`` rebuilds the scheme and its net, not weights).
        """
        super().__init__()
        # called here, it still collects the arguments of the subclasses' __init__ frames around this one
        self.save_hyperparameters()
        net_scale = getattr(net, "scale", 1)
        if net_scale not in (1, scale):
            raise ValueError(f"{type(net).__name__} upsamples x{net_scale} but the data scale is x{scale}")
        self.net = net
        self.scale = scale
        self.metric_space = metric_space
        self.protocol = Protocol.for_task(scale, metric_space)
        self.shave = self.protocol.shave
        self.monitor = f"val/psnr_{'y' if metric_space == 'y' else 'rgb'}"
        self.val_quality, self.val_baseline = ImageQuality(ms_ssim=False), ImageQuality(ms_ssim=False)
        self.test_quality, self.test_baseline = ImageQuality(), ImageQuality()
        self.test_rows: list[dict] = []

    # ------------------------------------------------------------------ forward
    def net_input(self, batch: dict) -> torch.Tensor:
        """Nets with scale 1 refine the upsampled image; others take the degraded image itself."""
        return batch["upsampled"] if getattr(self.net, "scale", 1) == 1 else batch["degraded"]

    def baseline(self, batch: dict) -> torch.Tensor:
        """What the net is measured against: the table's baseline method (``classical.baseline_for``: bicubic for
        SR, the noisy/blurred input otherwise), the same restorer the benchmark runs, on the pair in the
        training colours."""
        return baseline_for("sr" if self.scale > 1 else "denoise").run(batch, "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # ------------------------------------------------------------------ training
    def __setattr__(self, name: str, value) -> None:
        # Lightning sets `_current_fx_name` (a plain string) around every hook it calls, ~44 times a training step;
        # nn.Module.__setattr__ first looks for a parameter, submodule or buffer of that name (3.7 us against 0.3)
        if name == "_current_fx_name":
            self.__dict__[name] = value
        else:
            super().__setattr__(name, value)

    def guard(self, loss: torch.Tensor, what: str = "training loss") -> torch.Tensor:
        """``loss`` if finite, else ``DivergenceError`` naming the step and rate (the CLI turns it into one line
        with the command that resumes from the last healthy checkpoint). For every loss a scheme steps on,
        under automatic optimization or not: a NaN would otherwise train on silently until the weights are."""
        if torch.isfinite(loss).all():
            return loss
        trainer = self._trainer
        optimizers = trainer.optimizers if trainer is not None else []
        lr = f" (lr={optimizers[0].param_groups[0]['lr']:g})" if optimizers else ""
        value = loss.item() if loss.numel() == 1 else loss.detach().flatten().tolist()
        raise DivergenceError(f"{what} is {value} at step {self.global_step}{lr}",
                              lr=getattr(self.hparams, "lr", None))

    def log_training(self, values: dict[str, torch.Tensor], batch_size: int) -> None:
        """Per-step training values, ``train/loss`` also on the progress bar, logged only where they are read: at
        the first step and the steps the loggers write (``trainer.log_every_n_steps``; every step under
        ``fast_dev_run``). Lightning's ``self.log`` costs about 0.45 ms a call on 2 EPYC cores (it moves the logged
        metric's whole state to the value's device), 2 % of ``make train``'s step (NOTES.md), for values the next
        step would overwrite unseen; the progress bar shows the latest written one."""
        trainer = self._trainer
        if trainer is not None and self.global_step > 0 and not trainer.fast_dev_run \
                and not trainer._logger_connector.should_update_logs:  # Lightning's own test for "loggers write now"
            return
        for name, value in values.items():
            self.log(name, value, prog_bar=name == "train/loss", batch_size=batch_size)

    def steps_in_run(self) -> int:
        """Lightning's estimate of the run's stepping batches (max_steps, else batches × max_epochs), for
        schedules over the whole run; one line where neither bounds the run."""
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise AnticipatedError(f"model.init_args.scheduler={self.hparams.scheduler} needs trainer.max_steps or "
                                   "trainer.max_epochs")
        return max(1, int(total))

    # ------------------------------------------------------------------ evaluation
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
        """Per image, (net output, baseline, target) as the metrics see them (``Protocol.view``; a gray file is
        measured as gray on Y whatever the net's colour space)."""
        out = self.restore(batch)
        base = self.baseline(batch)
        gray = batch.get("gray", torch.zeros(len(out), dtype=torch.bool))
        views = []
        for i in range(len(out)):
            view = lambda x: self.protocol.view(x[i : i + 1], gray=bool(gray[i]))  # noqa: E731
            views.append((view(out), view(base), view(batch["target"])))
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
                row.update({f"{tag}_{k}": v for k, v in self.protocol.score(x, target).items() if v is not None})
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


_EXECUTION = "trainer.callbacks NetExecution:"


class NetExecution(Callback):
    """How a scheme's net runs, not what it computes: the GPU speed options no Trainer flag covers, added to
    ``trainer.callbacks`` (configs/trainer/channels_last.yaml, compile.yaml). Being trainer options, like
    ``trainer.precision``, they enter neither the run id nor the checkpoint, whose weights keep their names.

    Args:
        memory_format: "channels_last" stores the net's 4-D weights NHWC and hands it its 4-D inputs so (the
            layout of Tensor-Core convolutions under 16-bit precision), in every stage; its 4-D outputs go back
            contiguous, so nothing after the net sees the layout. "contiguous": as given.
        compile: ``torch.compile`` the net's forward (and ``forward_pyramid``, where the training steps call it) for
            the training steps (fixed patch shapes). Validation,
            test and predict run it eagerly: their whole images differ in size (each would recompile) and the
            memory budget traces the net on the meta device. The net is not replaced by the compiled module
            (whose state_dict would name every weight ``_orig_mod.…``): its forward is swapped in for training
            steps and taken out again.
        compile_mode: ``torch.compile``'s ``mode``.

    Both together fail on torch 2.13 (CPU) for nets with replicate or reflect padding (SRCNN's "same", DeblurGAN):
    the pad's backward returns the channels-last layout of its input where inductor expects contiguous.
    """

    MEMORY_FORMATS = ("contiguous", "channels_last")
    COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
    COMPILED = ("forward", "forward_pyramid")  # what training steps call (forward_pyramid: DeepDeblur, SRN)

    def __init__(self, memory_format: str = "contiguous", compile: bool = False, compile_mode: str = "default"):
        for name, value, choices in (("memory_format", memory_format, self.MEMORY_FORMATS),
                                     ("compile_mode", compile_mode, self.COMPILE_MODES)):
            if value not in choices:
                raise AnticipatedError(f"{_EXECUTION} {name}={value!r} must be one of {', '.join(choices)}")
        if not isinstance(compile, bool):
            raise AnticipatedError(f"{_EXECUTION} compile={compile!r} must be true or false")
        self.memory_format, self.compile, self.compile_mode = memory_format, compile, compile_mode
        self._net: nn.Module | None = None
        self._hooks: list = []
        self._compiled: dict | None = None  # method name -> its compiled version

    def setup(self, trainer, pl_module, stage: str) -> None:
        net = pl_module.net
        if self._net is not None:  # set up already (a second stage on the same trainer)
            return
        self._net = net
        if self.memory_format == "channels_last":
            net.to(memory_format=torch.channels_last)
            self._hooks = [net.register_forward_pre_hook(_channels_last_inputs),
                           net.register_forward_hook(_contiguous_outputs)]
        if self.compile and stage == "fit":
            if any(name in vars(net) for name in self.COMPILED):
                raise AnticipatedError(f"{_EXECUTION} compile=true: the {type(net).__name__} has a forward of its own "
                                       "already (two NetExecution callbacks that compile?)")
            from torch._inductor import list_mode_options

            # inductor's layout optimization off: it makes the activations channels-last, whose pad backward
            # (replicate: SRCNN, reflect: DeblurGAN) comes back channels-last where its meta kernel says contiguous,
            # and the compiled backward fails its own stride check (torch 2.13, CPU; PyTorch's error suggests this)
            options = {**list_mode_options(self.compile_mode), "layout_optimization": False}
            self._compiled = {name: torch.compile(getattr(net, name), options=options)
                              for name in self.COMPILED if hasattr(net, name)}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        for name, compiled in (self._compiled or {}).items():
            setattr(self._net, name, compiled)  # an instance attribute: the class's method stays as it was

    def _eager(self, *_) -> None:
        for name, compiled in (self._compiled or {}).items():
            if vars(self._net).get(name) is compiled:
                delattr(self._net, name)

    on_validation_start = on_train_end = _eager

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """Weights stored contiguous, as without the option."""
        if self.memory_format == "channels_last":
            checkpoint["state_dict"] = {k: v.contiguous() for k, v in checkpoint["state_dict"].items()}

    def teardown(self, trainer, pl_module, stage: str) -> None:
        """The net as it was given (a module used after the run runs as any other)."""
        if self._net is None:
            return
        self._eager()
        for hook in self._hooks:
            hook.remove()
        if self.memory_format == "channels_last":
            self._net.to(memory_format=torch.contiguous_format)
        self._net, self._hooks, self._compiled = None, [], None


def _channels_last_inputs(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.contiguous(memory_format=torch.channels_last) if torch.is_tensor(a) and a.dim() == 4 else a
                 for a in args)


def _contiguous_outputs(module: nn.Module, args: tuple, out):
    return out.contiguous() if torch.is_tensor(out) and out.dim() == 4 else out
