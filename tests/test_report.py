"""restorelab.report on hand-made run directories: curves read from Lightning's CSV, paper-style table
(final, best, baseline, gain), labels naming only what changed, the figure, the command line, and the W&B
report's content (built offline with wandb-workspaces; nothing is sent).
(tests/test_sweeps_real.py reports on run dirs written by real training.)"""

import csv
import json
from pathlib import Path

import matplotlib.image
import pytest
import yaml

from datamodules.errors import AnticipatedError
from restorelab import report
from restorelab.sweep_plan import SweepConfigError

FILTERS = "model.init_args.net.init_args.filters"
HEADER = ["epoch", "step", "train/loss", "val/baseline_psnr_y", "val/psnr_y", "test/psnr_y"]


def write_run(sweep_dir: Path, trial: str, params: dict, val: list[tuple[int, float]], baseline=27.5,
              scale=3, train_rows=True) -> Path:
    """A run dir as a trial leaves it: params.json, csv/metrics.csv (train rows between validation
    rows, validation logged at the last batch's index), csv/config.yaml."""
    run = sweep_dir / trial
    (run / "csv").mkdir(parents=True)
    (run / "params.json").write_text(json.dumps(params))
    rows = []
    for step, psnr in val:
        if train_rows:
            rows.append({"epoch": 0, "step": step - 5, "train/loss": 0.01})
        rows.append({"epoch": 0, "step": step - 1, "val/psnr_y": psnr, "val/baseline_psnr_y": baseline})
    rows.append({"epoch": 1, "step": val[-1][0] if val else 0, "test/psnr_y": 30.0})
    with open(run / "csv" / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows)
    config = {"data": {"init_args": {"scale": scale, "val": ["benchmark:Set5"], "train": ["benchmark:T91"]}}}
    (run / "csv" / "config.yaml").write_text(yaml.safe_dump(config))
    return run


@pytest.fixture
def filters_sweep(tmp_path) -> Path:
    sweep = tmp_path / "runs" / "srcnn_filters"
    write_run(sweep, "bbb", {FILTERS: [64, 32], "trainer.max_steps": 30}, [(10, 28.0), (20, 29.5), (30, 29.25)])
    write_run(sweep, "aaa", {FILTERS: [32, 16], "trainer.max_steps": 30}, [(10, 27.0), (20, 28.0), (30, 28.5)])
    (sweep / "ccc").mkdir()  # a trial that failed before logging anything
    (sweep / "ccc" / "params.json").write_text(json.dumps({FILTERS: [128, 64], "trainer.max_steps": 30}))
    # the local runner's grid order and outcomes
    summary = {t: {"status": s} for t, s in (("aaa", "ok"), ("bbb", "ok"), ("ccc", "failed"))}
    (sweep / "summary.json").write_text(json.dumps(summary))
    (sweep / "sweep.json").write_text(json.dumps({"name": "srcnn_filters", "metric": {"name": "val/psnr_y"}}))
    return sweep


def test_curves_count_training_steps_and_keep_the_later_row_of_a_repeated_step(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,val/psnr_y,val/baseline_psnr_y,train/loss\n"
                    "0,9,,,0.1\n0,24,25.0,27.0,\n1,49,26.0,27.0,\n1,49,26.5,27.0,\n2,74,,,0.05\n")
    assert report.read_curve(path, "val/psnr_y") == ([(25, 25.0), (50, 26.5)], 27.0)
    assert report.baseline_key("val/psnr_y") == "val/baseline_psnr_y"
    assert report.baseline_key("val/psnr_rgb") == "val/baseline_psnr_rgb"


def test_local_runs_follow_the_sweep_order_with_status_and_curves(filters_sweep):
    runs = report.load_local_runs(filters_sweep)
    assert [r.name for r in runs] == ["aaa", "bbb", "ccc"]
    assert [r.status for r in runs] == ["ok", "ok", "failed"]
    bbb = runs[1]
    assert bbb.curve == [(10, 28.0), (20, 29.5), (30, 29.25)] and bbb.baseline == 27.5
    assert (bbb.final, bbb.best) == (29.25, (20, 29.5))
    assert runs[2].curve == [] and runs[2].final is None and runs[2].best is None
    assert [r.name for r in report.load_local_runs(filters_sweep, trial_ids=["bbb"])] == ["bbb"]


