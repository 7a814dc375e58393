"""What the CLI's checkpoints promise: a run stopped in any way resumes where it stopped, and no checkpoint
ever holds diverged weights.

* ``last.ckpt`` is refreshed every ``every_n_steps`` steps *or* ``every_minutes`` minutes, whichever comes
  first (so a SIGKILL loses a few minutes at most, however long a step takes), at the end of fit, and on
  SIGTERM / Ctrl-C.
* Every save — ``last.ckpt`` and the best-by-validation checkpoint — first asks ``TrainingHealth``; an
  unhealthy state is not written and the previous file stays. The rule: every parameter is finite, the last
  training loss is finite, and the mean of the last ``RECENT`` losses is at most ``EXPLOSION_FACTOR`` times
  the median of the up to ``WINDOW`` losses before them (a run whose weights blow up reaches 1e20 long before
  its loss overflows to NaN; a healthy run's loss falls or wobbles well within a factor of 10).
* ``load_scheme`` rebuilds a checkpoint's module through the training scheme it was saved from (the class path
  the CLI records), so tools load a checkpoint of any scheme the same way.
* Resuming with other optimizer options applies them: the checkpoint's optimizer state keeps its moments
  but takes the configured learning rates (rescaling the scheduled ones by new/old initial rate), betas,
  momentum, weight decay and schedule constants (gamma, milestones, horizon), so "lower the learning rate and resume" works.
"""
from __future__ import annotations

import importlib
import math
import os
import signal
import statistics
import sys
import threading
import time
from collections import deque
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from datamodules.errors import AnticipatedError, DivergenceError
from lightning_modules.checkpoint_file import CheckpointError, read_checkpoint

RECENT, WINDOW, EXPLOSION_FACTOR = 5, 200, 10.0


class TrainingHealth(Callback):
    """Watches the training loss; ``problem(module)`` says why the present weights must not be saved. A loss
    that keeps exploding for ``PATIENCE`` steps, or still is at the end of fit, stops the run as diverged."""

    PATIENCE = 50

    def __init__(self) -> None:
        self.losses: deque[float] = deque(maxlen=WINDOW + RECENT)
        self.exploding_since: int | None = None
        self.reported: str | None = None  # the refusal already printed, so an episode is reported once

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        self.losses.append(float(loss.detach()))
        if self._loss_problem() is None:
            self.exploding_since = self.reported = None
            return
        self.exploding_since = self.exploding_since or trainer.global_step
        if trainer.global_step - self.exploding_since >= self.PATIENCE:
            self.stop(trainer, pl_module, f"for {self.PATIENCE} steps")

    def on_train_end(self, trainer, pl_module) -> None:
        if self.exploding_since is not None:
            self.stop(trainer, pl_module, "at the end of fit")

    def stop(self, trainer, pl_module, when: str) -> None:
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        raise DivergenceError(f"training diverged at step {self.exploding_since} (lr={lr:g}): "
                              f"{self._loss_problem()} {when}", lr=getattr(pl_module.hparams, "lr", None))

    def problem(self, module: torch.nn.Module) -> str | None:
        for name, p in module.named_parameters():
            if not torch.isfinite(p).all():
                return f"parameter {name} is not finite"
        return self._loss_problem()

    def _loss_problem(self) -> str | None:
        if not self.losses:
            return None
        if not math.isfinite(self.losses[-1]):
            return f"the training loss is {self.losses[-1]}"
        losses = list(self.losses)
        recent, before = losses[-RECENT:], losses[:-RECENT]
        mean = sum(recent) / len(recent)
        # every step: the median is at least the minimum, so its sort (~10 us) only where the minimum leaves it open
        if len(before) >= RECENT and mean > EXPLOSION_FACTOR * min(before):
            median = statistics.median(before)
            if median > 0 and mean > EXPLOSION_FACTOR * median:
                return (f"the training loss is exploding (mean of the last {RECENT} steps {mean:.3g} > "
                        f"{EXPLOSION_FACTOR:g}x the median {median:.3g} of the {len(before)} before)")
        return None


def _health(trainer) -> TrainingHealth | None:
    return next((c for c in trainer.callbacks if isinstance(c, TrainingHealth)), None)


def healthy_or_warn(trainer, pl_module, what: str) -> bool:
    health = _health(trainer)
    problem = health.problem(pl_module) if health else None
    if problem and trainer.is_global_zero and health.reported is None:
        print(f"restorelab: not saving {what} from step {trainer.global_step} on: {problem}; the previous file "
              f"is kept", file=sys.stderr)
        health.reported = problem
    return problem is None


