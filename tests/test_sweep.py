"""restorelab.sweep_plan and restorelab.sweep: the sweep YAML validated and expanded by W&B's own engine
(the `sweeps` package), trial commands built by W&B's own builder, and the local trial-by-trial runner with
bayes feedback and hyperband early termination (with fake trainers, so these stay fast)."""

import ast
import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from restorelab import sweep as sw, sweep_plan as plan
from restorelab.cli import main as cli_main

# A stand-in for `restorelab fit`: counts `--steps` steps, checkpointing the counter after each
# (atomically, as a real checkpoint write should be), resumes from `--ckpt_path`, fails on `--fail=True`,
# holds after step `--hold` in a Slurm task's first attempt, and on SIGUSR1 saves an hpc checkpoint and
# requeues its Slurm task, as Lightning does.
FAKE_TRAINER = '''
import argparse, json, os, signal, subprocess, sys, time
from pathlib import Path
p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=3)
p.add_argument("--fail", default="False")
p.add_argument("--sleep", type=float, default=0.0)
p.add_argument("--hold", type=int, default=0)
p.add_argument("--ckpt_path")
args, rest = p.parse_known_args()
run = Path(os.environ["RESTORELAB_RUN_DIR"])
ckpt = run / "checkpoints" / "last.ckpt"
counter = json.loads(Path(args.ckpt_path).read_text())["counter"] if args.ckpt_path else 0


def save_and_requeue(signum, frame):  # what Lightning's SLURMEnvironment does on SIGUSR1
    (run / "hpc_ckpt_1.ckpt").write_text(json.dumps({"counter": counter}))
    task = os.environ["SLURM_ARRAY_JOB_ID"] + "_" + os.environ["SLURM_ARRAY_TASK_ID"]
    subprocess.run(["scontrol", "requeue", task], check=True)


signal.signal(signal.SIGUSR1, save_and_requeue)
with open(run / "progress.log", "a") as log:
    log.write(f"start {counter}\\n")
    log.flush()
    while counter < args.steps:
        time.sleep(args.sleep)
        counter += 1
        ckpt.parent.mkdir(exist_ok=True)
        ckpt.with_suffix(".tmp").write_text(json.dumps({"counter": counter}))
        os.replace(ckpt.with_suffix(".tmp"), ckpt)
        log.write(f"step {counter}\\n")
        log.flush()
        # --hold N: the first attempt of a Slurm task waits after step N until it is requeued or signalled,
        # so a test can interrupt it mid-run however fast or slow the machine is
        while counter == args.hold and int(os.environ.get("SLURM_RESTART_COUNT") or 0) == 0:
            time.sleep(0.05)
if args.fail == "True":
    print("simulated failure", file=sys.stderr)
    sys.exit(1)
keys = ("RESTORELAB_RUN_ID", "RESTORELAB_EXPERIMENT", "WANDB_MODE", "SLURM_PROCID", "SLURM_NTASKS")
(run / "result.json").write_text(json.dumps(
    {"counter": counter, "argv": sys.argv[1:], "rest": rest, "env": {k: os.environ.get(k) for k in keys}}))
'''


def write_fake_trainer(directory: Path) -> Path:
    path = directory / "fake_trainer.py"
    path.write_text(FAKE_TRAINER)
    return path


def progress(run_dir: Path) -> tuple[list[int], list[int]]:
    """(start counters, step counters) from the fake trainer's log."""
    lines = [line.split() for line in (run_dir / "progress.log").read_text().splitlines()]
    return [int(n) for k, n in lines if k == "start"], [int(n) for k, n in lines if k == "step"]


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# ------------------------------------------------------------------------------------ validation

GOOD = """\
program: train.py
method: grid
metric: {name: val/psnr, goal: maximize}
parameters:
  lr: {values: [0.1, 0.01]}
command:
  - ${env}
  - ${interpreter}
  - ${program}
  - ${args}
"""


def test_load_sweep_accepts_a_valid_file_and_names_it_after_the_file(tmp_path):
    sweep = plan.load_sweep(write_yaml(tmp_path / "lr_ablation.yaml", GOOD))
    assert sweep["name"] == "lr_ablation"
    assert sweep["parameters"] == {"lr": {"values": [0.1, 0.01]}}


