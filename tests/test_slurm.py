"""restorelab.slurm: the array job script (checked without Slurm, with a stand-in `srun`), then real
submissions to the one-node cluster of tests/slurm_cluster.py: an array of 2 trials, a trial requeued
while running (`scontrol requeue`), and one that requeues itself on SIGUSR1 as Lightning does; both
requeued trials must resume from their checkpoint. The same with real `restorelab fit` trials: an array
of two through `restorelab slurm --submit --wait`, a requeued one whose global_step continues, and a DDP
trial of two ranks started by srun (`--ntasks-per-node=2`, gloo) whose validation equals one process's."""

import csv
import json
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest
import torch

from restorelab import slurm, sweep as sw, sweep_plan
from tests.slurm_cluster import slurm_cluster  # noqa: F401

ACTIVE = slurm.ACTIVE_STATES | {None}  # None: not listed yet
from tests.test_ddp import COMMON as DDP_COMMON, last_val, run as run_cli
from tests.test_sweep import progress, write_fake_trainer, write_yaml


def plan(tmp_path: Path, steps: int, sleep: float, fails=(False,), hold: int = 0) -> list[sweep_plan.Trial]:
    trainer = write_fake_trainer(tmp_path)
    path = write_yaml(tmp_path / "ablation.yaml", f"""\
        program: {trainer}
        method: grid
        parameters:
          steps: {{value: {steps}}}
          sleep: {{value: {sleep}}}
          fail: {{values: {json.dumps(list(fails))}}}
        """ + (f"  hold: {{value: {hold}}}\n" if hold else ""))
    return sweep_plan.plan_trials(path, tmp_path / "runs")


def test_write_sbatch_writes_an_array_job_with_one_trial_per_task(tmp_path):
    trials = plan(tmp_path, steps=1, sleep=0, fails=(False, True))
    script = slurm.write_sbatch(trials, tmp_path / "runs" / "job.sbatch", job_name="ablation", devices=2,
                                gpus_per_node=2, cpus_per_task=4, mem="16G", partition="gpu", time="02:00:00",
                                workdir=tmp_path, extra=["--qos=long"])
    text = script.read_text()
    header = [line.removeprefix("#SBATCH ") for line in text.splitlines() if line.startswith("#SBATCH")]
    for option in ("--job-name=ablation", "--array=0-1", "--ntasks-per-node=2", "--gpus-per-node=2",
                   "--cpus-per-task=4", "--mem=16G", "--partition=gpu", "--time=02:00:00",
                   "--signal=SIGUSR1@90", "--requeue", "--open-mode=append", f"--chdir={tmp_path}", "--qos=long"):
        assert option in header
    assert not any(o.startswith("--account") for o in header)
    assert "\nsrun " in text
    lines = Path(f"{script}.trials").read_text().splitlines()
    assert [shlex.split(line) for line in lines] == [[str(t.run_dir), *t.command] for t in trials]
    assert all((t.run_dir / "params.json").is_file() for t in trials)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    with pytest.raises(ValueError, match="Slurm detection"):
        slurm.write_sbatch(trials, tmp_path / "b.sbatch", job_name="bash")


def test_cli_writes_the_job_for_a_sweep_file(tmp_path, capsys):
    plan(tmp_path, steps=1, sleep=0)  # writes ablation.yaml
    assert sw.main(["slurm", str(tmp_path / "ablation.yaml"), "--out", str(tmp_path / "runs"), "--devices", "2",
                    "--time", "04:00:00", "--", "--trainer.max_epochs=1"]) == 0
    script = tmp_path / "runs" / "ablation" / "ablation.sbatch"
    assert capsys.readouterr().out.strip() == str(script)
    assert "#SBATCH --ntasks-per-node=2" in script.read_text() and "#SBATCH --time=04:00:00" in script.read_text()
    (line,) = Path(f"{script}.trials").read_text().splitlines()
    assert shlex.split(line)[-1] == "--trainer.max_epochs=1"


