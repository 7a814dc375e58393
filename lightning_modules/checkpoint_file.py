"""A checkpoint file read with one-line errors: what every reader of checkpoints (the tools, and a training scheme
that starts from another run's weights) needs before torch or Lightning sees the file."""
from __future__ import annotations

from pathlib import Path

import torch

from datamodules.errors import AnticipatedError


class CheckpointError(AnticipatedError):
    """A checkpoint that cannot be loaded or does not fit the request; the message is one line naming it."""


def read_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint file as a dict, or one line saying why it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever torch says, the user needs one line naming the file
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt: "
                              f"{type(e).__name__})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "pytorch-lightning_version" not in ckpt:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict / pytorch-lightning_version)")
    return ckpt


def weights_mismatch(own: dict, saved: dict) -> str | None:
    """How a saved state dict differs from a module's (``own``), or None where every tensor fits: the first
    missing, unexpected or mis-shaped key and the counts of each."""
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    wrong = [k for k in own if k in saved and tuple(saved[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or wrong):
        return None
    k = (missing or unexpected or wrong)[0]
    what = "lacks" if missing else "has an unexpected" if unexpected else "has another shape for"
    return f"{what} {k} ({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} mis-shaped tensors)"


def check_fits(path: str | Path, ckpt: dict, module: torch.nn.Module) -> None:
    """One line if the checkpoint's weights were saved from another net than ``module``."""
    problem = weights_mismatch(module.state_dict(), ckpt["state_dict"])
    if problem:
        raise CheckpointError(f"{path}: saved from another net than the configured {type(module).__name__}: it "
                              f"{problem}")


def load_net_weights(net: torch.nn.Module, path: str | Path, option: str) -> None:
    """``net``'s weights from the net of another run's checkpoint, where a scheme starts from one (``option`` names
    the setting that gave ``path``); one line if they do not fit."""
    saved = read_checkpoint(path)["state_dict"]
    weights = {k[len("net."):]: v for k, v in saved.items() if k.startswith("net.")}
    problem = weights_mismatch(net.state_dict(), weights)
    if problem:
        raise CheckpointError(f"{path}: {option} holds another net than the configured {type(net).__name__}: it "
                              f"{problem}")
    net.load_state_dict(weights)