@pytest.mark.parametrize("replace, expected", [  # the messages are W&B's engine's, prefixed with file and key
    (("method: grid", "method: hyperband"), "method: 'hyperband' is not one of"),
    (("method: grid\n", ""), "'method' is a required property"),
    (("parameters:\n  lr: {values: [0.1, 0.01]}\n", "parameters: {}\n"), "parameters: {} should be non-empty"),
    (("{values: [0.1, 0.01]}", "0.1"), "parameters.lr: 0.1 is not valid under any of the given schemas"),
    (("{values: [0.1, 0.01]}", "{min: 0.5, max: 0.1}"), "lr: min 0.5 is not less than max 0.1"),
    (("{values: [0.1, 0.01]}", "{distribution: uniform, min: 1e-4, max: 1.0e-1}"),
     "parameters.lr: {'distribution': 'uniform', 'min': '1e-4', 'max': 0.1} is not valid under any of the given "
     "schemas ('1e-4': YAML reads 1e-4 as a string; write 1.0e-04)"),
    (("{values: [0.1, 0.01]}", "{distribution: betax, a: 1, b: 2}"), "parameters.lr: {'distribution': 'betax'"),
    (("{values: [0.1, 0.01]}", "{min: 0.0, max: 1.0}"), "Parameter lr is a disallowed type with grid search"),
    (("{values: [0.1, 0.01]}", "{valuez: [1]}"), "parameters.lr: {'valuez': [1]} is not valid"),
    (("{values: [0.1, 0.01]}", "{distribution: log_uniform, min: 0, max: 1}"), "lr uses log_uniform"),
    (("lr: {values: [0.1, 0.01]}", "lr: {values: [0.1, 0.01]}\n  opt: {parameters: {a: {value: 1}}}"),
     "parameters.opt: nested parameters are dropped by W&B's local engine"),
    (("- ${args}", "- ${arg}"), "command: unknown macro ${arg}"),
    (("program: train.py\n", ""), "program: required"),
    (("program: train.py\n", "program: train.py\nparamters: {}\n"), "('paramters' was unexpected)"),
    (("method: grid", "method: bayes"), None),  # valid: bayes with a metric
    (("method: grid\nmetric: {name: val/psnr, goal: maximize}", "method: bayes"),
     'Bayesian search requires "metric" section'),
    (("goal: maximize", "goal: up"), "metric.goal: 'up' is not one of ['minimize', 'maximize']"),
    (("lr: {values", "lr: {probabilities: [0.5, 0.5], values"), "Parameter lr is a disallowed type with grid"),
    (("lr: {values", "lr: {probabilities: [0.5, 0.6], values"), "Parameter lr: Probabilities [0.5, 0.6] do not sum"),
    (("method: grid", "method: random\nrun_cap: 0"), "run_cap: must be a positive integer, got 0"),
    (("method: grid", "method: random\nrun_cap: 3"), None),  # W&B's server key, unknown to the engine's schema
    (("method: grid", "method: grid\nearly_terminate: {type: hyperband, min_iter: 0}"),
     "early_terminate.min_iter: 0 is less than the minimum of 1"),
    (("method: grid", "method: grid\nearly_terminate: {type: hyperband, max_iter: 2, s: 2}"),
     "Bands must be an array of length at least 1"),
    (("command:\n  - ${env}\n  - ${interpreter}\n  - ${program}\n  - ${args}", "command: ${args}"),
     "command: '${args}' is not of type 'array'"),
])
def test_load_sweep_rejects_bad_files_naming_file_and_key(tmp_path, replace, expected):
    text = GOOD.replace(*replace)
    assert text != GOOD
    path = write_yaml(tmp_path / "bad.yaml", text)
    if expected is None:
        plan.load_sweep(path)
        return
    with pytest.raises(plan.SweepConfigError) as err:
        plan.load_sweep(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message


def test_load_sweep_reports_unparseable_yaml_in_one_line(tmp_path):
    path = write_yaml(tmp_path / "broken.yaml", "method: [grid\nparameters: {")
    with pytest.raises(plan.SweepConfigError, match=r"broken.yaml: not valid YAML: line \d+, column \d+: ") as err:
        plan.load_sweep(path)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------ expansion (W&B's engine)


def grid(parameters: dict, **top) -> dict:
    return {"name": "g", "method": "grid", "program": "t.py", "parameters": parameters, **top}


def test_grid_is_the_exact_cartesian_product_in_wandb_order():
    # W&B's grid sorts the parameter names and iterates itertools.product over them (last fastest);
    # int_uniform is min..max inclusive, q_uniform is arange(min, max, q) (max excluded), value is fixed
    trials = plan.expand(grid({
        "b": {"values": ["x", "y"]},
        "a": {"values": [1, 2]},
        "c": {"value": 7},
        "d": {"distribution": "int_uniform", "min": 1, "max": 2},
    }))
    assert trials == [
        {"a": 1, "b": "x", "c": 7, "d": 1}, {"a": 1, "b": "x", "c": 7, "d": 2},
        {"a": 1, "b": "y", "c": 7, "d": 1}, {"a": 1, "b": "y", "c": 7, "d": 2},
        {"a": 2, "b": "x", "c": 7, "d": 1}, {"a": 2, "b": "x", "c": 7, "d": 2},
        {"a": 2, "b": "y", "c": 7, "d": 1}, {"a": 2, "b": "y", "c": 7, "d": 2},
    ]
    assert [list(t) for t in trials] == [["a", "b", "c", "d"]] * 8
    q = plan.expand(grid({"w": {"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25}}))
    assert q == [{"w": 0.0}, {"w": 0.25}, {"w": 0.5}, {"w": 0.75}]
    assert plan.expand(grid({"a": {"values": [1, 2, 3]}}), max_trials=2) == [{"a": 1}, {"a": 2}]
    assert plan.expand(grid({"a": {"values": [1, 2, 3]}}, run_cap=1)) == [{"a": 1}]
    many = plan.expand(grid({"a": {"distribution": "int_uniform", "min": 1, "max": 100}}))
    assert [t["a"] for t in many] == list(range(1, 101))  # asked for in batches, the whole grid once


DEPTH = "model.init_args.net.init_args"
# What the hand-written expansion this engine replaced gave for every shipped sweep (trials in order, and their
# ids: the run dirs of trials run before the change are found again)
PREVIOUS_GRIDS = {
    "srcnn_channels": ([{"config": "{data: {init_args: {channels: y}}, model: {init_args: {net: {init_args: "
                                   "{channels: 1}}}}}"},
                        {"config": "{data: {init_args: {channels: rgb}}, model: {init_args: {net: {init_args: "
                                   "{channels: 3}}}}}"}], ["47eb6166", "f902aa9d"]),
    "srcnn_depth": ([{DEPTH: {"kernel_sizes": k, "filters": f}} for k, f in (
        ([9, 1, 5], [64, 32]), ([9, 1, 1, 5], [64, 32, 16]), ([9, 1, 1, 1, 5], [64, 32, 32, 16]),
        ([9, 3, 5], [64, 32]), ([9, 3, 3, 5], [64, 32, 16]))],
        ["f338fd9c", "3088b379", "5707442a", "5ad93147", "d9d80c9d"]),
    "srcnn_filter_sizes": ([{f"{DEPTH}.kernel_sizes": k} for k in ([9, 1, 5], [9, 3, 5], [9, 5, 5])],
                           ["fa370c9a", "5bf6b013", "f59e2154"]),
    "srcnn_filters": ([{f"{DEPTH}.filters": f, f"{DEPTH}.kernel_sizes": [9, 1, 5]}
                       for f in ([32, 16], [64, 32], [128, 64])], ["b5751094", "5cbd522c", "87faed4c"]),
    "srcnn_train_set": ([{"data.init_args.train": t} for t in (["benchmark:T91"], ["benchmark:T91", "skimage:train"])],
                        ["fd4a5ffa", "503c37b8"]),
}
# the CPU-budget sweeps vary what their paper-scale sweeps vary (the budget is a config in their command)
PREVIOUS_GRIDS.update({f"{name}_cpu": PREVIOUS_GRIDS[name] for name in
                       ("srcnn_channels", "srcnn_depth", "srcnn_filter_sizes", "srcnn_filters", "srcnn_train_set")})
SHIPPED = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_engine_expansion_of_every_shipped_sweep_gives_the_previous_trials(path):
    params, ids = PREVIOUS_GRIDS[path.stem]
    trials = plan.expand(plan.load_sweep(path))
    assert trials == params and [list(t) for t in trials] == [sorted(t) for t in params]  # same order, keys sorted
    assert [plan.trial_id(t) for t in trials] == ids


def test_every_shipped_sweep_has_its_previous_expansion():
    assert sorted(PREVIOUS_GRIDS) == [p.stem for p in SHIPPED]


RANDOM = {
    "name": "r", "method": "random", "program": "t.py", "run_cap": 300,
    "parameters": {
        "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1},
        "width": {"distribution": "int_uniform", "min": 16, "max": 64},
        "dropout": {"min": 0.0, "max": 0.5},
        "wd": {"distribution": "q_uniform", "min": 0, "max": 10, "q": 2},
        "act": {"values": ["relu", "prelu"]},
        "depth": {"value": 20},
        "mom": {"distribution": "normal", "mu": 0.9, "sigma": 0.01},
    },
}


def check_within(t: dict) -> None:
    assert 1e-4 <= t["lr"] <= 1e-1 and type(t["lr"]) is float  # plain Python values, as the agent gets them
    assert type(t["width"]) is int and 16 <= t["width"] <= 64
    assert 0.0 <= t["dropout"] <= 0.5
    assert type(t["wd"]) is int and t["wd"] % 2 == 0 and 0 <= t["wd"] <= 10
    assert t["act"] in ("relu", "prelu") and t["depth"] == 20
    assert 0.8 < t["mom"] < 1.0


def test_random_expansion_is_seeded_within_bounds_and_log_uniform_in_log_space():
    import random

    import numpy as np

    before = random.random(), np.random.rand()
    trials = plan.expand(RANDOM, seed=0)
    assert trials == plan.expand(RANDOM, seed=0)
    assert trials != plan.expand(RANDOM, seed=1)
    assert len(trials) == 300 and len(plan.expand(RANDOM, max_trials=5)) == 5
    for t in trials:
        check_within(t)
    # log-uniform over 3 decades: about a third of the draws in each decade (uniform would put 1% below 1e-3)
    below = sum(t["lr"] < 1e-3 for t in trials) / len(trials)
    assert 0.25 < below < 0.42
    assert {16, 64} <= {t["width"] for t in trials}  # int_uniform includes both ends
    assert (random.random(), np.random.rand()) != before  # the caller's generators were not reseeded
    json.dumps(trials)  # params.json takes them


def test_random_and_bayes_need_a_cap_and_give_distinct_trials():
    endless = {k: v for k, v in RANDOM.items() if k != "run_cap"}
    with pytest.raises(plan.SweepConfigError, match="endless"):
        plan.expand(endless)
    tiny = {**RANDOM, "parameters": {"act": {"values": ["relu", "prelu"]}}, "run_cap": 10}
    assert sorted(t["act"] for t in plan.expand(tiny)) == ["prelu", "relu"]  # only 2 distinct trials exist


def finished(params: dict, psnr: float):
    return plan.engine_run(plan.trial_id(params), params, "val/psnr", [psnr - 1, psnr], "ok")


def test_bayes_proposes_valid_trials_deterministically():
    bayes = {**RANDOM, "method": "bayes", "metric": {"name": "val/psnr", "goal": "maximize"}, "run_cap": 3}
    first = plan.expand(bayes, seed=3)
    assert len(first) == 3 and first == plan.expand(bayes, seed=3)
    for t in first:
        check_within(t)
    prior = [finished(first[0], 30.0), finished(first[1], 20.0)]
    (proposal,) = plan.expand(bayes, max_trials=1, seed=3, prior=prior)
    check_within(proposal)
    assert proposal not in first[:2] and plan.expand(bayes, max_trials=1, seed=3, prior=prior) == [proposal]


def test_bayes_models_the_metric_history_of_the_finished_trials():
    one_d = {"name": "b", "method": "bayes", "metric": {"name": "val/psnr", "goal": "maximize"}, "run_cap": 9,
             "parameters": {"x": {"min": 0.0, "max": 1.0}}}

    def proposal(psnr_at: dict) -> float:
        prior = [finished({"x": x}, psnr) for x, psnr in psnr_at.items()]
        (trial,) = plan.expand(one_d, max_trials=1, seed=0, prior=prior)
        return trial["x"]

    # the finished trials' logged values reach the engine: it proposes near the best one
    assert proposal({0.1: 30.0, 0.5: 25.0, 0.9: 20.0}) < 0.3
    assert proposal({0.1: 20.0, 0.5: 25.0, 0.9: 30.0}) > 0.7


def test_trial_id_is_stable_short_and_depends_on_params_and_extra_args():
    a = plan.trial_id({"lr": 0.1, "n1": 64})
    assert a == plan.trial_id({"n1": 64, "lr": 0.1}) and len(a) == 8
    assert a != plan.trial_id({"lr": 0.1, "n1": 32})
    assert a != plan.trial_id({"lr": 0.1, "n1": 64}, ["--trainer.max_epochs=1"])


# ------------------------------------------------------------------------------------ commands (W&B's builder)


PARAMS = {"flag": True, "lr": 0.001, "model.init_args.n1": 64, "name": "x y", "off": False}


def test_macros_expand_as_wandb_agent_does(monkeypatch):
    sweep = {"program": "train.py", "command": [
        "${env}", "${interpreter}", "${program}", "--config", "c.yaml", "${args}", "|", "${args_no_hyphens}",
        "|", "${args_no_boolean_flags}", "|", "${args_json}", "|", "--x=${program}", "${envvar:RL_TEST}/a"]}
    monkeypatch.setenv("RL_TEST", "/data")
    argv = plan.render_command(sweep, PARAMS)
    assert argv == [
        "/usr/bin/env", "python", "train.py", "--config", "c.yaml",
        "--flag=True", "--lr=0.001", "--model.init_args.n1=64", "--name=x y", "--off=False", "|",
        "flag=True", "lr=0.001", "model.init_args.n1=64", "name=x y", "off=False", "|",
        "--flag", "--lr=0.001", "--model.init_args.n1=64", "--name=x y", "|",
        '{"flag": true, "lr": 0.001, "model.init_args.n1": 64, "name": "x y", "off": false}', "|",
        "--x=${program}", "/data/a",  # only whole tokens are macros
    ]
    assert sweep["command"][-1] == "${envvar:RL_TEST}/a"  # W&B's builder edits its list: ours is a copy
    local = plan.render_command({"program": "train.py"}, {"lr": 0.1}, interpreter="/venv/bin/python", env=None)
    assert local == ["/venv/bin/python", "train.py", "--lr=0.1"]  # W&B's default command, ${env} dropped
    monkeypatch.delenv("RL_TEST")
    assert plan.render_command({"command": ["${envvar:RL_TEST}"]}, {}) == ["RL_TEST"]  # W&B: unset -> its name
    assert plan.render_command({"command": ["run", "${args_json_file}"]}, {}, args_json_file="/r/p.json") == \
        ["run", "/r/p.json"]
    with pytest.raises(plan.SweepConfigError, match="args_json_file"):
        plan.render_command({"command": ["run", "${args_json_file}"]}, {})


def test_shipped_sweep_commands_are_what_the_previous_builder_gave():
    sweep = plan.load_sweep(SHIPPED[[p.stem for p in SHIPPED].index("srcnn_filters_cpu")])
    assert plan.render_command(sweep, plan.expand(sweep)[0]) == [
        "/usr/bin/env", "python", "-m", "restorelab.cli", "fit", "--config", "configs/srcnn_paper.yaml",
        "--config", "configs/experiment/srcnn_ablation_cpu.yaml",
        "--model.init_args.net.init_args.filters=[32, 16]", "--model.init_args.net.init_args.kernel_sizes=[9, 1, 5]"]
    (trial, *_) = plan.plan_trials(sweep, "/runs")
    assert trial.command[0] == sw.sys.executable and trial.run_dir == Path("/runs/srcnn_filters_cpu/b5751094")


def test_planning_runner_slurm_and_report_import_in_one_direction():
    """No import cycle among restorelab's modules, and planning imports none of the modules that use it."""
    package = Path(plan.__file__).parent
    imports = {}
    for path in package.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "restorelab":
                names |= {f"restorelab.{a.name}" for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("restorelab."):
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names |= {a.name for a in node.names if a.name.startswith("restorelab.")}
        imports[f"restorelab.{path.stem}"] = names & {f"restorelab.{p.stem}" for p in package.glob("*.py")}

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, {*seen, n})) for n in imports[start])

    assert not [m for m in imports if reaches(m, m)]
    assert not imports["restorelab.sweep_plan"] & {"restorelab.sweep", "restorelab.slurm", "restorelab.report"}
    assert imports["restorelab.report"] & {"restorelab.sweep", "restorelab.slurm"} == set()
    assert "restorelab.sweep" not in imports["restorelab.slurm"]


# ------------------------------------------------------------------------------------ local runner


def two_trial_sweep(tmp_path: Path) -> Path:
    trainer = write_fake_trainer(tmp_path)
    return write_yaml(tmp_path / "fail_ablation.yaml", f"""\
        program: {trainer}
        method: grid
        metric: {{name: val/psnr, goal: maximize}}
        parameters:
          steps: {{value: 2}}
          fail: {{values: [false, true]}}
        command: ["${{env}}", "${{interpreter}}", "${{program}}", --config, base.yaml, "${{args}}"]
        """)


def test_run_local_records_a_failure_goes_on_and_a_rerun_skips_completed_trials(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    path, out = two_trial_sweep(tmp_path), tmp_path / "runs"
    results = sw.run_local(path, out)

    ok, failed = results  # grid order: fail=False first
    assert (ok.status, ok.returncode, failed.status, failed.returncode) == ("ok", 0, "failed", 1)
    assert "simulated failure" in failed.stderr_tail
    assert ok.params == {"fail": False, "steps": 2} and failed.params == {"fail": True, "steps": 2}
    for r in results:
        assert Path(r.run_dir) == out / "fail_ablation" / plan.trial_id(r.params)
    done = json.loads((Path(ok.run_dir) / "result.json").read_text())
    assert done["counter"] == 2 and done["argv"][:2] == ["--config", "base.yaml"]
    assert done["argv"][2:] == ["--fail=False", "--steps=2"]
    assert done["env"]["RESTORELAB_RUN_ID"] == ok.trial_id
    assert done["env"]["RESTORELAB_EXPERIMENT"] == "fail_ablation"
    assert done["env"]["WANDB_MODE"] == "offline"
    assert json.loads((Path(ok.run_dir) / "params.json").read_text()) == ok.params
    summary = json.loads((out / "fail_ablation" / "summary.json").read_text())
    assert {k: v["status"] for k, v in summary.items()} == {ok.trial_id: "ok", failed.trial_id: "failed"}
    assert len((out / "fail_ablation" / "trials.jsonl").read_text().splitlines()) == 2

    again = sw.run_local(path, out)
    assert [(r.trial_id, r.status, r.skipped) for r in again] == [
        (ok.trial_id, "ok", True), (failed.trial_id, "failed", False)]
    assert progress(Path(ok.run_dir)) == ([0], [1, 2])  # not run again
    # the failed trial ran again, resuming from its checkpoint instead of restarting at 0
    assert progress(Path(failed.run_dir)) == ([0, 2], [1, 2])
    assert again[1].command[-2:] == ["--ckpt_path", str(Path(failed.run_dir) / "checkpoints" / "last.ckpt")]
    assert len((out / "fail_ablation" / "trials.jsonl").read_text().splitlines()) == 3


# A stand-in for `restorelab fit` that logs a validation curve as Lightning's CSVLogger does (csv/metrics.csv,
# written as each value is logged): `--rows` values of `--psnr` (or of 30 - 10 (x - 0.8)^2 for `--x`); then,
# below `--hold_below` dB, it waits (up to a minute) for the SIGTERM of an early termination, noting it.
METRIC_TRAINER = '''
import argparse, csv, os, signal, sys, time
from pathlib import Path
p = argparse.ArgumentParser()
p.add_argument("--psnr", type=float)
p.add_argument("--x", type=float)
p.add_argument("--rows", type=int, default=3)
p.add_argument("--hold_below", type=float, default=0.0)
args, _ = p.parse_known_args()
run = Path(os.environ["RESTORELAB_RUN_DIR"])


def stopped(signum, frame):
    (run / "sigterm").write_text("")
    sys.exit(143)


signal.signal(signal.SIGTERM, stopped)
value = args.psnr if args.x is None else 30 - 10 * (args.x - 0.8) ** 2
(run / "csv").mkdir(exist_ok=True)
with open(run / "csv" / "metrics.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["epoch", "step", "val/psnr"])
    for i in range(args.rows):
        writer.writerow([i, 10 * i + 9, value])
        f.flush()
deadline = time.monotonic() + 60
while value < args.hold_below and time.monotonic() < deadline:
    time.sleep(0.02)
'''


def metric_sweep(tmp_path: Path, body: str) -> Path:
    trainer = tmp_path / "metric_trainer.py"
    trainer.write_text(METRIC_TRAINER)
    return write_yaml(tmp_path / "metric_sweep.yaml", f"program: {trainer}\n"
                      "metric: {name: val/psnr, goal: maximize}\n" + textwrap.dedent(body))


def test_hyperband_early_termination_stops_a_running_trial_that_trails_the_finished_ones(tmp_path):
    path = metric_sweep(tmp_path, """\
        method: grid
        early_terminate: {type: hyperband, min_iter: 1, eta: 3}
        parameters:
          psnr: {values: [30.0, 20.0, 31.0]}
          hold_below: {value: 25.0}
        """)
    results = sw.run_local(path, tmp_path / "runs", poll_s=0.05)
    # W&B's hyperband (sweeps.stop_runs) at band 1: the running trial's values against the finished ones'
    assert [(r.params["psnr"], r.status) for r in results] == [(30.0, "ok"), (20.0, "stopped"), (31.0, "ok")]
    assert (Path(results[1].run_dir) / "sigterm").exists()  # SIGTERM, as W&B's agent stops a run
    again = sw.run_local(path, tmp_path / "runs", poll_s=0.05)
    assert [r.skipped for r in again] == [True] * 3  # a stopped trial is done, as in W&B
    assert json.loads((tmp_path / "runs" / "metric_sweep" / "summary.json").read_text())[
        results[1].trial_id]["status"] == "stopped"


def test_bayes_runs_trial_by_trial_each_proposed_from_the_finished_ones(tmp_path):
    from restorelab import report

    path = metric_sweep(tmp_path, """\
        method: bayes
        run_cap: 4
        parameters:
          x: {min: 0.0, max: 1.0}
          rows: {value: 2}
        """)
    sweep, out = plan.load_sweep(path), tmp_path / "runs"
    results = sw.run_local(path, out)
    assert [r.status for r in results] == ["ok"] * 4 and len({r.trial_id for r in results}) == 4

    def engine_view(r):
        values = [v for _, v in report.read_run_curve(Path(r.run_dir), "val/psnr")[0]]
        assert len(values) == 2
        return plan.engine_run(r.trial_id, r.params, "val/psnr", values, "ok")

    prior = [engine_view(r) for r in results]
    for k, r in enumerate(results):  # what the engine proposes from the trials before it, with their metric
        assert plan.expand(sweep, max_trials=1, prior=prior[:k]) == [r.params]
    # a rerun with a higher cap replays the four (done: skipped) and asks the engine for a fifth
    path.write_text(path.read_text().replace("run_cap: 4", "run_cap: 5"))
    again = sw.run_local(path, out)
    assert [r.skipped for r in again] == [True] * 4 + [False]
    assert again[4].params == plan.expand(plan.load_sweep(path), max_trials=1, prior=prior)[0]


def test_resume_checkpoint_picks_the_newest_of_last_and_hpc(tmp_path):
    import os

    assert sw.resume_checkpoint(tmp_path) is None
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_text("x")
    assert sw.resume_checkpoint(tmp_path) == last
    hpc = tmp_path / "hpc_ckpt_1.ckpt"
    hpc.write_text("x")
    os.utime(last, (1e9, 1e9))
    assert sw.resume_checkpoint(tmp_path) == hpc  # written by Lightning at SIGUSR1, after the last epoch
    os.utime(hpc, (1e8, 1e8))
    assert sw.resume_checkpoint(tmp_path) == last


def test_cli_local_passes_extra_args_and_reports_failure(tmp_path, monkeypatch):
    path = two_trial_sweep(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert sw.main(["local", str(path), "--out", "cli_runs", "--max-trials", "1", "--", "--steps=3"]) == 0
    (run_dir,) = [d for d in (tmp_path / "cli_runs" / "fail_ablation").iterdir() if d.is_dir()]
    assert json.loads((run_dir / "result.json").read_text())["counter"] == 3  # extra args come last and win
    assert sw.main(["local", str(path), "--out", "cli_runs"]) == 1  # the fail=True trial fails


# ------------------------------------------------------------------------------------ W&B online


def test_wandb_commands_are_built_for_the_cli_and_the_sweep_id_is_parsed(tmp_path):
    # No W&B server here: only the command construction and the output parsing are tested.
    exe = sw.sys.executable
    assert sw.wandb_sweep_command("sweeps/a.yaml", "restorelab", "lab") == \
        [exe, "-m", "wandb", "sweep", "--project", "restorelab", "--entity", "lab", "sweeps/a.yaml"]
    assert sw.wandb_sweep_command("a.yaml", "p") == [exe, "-m", "wandb", "sweep", "--project", "p", "a.yaml"]
    assert sw.wandb_agent_command("abc123", "p", "lab", count=4) == \
        [exe, "-m", "wandb", "agent", "--project", "p", "--entity", "lab", "--count", "4", "abc123"]
    log = ("wandb: Creating sweep from: a.yaml\n"
           "wandb: Creating sweep with ID: \x1b[33mq8x2k1zd\x1b[0m\n"
           "wandb: Run sweep agent with: \x1b[33mwandb agent lab/p/q8x2k1zd\x1b[0m\n")
    assert sw.parse_sweep_id(log.replace("Creating sweep with", "Created sweep with")) == "q8x2k1zd"
    with pytest.raises(RuntimeError, match="no sweep id"):
        sw.parse_sweep_id("wandb: ERROR No API key configured")


def test_run_mode_is_local_without_a_key_and_ends_with_the_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sw, "wandb_key_available", lambda: False)
    path = two_trial_sweep(tmp_path)
    assert sw.main(["run", str(path), "--out", str(tmp_path / "runs")]) == 1  # the fail=True trial
    printed = capsys.readouterr()
    assert "### fail_ablation" in printed.out and "| fail=False |" in printed.out and "| fail=True |" in printed.out
    assert "simulated failure" in printed.err  # a failed trial's error is shown as the sweep goes on
    sweep_dir = tmp_path / "runs" / "fail_ablation"
    assert json.loads((sweep_dir / "sweep.json").read_text())["metric"]["name"] == "val/psnr"
    assert (sweep_dir / "fail_ablation.md").is_file() and (sweep_dir / "fail_ablation.png").is_file()


def test_run_mode_with_a_key_registers_the_sweep_runs_an_agent_and_reports_from_wandb(tmp_path, monkeypatch):
    import types

    path = two_trial_sweep(tmp_path)
    calls = {}

    def fake_run_wandb(*args):  # no W&B server here
        calls["run_wandb"] = args
        return "swp123"

    def fake_report(argv):
        calls["report"] = argv
        return 0

    import wandb

    from restorelab import report

    monkeypatch.setattr(sw, "wandb_key_available", lambda: True)
    monkeypatch.setattr(sw, "run_wandb", fake_run_wandb)
    monkeypatch.setattr(wandb, "Api", lambda: types.SimpleNamespace(default_entity="lab"))
    monkeypatch.setattr(report, "main", fake_report)
    assert sw.main(["run", str(path), "--project", "p", "--count", "2", "--out", str(tmp_path / "r")]) == 0
    assert calls["run_wandb"] == (str(path), "p", None, 2)
    assert calls["report"] == ["--wandb-sweep", "lab/p/swp123", "--out", str(tmp_path / "r" / "reports")]
    with pytest.raises(SystemExit):  # trial args after `--` cannot reach W&B's agent
        sw.main(["run", str(path), "--", "--steps=3"])
    calls.clear()
    assert sw.main(["run", str(path), "--offline", "--out", str(tmp_path / "r")]) == 1  # forced local
    assert not calls


def test_agent_finds_this_interpreter_as_python():
    first = sw.agent_env()["PATH"].split(sw.os.pathsep)[0]
    assert Path(first) == Path(sw.sys.executable).parent


# ------------------------------------------------------------------------------------ checked against the CLI

REPO = Path(__file__).resolve().parents[1]
RESTORELAB = Path(__import__("sys").executable).with_name("restorelab")
FIT = '["${env}", "${interpreter}", -m, restorelab.cli, fit, --config, configs/srcnn.yaml, "${args}"]'


def run_restorelab(*args: str, cwd: Path = REPO):
    import subprocess

    return subprocess.run([str(RESTORELAB), *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def one_line_error(result) -> str:
    """The last stderr line of a command that failed as `restorelab` reports anticipated errors."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("restorelab: error: "), result.stderr[-3000:]
    return last


BAD_PARAMETERS = {  # parameter lines -> what the one line must name
    "unknown option": ("model.init_args.net.init_args.filterz: {values: [[32, 16]]}",
                       ["model.init_args.net.init_args.filterz=[32, 16]", "filterz"]),
    "unknown group": ("trainer.max_epochz: {value: 2}", ["trainer.max_epochz=2"]),
    "value does not parse": ("trainer.max_epochs: {values: [2, many]}", ["trainer.max_epochs=many", "int"]),
    "impossible net size": ("model.init_args.net.init_args.filters: {values: [[32, 16], [0, 4]]}",
                            ["model.init_args.net.init_args.filters=[0, 4]", ">= 1"]),
}


def bad_parameter_sweep(tmp_path: Path, case: str) -> Path:
    return write_yaml(tmp_path / "bad.yaml", f"""\
        program: restorelab/cli.py
        method: grid
        parameters:
          {BAD_PARAMETERS[case][0]}
        command: {FIT}
        """)


@pytest.mark.parametrize("case", BAD_PARAMETERS)
@pytest.mark.parametrize("tool", ["sweep run", "slurm"])
def test_bad_parameters_are_rejected_before_any_trial_starts(tmp_path, case, tool, capfd):
    """One line naming the sweep file and the parameter, exit 2, no traceback, and no trial run (no run dir). In
    this process, as `restorelab` runs it (the command's own process is the next test's)."""
    path = bad_parameter_sweep(tmp_path, case)
    with pytest.raises(SystemExit) as exited:
        cli_main([*tool.split(), str(path), "--out", str(tmp_path / "runs")])
    err = capfd.readouterr().err
    last = one_line_error(SimpleNamespace(returncode=exited.value.code, stderr=err))
    assert str(path) in last and all(word in last for word in BAD_PARAMETERS[case][1]), last
    assert not (tmp_path / "runs").exists()  # nothing planned on disk, nothing ran


@pytest.mark.parametrize("tool, case", [("sweep run", "impossible net size"), ("slurm", "unknown option")])
def test_bad_parameters_are_one_line_from_the_installed_command(tmp_path, tool, case):
    """The same through the installed `restorelab` script in a process of its own (one case per tool: each
    process pays the Lightning import, about 8 s)."""
    path = bad_parameter_sweep(tmp_path, case)
    last = one_line_error(run_restorelab(*tool.split(), str(path), "--out", str(tmp_path / "runs")))
    assert str(path) in last and all(word in last for word in BAD_PARAMETERS[case][1]), last
    assert not (tmp_path / "runs").exists()


def test_bad_extra_trial_arguments_are_named(tmp_path):
    path = write_yaml(tmp_path / "ok.yaml", f"""\
        program: restorelab/cli.py
        method: grid
        parameters:
          trainer.max_epochs: {{value: 1}}
        command: {FIT}
        """)
    with pytest.raises(plan.SweepConfigError, match=r"ok.yaml: the extra trial arguments --trainer.max_stepz=3"):
        plan.check_trials(plan.load_sweep(path), plan.plan_trials(path, tmp_path, extra_args=["--trainer.max_stepz=3"]),
                        path, cwd=REPO)


def test_every_bundled_sweep_passes_the_cli_check(tmp_path):
    for path in sorted((REPO / "sweeps").glob("*.yaml")):
        sweep = plan.load_sweep(path)
        plan.check_trials(sweep, plan.plan_trials(sweep, tmp_path), path, cwd=REPO)


def test_trials_of_another_program_are_not_checked(tmp_path):
    assert plan.cli_args(["python", "-m", "restorelab.cli", "fit", "--x=1"]) == ["fit", "--x=1"]
    assert plan.cli_args(["/venv/bin/restorelab", "fit"]) == ["fit"]
    assert plan.cli_args(["python", "restorelab/cli.py", "fit"]) == ["fit"]
    assert plan.cli_args(["python", str(tmp_path / "fake_trainer.py"), "--steps=1"]) is None


@pytest.mark.parametrize("tool", ["sweep run", "slurm", "report"])
def test_malformed_sweep_yaml_is_one_line_naming_the_file(tmp_path, tool):
    path = write_yaml(tmp_path / "broken.yaml", "method: [grid\nparameters: {")
    last = one_line_error(run_restorelab(*tool.split(), str(path), *([] if tool == "report" else
                                                                       ["--out", str(tmp_path / "runs")])))
    assert f"{path}: not valid YAML: line " in last, last
