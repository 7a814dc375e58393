"""W&B sweeps, run three ways from one YAML.

* online: `wandb sweep` registers the YAML, `wandb agent` asks the server for trials (`run_wandb`);
* offline, here: W&B's own engine proposes the trials locally (restorelab.sweep_plan) and they run one
  after another (`run_local`); bayes proposes each trial from the outcomes of the earlier ones, and
  hyperband `early_terminate` stops a running trial as W&B's controller would;
* on Slurm: the planned trials become one array task each (`restorelab.slurm`).

Locally, every trial gets a stable run directory `<out_dir>/<sweep name>/<trial id>` (the id is a hash
of its parameters), handed to the command as `RESTORELAB_RUN_DIR`, so a rerun (or a requeued Slurm task)
finds the same directory: completed (and early-stopped) trials are skipped and interrupted ones resume
from their newest checkpoint.

    restorelab sweep run sweeps/srcnn_filters.yaml      # W&B agent with a key, else local; then the table
    restorelab sweep local sweeps/srcnn_filters.yaml --out runs [-- --trainer.max_epochs=2]
    restorelab sweep wandb sweeps/srcnn_filters.yaml --project restorelab --count 8
    restorelab slurm sweeps/srcnn_filters.yaml --out runs --time 04:00:00 --submit  # restorelab.slurm
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from restorelab import report
from restorelab.runs import wandb_key_available
from restorelab.sweep_plan import (HPC_CKPT_GLOB, LAST_CKPT, SweepConfigError, Trial, check_trials, engine_config,
                                   engine_run, load_sweep, make_trial, plan_trials, save_sweep, sweep_dir, sweeps,
                                   trial_cap)

POLL_S = 5.0  # how often a running trial's metric history goes to the engine's early termination
KILL_DELAY_S = 30  # as W&B's agent (Agent.KILL_DELAY): SIGKILL a stopped trial this long after its SIGTERM
DONE = ("ok", "stopped")  # not run again by a rerun; W&B does not restart a run its sweep stopped either


@dataclass
class TrialResult:
    trial_id: str
    params: dict
    run_dir: str
    status: str  # "ok" | "failed" | "stopped" (by early_terminate)
    returncode: int | None
    stderr_tail: str = ""
    command: list = field(default_factory=list)
    skipped: bool = False  # completed by an earlier run_local call, not run again


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


# ------------------------------------------------------------------------------------ local runner


def run_local(sweep_path: str | Path | dict, out_dir: str | Path, max_trials: int | None = None,
              extra_args: Sequence[str] = (), seed: int = 0, cwd: str | Path | None = None,
              poll_s: float = POLL_S) -> list[TrialResult]:
    """Run the trials one after another; a failure is recorded and the sweep goes on.

    Per trial: stdout/stderr appended to `<run_dir>/stdout.log`/`stderr.log`; per sweep:
    `trials.jsonl` (one line per attempt) and `summary.json` (latest state of every trial). Trials
    recorded as ok or stopped are skipped on a rerun; the others run again and resume from their checkpoint.
    """
    sweep = load_sweep(sweep_path) if isinstance(sweep_path, (str, Path)) else sweep_path
    where = sweep_path if isinstance(sweep_path, (str, Path)) else sweep.get("name", "sweep")
    root = sweep_dir(sweep, out_dir)
    summary_path = root / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    metric = (sweep.get("metric") or {}).get("name")
    finished: list = []  # the trials done so far, as the engine sees runs (bayes, early_terminate read them)
    total, trials = _trials(sweep, where, out_dir, max_trials, seed, extra_args, cwd, summary, finished)
    results = []
    for i, trial in enumerate(trials, 1):
        if i == 1:
            save_sweep(sweep, root)
        done = summary.get(trial.trial_id, {})
        if done.get("status") in DONE:
            result = TrialResult(**{**done, "skipped": True})
            print(f"[sweep] {i}/{total} {trial.trial_id} already {done['status']}", file=sys.stderr)
        else:
            result = _run_trial(trial, cwd, _stopper(sweep, trial, metric, finished), poll_s)
            _say(i, total, trial, result)
            _record(root, summary, result)
        finished.append(engine_run(trial.trial_id, trial.params, metric, _values(trial.run_dir, metric),
                                   result.status))
        results.append(result)
    return results


def _trials(sweep, where, out_dir, max_trials, seed, extra_args, cwd, summary,
            finished) -> tuple[int, Iterator[Trial]]:
    """(how many, the trials one by one). grid, random: all planned, and checked against the CLI before the
    first runs. bayes: the trials an earlier call ran (summary.json), then one proposal at a time from the
    outcomes so far (`finished`, which the caller extends as trials end), each checked before it runs."""
    if sweep["method"] != "bayes":
        trials = plan_trials(sweep, out_dir, max_trials=max_trials, seed=seed, extra_args=extra_args)
        check_trials(sweep, trials, where, cwd)
        return len(trials), iter(trials)
    cap = trial_cap(sweep, max_trials)
    if cap is None:
        raise SweepConfigError(f"{where}: bayes search is endless; set run_cap in the YAML or pass --max-trials")
    return cap, _bayes_trials(sweep, where, out_dir, cap, seed, extra_args, cwd, summary, finished)


def _bayes_trials(sweep, where, out_dir, cap, seed, extra_args, cwd, summary, finished) -> Iterator[Trial]:
    root = sweep_dir(sweep, out_dir)
    earlier = [make_trial(sweep, root, record["params"], extra_args) for record in summary.values()]
    yield from [t for t in earlier if t.trial_id in summary][:cap]  # those of other extra args are not ours
    while len(finished) < cap:
        proposed = plan_trials(sweep, out_dir, max_trials=1, seed=seed, extra_args=extra_args, prior=finished)
        if not proposed:  # the engine found no trial it had not proposed already
            return
        check_trials(sweep, proposed, where, cwd)
        yield proposed[0]


def _values(run_dir: Path, metric: str | None) -> list[float]:
    """The trial's logged values of `metric`, in order (its CSV logs, as restorelab.report reads them)."""
    return [value for _, value in report.read_run_curve(run_dir, metric)[0]] if metric else []