def test_bayes_array_proposes_the_trials_missing_from_those_under_the_sweep_dir(tmp_path, capsys):
    """No controller watches array tasks: W&B's engine plans each job's batch from the trials already there."""
    path = write_yaml(tmp_path / "bayes.yaml", """\
        program: train.py
        method: bayes
        metric: {name: val/psnr, goal: maximize}
        run_cap: 3
        early_terminate: {type: hyperband, min_iter: 1}
        parameters:
          x: {min: 0.0, max: 1.0}
        """)
    sweep, out = sweep_plan.load_sweep(path), tmp_path / "runs"
    first = slurm.plan_array(sweep, path, out, None, 0, [])
    assert len(first) == 3 and "early_terminate is not applied to Slurm array tasks" in capsys.readouterr().err
    done = first[0]  # as a finished task leaves its run dir
    done.prepare()
    (done.run_dir / "csv").mkdir()
    (done.run_dir / "csv" / "metrics.csv").write_text("epoch,step,val/psnr\n0,9,25.0\n1,19,27.0\n")
    (done.run_dir / "test_results.csv").write_text("")
    (prior,) = slurm.earlier_trials(sweep, out)
    assert (prior.state, prior.history, prior.config) == ("finished", [{"val/psnr": 25.0}, {"val/psnr": 27.0}],
                                                          {"x": {"value": done.params["x"]}})
    second = slurm.plan_array(sweep, path, out, None, 0, [])
    assert [t.params for t in second] == sweep_plan.expand(sweep, max_trials=2, prior=[prior])
    with pytest.raises(sweep_plan.SweepConfigError, match="the 1 trials of this bayes sweep are under"):
        slurm.plan_array(sweep, path, out, 1, 0, [])


def test_task_script_runs_its_trial_and_resumes_from_the_newest_checkpoint(tmp_path):
    """The task body outside Slurm: SLURM_ARRAY_TASK_ID picks the line, `srun` is a stand-in."""
    trials = plan(tmp_path, steps=3, sleep=0, fails=(False, True))
    script = slurm.write_sbatch(trials, tmp_path / "job.sbatch", job_name="ablation", workdir=tmp_path)
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "srun").write_text('#!/bin/sh\necho "srun cpus=$SRUN_CPUS_PER_TASK" >&2\nexec "$@"\n')
    (shim / "srun").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}", "SLURM_ARRAY_JOB_ID": "7",
           "SLURM_ARRAY_TASK_ID": "1", "SLURM_CPUS_PER_TASK": "3"}
    first = subprocess.run(["bash", str(script)], env=env, cwd=tmp_path)
    run_dir = trials[1].run_dir  # task 1 = fail=True: runs 3 steps, then exits 1
    assert first.returncode == 1 and not trials[0].run_dir.joinpath("progress.log").exists()
    assert progress(run_dir) == ([0], [1, 2, 3])
    # as if Lightning's SIGUSR1 handler had saved a newer checkpoint before a requeue
    (run_dir / "hpc_ckpt_1.ckpt").write_text(json.dumps({"counter": 1}))
    env["SLURM_RESTART_COUNT"] = "1"
    subprocess.run(["bash", str(script)], env=env, cwd=tmp_path)
    assert progress(run_dir) == ([0, 1], [1, 2, 3, 2, 3])
    out = (run_dir / "slurm.out").read_text()
    assert "job 7_1 restart 0" in out and "job 7_1 restart 1" in out
    assert "srun cpus=3" in out and "simulated failure" in out


