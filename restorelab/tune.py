"""``restorelab tune``: choose a classical method's free parameters (filter σ, Wiener balance, Richardson–Lucy
iterations, λ, ...: the ``tune`` grid of its config in ``configs/methods/``) by grid search of mean PSNR on
*validation* images, one choice per table column (SR scale, noise σ), and record it.

    restorelab tune --method gaussian median --task denoise --sigmas 15 25 50
    restorelab tune --method wiener --task deblur --blur kernel --val benchmark:BSD200 --val_images 10

Validation images are never test images: the default is the first ``--val_images`` of BSD200 (the BSD300
training split: disjoint from Set5/Set14/BSD100/BSD68/Set12/Kodak24) when the data folder has it, else the
bundled training photos (``skimage:train``, disjoint from ``skimage:val``); ``restorelab benchmark`` refuses a
validation set that shares an image (same pixels) with a set it measures. The choice is written to
``<out>/<method>.json``, which ``restorelab benchmark --tuned`` reads; ``benchmark --method`` alone tunes the
same way before it measures, and states the choice under its tables.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from datamodules.errors import AnticipatedError
from datamodules.recipes import AWGN, Recipe
from datamodules.sources import ImageSourceError, dataset_root
from lightning_modules.restorer import Restorer, pair_scale
from restorelab.evaluation import (NOISE_SIGMAS, SR_SCALES, TASKS, BenchmarkSet, at_level, evaluate, load_set,
                                   task_recipe)
from restorelab.methods import MethodConfig, read_method

VAL_IMAGES = 10


@dataclass
class Choice:
    """The parameters chosen at one level, with every grid point's mean validation PSNR."""
    level: float
    params: dict
    psnr: float
    grid: list[tuple[dict, float]]


@dataclass
class Tuning:
    method: str
    label: str
    task: str
    degradation: str
    validation: str
    images: list[str]
    choices: list[Choice]

    def text(self) -> str:
        """One sentence for a table: what was chosen where."""
        unit = {"sr": "×", "denoise": "σ=", "deblur": ""}[self.task]
        if not any(c.params for c in self.choices):
            return ""
        picks = "; ".join((f"{unit}{c.level:g}: " if self.task != "deblur" else "") +
                          ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in c.params.items())
                          for c in self.choices)
        return f"{self.label}: {picks} (best mean PSNR of its grid on {self.validation}, {len(self.images)} images)"


class TunedRestorer(Restorer):
    """One restorer per level (the SR scale of the pair, or its noise σ), each with the parameters chosen there."""

    def __init__(self, tuning: Tuning, by_level: dict[float, Restorer]):
        first = next(iter(by_level.values()))
        self.tuning, self.by_level = tuning, by_level
        # the built method's label: the config's, plus what the method adds (a learner's fallback training set)
        self.label, self.task, self.channels = first.label, first.task, first.channels
        self.measured_as_given = first.measured_as_given
        self.scales = tuple(int(k) for k in by_level) if tuning.task == "sr" else first.scales

    def at(self, pair: dict) -> Restorer:
        if len(self.by_level) == 1:
            return next(iter(self.by_level.values()))
        level = pair_scale(pair) if self.tuning.task == "sr" else round(float(pair["sigma"].flatten()[0]), 6)
        if level not in self.by_level:
            raise AnticipatedError(f"{self.label}: tuned at {', '.join(f'{v:g}' for v in self.by_level)}, not {level:g}")
        return self.by_level[level]

    def run(self, pair: dict, what: str) -> torch.Tensor:
        return self.at(pair).run(pair, what)


def default_validation(data_root: str | Path | None = None) -> str:
    try:
        if (dataset_root(data_root) / "BSD200").is_dir():
            return "benchmark:BSD200"
    except ImageSourceError:
        pass
    return "skimage:train"


def validation_set(spec: str | None, data_root: str | Path | None, recipe: Recipe, images: int = VAL_IMAGES) -> BenchmarkSet:
    bench = load_set(spec or default_validation(data_root), data_root, recipe)
    bench.samples = bench.samples[:images] if images else bench.samples
    return bench


