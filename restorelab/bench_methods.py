"""Seconds per megapixel of every classical method (``configs/methods/``) on one photo, for ``restorelab bench``:
the pair made by the method's task recipe (SR ×3 bicubic, denoising σ = 25, deblurring by a known camera-shake
kernel), the method at its configured parameters, one untimed warm-up run (which also builds what a learner
learns: a patch database, a dictionary, cached) and then the best of ``repeats`` timed runs, divided by the
output's megapixels. Numpy/scikit-image/bm3d methods run on the CPU wherever torch runs."""
from __future__ import annotations

import time

from datamodules.image_ops import mod_crop
from datamodules.recipes import evaluation_pair
from datamodules.sources import read_image, resolve_source
from restorelab.evaluation import at_level, task_recipe
from restorelab.methods import method_names, read_method

LEVEL = {"sr": 3, "denoise": 25, "deblur": 1}

# A per-image learner trains a net on every image it restores, so its cost is its update count, not the photo's
# size: at its configured 3000 updates ZSSR alone took over 10 minutes of this bench on 2 CPU cores. The bench
# times it at a stated budget instead (its row names it); seconds per megapixel scale about linearly with updates.
BENCH_BUDGET = {"zssr": "max_iters=100,min_iters=0,back_projection_iters=2"}


def seconds_per_megapixel(spec: str, side: int = 256, repeats: int = 2, data_root=None) -> tuple[str, str, float]:
    """(label, task, seconds per output megapixel) of one method (``name[:k=v,...]``, as ``--method`` takes it) on a
    ``side``×``side`` crop of astronaut; the label names any parameters the spec fixes."""
    config, fixed = read_method(spec)
    method = config.build(data_root, **fixed)
    task = method.task or "denoise"
    photo = read_image(next(p for p in resolve_source("skimage:train") if p.name == "astronaut.png"))[None]
    level = LEVEL[task]
    clean = mod_crop(photo[..., :side, :side], level if task == "sr" else 1)
    pair = evaluation_pair(at_level(task_recipe(task, blur="kernel"), level), {"target": clean, "name": ["bench"]},
                           level if task == "sr" else 1, None)
    method.restore(pair, "bench")
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        method.restore(pair, "bench")
        best = min(best, time.perf_counter() - start)
    return config.label_with(fixed), task, best / (clean.shape[-1] * clean.shape[-2] / 1e6)


def bench_spec(name: str) -> str:
    """The method as the bench runs it: its configured parameters, or a per-image learner's bench budget."""
    return f"{name}:{BENCH_BUDGET[name]}" if name in BENCH_BUDGET else name


def all_methods(side: int = 256, repeats: int = 2, data_root=None) -> list[tuple[str, str, float]]:
    return [seconds_per_megapixel(bench_spec(name), side, repeats, data_root) for name in method_names()]
