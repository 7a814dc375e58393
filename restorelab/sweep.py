"""W&B sweeps, run three ways from one YAML.

* online: `wandb sweep` registers the YAML, `wandb agent` asks the server for trials (`run_wandb`);
* offline, here: the same YAML is expanded locally (grid / random) and run trial by trial (`run_local`);
* on Slurm: the locally expanded trials become one array task each (`restorelab.slurm.write_sbatch`).

Locally, every trial gets a stable run directory `<out_dir>/<sweep name>/<trial id>` (the id is a hash
of its parameters), handed to the command as `RESTORELAB_RUN_DIR`, so a rerun (or a requeued Slurm task)
finds the same directory: completed trials are skipped and interrupted ones resume from their newest
checkpoint. The command template follows W&B's agent exactly (wandb/wandb_agent.py, `_command_run`,
and wandb/sdk/launch/sweeps/utils.py, `create_sweep_command_args`), so a YAML that works offline works
online unchanged.

    restorelab sweep run sweeps/srcnn_filters.yaml      # W&B agent with a key, else local; then the table
    restorelab sweep local sweeps/srcnn_filters.yaml --out runs [-- --trainer.max_epochs=2]
    restorelab sweep wandb sweeps/srcnn_filters.yaml --project restorelab --count 8
    restorelab slurm sweeps/srcnn_filters.yaml --out runs --time 04:00:00 --submit  # restorelab.slurm
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import itertools
import json
import math
import os
import random
import re
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import yaml

from datamodules.errors import AnticipatedError
from restorelab.error_report import describe_yaml_error
from restorelab.runs import wandb_key_available

METHODS = ("grid", "random", "bayes")
KNOWN_KEYS = {"program", "method", "metric", "parameters", "command", "name", "description",
              "early_terminate", "run_cap", "project", "entity", "controller", "job", "image_uri",
              "scheduler"}
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]  # W&B's, when `command` is absent
MACROS = {"env", "interpreter", "program", "args", "args_no_equals", "args_no_hyphens",
          "args_no_boolean_flags", "args_json", "args_json_file", "args_append_hydra",
          "args_override_hydra"}
ENVVAR_MACRO = re.compile(r"\$\{envvar:([A-Z0-9_]*)\}")  # W&B's pattern, substituted inside any token
PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")  # W&B's schema; dotted LightningCLI keys fit
# distribution -> (required keys, optional keys with defaults), as in W&B's sweep schema
DISTRIBUTIONS = {
    "constant": ({"value"}, {}),
    "categorical": ({"values"}, {"probabilities": None}),
    "int_uniform": ({"min", "max"}, {}),
    "uniform": ({"min", "max"}, {}),
    "q_uniform": ({"min", "max"}, {"q": 1.0}),
    "log_uniform": ({"min", "max"}, {}),  # min/max are exponents: exp(U(min, max))
    "log_uniform_values": ({"min", "max"}, {}),  # min/max are the values: exp(U(log min, log max))
    "q_log_uniform_values": ({"min", "max"}, {"q": 1.0}),
    "normal": (set(), {"mu": 0.0, "sigma": 1.0}),
    "q_normal": (set(), {"mu": 0.0, "sigma": 1.0, "q": 1.0}),
    "log_normal": (set(), {"mu": 0.0, "sigma": 1.0}),
}
GRID_DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "q_uniform")  # what W&B's grid accepts
LAST_CKPT = Path("checkpoints") / "last.ckpt"  # ModelCheckpoint(save_last=True) under the run dir
HPC_CKPT_GLOB = "hpc_ckpt_*.ckpt"  # what Lightning's SIGUSR1 handler writes in default_root_dir


class SweepConfigError(AnticipatedError):
    """A sweep YAML that W&B would reject (or that the local runner cannot honour)."""


@dataclass(frozen=True)
class Trial:
    trial_id: str
    params: dict
    run_dir: Path
    command: list

    def prepare(self) -> None:
        """Create the run dir and record the parameters (also the file `${args_json_file}` names)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "params.json").write_text(json.dumps(self.params, indent=1, sort_keys=True))


