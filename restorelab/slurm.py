"""Run sweep trials on Slurm: one job-array task per trial, requeue-safe.

    restorelab slurm sweeps/srcnn_filters.yaml --out runs --time 04:00:00 --gpus-per-node 1 --submit --wait

Each task reads its line of a trials file (run dir + argv), exports `RESTORELAB_RUN_DIR`, and starts
the command with `srun`, so Lightning sees the Slurm ranks (`--ntasks-per-node` = devices) and its
SLURMEnvironment handles `--signal=SIGUSR1@90` (delivered to srun steps only, not to the batch shell):
it saves an hpc checkpoint and requeues the task. A requeued task lands in the same run dir and resumes
from the newest checkpoint there. Finished jobs are watched with `squeue`, never `sbatch --wait` (which
polls at 2, 10, 42 s, then every 32 s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import re
import shlex
import subprocess
import time as _time
from pathlib import Path
from typing import Sequence

from restorelab import report
from restorelab.sweep_plan import (HPC_CKPT_GLOB, LAST_CKPT, SweepConfigError, Trial, check_trials, engine_run,
                                   load_sweep, plan_trials, save_sweep, sweep_dir, trial_cap)

ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                 "REQUEUE_FED", "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"}

# Per array task: pick its trial, resume from the newer of Lightning's SIGUSR1 checkpoint and
# checkpoints/last.ckpt (restorelab.sweep.resume_checkpoint, the local runner's, is the same rule), log into the run dir.
TASK_BODY = r"""
# array task i runs line i+1 of $TRIALS: `run_dir argv...`, shell-quoted
set -uo pipefail
eval "set -- $(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" "$TRIALS")"
export RESTORELAB_RUN_DIR=$1 RESTORELAB_RUN_ID=$(basename "$1") RESTORELAB_EXPERIMENT=$(basename "$(dirname "$1")")
shift
# W&B offline unless a key is set or `wandb login` stored one (restorelab.runs.wandb_key_available)
[[ -n ${WANDB_API_KEY:-} ]] || grep -qs "machine api.wandb.ai" ~/.netrc || export WANDB_MODE=${WANDB_MODE:-offline}
mkdir -p "$RESTORELAB_RUN_DIR"
exec >>"$RESTORELAB_RUN_DIR/slurm.out" 2>&1
echo "== $(date -Is) job ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} restart ${SLURM_RESTART_COUNT:-0} on $(hostname)"
resume=()
ckpt=$(ls -t "$RESTORELAB_RUN_DIR"/__HPC__ "$RESTORELAB_RUN_DIR/__LAST__" 2>/dev/null | head -n 1)
[[ -n $ckpt ]] && resume=(--ckpt_path "$ckpt")
# since Slurm 22.05 srun no longer inherits --cpus-per-task from sbatch: data loaders would get 1 CPU
export SRUN_CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-1}
srun "$@" "${resume[@]}"
""".replace("__HPC__", HPC_CKPT_GLOB).replace("__LAST__", str(LAST_CKPT))


def write_sbatch(trials: Sequence[Trial], path: str | Path, *, job_name: str, partition: str | None = None,
                 account: str | None = None, time: str = "01:00:00", nodes: int = 1, devices: int = 1,
                 gpus_per_node: int = 0, cpus_per_task: int = 1, mem: str | None = None,
                 max_parallel: int | None = None, workdir: str | Path | None = None,
                 extra: Sequence[str] = ()) -> Path:
    """Write the array job script `path` and its trials file `path.trials`; return `path`.

    `devices` becomes `--ntasks-per-node` (one srun task per device, as Lightning DDP expects; pass
    the same number as the trainer's `devices`). `workdir` (default: the current dir) is where the
    commands run, so relative paths such as configs/srcnn.yaml resolve. `extra` are further raw
    `#SBATCH` options, e.g. ["--constraint=a100", "--qos=long"].
    """
    if not trials:
        raise ValueError("no trials to submit")
    if job_name in ("bash", "interactive"):  # Lightning then assumes an interactive session, not Slurm
        raise ValueError(f"job name {job_name!r} disables Lightning's Slurm detection; pick another")
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for trial in trials:
        trial.prepare()
        words = [str(Path(trial.run_dir).absolute()), *map(str, trial.command)]
        if any("\n" in w for w in words):
            raise ValueError(f"trial {trial.trial_id}: newlines in the command are not supported")
        lines.append(shlex.join(words))
    trials_file = path.with_name(path.name + ".trials")
    trials_file.write_text("\n".join(lines) + "\n")
    (path.parent / "slurm-logs").mkdir(exist_ok=True)

    options = [
        f"--job-name={job_name}",
        f"--array=0-{len(trials) - 1}" + (f"%{max_parallel}" if max_parallel else ""),
        f"--nodes={nodes}",
        f"--ntasks-per-node={devices}",
        f"--cpus-per-task={cpus_per_task}",
        f"--time={time}",
        *([f"--gpus-per-node={gpus_per_node}"] if gpus_per_node else []),
        *([f"--mem={mem}"] if mem else []),
        *([f"--partition={partition}"] if partition else []),
        *([f"--account={account}"] if account else []),
        "--signal=SIGUSR1@90",
        "--requeue",
        "--open-mode=append",
        f"--output={path.parent / 'slurm-logs' / '%x_%A_%a.out'}",
        f"--chdir={Path(workdir or os.getcwd()).absolute()}",
        *extra,
    ]
    header = "\n".join(f"#SBATCH {o}" for o in options)
    path.write_text(f"#!/bin/bash\n{header}\n\nTRIALS={shlex.quote(str(trials_file))}\n{TASK_BODY}")
    path.chmod(0o755)
    return path


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"`{shlex.join(argv)}` failed (rc {result.returncode}): {result.stderr.strip()}")
    return result


def submit(script: str | Path) -> str:
    """sbatch the script; return the job id (the array's id)."""
    return _run(["sbatch", "--parsable", str(script)]).stdout.strip().split(";")[0]


def requeue(job_id: str) -> None:
    """Requeue a job or one array task ("123_1"); it restarts in its run dir and resumes."""
    _run(["scontrol", "requeue", str(job_id)])


def job_states(job_id: str) -> dict[str, str]:
    """{"<array id>_<task>" (or "<job id>"): state} from the controller; {} once it forgot the job."""
    result = subprocess.run(["scontrol", "-o", "show", "job", str(job_id)], capture_output=True, text=True)
    states = {}
    for line in result.stdout.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if "JobState" not in fields:
            continue
        key = (f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}" if fields.get("ArrayTaskId")
               else fields["JobId"])
        states[key] = fields["JobState"]
    return states


def _accounting_states(job_id: str) -> dict[str, str]:
    """Final states from accounting: slurmdbd (`sacct`) or, without it, the job-completion file (`sacct -c`)."""
    for argv in (["sacct", "-n", "-P", "-X", "-j", str(job_id), "-o", "JobID,State"],
                 ["sacct", "-c", "-n", "-P", "-j", str(job_id), "-o", "JobID,State"]):
        result = subprocess.run(argv, capture_output=True, text=True)
        rows = [line.split("|")[:2] for line in result.stdout.splitlines() if "|" in line]
        if result.returncode == 0 and rows:
            return {jid: state.split()[0] for jid, state in rows}
    return {}


def wait(job_id: str, timeout: float = 24 * 3600, poll: float = 1.0) -> dict[str, str]:
    """Block until no task of the job is pending or running (requeued ones count as pending);
    return every task's final state. TimeoutError after `timeout` seconds."""
    deadline = _time.monotonic() + timeout
    while True:
        live = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%i %T"], capture_output=True, text=True)
        # squeue errors once the job is gone from the controller ("Invalid job id specified")
        active = [line for line in live.stdout.splitlines() if line.split()[-1] in ACTIVE_STATES]
        if live.returncode != 0 or not active:
            break
        if _time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still active after {timeout} s: {active}")
        _time.sleep(poll)
    return job_states(job_id) or _accounting_states(job_id)


def plan_array(sweep: dict, where: str | Path, out_dir: str | Path, max_trials: int | None, seed: int,
               extra_args: Sequence[str]) -> list[Trial]:
    """The trials of one array job. Its tasks run side by side with no controller watching them, so W&B's
    engine plans the whole batch at once: bayes proposes the trials still missing from the sweep's total
    (run_cap / --max-trials) from the outcomes of those already under the sweep dir (an earlier job's), and
    early_terminate cannot stop a task (said once; the trials run to their end)."""
    if "early_terminate" in sweep:
        print(f"{where}: early_terminate is not applied to Slurm array tasks; every trial runs to its end",
              file=sys.stderr)
    if sweep["method"] != "bayes":
        return plan_trials(sweep, out_dir, max_trials=max_trials, seed=seed, extra_args=extra_args)
    cap = trial_cap(sweep, max_trials)
    if cap is None:
        raise SweepConfigError(f"{where}: bayes search is endless; set run_cap in the YAML or pass --max-trials")
    prior = earlier_trials(sweep, out_dir)
    trials = plan_trials(sweep, out_dir, max_trials=cap - len(prior), seed=seed, extra_args=extra_args,
                         prior=prior) if cap > len(prior) else []
    if not trials:
        raise SweepConfigError(f"{where}: the {cap} trials of this bayes sweep are under "
                               f"{sweep_dir(sweep, out_dir)} already; raise run_cap or --max-trials for more")
    return trials


def earlier_trials(sweep: dict, out_dir: str | Path) -> list:
    """The trials under the sweep dir as W&B's engine sees runs (params, state, metric history)."""
    metric = (sweep.get("metric") or {}).get("name") or report.DEFAULT_METRIC
    return [engine_run(run.name, run.params, metric, [v for _, v in run.curve], run.status)
            for run in report.load_local_runs(sweep_dir(sweep, out_dir), metric)]


def main(argv: Sequence[str] | None = None) -> int:
    """`restorelab slurm SWEEP [options] [-- extra trial args]`: write the array job (and its trials
    file) into the sweep's run dir and print its path; `--submit` sbatches it, `--wait` also waits for
    every task, then prints their states and the sweep's report table."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="restorelab slurm", usage="%(prog)s SWEEP [options] [-- extra trial args]",
                                     description="Run a sweep's trials as a Slurm job array.")
    parser.add_argument("sweep", help="a sweep YAML (sweeps/*.yaml)")
    parser.add_argument("--out", default="runs", help="trials go to OUT/<sweep name>/<trial id>")
    parser.add_argument("--max-trials", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--job-name")
    parser.add_argument("--partition")
    parser.add_argument("--account")
    parser.add_argument("--time", default="01:00:00", help="per task; a requeued task starts a new one")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--devices", type=int, default=1,
                        help="srun tasks per node = trainer devices (also pass -- --trainer.devices=N)")
    parser.add_argument("--gpus-per-node", type=int, default=0)
    parser.add_argument("--cpus-per-task", type=int, default=1)
    parser.add_argument("--mem")
    parser.add_argument("--max-parallel", type=int, help="at most this many trials at once (--array=...%%N)")
    parser.add_argument("--submit", action="store_true")
    parser.add_argument("--wait", action="store_true", help="with --submit: wait, then print the report")
    args = parser.parse_args(argv)

    sweep = load_sweep(args.sweep)
    trials = plan_array(sweep, args.sweep, args.out, args.max_trials, args.seed, extra)
    check_trials(sweep, trials, args.sweep)  # the job runs here (--chdir): configs/ resolve the same way
    root = trials[0].run_dir.parent
    save_sweep(sweep, root)
    name = args.job_name or root.name
    script = write_sbatch(trials, root / f"{name}.sbatch", job_name=name, partition=args.partition,
                          account=args.account, time=args.time, nodes=args.nodes, devices=args.devices,
                          gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task, mem=args.mem,
                          max_parallel=args.max_parallel)
    print(script)
    if not args.submit:
        return 0
    job = submit(script)
    print(f"submitted job {job}")
    if not args.wait:
        return 0
    states = wait(job)
    print(json.dumps(states, indent=1))
    report.print_report(args.sweep, args.out, [t.trial_id for t in trials])
    return int(any(s != "COMPLETED" for s in states.values()))
