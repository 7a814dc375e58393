"""Shared fixtures. Tests run on the CPU with W&B offline; the benchmark sets come from ../shared/datasets
(or $RESTORELAB_DATA) and tests that need them skip with that reason where they are absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


def benchmark_root() -> Path | None:
    root = os.environ.get("RESTORELAB_DATA")
    if root and Path(root).is_dir():
        return Path(root)
    return SHARED_DATASETS if SHARED_DATASETS.is_dir() else None


@pytest.fixture(scope="session")
def datasets_root() -> Path:
    root = benchmark_root()
    if root is None:
        pytest.skip("benchmark sets not found: set RESTORELAB_DATA or put them in ../shared/datasets")
    return root


@pytest.fixture
def run_env(tmp_path, monkeypatch):
    """Runs of the CLI write below tmp_path, not into the checkout."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("RESTORELAB_RUN_DIR", raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def random_vgg19(tmp_path_factory) -> Path:
    """A VGG19 file in torchvision's layout with random weights, made here: no weights are downloaded in tests."""
    from lightning_modules.nets.vgg import save_random_vgg

    path = tmp_path_factory.mktemp("vgg") / "vgg19_random.pth"
    save_random_vgg(path, depth=19, seed=0)
    return path