@dataclass
class TrialResult:
    trial_id: str
    params: dict
    run_dir: str
    status: str  # "ok" | "failed"
    returncode: int | None
    stderr_tail: str = ""
    command: list = field(default_factory=list)
    skipped: bool = False  # completed by an earlier run_local call, not run again


# ------------------------------------------------------------------------------------ config


def load_sweep(path: str | Path) -> dict:
    """Read and validate a W&B sweep YAML; `name` defaults to the file's stem."""
    path = Path(path)
    try:
        sweep = yaml.safe_load(path.read_text())
    except OSError as err:
        raise SweepConfigError(f"{path}: cannot read the sweep file: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise SweepConfigError(f"{path}: not valid YAML: {describe_yaml_error(err)}") from None
    if not isinstance(sweep, dict):
        raise SweepConfigError(f"{path}: a sweep YAML must be a mapping, got {type(sweep).__name__}")
    sweep = {"name": path.stem, **sweep}
    validate(sweep, where=str(path))
    return sweep


def validate(sweep: dict, where: str = "sweep") -> None:
    """Raise SweepConfigError naming `where` and the offending key."""

    def fail(msg):
        raise SweepConfigError(f"{where}: {msg}")

    unknown = sorted(set(sweep) - KNOWN_KEYS)
    if unknown:
        fail(f"unknown key(s) {unknown}; known: {sorted(KNOWN_KEYS)}")
    if sweep.get("method") not in METHODS:
        fail(f"method: must be one of {list(METHODS)}, got {sweep.get('method')!r}")
    metric = sweep.get("metric")
    if metric is not None:
        if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
            fail("metric: must be a mapping with a string `name`")
        if metric.get("goal", "minimize") not in ("minimize", "maximize"):
            fail(f"metric.goal: must be minimize or maximize, got {metric['goal']!r}")
    elif sweep["method"] == "bayes":
        fail("metric: required for method bayes")
    if "run_cap" in sweep and not (isinstance(sweep["run_cap"], int) and sweep["run_cap"] > 0):
        fail(f"run_cap: must be a positive integer, got {sweep['run_cap']!r}")

    params = sweep.get("parameters")
    if not isinstance(params, dict) or not params:
        fail("parameters: required, a non-empty mapping of parameter name -> spec")
    for name, spec in params.items():
        _check_parameter(name, spec, sweep["method"], fail)

    command = sweep.get("command", DEFAULT_COMMAND)
    if not isinstance(command, list) or not command or not all(isinstance(c, (str, int, float)) for c in command):
        fail("command: must be a non-empty list of strings")
    for token in map(str, command):
        macro = token[2:-1] if token.startswith("${") and token.endswith("}") else None
        # W&B silently drops an unknown macro (e.g. a typo'd ${arg}), running trials without their
        # parameters; refuse instead
        if macro is not None and macro not in MACROS and not ENVVAR_MACRO.fullmatch(token):
            fail(f"command: unknown macro {token}; known: {sorted('${' + m + '}' for m in MACROS)}")
    if "${program}" in map(str, command) and not isinstance(sweep.get("program"), str):
        fail("program: required (a string) when the command uses ${program}")


def _check_parameter(name, spec, method, fail):
    if not isinstance(name, str) or not PARAM_NAME.match(name):
        fail(f"parameters: bad name {name!r} (letters, digits, _ . -; not starting with a digit)")
    where = f"parameters.{name}"
    if not isinstance(spec, dict):
        fail(f"{where}: must be a mapping such as {{values: [...]}} or {{value: ...}}, got {spec!r}")
    if "parameters" in spec:
        fail(f"{where}: nested parameters are not supported; use dotted names (e.g. {name}.lr)")
    dist = _distribution(spec)
    if dist is None:
        fail(f"{where}: give `value`, `values`, `min`/`max` or a `distribution`")
    if dist not in DISTRIBUTIONS:
        fail(f"{where}: distribution {dist!r} is not supported locally; supported: {sorted(DISTRIBUTIONS)}")
    required, optional = DISTRIBUTIONS[dist]
    missing, extra = required - set(spec), set(spec) - required - set(optional) - {"distribution"}
    if missing or extra:
        fail(f"{where}: distribution {dist} needs keys {sorted(required)} (optional {sorted(optional)}); "
             f"missing {sorted(missing)}, unexpected {sorted(extra)}")
    for key in set(spec) & {"min", "max", "q", "mu", "sigma"}:
        value = spec[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = " (YAML reads 1e-4 as a string; write 1.0e-4)" if isinstance(value, str) else ""
            fail(f"{where}.{key}: must be a number, got {value!r}{hint}")
    if dist == "int_uniform" and not all(isinstance(spec[k], int) for k in ("min", "max")):
        fail(f"{where}: int_uniform needs integer min and max")
    if "min" in spec and spec["min"] >= spec["max"]:
        fail(f"{where}: min {spec['min']} must be < max {spec['max']}")
    if dist.endswith("log_uniform_values") and spec["min"] <= 0:
        fail(f"{where}: {dist} needs min > 0")
    if spec.get("q", 1) <= 0 or spec.get("sigma", 1) < 0:
        fail(f"{where}: q must be > 0 and sigma >= 0")
    if dist == "categorical":
        values, probs = spec["values"], spec.get("probabilities")
        if not isinstance(values, list) or not values:
            fail(f"{where}.values: must be a non-empty list")
        if probs is not None and (not isinstance(probs, list) or len(probs) != len(values)
                                  or any(not isinstance(p, (int, float)) or p < 0 for p in probs)):
            fail(f"{where}.probabilities: must be one non-negative number per value")
        if probs is not None and method == "grid":
            fail(f"{where}.probabilities: not allowed with method grid")
    if method == "grid" and dist not in GRID_DISTRIBUTIONS:
        fail(f"{where}: method grid accepts only {list(GRID_DISTRIBUTIONS)}, got {dist}")


def _distribution(spec: dict) -> str | None:
    """The distribution W&B infers when none is named."""
    if "distribution" in spec:
        return spec["distribution"]
    if "value" in spec:
        return "constant"
    if "values" in spec:
        return "categorical"
    if "min" in spec and "max" in spec:
        ints = all(isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("min", "max"))
        return "int_uniform" if ints else "uniform"
    return None


# ------------------------------------------------------------------------------------ expansion


def expand(sweep: dict, max_trials: int | None = None, seed: int = 0) -> list[dict]:
    """The sweep's trials as parameter dicts (keys sorted, as W&B orders them).

    grid: the cartesian product of every parameter's values (int_uniform = min..max, q_uniform =
    arange(min, max, q), as W&B's grid_search), first `max_trials`/`run_cap` of them.
    random: `max_trials` (else `run_cap`) distinct draws with random.Random(seed).
    bayes: needs a server to model the metric; locally it runs as random search.
    """
    validate(sweep, where=sweep.get("name", "sweep"))
    specs = {name: sweep["parameters"][name] for name in sorted(sweep["parameters"])}
    caps = [n for n in (max_trials, sweep.get("run_cap")) if n is not None]
    cap = min(caps) if caps else None
    if sweep["method"] == "grid":
        axes = [_grid_values(spec) for spec in specs.values()]
        combos = itertools.islice(itertools.product(*axes), cap)
        return [dict(zip(specs, combo)) for combo in combos]

    if sweep["method"] == "bayes":
        warnings.warn(f"{sweep.get('name', 'sweep')}: bayes search needs the W&B server; "
                      "running it locally as random search", stacklevel=2)
    if cap is None:
        raise SweepConfigError(f"{sweep.get('name', 'sweep')}: {sweep['method']} search is endless; "
                               "set run_cap in the YAML or pass max_trials")
    rng = random.Random(seed)
    trials, seen = [], set()
    for _ in range(100 * cap):  # a small discrete space may hold fewer than `cap` distinct trials
        params = {name: _sample(spec, rng) for name, spec in specs.items()}
        key = trial_id(params)
        if key not in seen:
            seen.add(key)
            trials.append(params)
            if len(trials) == cap:
                break
    return trials


def _grid_values(spec: dict) -> list:
    dist = _distribution(spec)
    if dist == "constant":
        return [spec["value"]]
    if dist == "categorical":
        return list(spec["values"])
    if dist == "int_uniform":
        return list(range(spec["min"], spec["max"] + 1))
    q = spec.get("q", 1.0)  # q_uniform: max is excluded, like W&B's np.arange
    return [_quantize(spec["min"] + i * q, q) for i in range(math.ceil((spec["max"] - spec["min"]) / q))]


def _quantize(x: float, q: float):
    """round(x / q) * q; an int when q is (W&B's rule)."""
    value = round(x / q) * q
    return int(value) if isinstance(q, int) else float(value)


def _sample(spec: dict, rng: random.Random):
    dist = _distribution(spec)
    lo, hi = spec.get("min"), spec.get("max")
    mu, sigma = spec.get("mu", 0.0), spec.get("sigma", 1.0)
    if dist == "constant":
        return spec["value"]
    if dist == "categorical":
        return rng.choices(spec["values"], weights=spec.get("probabilities"))[0]
    if dist == "int_uniform":
        return rng.randint(lo, hi)
    if dist == "uniform":
        return rng.uniform(lo, hi)
    if dist == "q_uniform":
        return _quantize(rng.uniform(lo, hi), spec.get("q", 1.0))
    if dist == "log_uniform":
        return math.exp(rng.uniform(lo, hi))
    if dist == "log_uniform_values":
        return math.exp(rng.uniform(math.log(lo), math.log(hi)))
    if dist == "q_log_uniform_values":
        return _quantize(math.exp(rng.uniform(math.log(lo), math.log(hi))), spec.get("q", 1.0))
    if dist == "normal":
        return rng.gauss(mu, sigma)
    if dist == "q_normal":
        return _quantize(rng.gauss(mu, sigma), spec.get("q", 1.0))
    assert dist == "log_normal", dist
    return math.exp(rng.gauss(mu, sigma))


def trial_id(params: dict, extra_args: Sequence[str] = ()) -> str:
    """Short stable hash of a trial's parameters (and of extra args, so a smoke run with
    `--trainer.max_epochs=1` never passes for the real trial)."""
    key = json.dumps(params, sort_keys=True, default=str) + ("\0" + "\0".join(extra_args) if extra_args else "")
    return hashlib.sha1(key.encode()).hexdigest()[:8]


# ------------------------------------------------------------------------------------ commands


def command_args(params: dict) -> dict[str, list[str]]:
    """The argument lists W&B's macros expand to (values formatted with Python's str, as W&B)."""
    return {
        "args": [f"--{k}={v}" for k, v in params.items()],
        "args_no_equals": [s for k, v in params.items() for s in (f"--{k}", str(v))],
        "args_no_hyphens": [f"{k}={v}" for k, v in params.items()],
        # booleans become bare flags; False ones are left out
        "args_no_boolean_flags": [f"--{k}" if isinstance(v, bool) else f"--{k}={v}"
                                  for k, v in params.items() if v is not False],
        "args_json": [json.dumps(params)],
        "args_append_hydra": [f"+{k}={v}" for k, v in params.items()],
        "args_override_hydra": [f"++{k}={v}" for k, v in params.items()],
    }


def render_command(sweep: dict, params: dict, *, interpreter: str = "python",
                   env: str | None = "/usr/bin/env", args_json_file: str | Path | None = None) -> list[str]:
    """The argv W&B's agent would run for `params`. Defaults are the agent's (`${interpreter}` is
    `python`, `${env}` is `/usr/bin/env`); the local runner passes sys.executable and env=None (dropped).
    Only whole tokens are macros; `${envvar:NAME}` is replaced inside any token (by NAME if unset)."""
    values = {**command_args(params), "interpreter": [interpreter], "env": [env] if env else [],
              "program": [str(sweep.get("program", ""))],
              "args_json_file": [str(args_json_file)] if args_json_file else []}
    argv = []
    for token in map(str, sweep.get("command") or DEFAULT_COMMAND):
        token = ENVVAR_MACRO.sub(lambda m: os.environ.get(m.group(1), m.group(1)), token)
        if token.startswith("${") and token.endswith("}"):
            if token == "${args_json_file}" and not args_json_file:
                raise SweepConfigError("command uses ${args_json_file} but no file was given")
            argv += values.get(token[2:-1], [])
        else:
            argv.append(token)
    return argv


def plan_trials(sweep: str | Path | dict, out_dir: str | Path, *, max_trials: int | None = None,
                seed: int = 0, extra_args: Sequence[str] = (), interpreter: str = sys.executable) -> list[Trial]:
    """Expand a sweep into trials with their run dirs `<out_dir>/<sweep name>/<trial id>` and argv."""
    sweep = load_sweep(sweep) if isinstance(sweep, (str, Path)) else sweep
    root = sweep_dir(sweep, out_dir)
    trials = []
    for params in expand(sweep, max_trials=max_trials, seed=seed):
        tid = trial_id(params, extra_args)
        run_dir = root / tid
        argv = render_command(sweep, params, interpreter=interpreter, env=None,
                              args_json_file=run_dir / "params.json") + list(extra_args)
        trials.append(Trial(tid, params, run_dir, argv))
    return trials


# ------------------------------------------------------------------------------------ checking trials against the CLI


def cli_args(argv: Sequence[str]) -> list[str] | None:
    """The arguments a trial's argv hands to restorelab's command line (`restorelab fit ...`,
    `python -m restorelab.cli fit ...`, `python restorelab/cli.py fit ...`), or None for another program."""
    argv = [str(a) for a in argv]
    for i, word in enumerate(argv):
        if word == "-m" and i + 1 < len(argv) and argv[i + 1] in ("restorelab.cli", "restorelab"):
            return argv[i + 2:]
        path = Path(word)
        if (path.name == "cli.py" and path.parent.name == "restorelab") or path.name == "restorelab":
            return argv[i + 1:]
    return None


def _parse_error(args: list[str]) -> str | None:
    """None if restorelab's parser accepts `args`, else the reason in one line."""
    from jsonargparse import ArgumentError

    from restorelab.error_report import condense_parse_error
    from restorelab.lightning_cli import build_parser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cfg = build_parser().parse_args(args)
        except (ArgumentError, SystemExit, TypeError, ValueError) as err:
            return condense_parse_error(str(err)) if str(err) else type(err).__name__
        # the net is small and cheap to build, and checks its own sizes (filters: [0, 4], an even kernel, ...)
        net = _get(cfg, cfg.get("subcommand"), "model", "init_args", "net")
        if net is not None and isinstance(net.get("class_path"), str):
            try:
                module, _, name = net["class_path"].rpartition(".")
                init_args = net.get("init_args")
                init_args = init_args.as_dict() if hasattr(init_args, "as_dict") else dict(init_args or {})
                getattr(importlib.import_module(module), name)(**init_args)
            except AnticipatedError as err:
                return str(err)
    return None


def _get(cfg, *keys):
    for key in keys:
        if cfg is None or key is None or not hasattr(cfg, "get"):
            return None
        cfg = cfg.get(key)
    return cfg


def check_trials(sweep: dict, trials: Sequence[Trial], where: str | Path, cwd: str | Path | None = None) -> None:
    """Parse the command of the trials that run restorelab's command line with its own parser (no training, no
    data read), before the first trial starts: SweepConfigError naming `where` (the sweep file) and the parameter
    whose name is not an option of `restorelab fit`, whose value does not parse, or that gives the net an
    impossible size (the net is built, nothing else). Every value of every parameter
    is tried once (the first trial holding it), so this costs one parser build (~5 s, the Lightning import) and
    a few ms per distinct value. Trials of another program are not checked."""
    seen, todo = set(), []
    for trial in trials:
        args = cli_args(trial.command)
        if args is None:
            continue
        new = {(k, json.dumps(v, sort_keys=True, default=str)) for k, v in trial.params.items()} - seen
        if new or not todo:
            seen |= new
            todo.append((trial, args))
    if not todo:
        return
    here = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)  # config paths in the command resolve where the trials run
        for trial, args in todo:
            reason = _parse_error(args)
            if reason is not None:
                raise SweepConfigError(f"{where}: {_culprit(sweep, trial, reason)}")
    finally:
        os.chdir(here)


def _culprit(sweep: dict, trial: Trial, reason: str) -> str:
    """Which parameter of a rejected trial is at fault: the first that is rejected alone (without the extra
    trial arguments), else the extra arguments, else the combination."""
    extra = trial.command[len(render_command(sweep, trial.params, interpreter="python", env=None,
                                             args_json_file=trial.run_dir / "params.json")):]
    for name, value in trial.params.items():
        alone = render_command(sweep, {name: value}, interpreter="python", env=None,
                               args_json_file=trial.run_dir / "params.json")
        why = _parse_error(cli_args(alone) or [])
        if why is not None:
            return f"parameter {name}={_show(value)} is not accepted by `restorelab fit`: {why}"
    bare = render_command(sweep, {}, interpreter="python", env=None, args_json_file=trial.run_dir / "params.json")
    if extra and _parse_error(cli_args(bare + list(extra)) or []) is not None:
        return f"the extra trial arguments {' '.join(map(str, extra))} are not accepted by `restorelab fit`: {reason}"
    shown = ", ".join(f"{k}={_show(v)}" for k, v in trial.params.items())
    return f"parameters {shown} together are not accepted by `restorelab fit`: {reason}"


def _show(value) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def resume_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest of Lightning's SIGUSR1 checkpoint (hpc_ckpt_<n>.ckpt) and checkpoints/last.ckpt.
    `--ckpt_path last` alone would ignore the hpc one, losing the work done since the last epoch.
    (restorelab.slurm's job script applies the same rule in bash.)"""
    run_dir = Path(run_dir)
    candidates = [p for p in [run_dir / LAST_CKPT, *run_dir.glob(HPC_CKPT_GLOB)] if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)


def trial_env(trial: Trial) -> dict:
    """The environment a trial runs in (the Slurm job script sets the same variables)."""
    env = dict(os.environ)
    env["RESTORELAB_RUN_DIR"] = str(trial.run_dir)
    env["RESTORELAB_RUN_ID"] = trial.trial_id
    env["RESTORELAB_EXPERIMENT"] = trial.run_dir.parent.name
    if not wandb_key_available():
        env.setdefault("WANDB_MODE", "offline")  # `wandb sync` uploads later
    return env


def sweep_dir(sweep: dict, out_dir: str | Path) -> Path:
    """Where a sweep's trials live: `<out_dir>/<sweep name>` (the name made safe for a path)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(sweep.get("name", "sweep"))).strip("_") or "sweep"
    return Path(out_dir).absolute() / name


def save_sweep(sweep: dict, directory: Path) -> None:
    """Keep the sweep's spec beside its trials, so `restorelab report <dir>` knows its metric."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sweep.json").write_text(json.dumps(sweep, indent=1, default=str))


# ------------------------------------------------------------------------------------ local runner


def run_local(sweep_path: str | Path | dict, out_dir: str | Path, max_trials: int | None = None,
              extra_args: Sequence[str] = (), seed: int = 0, cwd: str | Path | None = None) -> list[TrialResult]:
    """Run the trials one after another; a failure is recorded and the sweep goes on.

    Per trial: stdout/stderr appended to `<run_dir>/stdout.log`/`stderr.log`; per sweep:
    `trials.jsonl` (one line per attempt) and `summary.json` (latest state of every trial). Trials
    recorded as ok are skipped on a rerun; the others run again and resume from their checkpoint.
    """
    sweep = load_sweep(sweep_path) if isinstance(sweep_path, (str, Path)) else sweep_path
    trials = plan_trials(sweep, out_dir, max_trials=max_trials, seed=seed, extra_args=extra_args)
    if not trials:
        return []
    check_trials(sweep, trials, sweep_path if isinstance(sweep_path, (str, Path)) else sweep.get("name", "sweep"),
                 cwd)
    sweep_dir = trials[0].run_dir.parent
    save_sweep(sweep, sweep_dir)
    summary_path = sweep_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    results = []
    for i, trial in enumerate(trials, 1):
        done = summary.get(trial.trial_id, {})
        if done.get("status") == "ok":
            results.append(TrialResult(**{**done, "skipped": True}))
            print(f"[sweep] {i}/{len(trials)} {trial.trial_id} already done", file=sys.stderr)
            continue
        result = _run_trial(trial, cwd)
        print(f"[sweep] {i}/{len(trials)} {trial.trial_id} {result.status} (rc {result.returncode})",
              file=sys.stderr, flush=True)
        if result.status != "ok":  # say why here; the whole log stays in the run dir
            tail = "\n".join("    " + line for line in result.stderr_tail.splitlines()[-5:])
            print(f"{tail}\n    (log: {trial.run_dir / 'stderr.log'})", file=sys.stderr, flush=True)
        record = asdict(result)
        record.pop("skipped")
        with open(sweep_dir / "trials.jsonl", "a") as f:
            f.write(json.dumps({**record, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
        summary[trial.trial_id] = record
        tmp = summary_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, indent=1))
        tmp.replace(summary_path)  # never a half-written summary if the sweep is killed here
        results.append(result)
    return results


def _run_trial(trial: Trial, cwd) -> TrialResult:
    trial.prepare()
    argv = list(trial.command)
    ckpt = resume_checkpoint(trial.run_dir)
    if ckpt is not None:
        argv += ["--ckpt_path", str(ckpt)]
    stderr_path = trial.run_dir / "stderr.log"
    start = stderr_path.stat().st_size if stderr_path.exists() else 0
    with open(trial.run_dir / "stdout.log", "a") as out, open(stderr_path, "a") as err:
        try:
            rc = subprocess.run(argv, stdout=out, stderr=err, env=trial_env(trial), cwd=cwd).returncode
        except OSError as e:  # e.g. the program does not exist
            err.write(f"{type(e).__name__}: {e}\n")
            rc = None
    with open(stderr_path, errors="replace") as f:
        f.seek(start)
        tail = "\n".join(f.read().splitlines()[-20:])
    return TrialResult(trial.trial_id, trial.params, str(trial.run_dir), "ok" if rc == 0 else "failed", rc,
                       tail, argv)


# ------------------------------------------------------------------------------------ W&B online


def wandb_sweep_command(sweep_path: str | Path, project: str, entity: str | None = None) -> list[str]:
    return [sys.executable, "-m", "wandb", "sweep", "--project", project,
            *(["--entity", entity] if entity else []), str(sweep_path)]


def wandb_agent_command(sweep_id: str, project: str, entity: str | None = None,
                        count: int | None = None) -> list[str]:
    return [sys.executable, "-m", "wandb", "agent", "--project", project,
            *(["--entity", entity] if entity else []), *(["--count", str(count)] if count else []), sweep_id]


def parse_sweep_id(output: str) -> str:
    """The sweep id in `wandb sweep`'s log ("Created sweep with ID: <id>")."""
    match = re.search(r"Created sweep with ID: (?:\x1b\[[0-9;]*m)*([A-Za-z0-9]+)", output)
    if not match:
        raise RuntimeError(f"no sweep id in `wandb sweep` output:\n{output[-2000:]}")
    return match.group(1)


def agent_env() -> dict:
    """The agent runs `${interpreter}` as plain `python` from PATH; put this interpreter's bin dir
    first, so trials run in the environment that has restorelab even when it is not activated."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run_wandb(sweep_path: str | Path, project: str, entity: str | None = None, count: int | None = None) -> str:
    """Register the sweep on the W&B server and run one agent here (one trial process at a time,
    `count` trials). Needs WANDB_API_KEY; returns the sweep id."""
    load_sweep(sweep_path)  # fail here, with our message, rather than on the server
    made = subprocess.run(wandb_sweep_command(sweep_path, project, entity), capture_output=True, text=True)
    if made.returncode != 0:
        raise RuntimeError(f"`wandb sweep` failed (rc {made.returncode}):\n{made.stderr[-2000:]}")
    sweep_id = parse_sweep_id(made.stdout + made.stderr)
    subprocess.run(wandb_agent_command(sweep_id, project, entity, count), check=True, env=agent_env())
    return sweep_id


# ------------------------------------------------------------------------------------ CLI


def print_report(sweep_path: str | Path, out_dir: str | Path, trial_ids: Sequence[str] | None = None) -> None:
    """The table of these trials (restorelab.report) at the end of a run; a report error never hides
    the trials' own outcome."""
    from restorelab import report

    try:
        report.report([str(sweep_path)], runs_dir=out_dir, trial_ids=trial_ids)
    except Exception as err:  # noqa: BLE001 - the trials are done; say why there is no table
        print(f"[sweep] no report: {type(err).__name__}: {err}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["slurm"]:  # `restorelab slurm` owns its options
        from restorelab import slurm

        return slurm.main(argv[1:])
    # everything after `--` is appended to every trial's command
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        prog="restorelab sweep", description=__doc__.split("\n\n")[0],
        usage="%(prog)s {run,local,wandb,slurm} SWEEP [options] [-- extra trial args]",
        epilog="run: W&B agent when a W&B key is configured, else local; then the report table. "
               "slurm: see `restorelab slurm --help`.")
    sub = parser.add_subparsers(dest="mode", required=True)
    for mode in ("run", "local", "wandb"):
        p = sub.add_parser(mode)
        p.add_argument("sweep")
        if mode != "wandb":
            p.add_argument("--out", default="runs", help="trials go to OUT/<sweep name>/<trial id>")
            p.add_argument("--max-trials", type=int)
            p.add_argument("--seed", type=int, default=0)
        if mode != "local":
            p.add_argument("--project", default="restorelab")
            p.add_argument("--entity")
            p.add_argument("--count", type=int)
    sub.choices["run"].add_argument("--offline", action="store_true", help="run locally even with a W&B key")
    args = parser.parse_args(argv)

    if args.mode == "wandb" or (args.mode == "run" and wandb_key_available() and not args.offline):
        if extra:
            parser.error("extra trial args (after --) apply to local and Slurm runs; with W&B, edit the YAML")
        sweep_id = run_wandb(args.sweep, args.project, args.entity, args.count)
        import wandb

        from restorelab import report

        path = f"{args.entity or wandb.Api().default_entity}/{args.project}/{sweep_id}"
        return report.main(["--wandb-sweep", path, "--out", str(Path(getattr(args, "out", "runs")) / "reports")])
    results = run_local(args.sweep, args.out, args.max_trials, extra, seed=args.seed)
    print_report(args.sweep, args.out, [r.trial_id for r in results])
    return int(any(r.status != "ok" for r in results))


if __name__ == "__main__":
    sys.exit(main())
