"""Inference helpers for full-size test images: tiled forward passes and ×8 geometric self-ensemble.

Tiling is exact, not a blend: each tile carries a halo of at least half the net's receptive field, so every
output pixel kept from a tile saw exactly the input it would have seen in one full-image pass (zero / reflect
padding inside the net only ever lands on true image borders, where the full pass has it too). Nets with
strided layers are only translation-equivariant for shifts by ``size_multiple``, so tile origins, tile sizes
and halos are all multiples of it. Nets must be in eval mode (batch statistics would differ per tile).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad the bottom/right of ``x`` so that both sides are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


def _round_up(value: int, multiple: int) -> int:
    return math.ceil(value / multiple) * multiple


@torch.no_grad()
def tiled_forward(net: nn.Module, x: torch.Tensor, tile: int = 256, overlap: int | None = None) -> torch.Tensor:
    """``net(x)`` computed tile by tile, N×C×H×W -> N×C'×(H·scale)×(W·scale).

    ``tile`` is the side of the part of the input each pass keeps (its core); ``overlap`` the context added on
    every side (default ``net.receptive_field // 2``). Both, and the tile origins, are rounded up to multiples
    of ``net.size_multiple``. The result equals ``net(x)`` to float rounding whenever ``overlap`` covers the
    receptive field; sides that are not multiples of ``size_multiple`` are replicate-padded first and the
    output cropped, so the result then equals ``net(pad_to_multiple(x, m))`` cropped to size. Nets with a
    global receptive field (``None``) run in one pass unless an ``overlap`` is given (an approximation the
    caller then chooses). Only one tile's activations exist at a time, plus the output buffer.
    """
    scale = net.scale
    multiple = getattr(net, "size_multiple", 1)
    h, w = x.shape[-2:]
    padded = pad_to_multiple(x, multiple)
    ph, pw = padded.shape[-2:]
    if (overlap is None and net.receptive_field is None) or max(ph, pw) <= tile:
        return net(padded)[..., : h * scale, : w * scale]

    halo = _round_up(net.receptive_field // 2 if overlap is None else overlap, multiple)
    tile = _round_up(max(tile, 1), multiple)
    out = None
    for top in range(0, ph, tile):
        for left in range(0, pw, tile):
            bottom, right = min(top + tile, ph), min(left + tile, pw)
            y0, x0 = max(top - halo, 0), max(left - halo, 0)
            y1, x1 = min(bottom + halo, ph), min(right + halo, pw)
            result = net(padded[..., y0:y1, x0:x1])
            if out is None:
                out = result.new_empty(*result.shape[:-2], ph * scale, pw * scale)
            core = result[..., (top - y0) * scale:(bottom - y0) * scale, (left - x0) * scale:(right - x0) * scale]
            out[..., top * scale:bottom * scale, left * scale:right * scale] = core
            del result, core  # let the next tile reuse this one's memory
    return out[..., : h * scale, : w * scale]


@torch.no_grad()
def self_ensemble(net: nn.Module, x: torch.Tensor,
                  forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """×8 geometric self-ensemble: mean of the net's outputs on the 4 rotations × 2 flips of ``x``, each
    mapped back. ``forward`` replaces ``net`` as the pass to run, e.g.
    ``functools.partial(tiled_forward, net, tile=256)``.
    """
    forward = forward or net
    total = None
    for quarter_turns in range(4):
        for flip in (False, True):
            view = torch.rot90(x, quarter_turns, dims=(-2, -1))
            view = view.flip(-1) if flip else view
            y = forward(view)
            y = y.flip(-1) if flip else y
            y = torch.rot90(y, -quarter_turns, dims=(-2, -1))
            total = y if total is None else total + y
    return total / 8