class LastCheckpoint(Callback):
    """``<dirpath>/last.ckpt``: by steps or minutes, at the end of fit, on SIGTERM / Ctrl-C; healthy states only."""

    def __init__(self, dirpath: str | Path, every_n_steps: int = 200, every_minutes: float = 5.0):
        if every_n_steps < 1:
            raise AnticipatedError(f"--checkpoint_every_n_steps={every_n_steps} must be at least 1")
        if not every_minutes > 0:
            raise AnticipatedError(f"--checkpoint_every_minutes={every_minutes} must be positive")
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_steps, self.every_seconds = every_n_steps, every_minutes * 60
        self.saved_step: int | None = None
        self._saved_at = time.monotonic()

    def save(self, trainer, pl_module) -> None:
        if trainer.global_step == self.saved_step or not healthy_or_warn(trainer, pl_module, self.path.name):
            return
        # written beside, then renamed: a SIGKILL during the write leaves the previous last.ckpt whole
        partial = self.path.with_name(self.path.name + ".partial")
        trainer.save_checkpoint(partial, weights_only=False)  # the whole training state (and no log line saying so)
        if trainer.is_global_zero:
            os.replace(partial, self.path)
        self.saved_step, self._saved_at = trainer.global_step, time.monotonic()

    def on_train_start(self, trainer, pl_module) -> None:
        self.saved_step, self._saved_at = trainer.global_step, time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        since = trainer.global_step - (self.saved_step or 0)
        if since >= self.every_n_steps or (since > 0 and time.monotonic() - self._saved_at >= self.every_seconds):
            self.save(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self.save(trainer, pl_module)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, (SIGTERMException, KeyboardInterrupt)) and trainer.state.fn == "fit":
            self.save(trainer, pl_module)
        elif isinstance(exception, DivergenceError) and self.path.is_file():
            exception.checkpoint = self.path
            exception.step = torch.load(self.path, map_location="cpu", weights_only=True).get("global_step")


class StopPromptlyWhileEvaluating(Callback):
    """Lightning answers SIGTERM at the next batch, and one evaluation batch (a whole photo through NLRN at its
    paper size) can take many minutes. While validating, testing or predicting no weights are being updated, so
    the stop is raised at once, between two Python steps of the net (e.g. NLRN's row chunks); during fit,
    ``LastCheckpoint`` then saves the weights of the last finished training step."""

    def __init__(self) -> None:
        self.previous = None

    def _arm(self, trainer, *_) -> None:
        if threading.current_thread() is not threading.main_thread() or self.previous is not None:
            return
        self.previous = signal.getsignal(signal.SIGTERM)

        def stop_now(signum, frame):
            if callable(self.previous):
                self.previous(signum, frame)  # Lightning's own handler: its flag, and the other DDP ranks
            raise SIGTERMException

        signal.signal(signal.SIGTERM, stop_now)

    def _disarm(self, trainer, *_) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None

    on_validation_start = on_test_start = on_predict_start = _arm
    on_validation_end = on_test_end = on_predict_end = _disarm

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._disarm(trainer)


class HealthyModelCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint (best by validation) that never writes an unhealthy state."""

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        if healthy_or_warn(trainer, trainer.lightning_module, Path(filepath).name):
            super()._save_checkpoint(trainer, filepath)


class ResumeWithConfiguredOptimizer(Callback):
    """On resume, the optimizer options of the present configuration win over those stored in the checkpoint
    (Lightning would restore the stored ones, so a lowered learning rate would be silently undone)."""

    HYPERPARAMETERS = ("betas", "momentum", "weight_decay", "eps", "dampening", "nesterov", "alpha")
    # a new max_steps gives cosine/poly a new horizon; a new gamma or milestones a new decay
    SCHEDULE_CONSTANTS = ("gamma", "step_size", "milestones", "T_max", "eta_min", "total_iters", "power")

    def __init__(self) -> None:
        self.checkpoint: dict | None = None

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.checkpoint = checkpoint  # the very dict the optimizer states are loaded from, after on_fit_start

    def on_fit_start(self, trainer, pl_module) -> None:
        if not self.checkpoint or "optimizer_states" not in self.checkpoint:
            return
        changes = set()
        for optimizer, state in zip(trainer.optimizers, self.checkpoint["optimizer_states"]):
            for configured, saved in zip(optimizer.param_groups, state["param_groups"]):
                new_initial = configured.get("initial_lr", configured["lr"])
                old_initial = saved.get("initial_lr", saved["lr"])
                if not math.isclose(new_initial, old_initial, rel_tol=1e-9):
                    saved["lr"] *= new_initial / old_initial
                    if "initial_lr" in saved:
                        saved["initial_lr"] = new_initial
                    changes.add(f"lr {old_initial:g} -> {new_initial:g}")
                take_configured(saved, configured, self.HYPERPARAMETERS, changes)
        for k, (config, saved) in enumerate(zip(trainer.lr_scheduler_configs, self.checkpoint.get("lr_schedulers", []))):
            take_configured(saved, config.scheduler.state_dict(), self.SCHEDULE_CONSTANTS, changes)
            if "base_lrs" in saved and k < len(trainer.optimizers):
                groups = self.checkpoint["optimizer_states"][k]["param_groups"]
                saved["base_lrs"] = [g.get("initial_lr", g["lr"]) for g in groups]
                saved["_last_lr"] = [g["lr"] for g in groups]
        if changes:
            print(f"restorelab: resuming with the configured optimizer options ({', '.join(sorted(changes))})")
        self.checkpoint = None


def take_configured(saved: dict, configured: dict, keys: tuple[str, ...], changes: set[str]) -> None:
    """Overwrite ``saved``'s values of ``keys`` with the ``configured`` ones, noting each change."""
    for key in keys:
        if key in configured and key in saved and configured[key] != saved[key]:
            changes.add(f"{key} {saved[key]} -> {configured[key]}")
            saved[key] = configured[key]