def fingerprint(sample: dict) -> str:
    return hashlib.sha1(sample["target"].contiguous().numpy().tobytes()).hexdigest()


def check_disjoint(validation: BenchmarkSet, tests: Sequence[BenchmarkSet]) -> None:
    """Refuses validation images that are also test images (same pixels, under any name)."""
    seen = {fingerprint(s): n for n, s in validation.samples}
    for bench in tests:
        shared = [n for n, s in bench.samples if fingerprint(s) in seen]
        if shared:
            raise AnticipatedError(f"validation set {validation.name} shares {len(shared)} image(s) with the test set "
                                   f"{bench.name} (e.g. {shared[0]}): parameters must be chosen on other images")


def tune(config: MethodConfig, fixed: dict, recipe: Recipe, task: str, levels: Sequence[float],
         validation: BenchmarkSet, data_root: str | Path | None = None, seed: int = 0,
         channels: str | None = None) -> tuple[TunedRestorer, Tuning]:
    """At each level, every point of the method's grid (minus the ``fixed`` parameters) on the validation set; the
    best mean PSNR wins (the first on ties)."""
    points = config.grid_points(exclude=fixed)
    choices, by_level = [], {}
    for level in levels:
        scored = []
        for point in points:
            restorer = config.build(data_root, **fixed, **point)
            restorer.label = config.label_with(fixed)
            rows = evaluate(validation, at_level(recipe, level), task, level, [restorer], extra=False, seed=seed,
                            channels=channels)
            scored.append((point, restorer, sum(r["psnr"] for r in rows) / len(rows)))
        point, restorer, psnr = max(scored, key=lambda s: s[2])
        by_level[float(level)] = restorer
        choices.append(Choice(float(level), {**fixed, **point} if len(points) > 1 else dict(fixed), psnr,
                              [(p, s) for p, _, s in scored]))
    degradation = recipe.describe(sigma="of each level") if isinstance(recipe, AWGN) else recipe.describe()
    tuning = Tuning(config.name, config.label_with(fixed), task, degradation, validation.name,
                    [n for n, _ in validation.samples], choices)
    return TunedRestorer(tuning, by_level), tuning


def prepare_methods(specs: Sequence[str], task: str, recipe: Recipe, levels: Sequence[float],
                    tests: Sequence[BenchmarkSet], data_root: str | Path | None = None, tune_on: str | None = None,
                    val_images: int = VAL_IMAGES, records: Sequence[str | Path] = (), seed: int = 0,
                    channels: str | None = None) -> tuple[list[Restorer], list[Tuning]]:
    """The restorers of method specs (``restorelab.methods``) for a benchmark: a method with a tuning record among
    ``records`` (``restorelab tune``'s JSON) takes the recorded parameters; one with free parameters is tuned here
    on the validation set (``tune_on``, default ``default_validation``; refused where it shares an image with
    ``tests``), in gray when every test image is gray; the rest are built as configured."""
    recorded = {t.method: t for t in map(load_tuning, records)}
    gray = all(s["target"].shape[1] == 1 for b in tests for _, s in b.samples)
    validation = None
    restorers, tunings = [], []
    for spec in specs:
        config, fixed = read_method(spec)
        if config.name in recorded:
            tuning = recorded.pop(config.name)
            if tuning.task != task:
                raise AnticipatedError(f"tuning record of {config.name} is for {tuning.task}, not {task}")
            missing = [level for level in levels if float(level) not in {c.level for c in tuning.choices}]
            if missing:
                raise AnticipatedError(f"tuning record of {config.name} has no choice at {', '.join(f'{v:g}' for v in missing)}"
                                       "; rerun restorelab tune with those levels")
            restorers.append(tuned_from_record(tuning, data_root))
            tunings.append(tuning)
        elif config.grid_points(exclude=fixed) != [{}]:
            if validation is None:
                validation = validation_set(tune_on, data_root, recipe, val_images)
                check_disjoint(validation, tests)
            restorer, tuning = tune(config, fixed, recipe, task, levels, validation, data_root, seed,
                                    channels or ("gray" if gray else None))
            restorers.append(restorer)
            tunings.append(tuning)
        else:
            restorers.append(config.build(data_root, **fixed))
            restorers[-1].label = config.label_with(fixed)
    if recorded:
        raise AnticipatedError(f"--tuned records for {', '.join(recorded)}, which no --method names")
    return restorers, tunings