# Every wait below ends on an event (a step logged, a file written, a job state), never after a set time; the
# limits only stop a broken run, at about 10x what the wait takes on idle cores.
JOB_LIMIT_S = 300  # fake-trainer jobs: ~2 s of work plus a requeue (cred_expire 10 s + one 5-s scheduling pass)
REAL_JOB_LIMIT_S = 600  # real `restorelab fit` jobs: ~15 s per attempt on idle cores


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slurm
def test_array_of_two_trials_completes_in_both_run_dirs(slurm_cluster, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    trials = plan(tmp_path, steps=2, sleep=0, fails=(False, True))
    script = slurm.write_sbatch(trials, tmp_path / "job.sbatch", job_name="array-test", workdir=tmp_path)
    job = slurm.submit(script)
    states = slurm.wait(job, timeout=JOB_LIMIT_S, poll=0.5)
    assert states == {f"{job}_0": "COMPLETED", f"{job}_1": "FAILED"}
    ok = json.loads((trials[0].run_dir / "result.json").read_text())
    assert ok["counter"] == 2 and "--fail=False" in ok["argv"]
    # launched by srun inside the allocation: Lightning would see a Slurm rank
    assert ok["env"]["SLURM_PROCID"] == "0" and ok["env"]["SLURM_NTASKS"] == "1"
    assert ok["env"]["RESTORELAB_RUN_ID"] == trials[0].trial_id
    assert progress(trials[1].run_dir) == ([0], [1, 2])
    assert "simulated failure" in (trials[1].run_dir / "slurm.out").read_text()


@pytest.mark.slurm
def test_requeued_trial_resumes_from_its_checkpoint(slurm_cluster, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    (trial,) = plan(tmp_path, steps=8, sleep=0.05, hold=2)  # the first attempt waits after step 2
    script = slurm.write_sbatch([trial], tmp_path / "job.sbatch", job_name="requeue-test", workdir=tmp_path)
    job = slurm.submit(script)
    task = f"{job}_0"
    log = trial.run_dir / "progress.log"
    wait_for(lambda: log.exists() and len(progress(trial.run_dir)[1]) >= 2, JOB_LIMIT_S, "two steps")
    slurm.requeue(task)  # as Lightning's SIGUSR1 handler does before the time limit
    states = slurm.wait(job, timeout=JOB_LIMIT_S, poll=0.5)
    assert states == {task: "COMPLETED"}
    starts, steps = progress(trial.run_dir)
    # the second run continued from the checkpointed counter: no step was counted twice
    assert len(starts) == 2 and starts[0] == 0 and starts[1] >= 2
    assert steps == sorted(set(steps)) and steps[-1] == 8
    assert json.loads((trial.run_dir / "result.json").read_text())["counter"] == 8
    out = (trial.run_dir / "slurm.out").read_text()
    assert f"job {task} restart 0" in out and f"job {task} restart 1" in out


@pytest.mark.slurm
def test_sigusr1_to_the_step_makes_the_trainer_requeue_and_resume_from_hpc_ckpt(slurm_cluster, tmp_path,  # noqa: F811
                                                                                monkeypatch):
    """The path of `--signal=SIGUSR1@90`: the signal reaches the srun step, the trainer saves
    hpc_ckpt_1.ckpt and requeues its task, the restarted task resumes from that checkpoint."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    (trial,) = plan(tmp_path, steps=8, sleep=0.05, hold=2)  # the first attempt waits after step 2
    job = slurm.submit(slurm.write_sbatch([trial], tmp_path / "job.sbatch", job_name="usr1", workdir=tmp_path))
    task = f"{job}_0"
    wait_for(lambda: (trial.run_dir / "progress.log").exists() and len(progress(trial.run_dir)[1]) >= 2,
             JOB_LIMIT_S, "two steps")
    # like the time-limit warning, sent to the job's steps, not to the batch shell
    subprocess.run(["scancel", "--signal=USR1", task], check=True)
    assert slurm.wait(job, timeout=JOB_LIMIT_S, poll=0.5) == {task: "COMPLETED"}
    starts, steps = progress(trial.run_dir)
    saved = json.loads((trial.run_dir / "hpc_ckpt_1.ckpt").read_text())["counter"]
    # resumed from the hpc checkpoint, or from a last.ckpt written after it before Slurm's SIGTERM
    assert len(starts) == 2 and starts[0] == 0 and starts[1] >= saved >= 2
    assert steps == sorted(set(steps)) and steps[-1] == 8
    assert f"job {task} restart 1" in (trial.run_dir / "slurm.out").read_text()


# ------------------------------------------------------------------------------------ real trials

REPO = Path(__file__).resolve().parents[1]
CPU_SWEEP = REPO / "sweeps" / "srcnn_filters_cpu.yaml"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.mark.slurm
def test_restorelab_slurm_runs_real_trials_as_an_array_and_reports(slurm_cluster, tmp_path, monkeypatch,  # noqa: F811
                                                                   capsys):
    """`restorelab slurm SWEEP --submit --wait` with two real `restorelab fit` trials (2 epochs of 3 steps)."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    monkeypatch.chdir(REPO)  # the job runs where it was submitted from: configs/ resolve
    real_wait = slurm.wait
    monkeypatch.setattr(slurm, "wait", lambda job: real_wait(job, timeout=REAL_JOB_LIMIT_S, poll=0.5))
    tiny = ["--trainer.max_epochs=2", "--data.init_args.batch_size=4", "--data.init_args.patches_per_epoch=12",
            "--data.init_args.train=[skimage:train]",
            *QUIET]
    rc = slurm.main([str(CPU_SWEEP), "--out", str(tmp_path), "--max-trials", "2", "--submit", "--wait", "--", *tiny])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    trials = sweep_plan.plan_trials(CPU_SWEEP, tmp_path, max_trials=2, extra_args=tiny)
    for trial in trials:
        run = trial.run_dir
        out = (run / "slurm.out").read_text()
        assert (run / "checkpoints" / "last.ckpt").is_file(), out[-3000:]
        rows = [r for r in csv.DictReader(open(run / "csv" / "metrics.csv")) if r.get("val/psnr_y")]
        assert [int(r["step"]) for r in rows] == [2, 5]
        assert "restart 0" in out
        # launched by srun inside the allocation, Lightning took the Slurm environment (no "not used" hint)
        assert "is available on your system but is not used" not in out
    assert "| filters=32/16 |" in printed and "| filters=64/32 |" in printed  # the report table at the end


def global_step(path: Path) -> int | None:
    """The global_step stored in a checkpoint; None while it is missing or still being written."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)["global_step"]
    except Exception:  # noqa: BLE001 - not there yet, or half written
        return None


@pytest.mark.slurm
def test_requeued_real_trial_resumes_at_its_checkpoint_step(slurm_cluster, tmp_path, monkeypatch):  # noqa: F811
    """A real trial (a tiny SRCNN, 30 steps of 4 patches) requeued after its step-10 checkpoint: the first attempt
    holds before step 11 until the requeue's SIGTERM (tests.slurm_cluster.HoldFirstAttempt), so the requeue always
    lands mid-run, on idle or loaded cores alike."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    steps, hold = 30, 10
    budget = [f"--trainer.max_steps={steps}", "--trainer.max_epochs=100", "--data.init_args.batch_size=4",
              "--data.init_args.patch_size=21", f"--data.init_args.patches_per_epoch={4 * steps}",
              "--data.init_args.train=[skimage:train]", "--trainer.log_every_n_steps=1",
              "--model.init_args.net.init_args.filters=[8, 4]", "--trainer.num_sanity_val_steps=0",
              f"--checkpoint_every_n_steps={hold}", "--test_after_fit=false",
              "--trainer.callbacks+=tests.slurm_cluster.HoldFirstAttempt", f"--trainer.callbacks.init_args.step={hold}",
              *QUIET]
    (trial,) = sweep_plan.plan_trials(CPU_SWEEP, tmp_path, max_trials=1, extra_args=budget)
    job = slurm.submit(slurm.write_sbatch([trial], tmp_path / "job.sbatch", job_name="real-requeue", workdir=REPO))
    task = f"{job}_0"
    last = trial.run_dir / "checkpoints" / "last.ckpt"
    wait_for(lambda: (trial.run_dir / "holding").exists() or slurm.job_states(job).get(task) not in ACTIVE,
             REAL_JOB_LIMIT_S, "the first attempt to reach its step-10 checkpoint")
    assert (trial.run_dir / "holding").exists(), (trial.run_dir / "slurm.out").read_text()[-3000:]
    before = global_step(last)
    assert before == hold
    slurm.requeue(task)  # as Lightning's SIGUSR1 handler does before the time limit
    assert slurm.wait(job, timeout=REAL_JOB_LIMIT_S, poll=0.5) == {task: "COMPLETED"}
    out = (trial.run_dir / "slurm.out").read_text()
    assert f"job {task} restart 1" in out, out[-3000:]
    second = out.split(f"job {task} restart 1", 1)[1]
    assert f"Restoring states from the checkpoint path at {last}" in second
    assert global_step(last) == steps
    # the second attempt (its own log dir, csv.1) logged only steps after the checkpoint:
    # global_step continued from `before` or later (a SIGTERM checkpoint), not from 0
    rows = csv.DictReader(open(trial.run_dir / "csv.1" / "metrics.csv"))
    logged = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert logged and min(logged) >= before - 1 and max(logged) == steps - 1


@pytest.mark.slurm
@pytest.mark.timeout(2400)  # the job and one validation, each limited below; ~45 s in all on 2 cores
def test_ddp_job_of_two_srun_ranks_matches_single_process_validation(slurm_cluster, tmp_path,  # noqa: F811
                                                                      monkeypatch, capsys):
    """`restorelab slurm --devices 2` (= `--ntasks-per-node=2`) with a one-trial sweep of DDP on CPU (gloo): the
    batch shell runs once, srun starts the two ranks, and each rank's Lightning takes SLURMEnvironment (ranks and
    world size from SLURM_PROCID / SLURM_NTASKS, MASTER_ADDR/PORT from the node list and the job id). The DDP job's
    last validation equals that of its last.ckpt validated in one process, as in tests/test_ddp.py."""
    node = slurm_cluster.run("scontrol", "-o", "show", "node", "localhost").stdout
    if int(re.search(r"CPUTot=(\d+)", node).group(1)) < 2:  # the node's CPUs are the machine's (slurmd -C)
        pytest.skip("two tasks of one CPU need a node of at least 2 CPUs")
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the job inherits it: two ranks on two cores
    monkeypatch.chdir(REPO)
    real_wait = slurm.wait
    monkeypatch.setattr(slurm, "wait", lambda job: real_wait(job, timeout=REAL_JOB_LIMIT_S, poll=0.5))
    assert DDP_COMMON[:2] == ["--config", "configs/srcnn.yaml"]  # the sweep's command has them first
    sweep = write_yaml(tmp_path / "ddp.yaml", """\
        name: ddp-slurm
        program: restorelab/cli.py
        method: grid
        parameters:
          trainer.max_steps: {value: 4}
          data.init_args.batch_size: {value: 8}
          data.init_args.patches_per_epoch: {value: 64}  # 32 per rank: one epoch of 4 steps
        command: ["${env}", "${interpreter}", -m, restorelab.cli, fit, --config, configs/srcnn.yaml, "${args}"]
        """)
    extra = [*DDP_COMMON[2:], "--trainer.devices=2", "--trainer.strategy=ddp",
             "--trainer.callbacks+=tests.slurm_cluster.RecordRank"]
    rc = slurm.main([str(sweep), "--out", str(tmp_path / "runs"), "--devices", "2", "--cpus-per-task", "1",
                     "--submit", "--wait", "--", *extra])
    printed = capsys.readouterr().out
    (trial,) = sweep_plan.plan_trials(sweep, tmp_path / "runs", extra_args=extra)
    run = trial.run_dir
    out = (run / "slurm.out").read_text() if (run / "slurm.out").exists() else ""
    assert rc == 0, printed + out[-4000:]
    assert "#SBATCH --ntasks-per-node=2" in (run.parent / "ddp-slurm.sbatch").read_text()
    assert out.count(" restart 0 on ") == 1  # the batch shell ran once; srun started the ranks

    ranks = [json.loads((run / "ranks" / f"{r}.json").read_text()) for r in (0, 1)]
    job_ids = {r["env"]["SLURM_JOB_ID"] for r in ranks}
    assert len(job_ids) == 1 and len({r["pid"] for r in ranks}) == 2
    for rank, record in enumerate(ranks):
        assert record["global_rank"] == rank and record["world_size"] == 2
        assert record["cluster_environment"] == "SLURMEnvironment" and record["backend"] == "gloo"
        assert record["env"]["SLURM_PROCID"] == str(rank) and record["env"]["SLURM_NTASKS"] == "2"
        # a task of an srun step (a number), not the batch step
        assert record["env"]["SLURM_STEP_ID"].isdigit()
        assert record["env"]["MASTER_ADDR"] == "localhost"
    ckpt = run / "checkpoints" / "last.ckpt"
    assert global_step(ckpt) == 4
    assert not list(run.glob("csv.*")) and len(list((run / "wandb").glob("offline-run-*"))) == 1  # rank 0 logs
    ddp_psnr, ddp_ssim = last_val(run), last_val(run, "val/ssim_y")

    run_cli(["validate", *DDP_COMMON, f"--runs_dir={tmp_path}", "--run_id=slurm-single", "--trainer.devices=1",
             f"--ckpt_path={ckpt}"])
    single = tmp_path / "srcnn" / "slurm-single"
    print(f"val/psnr_y DDP {ddp_psnr} single {last_val(single)}; val/ssim_y DDP {ddp_ssim} single "
          f"{last_val(single, 'val/ssim_y')}")
    assert abs(last_val(single) - ddp_psnr) <= 1e-4
    assert abs(last_val(single, "val/ssim_y") - ddp_ssim) <= 1e-6
