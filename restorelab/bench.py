"""``restorelab bench``: how close each net comes to this machine's ceiling, what the Lightning loop costs, how
tiling scales, whether on-the-fly synthesis keeps up with training, and what each classical method costs.

Nets against the measured ceiling, the loop's cost and tiled inference at scale: ``restorelab.bench_throughput``.

Pairs synthesised per second for each degradation (``restorelab.bench_degradations``: a batch of RGB crops
already on the device, per-image random draws included) beside the samples per second that training steps
of SRCNN and VDSR consume (forward + backward + Adam step on Y patches of the same size), on this CPU and
on CUDA when there is one; then seconds per megapixel of every classical method (``restorelab.bench_methods``).
Printed and written as markdown tables; rates of one run are comparable with each other, not across machines.

    restorelab bench [--batch 16] [--patch 48] [--seconds 1] [--no_methods] [--out docs/bench.md]
    restorelab bench --nets srcnn vdsr --sizes cpu --precisions fp32 bf16   # some nets, some precisions
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from lightning_modules.nets.srcnn import SRCNN
from lightning_modules.nets.vdsr import VDSR
from restorelab import bench_throughput as tp
from restorelab.bench_degradations import KINDS, measure_synthesis_rate
from restorelab.bench_methods import all_methods

SIZES = {"cpu": "CPU budget", "paper": "paper"}

SYNTHESIS_LABELS = {
    "bicubic": "bicubic ↓4",
    "blur_bicubic": "random Gaussian + bicubic ↓4 + noise",
    "noise": "Gaussian noise, blind σ",
    "jpeg": "JPEG q 10-95 (libjpeg, CPU)",
    "motion_frames": "synthetic motion blur, 7-13 frames",
}
# the papers' nets at their published sizes, on the Y channel
NETS = {"SRCNN 9-5-5": lambda: SRCNN(init_std=None), "VDSR 20 layers": VDSR}


def measure_training_rate(name: str, device: str = "cpu", batch: int = 16, patch: int = 48,
                          seconds: float = 1.0) -> float:
    """Samples per second of full training steps of ``NETS[name]``: one untimed warm-up step, then as many
    as fit in ``seconds`` (at least one)."""
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    net = NETS[name]().to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.rand(batch, 1, patch, patch, generator=generator).to(device)
    target = torch.rand(batch, 1, patch, patch, generator=generator).to(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(net(x), target).backward()
        optimizer.step()

    step()
    tp.sync(device)
    steps, start = 0, time.perf_counter()
    while steps == 0 or time.perf_counter() - start < seconds:
        step()
        steps += 1
    tp.sync(device)
    return batch * steps / (time.perf_counter() - start)


def run(devices: list[str], batch: int, patch: int, seconds: float) -> list[tuple[str, dict[str, float]]]:
    """(row label, {device: rate}) for every degradation and net."""
    rows = []
    for kind in KINDS:
        rates = {dev: measure_synthesis_rate(kind, dev, batch, patch, seconds) for dev in devices}
        rows.append((f"synthesis: {SYNTHESIS_LABELS.get(kind, kind)}", rates))
    for name in NETS:
        rates = {dev: measure_training_rate(name, dev, batch, patch, seconds) for dev in devices}
        rows.append((f"training step: {name}", rates))
    return rows


def markdown(rows: list[tuple[str, dict[str, float]]], devices: list[str], batch: int, patch: int) -> str:
    lines = [
        "## On-the-fly synthesis vs training consumption",
        "",
        f"`restorelab bench`, torch {torch.__version__}, batch {batch}, HR patch {patch}×{patch}; "
        "synthesis rows: (degraded, clean) RGB pairs/s; training rows: samples/s of forward + backward + "
        "Adam on Y patches. Synthesis keeps up with a net while its rate is above the net's.",
        "",
        "| | " + " | ".join(f"{dev} ({tp.device_label(torch.device(dev))})" for dev in devices) + " |",
        "|---|" + "---:|" * len(devices),
    ]
    lines += [f"| {label} | " + " | ".join(f"{rates[dev]:,.0f}" for dev in devices) + " |" for label, rates in rows]
    return "\n".join(lines) + "\n"


def methods_markdown(rows: list[tuple[str, str, float]], side: int) -> str:
    lines = ["## Classical methods: seconds per megapixel of output", "",
             f"`restorelab bench`, {tp.device_label(torch.device('cpu'))}: each method at its configured parameters (a per-image learner at the bench budget its row names) on a {side}×{side} "
             "crop of astronaut (SR: ×3 from its bicubic LR; denoising: σ = 25; deblurring: a 31×31 camera-shake "
             "kernel), best of 2 runs after a warm-up that builds any database or dictionary. No GPU rows: these "
             "methods run in NumPy/scikit-image/bm3d, except the kornia filters and the interpolations.", "",
             "| Method | Task | s / MP (CPU) |", "|---|---|---:|"]
    lines += [f"| {label} | {task} | {seconds:.3g} |" for label, task, seconds in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="restorelab bench", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=48, help="HR patch side, a multiple of 4, >= 12 (default 48)")
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per row and device")
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    parser.add_argument("--no_methods", action="store_true", help="skip the classical methods' seconds per megapixel")
    parser.add_argument("--method_side", type=int, default=256, help="side of the photo crop the methods restore")
    parser.add_argument("--nets", nargs="+", default=None, help="model-table keys (default: all)")
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=None,
                        help="default: cpu on the CPU (a paper-size NLRN, DeepDeblur or SRN step takes minutes "
                             "there), cpu and paper on CUDA")
    parser.add_argument("--precisions", nargs="+", choices=list(tp.DTYPES), default=None,
                        help="default: fp32, and bf16 on CUDA")
    parser.add_argument("--paper_pixels", type=int, default=None,
                        help="paper-size rows: batches cut to this many input pixels (default: 65536 on the CPU, "
                             "none on CUDA)")
    parser.add_argument("--loop_steps", type=int, default=300, help="steps of each loop-cost run (0: skip)")
    parser.add_argument("--loop_repeats", type=int, default=5,
                        help="runs of the loop cost (fit with a plain loop interleaved); the median is reported")
    parser.add_argument("--megapixels", nargs="*", type=float, default=[1, 4, 16],
                        help="tiled-inference sizes (none: skip)")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--no_nets", action="store_true", help="skip the nets-against-the-ceiling table")
    parser.add_argument("--out", default="docs/bench.md", help="markdown file to write")
    args = parser.parse_args(argv)
    if args.patch % 4 or args.patch < 12:
        parser.error(f"--patch={args.patch} must be a multiple of 4 (the benchmark downsamples by 4) and at least "
                     f"12 (its Gaussian kernels are 21×21)")
    if args.batch < 1:
        parser.error(f"--batch={args.batch} must be positive")
    for option in ("paper_pixels", "loop_repeats", "tile"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            parser.error(f"--{option}={getattr(args, option)} must be positive")
    if args.loop_steps and args.loop_steps < 20:
        parser.error(f"--loop_steps={args.loop_steps} must be 0 (skip) or at least 20 (10 are warm-up)")
    if bad := [mp for mp in args.megapixels if not 0 < mp <= 64]:
        parser.error(f"--megapixels={bad[0]:g} must be in (0, 64]")
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        if dev not in ("cpu", "cuda") or (dev == "cuda" and not torch.cuda.is_available()):
            parser.error(f"--devices: {dev!r} is not available here (cpu, or cuda on a GPU machine)")
    from restorelab.model_table import SPECS

    if unknown := [k for k in args.nets or [] if k not in SPECS]:
        parser.error(f"--nets: {unknown[0]!r} is not a net of the model table ({', '.join(SPECS)})")
    table = "# restorelab bench\n\n" + f"`restorelab bench`, torch {torch.__version__}. Regenerated by `make bench`; " \
        "rates drift between runs on a shared machine, ratios within one run hold.\n\n"
    # the loop's cost first, in a fresh process as a user's `restorelab fit` runs, before the nets' large batches
    loop_table = tp.loop_markdown(tp.loop_overhead(args.loop_steps, 10, args.loop_repeats), args.loop_steps,
                                  args.loop_repeats) + "\n" if args.loop_steps else ""
    for dev in devices if not args.no_nets else []:
        device = torch.device(dev)
        sizes = args.sizes or (["cpu", "paper"] if dev == "cuda" else ["cpu"])
        cases = tp.net_cases(args.nets, [SIZES[s] for s in sizes],
                             args.paper_pixels or (None if dev == "cuda" else 2**16))
        for precision in args.precisions or (["fp32", "bf16"] if dev == "cuda" else ["fp32"]):
            ceiling = tp.measure_ceiling(device, precision, args.seconds)
            rows = [tp.net_throughput(case, device, precision, args.seconds) for case in cases]
            table += tp.throughput_markdown(device, precision, ceiling, tp.nominal_peak(device, precision),
                                            cases, rows) + "\n"
    table += loop_table
    for dev in devices if args.megapixels else []:
        table += tp.tiling_markdown(tp.tiling(args.megapixels, args.tile, torch.device(dev)), args.tile, torch.device(dev)) + "\n"
    table += markdown(run(devices, args.batch, args.patch, args.seconds), devices, args.batch, args.patch)
    if not args.no_methods:
        table += "\n" + methods_markdown(all_methods(args.method_side), args.method_side)
    print(table, end="")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