def _stopper(sweep: dict, trial: Trial, metric: str | None, finished: list) -> Callable[[], bool] | None:
    """With `early_terminate`: whether W&B's engine (sweeps.stop_runs, hyperband) stops the running trial,
    judged on its metric history so far against the finished trials' histories."""
    if "early_terminate" not in sweep:
        return None
    config = engine_config(sweep)

    def should_stop() -> bool:
        try:
            values = _values(trial.run_dir, metric)
        except (ValueError, TypeError, KeyError):  # a row still being written: the next poll reads it whole
            return False
        running = engine_run(trial.trial_id, trial.params, metric, values, "running")
        return any(run.name == trial.trial_id for run in sweeps.stop_runs(config, [*finished, running]))

    return should_stop


def _run_trial(trial: Trial, cwd, should_stop: Callable[[], bool] | None, poll_s: float) -> TrialResult:
    trial.prepare()
    argv = list(trial.command)
    ckpt = resume_checkpoint(trial.run_dir)
    if ckpt is not None:
        argv += ["--ckpt_path", str(ckpt)]
    stderr_path = trial.run_dir / "stderr.log"
    start = stderr_path.stat().st_size if stderr_path.exists() else 0
    stopped = False
    with open(trial.run_dir / "stdout.log", "a") as out, open(stderr_path, "a") as err:
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=err, env=trial_env(trial), cwd=cwd)
        except OSError as e:  # e.g. the program does not exist
            err.write(f"{type(e).__name__}: {e}\n")
            rc = None
        else:
            stopped = _wait(proc, should_stop, poll_s)
            rc = proc.returncode
    with open(stderr_path, errors="replace") as f:
        f.seek(start)
        tail = "\n".join(f.read().splitlines()[-20:])
    status = "stopped" if stopped else "ok" if rc == 0 else "failed"
    return TrialResult(trial.trial_id, trial.params, str(trial.run_dir), status, rc, tail, argv)


def _wait(proc: subprocess.Popen, should_stop: Callable[[], bool] | None, poll_s: float) -> bool:
    """Wait for the trial; True if early termination stopped it, as W&B's agent stops a run: SIGTERM
    (restorelab fit then saves last.ckpt), SIGKILL if it still runs KILL_DELAY_S later."""
    while True:
        try:
            proc.wait(timeout=None if should_stop is None else poll_s)
            return False
        except subprocess.TimeoutExpired:
            if not should_stop():
                continue
        proc.terminate()
        try:
            proc.wait(timeout=KILL_DELAY_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return True


def _say(i: int, total: int, trial: Trial, result: TrialResult) -> None:
    print(f"[sweep] {i}/{total} {trial.trial_id} {result.status} (rc {result.returncode})",
          file=sys.stderr, flush=True)
    if result.status == "failed":  # say why here; the whole log stays in the run dir
        tail = "\n".join("    " + line for line in result.stderr_tail.splitlines()[-5:])
        print(f"{tail}\n    (log: {trial.run_dir / 'stderr.log'})", file=sys.stderr, flush=True)


def _record(root: Path, summary: dict, result: TrialResult) -> None:
    record = asdict(result)
    record.pop("skipped")
    with open(root / "trials.jsonl", "a") as f:
        f.write(json.dumps({**record, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    summary[result.trial_id] = record
    summary_path = root / "summary.json"
    tmp = summary_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(summary_path)  # never a half-written summary if the sweep is killed here


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

        path = f"{args.entity or wandb.Api().default_entity}/{args.project}/{sweep_id}"
        return report.main(["--wandb-sweep", path, "--out", str(Path(getattr(args, "out", "runs")) / "reports")])
    results = run_local(args.sweep, args.out, args.max_trials, extra, seed=args.seed)
    report.print_report(args.sweep, args.out, [r.trial_id for r in results])
    return int(any(r.status != "ok" for r in results))


if __name__ == "__main__":
    sys.exit(main())
