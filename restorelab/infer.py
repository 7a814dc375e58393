"""Inference helpers for full-size test images: exact tiled forward passes, ×8 geometric self-ensemble and the
memory budget that decides the tiling. The logic lives in ``lightning_modules.inference`` (the LightningModule's
validation/test uses it too, and ``lightning_modules`` must not import ``restorelab``); this module re-exports it
for the tools (``predict``, ``benchmark``, ``compare``). See that module's docstring for the memory estimate and
the default budget.
"""
from __future__ import annotations

from lightning_modules.inference import (BUDGET_ENV, DEFAULT_CPU_BUDGET_GB, GB, MIN_TILE, MemoryBudgetError, Plan,
                                         budgeted_forward, check_tile, default_budget, halo_of, image_bytes,
                                         memory_model, min_tile, pad_to_multiple, parse_budget, pass_bytes, plan,
                                         self_ensemble, tile_count, tiled_forward)

__all__ = ["BUDGET_ENV", "DEFAULT_CPU_BUDGET_GB", "GB", "MIN_TILE", "MemoryBudgetError", "Plan", "budgeted_forward",
           "check_tile", "default_budget", "halo_of", "image_bytes", "memory_model", "min_tile", "pad_to_multiple",
           "parse_budget", "pass_bytes", "plan", "self_ensemble", "tile_count", "tiled_forward"]
