"""How many training pairs per second each synthetic degradation makes, on a given device.

    python -m restorelab.bench_degradations --device cuda --batch 16 --patch 96

Pairs come from random crops of a real photo (JPEG speed depends on content), with the per-image randomness a
training step would draw (kernels, noise levels, qualities, camera paths) included in the time.
"""
from __future__ import annotations

import argparse
import time

import torch

from datamodules import image_ops as d

KINDS = ("bicubic", "blur_bicubic", "noise", "jpeg", "motion_frames")


def _crops(n: int, patch: int, generator: torch.Generator) -> torch.Tensor:
    import skimage.data

    photo = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).float() / 255.0
    h, w = photo.shape[-2:]
    tops = torch.randint(h - patch + 1, (n,), generator=generator).tolist()
    lefts = torch.randint(w - patch + 1, (n,), generator=generator).tolist()
    return torch.stack([photo[:, t:t + patch, l:l + patch] for t, l in zip(tops, lefts)])


def _synthesiser(kind: str, scale: int):
    """hr, generator -> degraded input for one degradation kind."""
    if kind == "bicubic":
        return lambda hr, g: d.bicubic_downsample(hr, scale)
    if kind == "blur_bicubic":
        return lambda hr, g: d.classical_degradation(hr, scale, d.random_gaussian_kernel(len(hr), generator=g),
                                                     "blur_bicubic", noise_sigma=d.sample_sigma(len(hr), 0, 15, g),
                                                     generator=g)
    if kind == "noise":
        return lambda hr, g: d.add_gaussian_noise(hr, d.sample_sigma(len(hr), 0, 55, g), g)
    if kind == "jpeg":
        return lambda hr, g: d.jpeg_compress(hr, torch.randint(10, 96, (len(hr),), generator=g, device=g.device))
    if kind == "motion_frames":
        return lambda hr, g: d.synthetic_motion_blur(hr, generator=g)[0]
    raise ValueError(f"measure_synthesis_rate: kind must be one of {KINDS}, got {kind!r}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    _sync(device)
    calls, start = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - start < seconds:
        synthesise(hr, generator)
        calls += 1
        _sync(device)
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