def test_table_has_one_row_per_setting_with_final_best_baseline_and_gain(filters_sweep):
    table = report.markdown_table("srcnn_filters", report.load_local_runs(filters_sweep))
    lines = table.splitlines()
    assert lines[0] == "### srcnn_filters"
    assert "validated on benchmark:Set5" in lines[2] and "x3, border 3 shaved" in lines[2] and "on Y" in lines[2]
    assert "bicubic (dB)" in lines[4]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[6:] if line.startswith("|")]
    assert lines[-1] == "Paper: wider is better (n1/n2 = 128/64 > 64/32 > 32/16). Not judged: no final PSNR for 128/64."
    # only the varying parameter names a setting, in the paper's n1/n2 notation
    assert rows == [
        ["filters=32/16", "28.50", "28.50", "30", "27.50", "+1.00", "30", "ok"],
        ["filters=64/32", "29.25", "29.50", "20", "27.50", "+1.75", "30", "ok"],
        ["filters=128/64", "-", "-", "-", "-", "-", "-", "failed"],
    ]


def test_labels_open_up_mappings_and_inline_configs():
    net = "model.init_args.net.init_args"
    depth = [report.Run("a", {net: {"kernel_sizes": [9, 1, 5], "filters": [64, 32]}}),
             report.Run("b", {net: {"kernel_sizes": [9, 1, 1, 5], "filters": [64, 32, 16]}})]
    assert report.setting_labels(depth) == ["filters=64/32, kernel_sizes=9-1-5",
                                            "filters=64/32/16, kernel_sizes=9-1-1-5"]
    channels = [report.Run(c, {"config": f"{{data: {{init_args: {{channels: {c}}}}}, "
                                         f"model: {{init_args: {{net: {{init_args: {{channels: {n}}}}}}}}}}}"})
                for c, n in (("y", 1), ("rgb", 3))]
    # two parameters end in `channels`: each keeps its parent's name
    assert report.setting_labels(channels) == ["data.channels=y, net.channels=1", "data.channels=rgb, net.channels=3"]
    sets = [report.Run("a", {"data.init_args.train": ["benchmark:T91"]}),
            report.Run("b", {"data.init_args.train": ["benchmark:T91", "skimage:train"]})]
    assert report.setting_labels(sets) == ["train=benchmark:T91", "train=benchmark:T91+skimage:train"]
    assert report.setting_labels([report.Run("only", {"a": 1})]) == ["only"]


def test_figure_draws_one_curve_per_setting_and_the_baseline(filters_sweep, tmp_path):
    runs = report.load_local_runs(filters_sweep)
    png = report.plot_curves("srcnn_filters", runs, tmp_path / "fig.png")
    image = matplotlib.image.imread(png)
    assert image.shape[0] > 300 and image.shape[1] > 500
    colours = {tuple(px) for px in (image[..., :3] * 255).astype(int).reshape(-1, 3)[::7]}
    assert len(colours) > 50  # lines, markers, text: not a blank canvas
    import matplotlib.pyplot as plt

    assert not plt.get_fignums()  # the figure was closed


