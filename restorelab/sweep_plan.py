"""Planning a W&B sweep offline: the YAML validated and expanded by W&B's own sweep engine (the `sweeps`
package, the engine behind `wandb`'s local controller), and each trial's command line built by W&B's own
command builder (`wandb.sdk.launch.sweeps.utils`), so that grid, random and bayes give offline what
`wandb agent` would run.

A trial is a parameter dict, a stable run directory `<out_dir>/<sweep name>/<trial id>` (the id hashes the
parameters) and its argv. This module runs nothing: the local runner (`restorelab.sweep`) and the Slurm
array (`restorelab.slurm`) run the trials, `restorelab.report` reads them; all three import this module and
it imports none of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import random
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import yaml

from datamodules.errors import AnticipatedError
from restorelab.error_report import describe_yaml_error

with warnings.catch_warnings():  # sweeps 0.2.0 declares pydantic-v1 config keys; pydantic 2 warns at import
    warnings.simplefilter("ignore")
    import jsonschema
    import sweeps
    from jsonschema.exceptions import best_match
    from sweeps.config.schema import validator as engine_validator

LAST_CKPT = Path("checkpoints") / "last.ckpt"  # ModelCheckpoint(save_last=True) under the run dir
HPC_CKPT_GLOB = "hpc_ckpt_*.ckpt"  # what Lightning's SIGUSR1 handler writes in default_root_dir
# W&B's server knows run_cap (stop after that many runs); the schema of sweeps 0.2.0 does not, so it is
# taken out before the engine validates the rest
SERVER_ONLY_KEYS = ("run_cap",)
# what W&B's agent adds to the builder's macros (wandb_agent.py, Agent._command_run)
AGENT_MACROS = ("env", "interpreter", "program", "args_json_file")
# rounds of proposals when asking random/bayes for distinct trials: a small discrete space may hold fewer
DRAW_ROUNDS = 20


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
    """SweepConfigError naming `where` and the key, for what W&B's engine rejects (its schema, then its
    first proposal and early-termination bands), a bad run_cap, and commands the agent would mangle."""
    config = engine_config(sweep, where)
    try:
        sweeps.next_runs(config, [], n=1)
        if "early_terminate" in config:
            sweeps.stop_runs(config, [])
    except ValueError as err:  # e.g. a grid over a continuous distribution, bayes without a metric
        raise SweepConfigError(f"{where}: {_one_line(err)}") from None
    cap = sweep.get("run_cap")
    if cap is not None and not (isinstance(cap, int) and not isinstance(cap, bool) and cap > 0):
        raise SweepConfigError(f"{where}: run_cap: must be a positive integer, got {cap!r}")
    _check_command(sweep, where)


def engine_config(sweep: dict, where: str = "sweep") -> sweeps.SweepConfig:
    """The sweep as W&B's engine takes it (defaults filled in), or SweepConfigError naming the key."""
    config = {k: v for k, v in sweep.items() if k not in SERVER_ONLY_KEYS}
    error = best_match(engine_validator.iter_errors(config))
    if error is not None:
        key = ".".join(map(str, error.absolute_path))
        raise SweepConfigError(f"{where}: {key + ': ' if key else ''}{_one_line(error.message)}"
                               f"{_number_hint(error.instance)}")
    try:
        filled = sweeps.SweepConfig(config)
    except (jsonschema.ValidationError, ValueError, TypeError) as err:  # min/max, probabilities, deprecations
        raise SweepConfigError(f"{where}: parameters: {_one_line(getattr(err, 'message', err))}") from None
    dropped = sorted(set(config["parameters"]) - set(filled["parameters"]))
    if dropped:  # SweepConfig leaves nested `parameters:` out of what it returns, without a word
        raise SweepConfigError(f"{where}: parameters.{dropped[0]}: nested parameters are dropped by W&B's local "
                               f"engine (sweeps {sweeps.__version__}); use dotted names (e.g. {dropped[0]}.lr)")
    return filled


def _one_line(message) -> str:
    lines = dict.fromkeys(line.strip() for line in str(message).splitlines() if line.strip())  # engine repeats
    return "; ".join(lines)


def _number_hint(instance) -> str:
    """YAML 1.1 reads 1e-4 as a string, which the schema then rejects without saying why."""
    values = instance.values() if isinstance(instance, dict) else [instance]
    for value in values:
        if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value.strip()):
            return f" ({value!r}: YAML reads {value} as a string; write {float(value):.1e})"
    return ""


