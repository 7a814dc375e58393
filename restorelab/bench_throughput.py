"""Throughput of every net of the model table against this device's ceiling, the Lightning loop's own cost, and
tiled inference at scale: the tables ``restorelab bench`` adds after the synthesis rates.

- **Ceiling**: the best FLOP/s of a large matmul and several large convolutions (forward + backward), measured in
  the same run, on the same device and dtype as the nets: one shape is not the ceiling (on 2 EPYC cores a lone
  3×3 conv 64→64 ran at 114 GFLOP/s while VDSR's whole training step ran at 192). Beside it the device's nominal
  peak (``nominal_peak``).
- **Nets**: each net of ``model_table.SPECS`` at its CPU-budget size (``configs/<net>.yaml`` +
  ``configs/experiment/cpu_budget/<net>.yaml``) and at the paper's (``configs/<net>.yaml``), its batch and patch
  from the same config; a training step (forward, MSE against a target of the output's size, backward, Adam) and
  an inference pass on random inputs. FLOPs are counted by ``torch.utils.flop_counter`` on one step, so the
  fraction of the ceiling is the net's own arithmetic over the time it took; the GANs' rows are their generators.
- **Loop**: ``restorelab fit``'s mean step time (logging, checkpointing and the progress bar on) over a plain
  PyTorch loop on the same net, batches and degradation (``make train``'s SRCNN), interleaved step by step in
  one process so that both see the same machine load.
- **Tiling**: one pass vs exact tiles (``inference.tiled_forward``) on 1, 4 and 16 megapixel inputs: time, and
  peak memory (CUDA: the allocator's peak; CPU: the growth of the process's peak RSS).

Absolute rates on shared machines drift from run to run; ratios measured in one run are what to quote.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import logging
import math
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import lightning as L
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from datamodules.image_ops import center_crop

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Datasheet dense peaks (TFLOP/s) of GPUs a user is likely to have, by a substring of the device name: fp32
# without tensor cores, bf16/fp16 with them.
GPU_PEAKS = {"H200": {"fp32": 67, "bf16": 989, "fp16": 989}, "H100": {"fp32": 67, "bf16": 989, "fp16": 989},
             "A100": {"fp32": 19.5, "bf16": 312, "fp16": 312}, "L40S": {"fp32": 91.6, "bf16": 362, "fp16": 362},
             "V100": {"fp32": 15.7, "bf16": None, "fp16": 125}}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str):
    dtype = DTYPES[precision]
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def seconds_per_call(fn: Callable[[], object], device: torch.device, seconds: float, warmup: bool = True) -> float:
    """Median seconds of ``fn`` (after one untimed warm-up call) over as many calls as fit in ``seconds``, at
    least 3 unless one call alone takes longer: the median, as a shared machine's interruptions only add time."""
    if warmup:
        fn()
    sync(device)
    times, start = [], time.perf_counter()
    while not times or (time.perf_counter() - start < seconds or len(times) < 3) and times[0] < seconds:
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def counted_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# ------------------------------------------------------------------------------------------------ ceiling
def ceiling_kernels(device: torch.device) -> dict[str, Callable[[], None]]:
    """A large matmul and convolutions of the nets' kinds (3×3 at three widths, 5×5, 1×1), forward + backward."""
    gen = torch.Generator().manual_seed(0)
    side = 4096 if device.type == "cuda" else 1536
    a, b = (torch.randn(side, side, generator=gen).to(device) for _ in range(2))
    kernels = {f"matmul {side}²": lambda: a @ b}
    big = 4 if device.type == "cuda" else 1
    for cin, cout, k, px in ((64, 64, 3, 96), (128, 128, 3, 64), (256, 256, 3, 48), (64, 64, 5, 64), (256, 256, 1, 64)):
        conv = nn.Conv2d(cin, cout, k, padding=k // 2).to(device)
        x = torch.randn(8 * big, cin, px, px, generator=gen).to(device).requires_grad_()

        def step(conv=conv, x=x):
            conv(x).sum().backward()
        kernels[f"conv {k}×{k} {cin}→{cout}, {8 * big}×{px}²"] = step
    return kernels


def measure_ceiling(device: torch.device, precision: str, seconds: float) -> tuple[str, float]:
    """(the fastest kernel, its FLOP/s)."""
    best = ("", 0.0)
    for name, fn in ceiling_kernels(device).items():
        def run(fn=fn):
            with autocast(device, precision):
                fn()
        rate = counted_flops(run) / seconds_per_call(run, device, seconds)
        best = max(best, (name, rate), key=lambda t: t[1])
    return best


def nominal_peak(device: torch.device, precision: str) -> float | None:
    """FLOP/s on the datasheet (GPUs of ``GPU_PEAKS``), or for a CPU cores × clock × the widest FMA's FLOPs per
    cycle (2 units × vector lanes × 2; AVX-512 counted as 2 × 16 fp32 lanes, which double-pumped cores such as
    Zen 4 reach only at half rate): an upper bound, not a promise."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((p.get(precision) for k, p in GPU_PEAKS.items() if k in name), None)
        return peak * 1e12 if peak else None
    if precision != "fp32":
        return None
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    mhz = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    lanes = 16 if " avx512f" in flags else 8 if " avx2" in flags and " fma" in flags else 4
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cores, torch.get_num_threads()) * max(mhz) * 1e6 * 2 * lanes * 2 if mhz else None


# ------------------------------------------------------------------------------------------------ nets
@dataclass
class NetCase:
    key: str  # model_table key
    size: str  # "CPU budget" or "paper"
    net: nn.Module
    batch: int
    input_shape: tuple[int, int, int]  # C, h, w of one sample


def _net_and_data(configs: list[str]) -> tuple[nn.Module, dict]:
    """The net (built from its class_path/init_args, nothing else instantiated) and the data's init_args."""
    from restorelab.lightning_cli import build_parser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = build_parser().parse_args(["fit", *[a for c in configs for a in ("--config", c)]]).fit
    spec = cfg.model.init_args.net
    module, _, name = spec.class_path.rpartition(".")
    init_args = spec.init_args.as_dict() if hasattr(spec.init_args, "as_dict") else dict(spec.init_args or {})
    return getattr(importlib.import_module(module), name)(**init_args), cfg.data.init_args.as_dict()


def net_cases(keys: list[str] | None, sizes: list[str], paper_pixels: int | None) -> list[NetCase]:
    """The nets at each size; at the paper's, a batch of more than ``paper_pixels`` input pixels is cut to fit
    (one sample at least): a CPU takes minutes per step of DeepDeblur or SRN at 4-16 × 256²."""
    from restorelab.model_table import REPO, SPECS

    cases = []
    for key, spec in SPECS.items():
        if keys and key not in keys:
            continue
        for size in sizes:
            configs = [spec.config] + ([spec.experiment] if size == "CPU budget" else [])
            net, data = _net_and_data([str(REPO / c) for c in configs])
            scale = getattr(net, "scale", 1)
            channels = 3 if data.get("channels") == "rgb" else 1
            side = data["patch_size"] // scale if scale > 1 else data["patch_size"]
            batch = data["batch_size"]
            if size == "paper" and paper_pixels:
                batch = max(1, min(batch, paper_pixels // (side * side)))
            cases.append(NetCase(key, size, net, batch, (channels, side, side)))
    return cases


def net_throughput(case: NetCase, device: torch.device, precision: str, seconds: float) -> dict:
    """Samples/s and FLOP/s of a training step and of an inference pass."""
    gen = torch.Generator().manual_seed(0)
    net = case.net.to(device).train()
    x = torch.rand(case.batch, *case.input_shape, generator=gen).to(device)
    with torch.no_grad():
        target = torch.rand_like(net(x))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            out = net(x)
            loss = nn.functional.mse_loss(out.float(), center_crop(target, out.shape[-2:]))
        loss.backward()
        optimizer.step()

    def inference():
        with torch.inference_mode(), autocast(device, precision):
            net(x)

    row = {}
    for what, fn, mode in (("train", train_step, True), ("infer", inference, False)):
        net.train(mode)
        flops = counted_flops(fn)  # also the warm-up
        step = seconds_per_call(fn, device, seconds, warmup=False)
        row[what] = {"samples_s": case.batch / step, "flops": flops / step, "step_s": step}
    case.net.to("cpu")
    return row


# ------------------------------------------------------------------------------------------------ loop cost
class PlainSteps(L.Callback):
    """Interleaves a plain PyTorch loop with the run it is added to: after each of the run's training steps, one
    plain step (the config's DataModule batches from an iterator of its own, its recipe's ``degrade``, a second
    copy of its net, Adam with the same per-layer rates, MSE), timed apart. Step by step in one process the two
    see the machine's load alike; run one after the other on a shared machine their ratio moved by ±5 %.
    Class attributes, since the CLI builds the callback from its class path."""

    config = "configs/srcnn.yaml"
    fit_s: list[float] = []  # each run step: from the end of one plain step to the start of the next
    plain_s: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.scheme, self.degrade, self.optimizer, self.batches = _plain_parts(PlainSteps.config)
        PlainSteps.fit_s, PlainSteps.plain_s = [], []
        self.end = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        start = time.perf_counter()
        PlainSteps.fit_s.append(start - self.end)
        with torch.enable_grad():
            pair = self.degrade(next(self.batches))
            self.optimizer.zero_grad(set_to_none=True)
            out = self.scheme.net(self.scheme.net_input(pair))
            nn.functional.mse_loss(out, center_crop(pair["target"], out.shape[-2:])).backward()
            self.optimizer.step()
        self.end = time.perf_counter()
        PlainSteps.plain_s.append(self.end - start)


def _plain_parts(config: str):
    """The plain loop's scheme (only its net and ``net_input`` are used), degradation, optimizer and batches,
    built from ``config`` without a trainer."""
    from restorelab.lightning_cli import build_parser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parser = build_parser()
        # no schedule: the cosine needs a trainer for its horizon, and one multiply per step is no loop cost
        cfg = parser.parse_args(["fit", "--config", config, "--data.init_args.patches_per_epoch=1000000",
                                 "--model.init_args.scheduler=none"])
        init = parser.instantiate_classes(cfg).fit
    scheme, datamodule = init.model, init.data
    datamodule.setup("fit")
    optimizer = scheme.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    return scheme, datamodule.degrade, optimizer, iter(datamodule.train_dataloader())


def loop_overhead(steps: int, warmup: int, repeats: int, config: str = "configs/srcnn.yaml") -> dict:
    """Mean step time of ``restorelab fit`` (W&B offline + CSV logging, checkpointing, progress bar: all as a
    user runs it; no validation inside the timed steps) over that of a plain loop interleaved with it step by step
    (``PlainSteps``), in ``repeats`` runs; the median run's times and ratio, and the range of the ratios."""
    from restorelab.lightning_cli import run_lightning_cli

    net, data = _net_and_data([config])
    batch, runs_s = data["batch_size"], []
    PlainSteps.config = config
    with tempfile.TemporaryDirectory() as runs:
        for r in range(repeats):
            args = ["fit", "--config", config, f"--trainer.max_steps={steps}", "--trainer.max_epochs=-1",
                    f"--data.init_args.patches_per_epoch={batch * (steps + 1)}", "--trainer.limit_val_batches=0",
                    "--trainer.num_sanity_val_steps=0", "--test_after_fit=false", f"--runs_dir={runs}",
                    f"--run_id=loop{r}", "--trainer.callbacks+=restorelab.bench_throughput.PlainSteps"]
            lightning_log = logging.getLogger("lightning.pytorch")  # its handler holds the stderr of its import
            level = lightning_log.level
            lightning_log.setLevel(logging.WARNING)
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    if run_lightning_cli(args) != 0:
                        raise RuntimeError("restorelab fit failed in the loop benchmark")
            finally:
                lightning_log.setLevel(level)
            fit, plain = PlainSteps.fit_s[warmup:], PlainSteps.plain_s[warmup:]
            runs_s.append((sum(plain) / len(plain), sum(fit) / len(fit)))
    runs_s.sort(key=lambda pf: pf[1] / pf[0])
    plain_s, fit_s = runs_s[len(runs_s) // 2]
    return {"net": type(net).__name__, "batch": batch, "plain_s": plain_s, "fit_s": fit_s, "ratio": fit_s / plain_s,
            "ratios": [f / p for p, f in runs_s]}


# ------------------------------------------------------------------------------------------------ tiling
def _rss_kib(field: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1])


def peak_bytes(fn: Callable[[], object], device: torch.device) -> tuple[object, int]:
    """``fn()`` and the memory it took at its peak beyond what was allocated before: CUDA's allocator peak, or
    on Linux the growth of the peak RSS (``VmHWM``, reset to the present RSS through ``/proc/self/clear_refs``).
    The RSS only grows where the pass touches pages the process does not already hold: run it in a fresh process
    (``tiling`` does), since memory an earlier workload freed into the C heap is reused unseen."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        out = fn()
        torch.cuda.synchronize(device)
        return out, torch.cuda.max_memory_allocated(device) - before
    Path("/proc/self/clear_refs").write_text("5")
    before = _rss_kib("VmRSS")
    out = fn()
    return out, (_rss_kib("VmHWM") - before) * 1024


def tiling_row(megapixels: float, tile: int, device: str, threads: int) -> dict:
    """The seconds and peak bytes of one pass and of exact ``tile``² tiles of SRCNN 9-5-5 over one image;
    the tiles first, so that the smaller peak is measured on memory no earlier pass of this process freed."""
    from lightning_modules.inference import tiled_forward
    from lightning_modules.nets.srcnn import SRCNN

    torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(0)
    net = SRCNN(kernel_sizes=[9, 5, 5], init_std=None).to(dev).eval()
    side = int(round(math.sqrt(megapixels * 1e6)))
    x = torch.rand(1, 1, side, side, generator=torch.Generator().manual_seed(0)).to(dev)
    row = {"megapixels": megapixels}
    for label, t in (("tiled", tile), ("whole", 10**9)):
        with torch.inference_mode():
            tiled_forward(net, x[..., :64, :64], tile=t)  # warm-up: thread pools, first-use allocations
            sync(dev)
            t0 = time.perf_counter()
            out, peak = peak_bytes(lambda: tiled_forward(net, x, tile=t), dev)
            sync(dev)
            row[label] = {"seconds": time.perf_counter() - t0, "peak_bytes": peak}
        del out
    return row


def tiling(megapixels: list[float], tile: int, device: torch.device) -> list[dict]:
    """``tiling_row`` per size. On the CPU each size runs in a fresh process (spawned, the parent's thread count):
    in a process that had trained (the test suite before it) a 0.25 MP pass grew the peak RSS by 20 kB
    instead of 190 MB. CUDA's allocator counts exactly in place."""
    threads = torch.get_num_threads()
    if device.type == "cuda":
        return [tiling_row(mp, tile, str(device), threads) for mp in megapixels]
    rows = []
    for mp in megapixels:
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as fresh:
            rows.append(fresh.submit(tiling_row, mp, tile, str(device), threads).result())
    return rows


# ------------------------------------------------------------------------------------------------ tables
def _g(flops: float | None) -> str:
    return f"{flops / 1e9:,.0f}" if flops else "n/a"


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def throughput_markdown(device: torch.device, precision: str, ceiling: tuple[str, float], peak: float | None,
                        cases: list[NetCase], rows: list[dict]) -> str:
    nominal = f"nominal peak {_g(peak)} GFLOP/s"
    if peak and ceiling[1] > peak and device.type == "cpu":
        # a VM's /proc/cpuinfo gives the base clock; the measured ceiling shows the cores ran faster
        nominal += (" at the clock /proc/cpuinfo reports, which the ceiling exceeds: the cores ran above that clock, "
                    "so it is no bound here")
    lines = [f"## Nets against the ceiling: {device_label(device)}, {precision}", "",
             f"Ceiling measured in this run: **{_g(ceiling[1])} GFLOP/s** ({ceiling[0]}, forward + backward; "
             f"the best of a matmul and five convolutions); {nominal}. FLOPs counted by "
             "`torch.utils.flop_counter` (a multiply-add = 2); training = forward + MSE + backward + Adam on "
             "random inputs of the config's batch and patch; GANs: the generator.", "",
             "| Net | size | batch × input | train samples/s | train GFLOP/s | of ceiling | infer samples/s | "
             "infer GFLOP/s | of ceiling |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    from restorelab.model_table import SPECS

    for case, row in zip(cases, rows):
        c, h, w = case.input_shape
        t, i = row["train"], row["infer"]
        lines.append(f"| {SPECS[case.key].name} | {case.size} | {case.batch} × {c}×{h}×{w} | {t['samples_s']:,.1f} | "
                     f"{_g(t['flops'])} | {t['flops'] / ceiling[1]:.0%} | {i['samples_s']:,.1f} | {_g(i['flops'])} | "
                     f"{i['flops'] / ceiling[1]:.0%} |")
    return "\n".join(lines) + "\n"


def loop_markdown(loop: dict, steps: int, repeats: int) -> str:
    ratios = loop["ratios"]
    return "\n".join([
        "## The Lightning loop's own cost", "",
        f"`make train`'s net ({loop['net']}, batch {loop['batch']}): `restorelab fit` as a user runs it (W&B offline "
        "and CSV logging, `last.ckpt` every 200 steps, the progress bar) with a plain PyTorch loop on the same "
        "batches, recipe and optimizer interleaved step by step in the same process, so that both see the same "
        f"machine load; mean step times over {steps} steps, the median of {repeats} runs.", "",
        "| plain PyTorch loop (ms/step) | `restorelab fit` (ms/step) | fit / plain | range over the runs |",
        "|---:|---:|---:|---:|",
        f"| {loop['plain_s'] * 1e3:.1f} | {loop['fit_s'] * 1e3:.1f} | **{loop['ratio']:.3f}×** | "
        f"{ratios[0]:.3f}–{ratios[-1]:.3f}× |", ""])


def tiling_markdown(rows: list[dict], tile: int, device: torch.device) -> str:
    memory = "allocator peak" if device.type == "cuda" else "growth of the peak RSS over the pass"
    lines = ["## Tiled inference at scale", "",
             f"SRCNN 9-5-5 on one Y image, {device_label(device)}: one pass vs exact {tile}² tiles (each with a halo "
             f"of half the receptive field). Memory: {memory}.", "",
             "| megapixels | one pass (s) | tiled (s) | tiled / one pass | one-pass peak (MB) | tiled peak (MB) |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        w, t = r["whole"], r["tiled"]
        lines.append(f"| {r['megapixels']:g} | {w['seconds']:.2f} | {t['seconds']:.2f} | "
                     f"{t['seconds'] / w['seconds']:.2f}× | {w['peak_bytes'] / 1e6:,.0f} | {t['peak_bytes'] / 1e6:,.0f} |")
    return "\n".join(lines) + "\n"