def save_tuning(tuning: Tuning, path: str | Path) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(tuning), indent=1) + "\n")
    except OSError as e:
        raise AnticipatedError(f"{path}: cannot write the tuning record ({e.strerror or type(e).__name__})") from None
    return path


def load_tuning(path: str | Path) -> Tuning:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
        raw["choices"] = [Choice(**c) for c in raw["choices"]]
        return Tuning(**raw)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AnticipatedError(f"{path}: not a tuning record of `restorelab tune` ({type(e).__name__})") from None


def tuned_from_record(tuning: Tuning, data_root: str | Path | None = None) -> TunedRestorer:
    config, _ = read_method(tuning.method)
    by_level = {c.level: config.build(data_root, **c.params) for c in tuning.choices}
    for restorer in by_level.values():
        restorer.label = tuning.label  # with the parameters fixed when it was tuned, as the tuned rows are named
    return TunedRestorer(tuning, by_level)


def levels_for(task: str, scales: Sequence[int], sigmas: Sequence[float]) -> list[float]:
    return list(scales) if task == "sr" else list(sigmas) if task == "denoise" else [1]


def grid_table(tuning: Tuning) -> str:
    lines = [f"**{tuning.label}** on {tuning.validation} ({len(tuning.images)} images), {tuning.degradation}", "",
             "| level | parameters | mean PSNR |", "|---|---|---:|"]
    for c in tuning.choices:
        for params, psnr in c.grid:
            mark = " **(chosen)**" if params.items() <= c.params.items() else ""
            lines.append(f"| {c.level:g} | {', '.join(f'{k}={v}' for k, v in params.items()) or '—'}{mark} | {psnr:.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="restorelab tune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", nargs="+", required=True, help="method names (configs/methods/) or YAML files")
    parser.add_argument("--task", choices=TASKS, default=None, help="default: the method's own task")
    parser.add_argument("--scales", nargs="+", type=int, default=list(SR_SCALES))
    parser.add_argument("--sigmas", nargs="+", type=float, default=list(NOISE_SIGMAS))
    parser.add_argument("--kernel", default=None, help="as restorelab benchmark --kernel")
    parser.add_argument("--blur", choices=("synthetic", "gopro", "kernel"), default="kernel",
                        help="deblurring recipe (default kernel: the deconvolutions need the known kernel)")
    parser.add_argument("--val", default=None, help="validation images (default: BSD200 if present, else skimage:train)")
    parser.add_argument("--val_images", type=int, default=VAL_IMAGES, help="the first N of them (0: all)")
    parser.add_argument("--data_root", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/tune", help="folder for <method>.json")
    args = parser.parse_args(argv)
    for spec in args.method:
        config, fixed = read_method(spec)
        probe = config.build(args.data_root, **fixed)
        task = args.task or probe.task
        if task is None:
            raise AnticipatedError(f"--method {spec}: works for any task; give --task")
        recipe = task_recipe(task, args.kernel, args.blur)
        validation = validation_set(args.val, args.data_root, recipe, args.val_images)
        _, tuning = tune(config, fixed, recipe, task, levels_for(task, args.scales, args.sigmas), validation,
                         args.data_root, args.seed)
        path = save_tuning(tuning, Path(args.out) / f"{config.name}.json")
        print(grid_table(tuning) + "\n")
        print(f"chosen: {tuning.text() or 'nothing free'}; recorded in {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from restorelab.cli import main as restorelab_main

    restorelab_main(["tune", *sys.argv[1:]])
