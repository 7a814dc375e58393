"""Whole-image inference within a memory budget: exact tiled forward passes, ×8 geometric self-ensemble, and
the estimate that decides whether (and how finely) to tile. Used by the LightningModule's validation/test
(``RestorationScheme.restore``) and by ``restorelab predict``, ``benchmark`` and ``compare``: one copy of the
logic, below ``restorelab`` in the import graph.

**Tiling is exact, not a blend**: each tile carries a halo of at least half the net's receptive field, so every
output pixel kept from a tile saw exactly the input it would have seen in one full-image pass (zero / reflect
padding inside the net only ever lands on true image borders, where the full pass has it too). Nets with
strided layers are only translation-equivariant for shifts by ``size_multiple``, so tile origins, tile sizes
and halos are all multiples of it. Nets must be in eval mode (batch statistics would differ per tile). Nets
whose ``receptive_field`` is ``None`` (global) cannot be tiled exactly and always run in one pass.

**Memory estimate** (``memory_model``): measured once per net, device and channel count by two probe forwards
(no gradients) of one image of ``PROBE_SIDE``² and (2·``PROBE_SIDE``)² pixels (rounded up to ``size_multiple``),
run on the meta device (shapes only, no arithmetic: cheap even for NLRN at paper size; a net that needs real
values is probed on its device instead, where CUDA reports its allocator's peak). A dispatch-level meter sums
the bytes of every tensor storage the forward creates while it is alive and adds, during each convolution, a
copy of its input and output (what oneDNN's layout reorders take) or, where oneDNN does not run it, the larger
of that and an im2col buffer (C_in·k_h·k_w·output pixels, the slow CPU path's). The two peaks give a line,
fixed + per-pixel bytes, both times ``SAFETY`` (1.5: allocator rounding and fragmentation, per-thread scratch;
against the growth of the process's peak RSS over a 128² SRResNet ×4 / 512² DnCNN pass on the CPU, the
estimate is 1.2× / 1.9× it). A pass over an N×C×h×w input is estimated at ``N·(fixed + h·w·per_pixel)``
(``pass_bytes``), and a run at its largest pass plus the float32 input and output images themselves
(``image_bytes``).

**Budget** (``default_budget``): ``$RESTORELAB_MEMORY_BUDGET`` GB (10⁹ bytes) if set; else on the CPU 4 GB or a
quarter of the machine's RAM, whichever is larger, and 80 % of the free memory of a CUDA device. ``plan`` picks
one pass when it fits, else the largest square tile that does (``tile=None``, automatic); an explicit tile (0:
one pass) is checked against the budget and refused with one line (a ``MemoryBudgetError``, an
``AnticipatedError``, naming the option and what would fit) if it does not fit. So is a tile below
``min_tile``: at least the halo (so a tile's pass costs at most 9× the pixels it keeps) and ``MIN_TILE`` pixels.
Nets with a global receptive field ignore a tile and are refused, saying what image size would fit, when one
pass does not. For NLRN at its paper size (12 steps, 45×45 window) the estimate is about 18 kB per pixel:
4.8 GB for a 512² photo in one pass, while its 290-px halo makes its smallest exact tile need about 14 GB, so
below that budget tiling cannot help it and larger images are refused.
"""
from __future__ import annotations

import math
import os
import weakref
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from datamodules.errors import AnticipatedError

BUDGET_ENV = "RESTORELAB_MEMORY_BUDGET"
DEFAULT_CPU_BUDGET_GB = 4.0
CPU_RAM_FRACTION = 0.25
CUDA_FREE_FRACTION = 0.8
GB = 1e9
PROBE_SIDE = 64
SAFETY = 1.5
MIN_TILE = 16


class MemoryBudgetError(AnticipatedError):
    """A tile or one pass that does not fit the memory budget, or a tile the net cannot use; one line."""


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad the bottom/right of ``x`` so that both sides are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


def _round_up(value: int, multiple: int) -> int:
    return math.ceil(value / multiple) * multiple


