"""``restorelab fit|validate|test|predict --config configs/<model>.yaml [--model.… value]``: LightningCLI
with omegaconf interpolation, plus the suite's conventions — a stable run directory, W&B offline without a
key, a local CSV log, ``last.ckpt`` plus the best checkpoint by validation PSNR, and a per-image results
table after ``fit`` and ``test``."""
from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

from jsonargparse import set_parsing_settings
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from restorelab.runs import config_run_id, ensure_wandb_mode, experiment_name, resolve_run_dir


class SaveLastOnStop(Callback):
    """Writes ``last.ckpt`` whenever fitting stops — at its end (max_steps may fall mid-epoch, between the
    periodic saves) and when stopped by SIGTERM or Ctrl-C — so that ``--ckpt_path last`` loses nothing.
    Not on other exceptions: a NaN loss must not overwrite good weights."""

    def __init__(self, dirpath: str | os.PathLike):
        self.dirpath = Path(dirpath)

    def on_train_end(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(self.dirpath / "last.ckpt")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, (SIGTERMException, KeyboardInterrupt)) and trainer.state.fn == "fit":
            trainer.save_checkpoint(self.dirpath / "last.ckpt")


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
                            help="refresh last.ckpt this often, so a killed job loses little")
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
            _plain(cfg.get("model")), _plain(cfg.get("data")), cfg.get("seed_everything"))
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
                ModelCheckpoint(dirpath=ckpt_dir, monitor=self.model.monitor, mode="max", save_top_k=1,
                                filename="best-{epoch}-{step}", auto_insert_metric_name=False),
                # SaveLastOnStop writes last.ckpt too: without enable_version_counter=False this one would
                # find the file there and write last-v1.ckpt beside it
                ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, enable_version_counter=False,
                                every_n_train_steps=cfg.get("checkpoint_every_n_steps", 200)),
                SaveLastOnStop(ckpt_dir),
            ]
        if trainer_cfg.get("logger") in (None, True):
            ensure_wandb_mode()
            run_dir.mkdir(parents=True, exist_ok=True)
            kwargs["logger"] = [
                # CSVLogger empties an existing metrics.csv: each resumed attempt gets csv, csv.1, ...
                CSVLogger(save_dir=str(run_dir), name="", version=csv_version(run_dir)),
                WandbLogger(project=cfg.get("wandb_project", "restorelab"), save_dir=str(run_dir),
                            name=f"{self.experiment}/{self.run_id}", id=f"{self.experiment}-{self.run_id}",
                            resume="allow", log_model=False),
            ]
        kwargs.setdefault("default_root_dir", str(run_dir))
        return self._instantiate_trainer({**trainer_cfg, **kwargs}, callbacks)

    # ------------------------------------------------------------------ results
    def after_fit(self) -> None:
        if self._cfg().get("test_after_fit", True) and not self.trainer.fast_dev_run:
            ckpt = "best" if self.trainer.checkpoint_callback and self.trainer.checkpoint_callback.best_model_path else None
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt, verbose=False)
            self.after_test()

    def after_test(self) -> None:
        rows = getattr(self.model, "test_rows", None)
        if rows and self.trainer.is_global_zero:
            write_results(rows, self.run_dir / "test_results.csv")
            print_results(rows, title=f"{self.experiment} ({self.run_dir})", baseline=baseline_name(self.datamodule))


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


# Subcommands that are tools around training rather than Lightning entry points: module → its main(argv).
TOOLS = {
    "benchmark": "restorelab.benchmark",
    "compare": "restorelab.compare",
    "predict": "restorelab.predict",  # on files; `predict --config ...` is LightningCLI's predict
    "sweep": "restorelab.sweep",
    "slurm": "restorelab.slurm",
    "report": "restorelab.report",
    "bench": "restorelab.bench",
    "models": "restorelab.model_table",
}


def main(args: list[str] | None = None) -> None:
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] in TOOLS and not (argv[0] == "predict" and {"--config", "-c"} & set(argv)):
        import importlib

        sys.exit(importlib.import_module(TOOLS[argv[0]]).main(argv[1:]))
    ensure_wandb_mode()
    # "omegaconf+" resolves ${...} after the command line is merged, so `scale: ${data.init_args.scale}` in a
    # net's config follows `--data.init_args.scale 2`; absolute paths read as written in the config file.
    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    try:
        RestoreLabCLI(
            parser_kwargs={"parser_mode": "omegaconf+"},
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            args=args,
            auto_configure_optimizers=False,
        )
    except SIGTERMException:  # a SystemExit(None) inside Lightning: make a stopped run look stopped
        finish_wandb(128 + 15)
        print("restorelab: stopped by SIGTERM; last.ckpt saved, continue with --ckpt_path last", file=sys.stderr)
        sys.exit(128 + 15)
    except BaseException:
        finish_wandb(1)
        raise


def finish_wandb(exit_code: int) -> None:
    """Close a W&B run that an exception cut short. Child processes share their parent's W&B service, and
    a run left open there keeps its id "in use", so the resumed run could not take it back."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=exit_code)


if __name__ == "__main__":
    main()