def _check_command(sweep: dict, where: str) -> None:
    """W&B's agent silently drops an unknown macro (a typo'd ${arg} runs trials without their parameters);
    refuse instead. The known macros are those W&B's builder and agent fill in."""
    command = [str(token) for token in _command_template(sweep)]
    known = sorted({*_builder_macros({}), *AGENT_MACROS})
    for token in command:
        if token.startswith("${") and token.endswith("}") and token[2:-1] not in known:
            raise SweepConfigError(f"{where}: command: unknown macro {token}; "
                                   f"known: {['${' + m + '}' for m in known]}")
    if "${program}" in command and not isinstance(sweep.get("program"), str):
        raise SweepConfigError(f"{where}: program: required (a string) when the command uses ${{program}}")


# ------------------------------------------------------------------------------------ expansion


def trial_cap(sweep: dict, max_trials: int | None = None) -> int | None:
    caps = [n for n in (max_trials, sweep.get("run_cap")) if n is not None]
    return min(caps) if caps else None


def expand(sweep: dict, max_trials: int | None = None, seed: int = 0,
           prior: Sequence[sweeps.SweepRun] = ()) -> list[dict]:
    """The sweep's next trials as parameter dicts (keys sorted, as W&B orders them), proposed by W&B's engine.

    grid: the engine's grid order, first `max_trials`/`run_cap` of it. random, bayes: that many distinct
    trials (a repeat would share its run dir), drawn with Python's and numpy's generators seeded by `seed`
    (plus the number of prior trials, so that each proposal of a sequential bayes sweep draws anew). bayes
    models the metric of the `prior` trials (finished ones with their history, running ones as pending).
    """
    config = engine_config(sweep, sweep.get("name", "sweep"))
    cap = trial_cap(sweep, max_trials)
    if config["method"] == "grid":
        return [trial_params(run) for run in _grid(config, cap)]
    if cap is None:
        raise SweepConfigError(f"{sweep.get('name', 'sweep')}: {config['method']} search is endless; "
                               "set run_cap in the YAML or pass --max-trials")
    with _seeded(seed + len(prior)):
        return [trial_params(run) for run in _distinct_draws(config, prior, cap)]


def _grid(config: sweeps.SweepConfig, cap: int | None) -> list[sweeps.SweepRun]:
    """As W&B's controller asks: the runs so far in, the next ones out, until the grid is done or capped."""
    runs: list[sweeps.SweepRun] = []
    while cap is None or len(runs) < cap:
        batch = sweeps.next_runs(config, runs, n=64 if cap is None else cap - len(runs))
        runs += [run for run in batch if run is not None]
        if None in batch:
            break
    return runs


def _distinct_draws(config: sweeps.SweepConfig, prior: Sequence[sweeps.SweepRun],
                    n: int) -> list[sweeps.SweepRun]:
    seen = {trial_id(trial_params(run)) for run in prior}
    found: list[sweeps.SweepRun] = []
    for _ in range(DRAW_ROUNDS):
        if len(found) == n:
            break
        # the drawn ones go back in as pending runs: bayes then proposes away from them, as in its batches
        for run in sweeps.next_runs(config, [*prior, *found], n=n - len(found)):
            key = trial_id(trial_params(run))
            if key not in seen:
                seen.add(key)
                found.append(run)
    return found


@contextlib.contextmanager
def _seeded(seed: int):
    """The engine samples with the global `random` (random search) and `np.random` (bayes); seed both for
    the proposal and give the caller its generators back untouched."""
    saved = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])


def trial_params(run: sweeps.SweepRun) -> dict:
    """{name: value} of an engine run. Its draws are numpy scalars; the agent gets JSON values from the
    server, so they become plain Python values here too (for params.json and the command line)."""
    return {name: _plain(spec["value"]) for name, spec in run.config.items()}


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# a trial's recorded status -> the state of a W&B run; any other (a Slurm task still running, or one whose
# outcome is unknown) counts as running: bayes then treats its point as pending, not as a result
ENGINE_STATE = {"ok": sweeps.RunState.finished, "failed": sweeps.RunState.failed,
                "stopped": sweeps.RunState.killed}


def engine_run(name: str, params: dict, metric: str | None, values: Iterable[float],
               status: str) -> sweeps.SweepRun:
    """A trial as W&B's engine sees a run: its config, state, the history of `metric` (one row per logged
    value, as `wandb.log` rows) and its summary (the last value, W&B's default)."""
    values = list(values)
    # by their aliases: under pydantic 2, SweepRun(history=...) is silently ignored (its v1-style
    # allow_population_by_field_name no longer applies), leaving bayes and hyperband without data
    return sweeps.SweepRun(name=name, config={k: {"value": v} for k, v in params.items()},
                           state=ENGINE_STATE.get(status, sweeps.RunState.running),
                           sampledHistory=[{metric: v} for v in values] if metric else [],
                           summaryMetrics={metric: values[-1]} if metric and values else {})