DEFAULT_SCHEME = "lightning_modules.schemes.supervised.SupervisedScheme"
# checkpoints saved before the schemes had modules of their own name the supervised scheme by its old path
RENAMED_SCHEMES = {"lightning_modules.restoration.RestorationModule": DEFAULT_SCHEME}


def scheme_class(path: str | Path, ckpt: dict) -> type:
    """The ``RestorationScheme`` subclass a checkpoint was saved from: the CLI's ``_class_path`` (imported by
    name), the supervised scheme where none is recorded; one line where it cannot be imported or is no scheme."""
    from lightning_modules.schemes.base import RestorationScheme

    saved = (ckpt.get("hyper_parameters") or {}).get("_class_path")
    class_path = RENAMED_SCHEMES.get(saved, saved) or DEFAULT_SCHEME
    module_name, _, name = str(class_path).rpartition(".")
    try:
        # importing runs that module's code: a checkpoint (read weights_only) cannot carry code, but it can
        # name any importable module, so only a scheme class is accepted from it
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: its training scheme {class_path} cannot be imported ({reason})") from None
    if not (isinstance(cls, type) and issubclass(cls, RestorationScheme)):
        raise CheckpointError(f"{path}: saved from {class_path}, which is not a training scheme "
                              "(lightning_modules.schemes.base.RestorationScheme)")
    return cls


def load_scheme(path: str | Path, map_location="cpu", checkpoint: dict | None = None, **overrides):
    """The module of a checkpoint, rebuilt as its own scheme (``scheme_class``) with its net and weights, in eval
    mode; ``overrides`` replace saved hyper-parameters (e.g. ``scale``). ``checkpoint``: the file's dict where
    the caller has read it already. Anything that cannot be rebuilt: one line (``CheckpointError``)."""
    path = Path(path)
    ckpt = read_checkpoint(path) if checkpoint is None else checkpoint
    cls = scheme_class(path, ckpt)
    saved = (ckpt.get("hyper_parameters") or {}).get("_class_path")
    if saved in RENAMED_SCHEMES:  # Lightning resolves the recorded path itself, and the old one is gone
        overrides.setdefault("_class_path", RENAMED_SCHEMES[saved])
    try:
        module = cls.load_from_checkpoint(path, map_location=map_location, weights_only=True, **overrides)
    except Exception as e:  # noqa: BLE001 - a net or scheme that no longer fits its record: one line naming the file
        detail = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"{path}: cannot rebuild its {cls.__name__}: {type(e).__name__}: {detail}") from None
    return module.eval()


def load_recipe(path: str | Path, checkpoint: dict | None = None):
    """The degradation recipe (``datamodules.recipes``) a checkpoint's DataModule was built with, rebuilt from the
    class path and options it recorded; None for checkpoints saved before recipes. One line where it cannot be."""
    from jsonargparse import ArgumentParser

    from datamodules.recipes import Recipe

    path = Path(path)
    ckpt = read_checkpoint(path) if checkpoint is None else checkpoint
    recorded = (ckpt.get("datamodule_hyper_parameters") or {}).get("recipe")
    if recorded is None:
        return None
    if not isinstance(recorded, dict) or "class_path" not in recorded:
        raise CheckpointError(f"{path}: its recipe is not recorded as a class_path (saved outside the CLI?)")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(Recipe, "recipe")
    try:
        return parser.instantiate(parser.parse_object({"recipe": recorded})).recipe
    except Exception as e:  # noqa: BLE001 - a recipe that no longer exists or no longer takes its options
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: cannot rebuild its recipe {recorded['class_path']}: {detail}") from None