def test_main_writes_table_and_figure_for_a_sweep_dir_and_a_sweep_yaml(filters_sweep, tmp_path, capsys):
    out = tmp_path / "reports"
    assert report.main([str(filters_sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| filters=64/32 | 29.25 | 29.50 |" in printed
    md = (out / "srcnn_filters.md").read_text()
    assert "| filters=32/16 | 28.50 |" in md and "![srcnn_filters](srcnn_filters.png)" in md
    assert (out / "srcnn_filters.png").stat().st_size > 10_000
    # the same through the sweep YAML: its runs are looked up under --runs/<sweep name>
    sweep_yaml = tmp_path / "srcnn_filters.yaml"
    sweep_yaml.write_text(f"method: grid\nparameters:\n  {FILTERS}: {{values: [[32, 16], [64, 32]]}}\n"
                          "command: [run, '${args}']\n")
    assert report.main([str(sweep_yaml), "--runs", str(filters_sweep.parent)]) == 0
    assert (filters_sweep / "srcnn_filters.md").read_text() == md  # default: beside the runs
    # an AnticipatedError: `restorelab report` prints it as one line and exits 2 (tests/test_sweep.py checks that)
    with pytest.raises(SweepConfigError, match="missing: neither a sweep YAML nor a sweep run directory"):
        report.main([str(tmp_path / "missing")])


def test_wandb_report_without_the_report_package_says_what_to_install():
    try:
        import wandb_workspaces  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("wandb-workspaces is installed")
    with pytest.raises(AnticipatedError, match="pip install wandb-workspaces"):
        report.push_wandb_report([], project="p", entity=None)


def test_a_run_logged_in_several_csv_dirs_joins_into_one_curve(tmp_path):
    """A resumed attempt that logs into a second CSV dir continues the first attempt's curve."""
    import os

    run = write_run(tmp_path, "t", {FILTERS: [64, 32]}, [(10, 28.0), (20, 29.0)])
    second = run / "csv.1"
    second.mkdir()
    (second / "metrics.csv").write_text("epoch,step,val/psnr_y,val/baseline_psnr_y\n1,19,29.5,27.5\n2,29,30.0,27.5\n")
    os.utime(run / "csv" / "metrics.csv", (1e9, 1e9))  # the first attempt's log is the older one
    assert report.read_run_curve(run, "val/psnr_y") == ([(10, 28.0), (20, 29.5), (30, 30.0)], 27.5)


def test_protocol_line_states_only_what_all_runs_share():
    def run(train):
        return report.Run("r", {}, config={"data": {"init_args": {"scale": 3, "val": ["benchmark:Set5"],
                                                                  "train": train}}})

    same = report.protocol([run(["benchmark:T91"]), run(["benchmark:T91"])], "val/psnr_y")
    assert "validated on benchmark:Set5" in same and "trained on benchmark:T91" in same
    differ = report.protocol([run(["benchmark:T91"]), run(["benchmark:T91", "skimage:train"])], "val/psnr_y")
    assert "validated on benchmark:Set5" in differ and "trained on" not in differ


def test_wandb_report_holds_per_sweep_its_protocol_table_and_panels_on_its_runs(filters_sweep, tmp_path):
    wr = pytest.importorskip("wandb_workspaces.reports.v2")
    from wandb_workspaces import expr

    sections = report.report([str(filters_sweep)], out_dir=tmp_path)
    built = report.wandb_report(sections, project="restorelab", entity="lab")  # offline: no key, no network
    assert isinstance(built, wr.Report) and (built.project, built.entity) == ("restorelab", "lab")
    assert [type(b).__name__ for b in built.blocks] == ["H1", "P", "H2", "P", "MarkdownBlock", "PanelGrid"]
    _, _, title, protocol, table, grid = built.blocks
    assert title.text == "srcnn_filters" and "validated on benchmark:Set5" in protocol.text
    assert table.text.splitlines()[2].startswith("| filters=32/16 | 28.50 |")  # the .md's rows, in sweep order
    (runset,) = grid.runsets
    assert (runset.project, runset.entity, runset.name) == ("restorelab", "lab", "srcnn_filters")
    # the trials' W&B runs, by the ids `restorelab fit` gives them: <sweep dir name>-<trial id>
    selected = expr.expr_to_filters(runset.filters)
    assert (selected.op, selected.key.name) == ("IN", "name")
    assert selected.value == ["srcnn_filters-aaa", "srcnn_filters-bbb", "srcnn_filters-ccc"]
    curves, settings = grid.panels
    assert isinstance(curves, wr.LinePlot) and curves.x == "trainer/global_step"
    assert curves.y == ["val/psnr_y", "val/baseline_psnr_y"]
    assert isinstance(settings, wr.ParallelCoordinatesPlot)
    # only the parameter that varies, then the metric
    assert [c.metric for c in settings.columns] == [wr.Config(FILTERS), wr.SummaryMetric("val/psnr_y")]


def test_wandb_report_of_a_wandb_sweep_selects_its_runs_by_sweep_id():
    pytest.importorskip("wandb_workspaces")
    from wandb_workspaces import expr

    section = report.Section("s", [report.Run("r", {"a": 1})], "val/psnr_y", lambda: report.sweep_runs_filter("q8x2"))
    (runset,) = report.wandb_report([section], project="p", entity="lab").blocks[-1].runsets
    selected = expr.expr_to_filters(runset.filters)
    assert (selected.op, selected.key.name, selected.value) == ("=", "sweep", "q8x2")


def test_wandb_report_without_a_key_is_one_line_and_the_tables_are_still_written(filters_sweep, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setattr(report, "wandb_key_available", lambda: False)
    with pytest.raises(AnticipatedError, match="--wandb-report needs a W&B key") as err:
        report.main([str(filters_sweep), "--out", str(tmp_path), "--wandb-report"])
    assert "\n" not in str(err.value)
    assert (tmp_path / "srcnn_filters.md").is_file()


# ------------------------------------------------------------------------------------ the paper's trends

NET = "model.init_args.net.init_args"


def run_of(params: dict, final: float) -> report.Run:
    return report.Run("t", params, [(100, final - 1), (200, final)], 29.0, "ok")


def test_each_ablation_says_whether_its_final_psnrs_reproduce_the_papers_trend():
    from restorelab.ablation_trends import verdict

    def filters(*finals):
        return [run_of({FILTERS: f, f"{NET}.kernel_sizes": [9, 1, 5]}, v)
                for f, v in zip(([32, 16], [64, 32], [128, 64]), finals)]

    assert verdict("srcnn_filters_cpu", filters(30.0, 30.2, 30.3)) == (
        "Paper: wider is better (n1/n2 = 128/64 > 64/32 > 32/16). Reproduced at this budget: "
        "32/16 30.00 < 64/32 30.20 < 128/64 30.30.")
    assert verdict("srcnn_filters", filters(30.0, 30.4, 30.3)).startswith("Paper: wider is better")
    assert "Not reproduced" in verdict("srcnn_filters", filters(30.0, 30.2031, 30.2049))  # a tie at 0.01 dB
    assert "Not reproduced at this budget: 32/16 30.00 vs 64/32 30.40 vs 128/64 30.30." in verdict(
        "srcnn_filters", filters(30.0, 30.4, 30.3))
    depth = [run_of({NET: {"kernel_sizes": k, "filters": [64] * (len(k) - 1)}}, v) for k, v in (
        ([9, 1, 5], 30.0), ([9, 1, 1, 5], 30.05), ([9, 1, 1, 1, 5], 29.9), ([9, 3, 5], 30.2), ([9, 3, 3, 5], 30.1))]
    assert "Reproduced at this budget: 9-1-1-5 − 9-1-5 = +0.05 dB" in verdict("srcnn_depth_cpu", depth)
    depth[1] = run_of(depth[1].params, 30.3)  # a fourth layer 0.3 dB better: clearly better
    assert "Not reproduced" in verdict("srcnn_depth_cpu", depth)
    channels = [run_of({"config": "{data: {init_args: {channels: %s}}}" % c}, v) for c, v in (("y", 30.0), ("rgb", 29.95))]
    assert verdict("srcnn_channels_cpu", channels).endswith("Reproduced at this budget: RGB − Y = -0.05 dB on Y.")
    sets = [run_of({"data.init_args.train": t}, v) for t, v in ((["benchmark:T91"], 30.0),
                                                                (["benchmark:T91", "skimage:train"], 30.1))]
    assert "Reproduced" in verdict("srcnn_train_set_cpu", sets)
    assert verdict("srcnn_train_set_cpu", sets[:1]).endswith("Not judged: no final PSNR for T91 + photos.")
    assert verdict("my_sweep", sets) is None


def test_readme_gets_every_table_trend_and_figure_between_its_markers(tmp_path, capsys):
    sweep = tmp_path / "runs" / "srcnn_filters_cpu"
    for i, (f, v) in enumerate(zip(([32, 16], [64, 32], [128, 64]), (29.5, 29.8, 30.1))):
        write_run(sweep, f"t{i}", {FILTERS: f, f"{NET}.kernel_sizes": [9, 1, 5]}, [(100, v - 0.5), (200, v)])
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- ablation-report:start -->\nold\n<!-- ablation-report:end -->\nafter\n")
    assert report.main([str(sweep), "--out", str(tmp_path / "docs" / "ablations"), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old" not in text and text.endswith("<!-- ablation-report:end -->\nafter\n")
    assert "### srcnn_filters_cpu" in text and "| filters=128/64 | 30.10 |" in text
    assert "Paper: wider is better" in text and "Reproduced at this budget" in text
    assert "![srcnn_filters_cpu](docs/ablations/srcnn_filters_cpu.png)" in text
    assert (tmp_path / "docs" / "ablations" / "srcnn_filters_cpu.png").is_file()
    with pytest.raises(SystemExit):
        report.main([str(sweep), "--readme", str(readme)])
    assert "--readme needs --out" in capsys.readouterr().err