def halo_of(net: nn.Module) -> int | None:
    """Context added on every side of a tile (input pixels): half the receptive field, rounded up to
    ``size_multiple``; ``None`` for a global receptive field."""
    rf = getattr(net, "receptive_field", None)
    return None if rf is None else _round_up(rf // 2, getattr(net, "size_multiple", 1))


def tile_count(net: nn.Module, h: int, w: int, tile: int) -> int:
    """Passes ``tiled_forward(net, ·, tile)`` makes over an h×w input."""
    multiple = getattr(net, "size_multiple", 1)
    ph, pw = _round_up(h, multiple), _round_up(w, multiple)
    if net.receptive_field is None or tile <= 0 or max(ph, pw) <= tile:
        return 1
    tile = _round_up(tile, multiple)
    return math.ceil(ph / tile) * math.ceil(pw / tile)


@torch.no_grad()
def tiled_forward(net: nn.Module, x: torch.Tensor, tile: int = 256, overlap: int | None = None,
                  on_tile: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """``net(x)`` computed tile by tile, N×C×H×W -> N×C'×(H·scale)×(W·scale).

    ``tile`` is the side of the part of the input each pass keeps (its core); ``overlap`` the context added on
    every side (default ``net.receptive_field // 2``). Both, and the tile origins, are rounded up to multiples
    of ``net.size_multiple``. The result equals ``net(x)`` to float rounding whenever ``overlap`` covers the
    receptive field; sides that are not multiples of ``size_multiple`` are replicate-padded first and the
    output cropped, so the result then equals ``net(pad_to_multiple(x, m))`` cropped to size. Nets with a
    global receptive field (``None``) run in one pass unless an ``overlap`` is given (an approximation the
    caller then chooses). Only one tile's activations exist at a time, plus the output buffer.
    ``on_tile(done, total)`` is called after every pass (progress, or a stop request raised from it).
    """
    scale = net.scale
    multiple = getattr(net, "size_multiple", 1)
    h, w = x.shape[-2:]
    padded = pad_to_multiple(x, multiple)
    ph, pw = padded.shape[-2:]
    if (overlap is None and net.receptive_field is None) or max(ph, pw) <= tile:
        out = net(padded)[..., : h * scale, : w * scale]
        if on_tile is not None:
            on_tile(1, 1)
        return out

    halo = halo_of(net) if overlap is None else _round_up(overlap, multiple)
    tile = _round_up(max(tile, 1), multiple)
    total = math.ceil(ph / tile) * math.ceil(pw / tile)
    out, done = None, 0
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
            done += 1
            if on_tile is not None:
                on_tile(done, total)
    return out[..., : h * scale, : w * scale]


def geometric_views(x: torch.Tensor, forward: Callable[[torch.Tensor], torch.Tensor], views: int = 8) -> list[torch.Tensor]:
    """``forward`` on the first ``views`` of the 4 rotations × 2 flips of ``x`` (the identity first), each output
    mapped back: what a geometric self-ensemble combines (its mean, ``self_ensemble``; ZSSR's median)."""
    outputs = []
    for quarter_turns in range(4):
        for flip in (False, True):
            if len(outputs) == views:
                return outputs
            view = torch.rot90(x, quarter_turns, dims=(-2, -1))
            view = view.flip(-1) if flip else view
            y = forward(view)
            y = y.flip(-1) if flip else y
            outputs.append(torch.rot90(y, -quarter_turns, dims=(-2, -1)))
    return outputs


@torch.no_grad()
def self_ensemble(net: nn.Module, x: torch.Tensor,
                  forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """×8 geometric self-ensemble: mean of the net's outputs on the 4 rotations × 2 flips of ``x``, each
    mapped back. ``forward`` replaces ``net`` as the pass to run, e.g.
    ``functools.partial(tiled_forward, net, tile=256)``.
    """
    total = None
    for y in geometric_views(x, forward or net):
        total = y if total is None else total + y
    return total / 8


# ------------------------------------------------------------------------------------------ memory estimate


def _onednn_convolutions(device: torch.device, dtype: torch.dtype) -> bool:
    return (device.type == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled)


class _LiveBytes(TorchDispatchMode):
    """Peak bytes of the tensor storages created under it and still alive, plus convolution workspaces."""

    def __init__(self, preexisting: set[int], device: torch.device):
        super().__init__()
        self.preexisting = preexisting  # storages of the input and the weights: not the forward's
        self.onednn = _onednn_convolutions(device, torch.float32)
        self.live: dict[int, list[int]] = {}  # storage -> [bytes, live tensors on it]
        self.current = self.peak = 0

    def _release(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[key]

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage._cdata  # the StorageImpl: shared by views, unique while alive (also on the meta device)
        if key in self.preexisting:
            return
        if key in self.live:
            self.live[key][1] += 1
        else:
            self.live[key] = [storage.nbytes(), 1]
            self.current += storage.nbytes()
        weakref.finalize(t, self._release, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        extra = 0
        if func is torch.ops.aten.convolution.default:
            x, weight, transposed, y = args[0], args[1], args[6], out
            extra = x.nbytes + y.nbytes  # oneDNN's reorders of the input and output
            if not self.onednn:  # the slow path's im2col buffer
                columns = (weight.shape[0] if transposed else x.shape[1]) * math.prod(weight.shape[2:])
                extra = max(extra, columns * x.shape[0] * math.prod((x if transposed else y).shape[2:])
                            * x.element_size())
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t)
        self.peak = max(self.peak, self.current + extra)
        return out


_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _device_of(net: nn.Module) -> torch.device:
    p = next(iter(net.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def probe_sides(net: nn.Module) -> tuple[int, int]:
    m = getattr(net, "size_multiple", 1)
    return _round_up(PROBE_SIDE, m), _round_up(2 * PROBE_SIDE, m)


@torch.no_grad()
def measure_peak_bytes(net: nn.Module, shape: tuple[int, ...], device: torch.device | str | None = None,
                       meta: bool = True) -> int:
    """Peak memory of a no-grad ``net(x)`` for an input of ``shape``, beyond ``x`` and the weights (no safety
    factor), as the module docstring describes. ``meta``: on shape-only copies of the weights and input (no
    arithmetic, so any size is cheap to measure); else on random data on ``device`` (default the net's)."""
    device = torch.device(device) if device is not None else _device_of(net)
    if meta:
        state = {k: torch.empty_like(v, device="meta") for k, v in [*net.named_parameters(), *net.named_buffers()]}
        x = torch.empty(shape, device="meta")
        run = lambda: torch.func.functional_call(net, state, (x,))  # noqa: E731
        owned = {t.untyped_storage()._cdata for t in [x, *state.values()]}
    else:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device)
        run = lambda: net(x)  # noqa: E731
        owned = {t.untyped_storage()._cdata for t in [x, *net.parameters(), *net.buffers()]}
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            y = run()
            torch.cuda.synchronize(device)
            del y
            return int(torch.cuda.max_memory_allocated(device) - base)
    meter = _LiveBytes(owned, device)
    with meter:
        y = run()
    del y
    return int(meter.peak)


def memory_model(net: nn.Module, channels: int | None = None) -> tuple[float, float]:
    """(fixed bytes, bytes per input pixel) of one no-grad pass on one image, safety factor included: a line
    through the peaks measured at two probe sides (see the module docstring); cached per net, device and
    channel count."""
    channels = channels or getattr(net, "in_channels", 1)
    device = _device_of(net)
    cache = _CACHE.setdefault(net, {})
    key = (str(device), channels)
    if key not in cache:
        (s1, s2), peaks = probe_sides(net), []
        for side in probe_sides(net):
            try:
                peaks.append(measure_peak_bytes(net, (1, channels, side, side), device, meta=True))
            except (NotImplementedError, RuntimeError):  # a data-dependent op: measure on real data
                peaks.append(measure_peak_bytes(net, (1, channels, side, side), device, meta=False))
        slope = max(0.0, (peaks[1] - peaks[0]) / (s2 * s2 - s1 * s1))
        fixed = max(0.0, peaks[0] - slope * s1 * s1)
        cache[key] = (SAFETY * fixed, SAFETY * slope)
    return cache[key]


def pass_bytes(net: nn.Module, shape: tuple[int, ...]) -> int:
    """Estimated peak of one no-grad pass over an N×C×h×w input (N images side by side: N times one)."""
    n, c, h, w = shape
    fixed, per_pixel = memory_model(net, c)
    return int(n * (fixed + per_pixel * h * w))


def image_bytes(net: nn.Module, shape: tuple[int, ...]) -> int:
    """float32 input (padded to ``size_multiple``) and output images of a run."""
    n, c, h, w = shape
    m, s = getattr(net, "size_multiple", 1), getattr(net, "scale", 1)
    pixels = _round_up(h, m) * _round_up(w, m)
    return 4 * n * pixels * (c + getattr(net, "out_channels", c) * s * s)


# ------------------------------------------------------------------------------------------------ budget


def parse_budget(value: str | float, name: str = BUDGET_ENV) -> int:
    """GB (10⁹ bytes) -> bytes; anything but a positive finite number raises a one-line error naming ``name``."""
    try:
        gb = float(value)
    except (TypeError, ValueError):
        gb = float("nan")
    if not (math.isfinite(gb) and gb > 0):
        raise MemoryBudgetError(f"{name}={value}: the memory budget must be a positive number of GB")
    return int(gb * GB)


def default_budget(device: torch.device | str = "cpu") -> int:
    """Bytes: ``$RESTORELAB_MEMORY_BUDGET`` GB if set; else on the CPU 4 GB or a quarter of the machine's RAM,
    whichever is larger; on a CUDA device 80 % of its free memory."""
    env = os.environ.get(BUDGET_ENV)
    if env:
        return parse_budget(env, BUDGET_ENV)
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(CUDA_FREE_FRACTION * free)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 0
    return int(max(DEFAULT_CPU_BUDGET_GB * GB, CPU_RAM_FRACTION * ram))


def gb(nbytes: float) -> str:
    return f"{nbytes / GB:.3g} GB"


def _gb_up(nbytes: float) -> str:
    """``nbytes`` in GB to 3 significant digits, rounded up (a budget that is then enough)."""
    value = nbytes / GB
    if value <= 0:
        return "0"
    step = 10 ** (math.floor(math.log10(value)) - 2)
    return f"{math.ceil(value / step) * step:.3g}"


def min_tile(net: nn.Module) -> int | None:
    """Smallest tile side accepted (input pixels): the halo and ``MIN_TILE``, rounded up to ``size_multiple``;
    ``None`` for nets that cannot be tiled (global receptive field)."""
    halo = halo_of(net)
    return None if halo is None else _round_up(max(MIN_TILE, halo), getattr(net, "size_multiple", 1))


def check_tile(net: nn.Module, tile: int | None, option: str = "--tile") -> None:
    """A tile the user gave: ``None`` (automatic), 0 (one pass), or at least ``min_tile(net)``."""
    if tile is None or tile == 0:
        return
    name = type(net).__name__
    if tile < 0:
        raise MemoryBudgetError(f"{option} {tile}: a tile side must be positive (0: one pass; unset: automatic)")
    smallest = min_tile(net)
    if smallest is not None and tile < smallest:
        raise MemoryBudgetError(
            f"{option} {tile}: too small for {name} (halo {halo_of(net)} px a side, size multiple "
            f"{getattr(net, 'size_multiple', 1)}); the minimum is {smallest} (0: one pass; unset: automatic)")


@dataclass
class Plan:
    tile: int  # 0: one pass
    passes: int
    pass_bytes: int  # estimated peak of the largest pass
    total_bytes: int  # that plus the input and output images


def _pass_side(net: nn.Module, side: int, tile: int) -> int:
    """Largest input side of a pass of ``tiled_forward`` (0 = one pass) over a padded side ``side``."""
    if tile == 0 or net.receptive_field is None or side <= tile:
        return side
    return min(tile + 2 * halo_of(net), side)


def _largest_side(net: nn.Module, n: int, c: int, room: float) -> int:
    """Largest square input side whose pass fits in ``room`` bytes (0 if none)."""
    fixed, per_pixel = memory_model(net, c)
    if room <= n * fixed:
        return 0
    return math.isqrt(int((room / n - fixed) / per_pixel)) if per_pixel > 0 else 1 << 30


def plan(net: nn.Module, shape: tuple[int, ...], budget: int, tile: int | None = None,
         options: tuple[str, str] = ("--tile", "--memory_budget"), what: str = "") -> Plan:
    """How to run ``net`` on an input of ``shape`` (N×C×H×W) within ``budget`` bytes: ``tile`` None picks one
    pass if it fits, else the largest square tile that does; 0 or a side is checked. Anything that does not fit
    raises ``MemoryBudgetError``, one line naming ``options`` (tile option, budget option) and what would fit."""
    tile_opt, budget_opt = options
    check_tile(net, tile, tile_opt)
    n, c, h, w = shape
    m = getattr(net, "size_multiple", 1)
    ph, pw = _round_up(h, m), _round_up(w, m)
    io = image_bytes(net, shape)
    name = type(net).__name__
    image = f"{what + ' ' if what else ''}({w}x{h}{f', batch of {n}' if n > 1 else ''})"
    asked = f"{budget_opt} {budget / GB:g} GB"

    def made(t: int) -> Plan:
        one = pass_bytes(net, (n, c, _pass_side(net, ph, t), _pass_side(net, pw, t)))
        return Plan(t, tile_count(net, h, w, t) if t else 1, one, one + io)

    whole = made(0)
    if tile == 0 or net.receptive_field is None:
        if whole.total_bytes <= budget:
            return whole
        if net.receptive_field is None:
            # a square image of side s needs pass(s) + io(s); io grows like the pass, so scale it along
            ratio = io / (n * ph * pw)
            side = _largest_side(net, n, c, budget / (1 + ratio / memory_model(net, c)[1]))
            side = side // m * m
            raise MemoryBudgetError(
                f"{name} has a global receptive field and cannot be tiled exactly: one pass over {image} needs "
                f"about {gb(whole.total_bytes)}, over {asked}; at this budget images up to about "
                f"{side}x{side} ({side * side / 1e6:.2f} megapixels) fit, or raise {budget_opt}")
        raise MemoryBudgetError(
            f"{tile_opt} 0 (one pass) over {image} needs about {gb(whole.total_bytes)}, over {asked}; leave "
            f"{tile_opt} unset to tile automatically, or raise {budget_opt}")
    if tile is not None:
        chosen = made(tile)
        if chosen.total_bytes <= budget:
            return chosen
        try:
            fits = plan(net, shape, budget, None, options, what).tile
            hint = f"; the largest tile that fits is {fits}" if fits else ""
        except MemoryBudgetError:
            hint = f"; no tile of at least {min_tile(net)} fits"
        raise MemoryBudgetError(
            f"{tile_opt} {tile} on {name}: a pass over a tile of {image} needs about {gb(chosen.total_bytes)} "
            f"with the images, over {asked}{hint}")
    if whole.total_bytes <= budget:
        return whole
    smallest = min_tile(net)
    t = (_largest_side(net, n, c, budget - io) - 2 * halo_of(net)) // m * m
    if t < smallest:
        tiled = made(smallest).total_bytes
        how = (f"one pass needs about {gb(whole.total_bytes)}" if whole.total_bytes <= tiled else
               f"its smallest exact tile ({smallest} px + a {halo_of(net)} px halo a side) needs about {gb(tiled)}")
        raise MemoryBudgetError(f"{asked} is too small for {name} on {image}: {how} with the images; raise "
                                f"{budget_opt} to at least {_gb_up(min(tiled, whole.total_bytes))}")
    return made(min(t, _round_up(max(ph, pw), m)))


def budgeted_forward(net: nn.Module, x: torch.Tensor, budget: int | None = None, tile: int | None = None,
                     on_tile: Callable[[int, int], None] | None = None,
                     options: tuple[str, str] = ("--tile", "--memory_budget"), what: str = "") -> torch.Tensor:
    """``net(x)`` in one pass or exact tiles, as ``plan`` decides for ``budget`` bytes (default:
    ``default_budget`` of the net's device)."""
    budget = default_budget(x.device) if budget is None else budget
    chosen = plan(net, tuple(x.shape), budget, tile, options, what)
    return tiled_forward(net, x, tile=chosen.tile or 1 << 62, on_tile=on_tile)
