"""Where a run lives and what it logs to: one stable directory per (experiment, configuration), so that
``--ckpt_path last`` after a crash, a SIGTERM or a Slurm requeue finds the run it continues, and the
W&B run keeps its id. Imports nothing heavy: sweeps and Slurm scripts use it without loading Lightning."""
from __future__ import annotations

import hashlib
import json
import netrc
import os
import sys
from pathlib import Path


def wandb_key_available() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def ensure_wandb_mode() -> str:
    """W&B runs offline unless a key is configured, so nothing is sent and nothing waits for a login."""
    if not os.environ.get("WANDB_MODE") and not wandb_key_available():
        os.environ["WANDB_MODE"] = "offline"
    return os.environ.get("WANDB_MODE", "online")


def config_run_id(model_cfg, data_cfg, seed) -> str:
    """Short hash of what defines the experiment (not trainer limits), stable across invocations."""
    blob = json.dumps({"model": model_cfg, "data": data_cfg, "seed": seed}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:8]


def experiment_name(default: str) -> str:
    """A sweep names the experiment after itself, so equal trials of two sweeps stay two W&B runs."""
    return os.environ.get("RESTORELAB_EXPERIMENT") or default


def resolve_run_dir(runs_dir: str, experiment: str, run_id: str) -> Path:
    """``$RESTORELAB_RUN_DIR`` (set by sweeps and Slurm jobs) wins over ``runs/<experiment>/<run id>``."""
    env = os.environ.get("RESTORELAB_RUN_DIR")
    return Path(env) if env else Path(runs_dir) / experiment / run_id


def finish_wandb(exit_code: int) -> None:
    """Close a W&B run that an exception cut short. Child processes share their parent's W&B service, and
    a run left open there keeps its id "in use", so the resumed run could not take it back."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=exit_code)
