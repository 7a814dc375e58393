"""``restorelab fit|validate|test|predict --config configs/<model>.yaml [--model.… value]``: LightningCLI
with omegaconf interpolation, plus the suite's conventions — a stable run directory, W&B offline without a
key, a local CSV log, ``last.ckpt`` plus the best checkpoint by validation PSNR, and a per-image results
table after ``fit`` and ``test``."""
from __future__ import annotations

import contextlib
import csv
import os
import sys
import time
import warnings
from pathlib import Path

from jsonargparse import set_parsing_settings
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.utilities.exceptions import SIGTERMException

from datamodules.errors import AnticipatedError
from lightning_modules.checkpoint_file import check_fits, read_checkpoint
from restorelab.checkpointing import (HealthyModelCheckpoint, LastCheckpoint, ResumeWithConfiguredOptimizer,
                                      StopPromptlyWhileEvaluating, TrainingHealth)
from restorelab.error_report import describe_yaml_error
from restorelab.runs import config_run_id, ensure_wandb_mode, experiment_name, finish_wandb, resolve_run_dir


SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")  # resolved by Lightning, not file names


class NoProfiler(PassThroughProfiler):
    """Lightning's default where no ``trainer.profiler`` is given, without its cost: Lightning enters
    ``profiler.profile(name)`` around each of the ~90 hook calls of a training step, and its pass-through profiler
    builds a generator context manager for each (2.4 us on 2 EPYC cores: ~0.2 ms of make train's step, NOTES.md
    "Measured: `make bench`"); this one hands back one shared empty context."""

    _nothing = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.nullcontext:
        return self._nothing


class PacedProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, redrawn at a batch that is a multiple of ``refresh_rate`` only where ``min_interval_s``
    has passed since its last redraw (and always at a bar's last batch). A redraw passes through W&B's console
    capture: about 1.8 ms on 2 EPYC cores (NOTES.md "Measured: `make bench`"), so every 10th step of a 5 ms GPU step
    would cost 3 %."""

    clock = staticmethod(time.monotonic)  # a test gives it a clock that does not depend on the cores' speed

    def __init__(self, refresh_rate: int = 10, min_interval_s: float = 0.5):
        super().__init__(refresh_rate=refresh_rate)
        self.min_interval_s = min_interval_s
        self._drawn_at = -float("inf")

    def _should_update(self, current: int, total) -> bool:
        # where Lightning renames this, its bar still redraws every refresh_rate-th batch
        if not super()._should_update(current, total):
            return False
        now = self.clock()
        if current != total and now - self._drawn_at < self.min_interval_s:
            return False
        self._drawn_at = now
        return True


def names_a_file(ckpt_path) -> bool:
    """``--ckpt_path`` is a file name, not one of the names Lightning resolves itself."""
    return ckpt_path is not None and ckpt_path not in SPECIAL_CKPT_PATHS and not str(ckpt_path).startswith("registry:")


class RestoreLabCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--experiment", type=str | None, default=None,
                            help="experiment name (default: the config file's stem)")
        parser.add_argument("--run_id", type=str | None, default=None,
                            help="run name (default: a hash of the model/data config, so reruns resume it)")
        parser.add_argument("--runs_dir", type=str, default="runs", help="root of run directories")
        parser.add_argument("--wandb_project", type=str, default="restorelab")
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="after fit, test the best checkpoint and print the per-image table")
        parser.add_argument("--checkpoint_every_n_steps", type=int, default=200,
                            help="refresh last.ckpt at least this often (steps), so a killed job loses little")
        parser.add_argument("--checkpoint_every_minutes", type=float, default=5.0,
                            help="... and at least this often (minutes), however long a step takes")
        parser.link_arguments("data.init_args.scale", "model.init_args.scale")

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        # omegaconf+ rebuilds the config after resolving ${...} and drops the `config` entry with it, so
        # the experiment name (the config file's stem) is taken from the command line itself
        self.config_files = config_files(sys.argv[1:] if args is None else args)

    # ------------------------------------------------------------------ run directory
    def _cfg(self):
        return self.config.get(str(self.subcommand), self.config) if self.subcommand else self.config

    def _run_dir(self) -> Path:
        cfg = self._cfg()
        experiment = cfg.get("experiment")
        if not experiment:
            configs = cfg.get("config") or self.config_files
            experiment = experiment_name(Path(str(configs[0])).stem if configs else "default")
        run_id = cfg.get("run_id") or os.environ.get("RESTORELAB_RUN_ID") or config_run_id(
            _plain(cfg.get("model")), without_loader_options(_plain(cfg.get("data"))), cfg.get("seed_everything"))
        self.experiment, self.run_id = experiment, run_id
        return resolve_run_dir(cfg.get("runs_dir", "runs"), experiment, run_id)

    def instantiate_trainer(self, **kwargs):
        cfg = self._cfg()
        self.run_dir = run_dir = self._run_dir()
        trainer_cfg = self._get(self.config_init, "trainer", default={})
        callbacks = [self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys]
        configured = trainer_cfg.get("callbacks") or []
        if not any(isinstance(c, ModelCheckpoint) for c in [*configured, *callbacks]):
            ckpt_dir = run_dir / "checkpoints"
            callbacks += [
                TrainingHealth(),  # first: the savers below ask it about the step that just ended
                HealthyModelCheckpoint(dirpath=ckpt_dir, monitor=self.model.monitor, mode="max", save_top_k=1,
                                       filename="best-{epoch}-{step}", auto_insert_metric_name=False),
                LastCheckpoint(ckpt_dir, cfg.get("checkpoint_every_n_steps", 200),
                               cfg.get("checkpoint_every_minutes", 5.0)),
                ResumeWithConfiguredOptimizer(),
            ]
        callbacks.append(StopPromptlyWhileEvaluating())
        if trainer_cfg.get("enable_progress_bar") is not False and not any(
                isinstance(c, ProgressBar) for c in [*configured, *callbacks]):
            # Lightning's default (Rich, where installed) updates every step and redraws from its own thread,
            # which takes a core from a 2-core CPU step (make train's backward: 10.98 vs 10.23 ms; NOTES.md)
            callbacks.append(PacedProgressBar())
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AnticipatedError(f"{run_dir}: cannot create the run folder ({e.strerror}); "
                                   f"choose another with --runs_dir") from None
        if not os.access(run_dir, os.W_OK):
            raise AnticipatedError(f"{run_dir}: the run folder is not writable; choose another with --runs_dir")
        if trainer_cfg.get("logger") in (None, True):
            ensure_wandb_mode()
            kwargs["logger"] = [
                # CSVLogger empties an existing metrics.csv: each resumed attempt gets csv, csv.1, ...
                CSVLogger(save_dir=str(run_dir), name="", version=csv_version(run_dir)),
                WandbLogger(project=cfg.get("wandb_project", "restorelab"), save_dir=str(run_dir),
                            name=f"{self.experiment}/{self.run_id}", id=f"{self.experiment}-{self.run_id}",
                            resume="allow", log_model=False),
            ]
        kwargs.setdefault("default_root_dir", str(run_dir))
        if trainer_cfg.get("profiler") is None:
            kwargs["profiler"] = NoProfiler()
        return self._instantiate_trainer({**trainer_cfg, **kwargs}, callbacks)

    # ------------------------------------------------------------------ checkpoints given by --ckpt_path
    def _parse_ckpt_path(self) -> None:
        """A bad ``--ckpt_path`` file gets one line naming it before Lightning (and torch) read it. Evaluating a
        checkpoint takes its model hyper-parameters (Lightning's behaviour); resuming ``fit`` does not: the
        configuration given wins, so that changed optimizer options apply (``check_fits`` checks the net)."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        self._given_checkpoint = read_checkpoint(ckpt_path) if names_a_file(ckpt_path) else None
        if self._given_checkpoint is not None and subcommand != "fit":
            super()._parse_ckpt_path()

    def _check_ckpt_path(self) -> None:
        """The checkpoint's weights fit the configured model (a foreign or older net: one line)."""
        ckpt_path, ckpt = self._cfg().get("ckpt_path"), getattr(self, "_given_checkpoint", None)
        if ckpt_path == "last":  # a first run has none: Lightning then starts from scratch
            ckpt_path = self.run_dir / "checkpoints" / "last.ckpt"
            if not ckpt_path.is_file():
                return
            ckpt = read_checkpoint(ckpt_path)
        if ckpt is not None:
            check_fits(ckpt_path, ckpt, self.model)

    before_fit = before_validate = before_test = before_predict = _check_ckpt_path

    # ------------------------------------------------------------------ results
    def after_fit(self) -> None:
        if self._cfg().get("test_after_fit", True) and not self.trainer.fast_dev_run:
            best = self.trainer.checkpoint_callback and self.trainer.checkpoint_callback.best_model_path
            ckpt = "best" if best and tests_other_images(self.datamodule) else None
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt, verbose=False)
            self.after_test()

    def after_test(self) -> None:
        rows = getattr(self.model, "test_rows", None)
        if rows and self.trainer.is_global_zero:
            write_results(rows, self.run_dir / "test_results.csv")
            print_results(rows, title=f"{self.experiment} ({self.run_dir})", baseline=baseline_name(self.datamodule))


def tests_other_images(datamodule) -> bool:
    """Whether the test images differ from the validation images. "best" is the checkpoint of the highest
    validation PSNR: tested on those same images (a DataModule without ``test`` tests on ``val``), it would
    report a selection made on the reported images, so the table is then of the last weights."""
    test_sources = getattr(datamodule, "test_sources", None)  # restorelab's DataModules know their fallback
    return test_sources is not None and list(test_sources()) != list(datamodule.hparams.val)


def csv_version(run_dir: Path) -> str:
    attempts = sum(1 for p in run_dir.glob("csv*") if p.is_dir())
    return "csv" if attempts == 0 else f"csv.{attempts}"


def config_files(argv) -> list[str]:
    """The ``--config``/``-c`` files of a command line (a list of words; a dict of parsed args has none)."""
    if not isinstance(argv, (list, tuple)):
        return []
    files = []
    for i, word in enumerate(argv):
        if word in ("--config", "-c") and i + 1 < len(argv):
            files.append(argv[i + 1])
        elif word.startswith("--config="):
            files.append(word.split("=", 1)[1])
    return files


def _plain(x):
    """jsonargparse Namespaces → plain dicts, for hashing."""
    if hasattr(x, "as_dict"):
        return x.as_dict()
    return x


def without_loader_options(data):
    """The data config as the run id sees it. The loader options say how batches are loaded, not what the experiment
    is (like trainer.precision), so adding configs/trainer/loader.yaml continues the same run: num_workers is hashed
    at its default (null) and pin_memory/persistent_workers not at all, so run ids stay those from before they were
    options."""
    init = data.get("init_args") if isinstance(data, dict) else None
    if not isinstance(init, dict):
        return data
    init = {k: v for k, v in init.items() if k not in ("pin_memory", "persistent_workers")}
    if "num_workers" in init:
        init["num_workers"] = None
    return {**data, "init_args": init}


def baseline_name(datamodule) -> str:
    return "bicubic" if getattr(datamodule, "scale", 1) > 1 else "input"


def write_results(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def print_results(rows: list[dict], title: str, baseline: str = "bicubic") -> None:
    """Per-image table: baseline PSNR/SSIM, model PSNR/SSIM, gain; mean last."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("image", f"{baseline} PSNR", f"{baseline} SSIM", "model PSNR", "model SSIM", "gain (dB)"):
        table.add_column(col, justify="left" if col == "image" else "right")
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("baseline_psnr", "baseline_ssim", "model_psnr", "model_ssim")}
    for r in [*rows, {"image": "mean", **mean}]:
        table.add_row(r["image"], f"{r['baseline_psnr']:.2f}", f"{r['baseline_ssim']:.4f}", f"{r['model_psnr']:.2f}",
                      f"{r['model_ssim']:.4f}", f"{r['model_psnr'] - r['baseline_psnr']:+.2f}",
                      style="bold" if r["image"] == "mean" else None)
    Console(width=120).print(table)


# "omegaconf+" resolves ${...} after the command line is merged, so `scale: ${data.init_args.scale}` in a net's
# config follows `--data.init_args.scale 2`. exit_on_error=False: a parsing error is raised, and reported in one
# line by restorelab.error_report instead of a usage dump.
CLI_OPTIONS = dict(parser_kwargs={"parser_mode": "omegaconf+", "exit_on_error": False}, subclass_mode_model=True,
                   subclass_mode_data=True, auto_configure_optimizers=False)


def run_lightning_cli(args: list[str] | None) -> int:
    """``restorelab fit|validate|test|predict …`` (``args`` None: from sys.argv); the exit code."""
    ensure_wandb_mode()
    check_config_files(config_files(sys.argv[1:] if args is None else args))
    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)  # absolute paths read as written
    try:
        RestoreLabCLI(**CLI_OPTIONS, save_config_kwargs={"overwrite": True}, args=args)
    except SIGTERMException:  # a SystemExit(None) inside Lightning: make a stopped run look stopped
        finish_wandb(128 + 15)
        fitting = (sys.argv[1:] if args is None else args)[:1] == ["fit"]
        print("restorelab: stopped by SIGTERM" + ("; last.ckpt saved, continue with --ckpt_path last" if fitting
                                                  else ""), file=sys.stderr)
        return 128 + 15
    return 0


_PARSER = None


def build_parser():
    """The parser of ``restorelab fit|validate|…``, built as ``run_lightning_cli`` builds it, with nothing
    instantiated: for checking a sweep's trials before the first one runs."""
    global _PARSER
    if _PARSER is None:
        class Built(Exception):
            pass

        class ParseOnly(RestoreLabCLI):
            def parse_arguments(self, parser, args):  # LightningCLI calls it once the parser is built
                raise Built(parser)

        set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ParseOnly(**CLI_OPTIONS, args=["fit"])
            except Built as built:
                _PARSER = built.args[0]
    return _PARSER


def check_config_files(files: list[str]) -> None:
    """Each ``--config`` file exists and is YAML, or one line naming it (and the line of a syntax error)."""
    import yaml

    for name in files:
        if name.lstrip().startswith(("{", "[")) or "\n" in name:
            continue  # an inline YAML mapping (sweeps pass settings so), parsed by jsonargparse itself
        path = Path(name)
        if not path.is_file():
            raise AnticipatedError(f"{path}: no such config file")
        try:
            yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise AnticipatedError(f"{path}: YAML syntax error: {describe_yaml_error(e)}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise AnticipatedError(f"{path}: cannot read the config file ({e})") from None
