"""restorelab.time_budget.ScheduleWithinMaxTime: a run that trainer.max_time would cut ends at the step the time
allows, its cosine decayed to zero there, without a jump; where the time does not bind nothing changes; a resumed
run keeps the horizon. Lightning's Timer reads a clock that each step advances by a fixed 0.125 s, so no verdict
depends on how fast the cores are."""
from __future__ import annotations

import math
from types import SimpleNamespace

import lightning as L
import lightning.pytorch.callbacks.timer as lightning_timer
import pytest
import torch

from datamodules.errors import AnticipatedError
from datamodules.restoration import SRDataModule
from lightning_modules.nets.srcnn import SRCNN
from lightning_modules.schemes.supervised import SupervisedScheme
from restorelab.checkpointing import ResumeWithConfiguredOptimizer
from restorelab.time_budget import ScheduleWithinMaxTime

TICK = 0.125  # seconds a step takes on the fake clock (a binary fraction: sums are exact)
BUDGET = "00:00:00:16"  # 16 s: 128 steps, of which 2 % are kept free


class StepClock(L.Callback):
    """Advances the Timer's clock by TICK at the start of every training step; records the rate of each step."""

    def __init__(self, clock: SimpleNamespace, stop_at: int | None = None):
        self.clock, self.stop_at, self.lrs = clock, stop_at, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.clock.now += TICK
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.stop_at:
            trainer.should_stop = True


@pytest.fixture
def clock(monkeypatch):
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(lightning_timer, "time", SimpleNamespace(monotonic=lambda: clock.now))
    return clock


def fit(clock, max_steps: int, budget: str | None = BUDGET, schedule: ScheduleWithinMaxTime | None = None,
        stop_at: int | None = None, ckpt_path=None, save_to=None):
    torch.manual_seed(0)
    data = SRDataModule(scale=3, train=["skimage:coffee.png"], val=["skimage:chelsea.png"], patch_size=21,
                        batch_size=2, patches_per_epoch=100000)
    scheme = SupervisedScheme(SRCNN(kernel_sizes=[3, 1, 3], filters=[4, 4]), scale=3, lr=1e-3, scheduler="cosine")
    steps = StepClock(clock, stop_at)
    # as under restorelab's CLI: the configured callbacks before its own resume callback
    callbacks = [steps, *([schedule] if schedule else []), ResumeWithConfiguredOptimizer()]
    trainer = L.Trainer(max_steps=max_steps, max_epochs=-1, max_time=budget, logger=False, enable_checkpointing=False,
                        accelerator="cpu", devices=1, limit_val_batches=0, callbacks=callbacks,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(scheme, datamodule=data, ckpt_path=ckpt_path, weights_only=False)  # its hparams hold the net
    if save_to is not None:
        trainer.save_checkpoint(save_to)
    return trainer, steps.lrs


def test_a_run_the_time_would_cut_ends_at_the_step_it_allows_with_its_cosine_at_zero(clock, capsys):
    schedule = ScheduleWithinMaxTime(every_n_steps=8)
    trainer, lrs = fit(clock, max_steps=400, schedule=schedule)
    # 16 s less 2 % at 0.125 s a step: step 125, before the timer's 128
    assert schedule.horizon == 125 and trainer.global_step == 125 == len(lrs)
    assert "about 125 of the 400 steps" in capsys.readouterr().out
    assert lrs[-1] < 1e-3 * 1e-3  # the last step's rate: the cosine's end, not its middle
    # no jump where the horizon moved (after step 8): the cosine over 400 steps bends into the one over 125
    assert all(later <= earlier for earlier, later in zip(lrs, lrs[1:]))
    assert max(earlier - later for earlier, later in zip(lrs, lrs[1:])) < 1e-3 * math.pi / 125
    cut, _ = fit(clock, max_steps=400)  # without it the timer stops the run at its rate of the moment
    assert cut.global_step == 128


def test_where_the_time_does_not_bind_the_run_is_unchanged(clock):
    schedule = ScheduleWithinMaxTime(every_n_steps=8)
    with_it, lrs = fit(clock, max_steps=60, schedule=schedule)
    without, plain_lrs = fit(clock, max_steps=60)
    assert schedule.horizon is None and with_it.global_step == without.global_step == 60
    assert lrs == plain_lrs
    _, untimed = fit(clock, max_steps=60, budget=None, schedule=ScheduleWithinMaxTime(every_n_steps=8))
    assert untimed == plain_lrs


def test_a_resumed_run_keeps_the_horizon_and_the_rates_of_the_run_it_continues(clock, tmp_path, capsys):
    _, whole = fit(clock, max_steps=400, schedule=ScheduleWithinMaxTime(every_n_steps=8))
    ckpt = tmp_path / "at40.ckpt"
    _, first = fit(clock, max_steps=400, schedule=ScheduleWithinMaxTime(every_n_steps=8), stop_at=40, save_to=ckpt)
    capsys.readouterr()
    schedule = ScheduleWithinMaxTime(every_n_steps=8)
    trainer, rest = fit(clock, max_steps=400, schedule=schedule, ckpt_path=ckpt)
    # the configured schedule was given the saved horizon before the resume compared it with the checkpoint's
    assert "resuming with the configured" not in capsys.readouterr().out
    assert trainer.global_step == schedule.horizon == 125
    assert first + rest == pytest.approx(whole, rel=1e-9, abs=1e-15)


def test_options_and_an_unbounded_run_are_refused_in_one_line(clock):
    with pytest.raises(AnticipatedError, match="every_n_steps=0 must be a whole number >= 1"):
        ScheduleWithinMaxTime(every_n_steps=0)
    with pytest.raises(AnticipatedError, match=r"reserve=1.5 must be in \[0, 1\)"):
        ScheduleWithinMaxTime(reserve=1.5)
    with pytest.raises(AnticipatedError, match="needs trainer.max_steps"):
        fit(clock, max_steps=-1, schedule=ScheduleWithinMaxTime())


def test_make_train_has_it_and_the_model_tables_srcnn_row_does_not():
    from restorelab.lightning_cli import build_parser

    parser = build_parser()

    def callbacks(*configs):
        cfg = parser.parse_args(["fit", *[a for c in configs for a in ("--config", c)]])
        return [c.class_path for c in cfg.fit.trainer.callbacks or []]

    assert callbacks("configs/srcnn.yaml") == ["restorelab.time_budget.ScheduleWithinMaxTime"]
    assert callbacks("configs/srcnn.yaml", "configs/experiment/cpu_budget/srcnn.yaml") == []
