"""How many training pairs per second each synthetic degradation makes, on a given device.

    python -m restorelab.bench_degradations --device cuda --batch 16 --patch 96

Pairs come from random crops of a real photo (JPEG speed depends on content), with the per-image randomness a
training step would draw (kernels, noise levels, qualities, camera paths) included in the time.
"""
from __future__ import annotations

import argparse
import time

import torch

from datamodules.recipes import AWGN, JPEG, BicubicSR, ClassicalSR, MotionBlur
from restorelab.bench_throughput import sync


def _crops(n: int, patch: int, generator: torch.Generator) -> torch.Tensor:
    import skimage.data

    photo = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).float() / 255.0
    h, w = photo.shape[-2:]
    tops = torch.randint(h - patch + 1, (n,), generator=generator).tolist()
    lefts = torch.randint(w - patch + 1, (n,), generator=generator).tolist()
    return torch.stack([photo[:, t:t + patch, l:l + patch] for t, l in zip(tops, lefts)])


RECIPES = {  # the recipe objects the DataModules train with, at the options of a typical blind setting
    "bicubic": lambda: BicubicSR(),
    "blur_bicubic": lambda: ClassicalSR(kernel="random_gaussian", noise_sigma=(0, 15)),
    "noise": lambda: AWGN(sigma=(0, 55)),
    "jpeg": lambda: JPEG(jpeg_quality=(10, 95)),
    "motion_frames": lambda: MotionBlur(),
}


KINDS = tuple(RECIPES)


def _synthesiser(kind: str, scale: int):
    """hr, generator -> the pair of one degradation kind: the recipe itself, as a training step calls it."""
    if kind not in RECIPES:
        raise ValueError(f"measure_synthesis_rate: kind must be one of {KINDS}, got {kind!r}")
    recipe = RECIPES[kind]()
    return lambda hr, g: recipe(hr, scale if recipe.task == "sr" else 1, None, g)


def measure_synthesis_rate(kind: str, device: str = "cpu", batch: int = 16, patch: int = 96, seconds: float = 2.0,
                           scale: int = 4, seed: int = 0) -> float:
    """Pairs per second for ``kind`` on a batch already on ``device`` (as after batch transfer); the generator
    lives on the device too, so noise is drawn there. One untimed warm-up call, then as many as fit in
    ``seconds``."""
    device = torch.device(device)
    generator = torch.Generator(device).manual_seed(seed)
    hr = _crops(batch, patch, torch.Generator().manual_seed(seed)).to(device)
    synthesise = _synthesiser(kind, scale)
    synthesise(hr, generator)
    sync(device)
    calls, start = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - start < seconds:
        synthesise(hr, generator)
        calls += 1
        sync(device)
    return batch * calls / (time.perf_counter() - start)


def measure_all(device: str = "cpu", batch: int = 16, patch: int = 96, seconds: float = 2.0) -> dict[str, float]:
    return {kind: measure_synthesis_rate(kind, device, batch, patch, seconds) for kind in KINDS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    print(f"pairs/s on {args.device}, batch {args.batch}, patch {args.patch}")
    for kind, rate in measure_all(args.device, args.batch, args.patch, args.seconds).items():
        print(f"{kind:>14}: {rate:10.1f}")


if __name__ == "__main__":
    main()
