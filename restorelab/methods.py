"""Classical methods by name: ``configs/methods/<name>.yaml`` says which class (``class_path``), with which
parameters (``init_args``), under which table label, and the grid of its free parameters (``tune``) that
``restorelab tune`` searches on validation images. A method spec on the command line is a name or a YAML path,
optionally with fixed parameters: ``gaussian``, ``gaussian:sigma=1.5``, ``my_method.yaml:iterations=30``.

    label: Gaussian filter
    method:
      class_path: lightning_modules.classical.filters.GaussianFilter
      init_args: {sigma: 1.0}
    tune:
      sigma: [0.5, 1.0, 1.5, 2.0]
"""
from __future__ import annotations

import importlib
import inspect
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from datamodules.errors import AnticipatedError
from lightning_modules.restorer import Restorer

METHODS_DIR = Path(__file__).resolve().parents[1] / "configs" / "methods"


@dataclass
class MethodConfig:
    name: str
    label: str
    class_path: str
    init_args: dict = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    path: Path | None = None

    def grid_points(self, exclude=()) -> list[dict]:
        """Every combination of the ``tune`` grid, less the ``exclude`` parameters (one empty point when nothing is
        free)."""
        keys = [k for k in self.grid if k not in exclude]
        return [dict(zip(keys, values)) for values in itertools.product(*(self.grid[k] for k in keys))]

    def build(self, data_root: str | Path | None = None, **params) -> Restorer:
        """The restorer with ``init_args`` updated by ``params``; ``data_root`` goes to methods that learn from
        training images (they take a ``data_root`` argument)."""
        module, _, name = self.class_path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise AnticipatedError(f"{self.path}: class_path {self.class_path} cannot be imported ({e})") from None
        args = {**self.init_args, **params}
        if "data_root" in inspect.signature(cls).parameters:
            args.setdefault("data_root", data_root)
        unknown = set(args) - set(inspect.signature(cls).parameters)
        if unknown:
            raise AnticipatedError(f"{self.name}: unknown parameter(s) {', '.join(sorted(unknown))} for "
                                   f"{name} (it takes {', '.join(inspect.signature(cls).parameters)})")
        restorer = cls(**args)
        restorer.label = self.label
        return restorer

    def label_with(self, fixed: dict) -> str:
        """The row's name: the config's label, with the parameters fixed on the command line."""
        return self.label + (f" ({', '.join(f'{k}={v}' for k, v in fixed.items())})" if fixed else "")


def method_names() -> list[str]:
    return sorted(p.stem for p in METHODS_DIR.glob("*.yaml"))


def _value(text: str):
    return yaml.safe_load(text)


def read_method(spec: str) -> tuple[MethodConfig, dict]:
    """(the config, the parameters fixed on the command line) of ``name[:k=v,k=v]`` or ``file.yaml[:k=v]``."""
    base, _, fixed = spec.partition(":")
    path = Path(base).expanduser() if base.endswith((".yaml", ".yml")) else METHODS_DIR / f"{base}.yaml"
    if not path.is_file():
        raise AnticipatedError(f"--method {spec}: no such method (known: {', '.join(method_names())}; or a YAML file)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        method = raw["method"]
        config = MethodConfig(path.stem, raw.get("label", path.stem), method["class_path"],
                              dict(method.get("init_args") or {}), dict(raw.get("tune") or {}), path)
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise AnticipatedError(f"{path}: not a method config (needs method.class_path; {type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''})") from None
    params = {}
    for item in filter(None, fixed.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise AnticipatedError(f"--method {spec}: parameter {item!r} must be key=value")
        params[key.strip()] = _value(value)
    for key, values in config.grid.items():
        if not isinstance(values, list) or not values:
            raise AnticipatedError(f"{path}: tune.{key} must be a non-empty list of values")
    return config, params