def trial_id(params: dict, extra_args: Sequence[str] = ()) -> str:
    """Short stable hash of a trial's parameters (and of extra args, so a smoke run with
    `--trainer.max_epochs=1` never passes for the real trial)."""
    key = json.dumps(params, sort_keys=True, default=str) + ("\0" + "\0".join(extra_args) if extra_args else "")
    return hashlib.sha1(key.encode()).hexdigest()[:8]


# ------------------------------------------------------------------------------------ commands


def _command_template(sweep: dict) -> list:
    """W&B's builder: the YAML's command (or W&B's default one), `${envvar:NAME}` filled in."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command

    command = sweep.get("command")
    return list(create_sweep_command(list(command) if command else None))  # it edits the list in place


def _builder_macros(params: dict) -> dict:
    """W&B's builder's argument lists for `params` (its non-list `args_dict` is no macro)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    built = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    return {name: value for name, value in built.items() if isinstance(value, list)}


def render_command(sweep: dict, params: dict, *, interpreter: str = "python",
                   env: str | None = "/usr/bin/env", args_json_file: str | Path | None = None) -> list[str]:
    """The argv W&B's agent runs for `params`: whole `${...}` tokens replaced by their lists, as in
    `Agent._command_run` (that loop is not public). The defaults are the agent's; the local runner passes
    its own interpreter and env=None (dropped)."""
    template = _command_template(sweep)
    if "${args_json_file}" in map(str, template) and not args_json_file:
        raise SweepConfigError("command uses ${args_json_file} but no file was given")
    macros = {**_builder_macros(params), "interpreter": [interpreter], "env": [env] if env else [],
              "program": [str(sweep.get("program", ""))],
              "args_json_file": [str(args_json_file)] if args_json_file else []}
    argv = []
    for token in map(str, template):
        if token.startswith("${") and token.endswith("}"):
            argv += macros.get(token[2:-1]) or []
        else:
            argv.append(token)
    return argv


def sweep_dir(sweep: dict, out_dir: str | Path) -> Path:
    """Where a sweep's trials live: `<out_dir>/<sweep name>` (the name made safe for a path)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(sweep.get("name", "sweep"))).strip("_") or "sweep"
    return Path(out_dir).absolute() / name


def make_trial(sweep: dict, root: Path, params: dict, extra_args: Sequence[str] = (),
               interpreter: str = sys.executable) -> Trial:
    tid = trial_id(params, extra_args)
    run_dir = root / tid
    argv = render_command(sweep, params, interpreter=interpreter, env=None,
                          args_json_file=run_dir / "params.json") + list(extra_args)
    return Trial(tid, params, run_dir, argv)


def plan_trials(sweep: str | Path | dict, out_dir: str | Path, *, max_trials: int | None = None,
                seed: int = 0, extra_args: Sequence[str] = (), interpreter: str = sys.executable,
                prior: Sequence[sweeps.SweepRun] = ()) -> list[Trial]:
    """Expand a sweep into trials with their run dirs `<out_dir>/<sweep name>/<trial id>` and argv.

    `${interpreter}` is this Python (sys.executable), not W&B's plain `python` from PATH: the trials then run
    in the environment that has restorelab, activated or not (Slurm tasks see the same path)."""
    sweep = load_sweep(sweep) if isinstance(sweep, (str, Path)) else sweep
    root = sweep_dir(sweep, out_dir)
    return [make_trial(sweep, root, params, extra_args, interpreter)
            for params in expand(sweep, max_trials=max_trials, seed=seed, prior=prior)]


def save_sweep(sweep: dict, directory: Path) -> None:
    """Keep the sweep's spec beside its trials, so `restorelab report <dir>` knows its metric."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sweep.json").write_text(json.dumps(sweep, indent=1, default=str))


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
    def bare(params):
        return render_command(sweep, params, interpreter="python", env=None,
                              args_json_file=trial.run_dir / "params.json")

    extra = trial.command[len(bare(trial.params)):]
    for name, value in trial.params.items():
        why = _parse_error(cli_args(bare({name: value})) or [])
        if why is not None:
            return f"parameter {name}={_show(value)} is not accepted by `restorelab fit`: {why}"
    if extra and _parse_error(cli_args(bare({}) + list(extra)) or []) is not None:
        return f"the extra trial arguments {' '.join(map(str, extra))} are not accepted by `restorelab fit`: {reason}"
    shown = ", ".join(f"{k}={_show(v)}" for k, v in trial.params.items())
    return f"parameters {shown} together are not accepted by `restorelab fit`: {reason}"


def _show(value) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)
