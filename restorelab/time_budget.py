"""A run that ``trainer.max_time`` will end before ``trainer.max_steps`` ends instead at the step its time allows,
with its per-step schedule decayed to that step: ``ScheduleWithinMaxTime``, a callback a config adds
(configs/srcnn.yaml: `make train` on a CPU slower than the one its 20000 steps were sized on).

Stopped by the timer, a cosine schedule is cut wherever the time ran out (on a 2-core CPU without AVX-512, make
train's ended at step 11308 of 20000 with the rate still at half its start); the rate's fall at the end is what the
last steps gain from."""
from __future__ import annotations

import math

from lightning.pytorch.callbacks import Callback, Timer
from torch.optim.lr_scheduler import CosineAnnealingLR, PolynomialLR

from datamodules.errors import AnticipatedError

_OPTION = "trainer.callbacks ScheduleWithinMaxTime:"


class ScheduleWithinMaxTime(Callback):
    """Every ``every_n_steps`` training steps, the pace of this process so far (wall time per step since its
    training began, the validations in between included) gives the step at which ``trainer.max_time`` runs out,
    less ``reserve`` of the whole budget; where that comes before ``trainer.max_steps``, it becomes the run's last
    step and the horizon of its per-step cosine and poly schedules (the scheme's ``scheduler: cosine|poly``), never
    past the configured ``max_steps``. Each such schedule goes on from its present rate to zero at the new
    horizon: PyTorch's schedules step by the ratio of consecutive values, so a moved horizon bends the curve
    without a jump. Where the time does not bind, the run is step for step what it is without this callback.

    The horizon is saved with the checkpoint; a resumed run starts from it and keeps measuring its own pace. It
    gives the configured schedule that horizon in ``on_fit_start``, so it must come before restorelab's
    ``ResumeWithConfiguredOptimizer`` (which then finds the schedule's constants unchanged), as a callback in
    ``trainer.callbacks`` of a config does: the command line appends its own. Under DDP, rank 0's estimate is
    every rank's.

    Args:
        every_n_steps: how often the pace is measured and the horizon moved.
        reserve: the fraction of ``max_time`` kept free at the end, so the run ends by its steps before the timer
            stops it.
    """

    def __init__(self, every_n_steps: int = 100, reserve: float = 0.02):
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise AnticipatedError(f"{_OPTION} every_n_steps={every_n_steps!r} must be a whole number >= 1")
        if not 0 <= reserve < 1:
            raise AnticipatedError(f"{_OPTION} reserve={reserve!r} must be in [0, 1)")
        self.every_n_steps, self.reserve = every_n_steps, reserve
        self.horizon: int | None = None  # the last step, once the time binds
        self._configured_steps = -1
        self._timer: Timer | None = None
        self._start: tuple[int, float] = (0, 0.0)  # (step, seconds of the timer) when this process began training

    def on_fit_start(self, trainer, pl_module) -> None:
        # before the checkpoint's training state is loaded: a resumed run's schedule is given the saved horizon
        # here, so that restorelab's resume (configured schedule constants win) finds nothing changed
        self._timer = next((c for c in trainer.callbacks if isinstance(c, Timer) and c.time_remaining() is not None),
                           None)
        self._configured_steps = trainer.max_steps
        if self._timer is None:
            self.horizon = None
            return
        if self._configured_steps < 0:
            raise AnticipatedError(f"{_OPTION} needs trainer.max_steps: it moves the last step of a run that "
                                   f"trainer.max_time would cut")
        if self.horizon is not None:
            self._apply(trainer, min(self.horizon, self._configured_steps))

    def on_train_start(self, trainer, pl_module) -> None:
        if self._timer is not None:
            self._start = (trainer.global_step, self._timer.time_elapsed())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self._timer is None or step - self._start[0] < self.every_n_steps or step % self.every_n_steps:
            return
        elapsed, remaining = self._timer.time_elapsed(), self._timer.time_remaining()
        pace = (elapsed - self._start[1]) / (step - self._start[0])
        left = remaining - self.reserve * (elapsed + remaining)
        fits = step + max(0, math.floor(left / pace)) if pace > 0 else self._configured_steps
        horizon = trainer.strategy.broadcast(min(fits, self._configured_steps))
        if horizon < self._configured_steps or self.horizon is not None:
            if self.horizon is None and trainer.is_global_zero:
                bar = trainer.progress_bar_callback  # its print keeps the bar's line whole
                (bar.print if bar is not None else print)(
                    f"restorelab: trainer.max_time leaves time for about {horizon} of the {self._configured_steps} "
                    f"steps at this pace ({pace * 1000:.1f} ms a step): the run and its schedule end there")
            self._apply(trainer, horizon)

    def _apply(self, trainer, horizon: int) -> None:
        self.horizon = horizon
        trainer.fit_loop.epoch_loop.max_steps = horizon
        for config in trainer.lr_scheduler_configs:
            if config.interval != "step":
                continue
            if isinstance(config.scheduler, CosineAnnealingLR):
                config.scheduler.T_max = horizon
            elif isinstance(config.scheduler, PolynomialLR):
                config.scheduler.total_iters = horizon

    def state_dict(self) -> dict:
        return {"horizon": self.horizon}

    def load_state_dict(self, state_dict: dict) -> None:
        self.horizon = state_dict.get("horizon")
