"""Paper-style results of a sweep: one markdown table per ablation (final and best validation PSNR per
setting, beside the bicubic baseline) and one figure of validation PSNR against training step per setting,
as in the SRCNN paper's ablation figures.

Runs come from the sweep's local run directories (`<runs>/<sweep name>/<trial id>/`: `params.json` and
`csv/metrics.csv`, written by `restorelab sweep` locally or on Slurm), or, for a sweep run by W&B agents,
from the W&B API. `--wandb-report` also saves the same content as a W&B report for collaborators, built with
`wandb-workspaces` (`wandb_report` builds it offline; only the save needs a W&B key).

    restorelab report sweeps/srcnn_filters_cpu.yaml [more sweeps or sweep dirs] --runs runs --out reports
    restorelab report --wandb-sweep ENTITY/PROJECT/SWEEP_ID --out reports
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import yaml

from datamodules.errors import AnticipatedError
from restorelab.ablation_trends import verdict
from restorelab.runs import wandb_key_available
from restorelab.sweep_plan import SweepConfigError, load_sweep, sweep_dir

DEFAULT_METRIC = "val/psnr_y"
STEP_KEY = "trainer/global_step"  # Lightning's WandbLogger logs every metric against it (the CSV's `step`)


@dataclass
class Run:
    """One trial of a sweep: its parameters and its validation curve [(step, value), ...]."""

    name: str
    params: dict
    curve: list[tuple[int, float]] = field(default_factory=list)
    baseline: float | None = None  # the bicubic (or noisy-input) value on the same images
    status: str = "?"
    config: dict = field(default_factory=dict)  # the run's resolved LightningCLI config, when known

    @property
    def final(self) -> float | None:
        return self.curve[-1][1] if self.curve else None

    @property
    def best(self) -> tuple[int, float] | None:
        return max(self.curve, key=lambda p: p[1]) if self.curve else None


@dataclass
class Section:
    """One sweep's part of a report: its runs and which W&B runs they are."""

    title: str
    runs: list[Run]
    metric: str
    # the wandb_workspaces filter expressions that select the sweep's runs on W&B (a function: it imports
    # wandb_workspaces, which only a W&B report needs)
    wandb_filter: Callable[[], list]


def baseline_key(metric: str) -> str:
    """val/psnr_y -> val/baseline_psnr_y, the name RestorationModule logs the baseline under."""
    stage, _, name = metric.rpartition("/")
    return f"{stage}/baseline_{name}" if stage else f"baseline_{name}"


# ------------------------------------------------------------------------------------ reading runs


def read_curve(metrics_csv: Path, metric: str) -> tuple[list[tuple[int, float]], float | None]:
    """(training steps done, metric) of every validation row of a CSVLogger file, and the baseline.
    Lightning logs a validation at the index of the last training batch, hence the + 1. A resumed run
    may log a step twice; the later row wins."""
    points, baseline = {}, None
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            value = row.get(metric)
            if value not in (None, ""):
                points[int(row["step"]) + 1] = float(value)
                base = row.get(baseline_key(metric))
                if base not in (None, ""):
                    baseline = float(base)
    return sorted(points.items()), baseline


def read_run_curve(run_dir: Path, metric: str) -> tuple[list[tuple[int, float]], float | None]:
    """The curve of a run dir from every CSV log in it (`csv*/metrics.csv`), oldest first, so that a
    log per attempt of a resumed run joins into one curve (later attempts win on shared steps)."""
    points, baseline = {}, None
    for path in sorted(run_dir.glob("csv*/metrics.csv"), key=lambda p: p.stat().st_mtime):
        curve, base = read_curve(path, metric)
        points.update(curve)
        baseline = base if base is not None else baseline
    return sorted(points.items()), baseline


def load_local_runs(sweep_dir: str | Path, metric: str = DEFAULT_METRIC,
                    trial_ids: Sequence[str] | None = None) -> list[Run]:
    """The trials under a sweep directory (those of `trial_ids`, else every subdirectory with a
    `params.json`), in the order of `summary.json` (the sweep's grid order) when the local runner wrote one."""
    sweep_dir = Path(sweep_dir)
    summary_path = sweep_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    dirs = sorted(p.parent for p in sweep_dir.glob("*/params.json")
                  if trial_ids is None or p.parent.name in trial_ids)
    order = {tid: i for i, tid in enumerate(summary)}
    dirs.sort(key=lambda d: order.get(d.name, len(order)))
    runs = []
    for run_dir in dirs:
        curve, baseline = read_run_curve(run_dir, metric)
        status = summary.get(run_dir.name, {}).get("status")
        if status is None:  # a Slurm task, or a trial still running: judge by what it left
            status = "ok" if (run_dir / "test_results.csv").exists() else ("partial" if curve else "no metrics")
        config_path = run_dir / "csv" / "config.yaml"
        config = yaml.safe_load(config_path.read_text()) if config_path.exists() else {}
        runs.append(Run(run_dir.name, json.loads((run_dir / "params.json").read_text()), curve, baseline,
                        status, config or {}))
    return runs


def load_wandb_runs(sweep_path: str, metric: str | None = None) -> tuple[str, str, list[Run], str]:
    """(title, metric, runs, sweep id) of a sweep on the W&B server ("entity/project/sweep_id"); needs a key.
    The metric defaults to the sweep's own.

    Under `wandb agent` each run's config holds the sweep parameters under their dotted names, and
    Lightning's WandbLogger logs every metric with `trainer/global_step` (the CSV's `step`)."""
    import wandb

    sweep = wandb.Api().sweep(sweep_path)
    config = sweep.config or {}
    metric = metric or (config.get("metric") or {}).get("name", DEFAULT_METRIC)
    names = list(config.get("parameters", {}))
    runs = []
    for run in sweep.runs:
        curve, baseline = {}, None
        for row in run.scan_history(keys=[STEP_KEY, metric]):
            curve[int(row[STEP_KEY]) + 1] = float(row[metric])  # + 1 as in read_curve
        for row in run.scan_history(keys=[baseline_key(metric)], page_size=1):
            baseline = float(row[baseline_key(metric)])
            break
        status = {"finished": "ok", "failed": "failed", "crashed": "failed"}.get(run.state, run.state)
        runs.append(Run(run.name or run.id, {k: run.config.get(k) for k in names}, sorted(curve.items()),
                        baseline, status))
    return str(sweep.name or sweep.id), metric, runs, sweep.id


# ------------------------------------------------------------------------------------ labels


def _flatten(key: str, value) -> dict:
    """Dotted leaves of a parameter value: dicts (e.g. a whole `net.init_args`) and YAML mappings given
    as strings (e.g. an inline `--config`) are opened up, so a label can name what actually changed."""
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            pass
    if isinstance(value, dict):
        prefix = "" if key == "config" else f"{key}."
        return {k: v for sub, item in value.items() for k, v in _flatten(f"{prefix}{sub}", item).items()}
    return {key: value}


def _format_value(key: str, value) -> str:
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        # the paper's notation: kernel sizes 9-1-5, filter counts n1/n2 = 64/32
        return ("/" if key.endswith("filters") else "-").join(map(str, value))
    if isinstance(value, list):
        return "+".join(map(str, value))  # several sources: benchmark:T91+skimage:train
    return str(value)


def setting_labels(runs: Sequence[Run]) -> list[str]:
    """A short label per run naming only the parameters that differ between the runs."""
    flat = [{k: _format_value(k, v) for key, value in r.params.items() for k, v in _flatten(key, value).items()}
            for r in runs]
    keys = sorted({k for f in flat for k in f})
    varying = [k for k in keys if len({f.get(k) for f in flat}) > 1]
    if not varying:
        return [r.name for r in runs]
    parts = [[p for p in k.split(".") if p != "init_args"] for k in varying]
    short = [p[-1] for p in parts]
    # two parameters with the same last name (data.channels, net.channels) keep one more level
    short = [".".join(p[-2:]) if short.count(s) > 1 else s for p, s in zip(parts, short)]
    return [", ".join(f"{s}={f.get(k, '-')}" for s, k in zip(short, varying)) for f in flat]


def protocol(runs: Sequence[Run], metric: str) -> str:
    """One line saying what the numbers measure, from the runs' saved configs (what differs between
    runs, e.g. the training set of a training-set ablation, is the settings' business, not said here)."""
    datas = [(r.config.get("data") or {}).get("init_args") or {} for r in runs if r.config]
    data = datas[0] if datas else {}

    def shared(key):
        return data.get(key) if all(d.get(key) == data.get(key) for d in datas) else None

    scale = shared("scale")
    space = metric.rsplit("_", 1)[-1].upper() if "_" in metric else ""  # val/psnr_y -> Y
    parts = []
    if shared("val"):
        parts.append("validated on " + ", ".join(map(str, data["val"])))
    if shared("train"):
        parts.append("trained on " + ", ".join(map(str, data["train"])))
    if scale:
        parts.append(f"x{scale}" + (f", border {scale} shaved" if scale > 1 else ""))
    parts.append(f"{metric}{f' on {space}' if space else ''}, mean over images, 8-bit outputs")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------ outputs


def _fmt(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.2f}"


def markdown_table(title: str, runs: Sequence[Run], metric: str = DEFAULT_METRIC) -> str:
    """The sweep's heading, protocol line and results table, and under it the paper's trend with whether these
    runs reproduce it (``ablation_trends``; the SRCNN ablations)."""
    trend = verdict(title, runs)
    return "\n".join([f"### {title}", "", protocol(runs, metric), "", results_table(runs, metric)]
                     + ([trend, ""] if trend else []))


def results_table(runs: Sequence[Run], metric: str = DEFAULT_METRIC) -> str:
    baseline = baseline_name(runs)
    lines = [f"| setting | final (dB) | best (dB) | best at step | {baseline} (dB) | gain of final (dB) | steps "
             "| status |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for label, run in zip(setting_labels(runs), runs):
        best = run.best
        gain = run.final - run.baseline if run.final is not None and run.baseline is not None else None
        gain_text = "-" if gain is None else f"{gain:+.2f}"
        steps = run.curve[-1][0] if run.curve else "-"
        lines.append(f"| {label} | {_fmt(run.final)} | {_fmt(best and best[1])} | {best[0] if best else '-'} | "
                     f"{_fmt(run.baseline)} | {gain_text} | {steps} | {run.status} |")
    return "\n".join(lines) + "\n"


def baseline_name(runs: Sequence[Run]) -> str:
    """What the baseline column is: bicubic for SR (scale > 1), the degraded input otherwise."""
    scales = {((r.config.get("data") or {}).get("init_args") or {}).get("scale") for r in runs} - {None}
    if not scales:
        return "baseline"
    return "bicubic" if max(scales) > 1 else "input"


def plot_curves(title: str, runs: Sequence[Run], path: str | Path, metric: str = DEFAULT_METRIC) -> Path:
    """Validation metric against training step, one line per setting, the baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for label, run in zip(setting_labels(runs), runs):
        if run.curve:
            steps, values = zip(*run.curve)
            ax.plot(steps, values, marker="o", markersize=3, label=label)
    baselines = {round(r.baseline, 4) for r in runs if r.baseline is not None}
    if len(baselines) == 1:  # the same validation images for every setting
        ax.axhline(baselines.pop(), color="gray", linestyle="--", label=baseline_name(runs))
    ax.set_xlabel("training step")
    ax.set_ylabel(f"{metric} (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # not for a sweep whose trials all failed early
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(title: str, runs: Sequence[Run], out_dir: str | Path,
                 metric: str = DEFAULT_METRIC) -> tuple[Path, Path]:
    """`<out>/<title>.md` (table + figure link) and `<out>/<title>.png`; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = plot_curves(title, runs, out_dir / f"{title}.png", metric)
    md = out_dir / f"{title}.md"
    md.write_text(markdown_table(title, runs, metric) + f"\n![{title}]({png.name})\n")
    return md, png


def wandb_report(sections: Sequence[Section], project: str, entity: str):
    """The W&B report (a wandb_workspaces.reports.v2.Report) of `sections`, built offline (nothing is sent): per sweep its heading, protocol line and
    table, and a panel grid on the sweep's runs with the validation curves against the training step and the
    parameters that vary in a parallel-coordinates plot."""
    wr = _report_api()
    blocks = [wr.H1("restorelab ablations"),
              wr.P("Generated by `restorelab report` from the sweeps' runs; the tables are those of its .md files.")]
    for section in sections:
        blocks += [wr.H2(section.title), wr.P(protocol(section.runs, section.metric)),
                   wr.MarkdownBlock(text=results_table(section.runs, section.metric)),
                   wr.PanelGrid(runsets=[wr.Runset(entity=entity, project=project, name=section.title,
                                                   filters=section.wandb_filter())],
                                panels=_panels(wr, section))]
    return wr.Report(project=project, entity=entity, title="restorelab ablations", blocks=blocks)


def _panels(wr, section: Section) -> list:
    curves = wr.LinePlot(title=section.title, x=STEP_KEY, y=[section.metric, baseline_key(section.metric)])
    varying = [k for k in sorted({k for r in section.runs for k in r.params})
               if len({json.dumps(r.params.get(k), sort_keys=True) for r in section.runs}) > 1]
    if not varying:
        return [curves]
    columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(k)) for k in varying]
    columns.append(wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(section.metric)))
    return [curves, wr.ParallelCoordinatesPlot(title=f"{section.title}: settings", columns=columns)]


def _report_api():
    try:
        import wandb_workspaces.reports.v2 as wr
    except ImportError:
        raise AnticipatedError("--wandb-report needs the W&B report API, which is not installed: "
                               "pip install wandb-workspaces") from None
    return wr


def push_wandb_report(sections: Sequence[Section], project: str, entity: str | None) -> str:
    """Save the report on W&B (needs a key); returns its URL."""
    _report_api()
    if not wandb_key_available():
        raise AnticipatedError("--wandb-report needs a W&B key: set WANDB_API_KEY or run `wandb login` "
                               "(the tables and figures are written without one)")
    import wandb

    report = wandb_report(sections, project, entity or wandb.Api().default_entity)
    report.save()
    return report.url


def local_runs_filter(sweep_dir: Path, runs: Sequence[Run]) -> list:
    """The W&B runs of local trials (synced with `wandb sync`): restorelab fit names each W&B run
    `<experiment>-<run id>`, the sweep dir's name and the trial id (restorelab.lightning_cli)."""
    from wandb_workspaces import expr

    return [expr.Metric("ID").isin([f"{sweep_dir.name}-{r.name}" for r in runs])]


def sweep_runs_filter(sweep_id: str) -> list:
    from wandb_workspaces import expr

    return [expr.Metric("Sweep") == sweep_id]


# ------------------------------------------------------------------------------------ CLI


def resolve_sweep(spec: str, runs_dir: str | Path) -> tuple[str, Path, str]:
    """(title, sweep dir, metric) for a sweep YAML (its runs under `runs_dir/<name>`) or a sweep dir."""
    path = Path(spec)
    if path.is_file():
        sweep = load_sweep(path)
        return sweep["name"], sweep_dir(sweep, runs_dir), (sweep.get("metric") or {}).get("name", DEFAULT_METRIC)
    if path.is_dir():
        saved = path / "sweep.json"  # written by the local runner and `restorelab slurm`
        metric = DEFAULT_METRIC
        if saved.exists():
            metric = (json.loads(saved.read_text()).get("metric") or {}).get("name", DEFAULT_METRIC)
        return path.name, path, metric
    raise SweepConfigError(f"{spec}: neither a sweep YAML nor a sweep run directory")


def publish(title: str, runs: Sequence[Run], out_dir: str | Path, metric: str, wandb_filter: Callable[[], list],
            stream=None) -> Section:
    """Write a sweep's .md/.png into `out_dir` and print its table. `wandb_filter` is only called (it imports
    wandb_workspaces) when the section goes into a W&B report."""
    md, png = write_report(title, runs, out_dir, metric)
    table = markdown_table(title, runs, metric)
    print(table + f"\n(table: {md}, figure: {png})\n", file=stream or sys.stdout)
    return Section(title, list(runs), metric, wandb_filter)


README_MARKERS = ("<!-- ablation-report:start -->", "<!-- ablation-report:end -->")


def readme_section(sections: Sequence[Section], out_dir: str | Path, readme: str | Path) -> str:
    """Every section's table, trend sentence and figure, the figures linked relative to ``readme``."""
    import os

    parts = []
    for section in sections:
        png = Path(os.path.relpath(Path(out_dir) / f"{section.title}.png", Path(readme).resolve().parent))
        parts.append(markdown_table(section.title, section.runs, section.metric) + f"\n![{section.title}]({png.as_posix()})\n")
    return "\n".join(parts)


def report(specs: Sequence[str], runs_dir: str | Path = "runs", out_dir: str | Path | None = None,
           metric: str | None = None, trial_ids: Sequence[str] | None = None,
           stream=None) -> list[Section]:
    """Print the table of every sweep and write its .md/.png (into `out_dir`, or the sweep's own dir);
    `trial_ids` restricts the runs (e.g. to those one `restorelab sweep` call ran)."""
    sections = []
    for spec in specs:
        title, directory, sweep_metric = resolve_sweep(spec, runs_dir)
        runs = load_local_runs(directory, metric or sweep_metric, trial_ids)
        if not runs:
            print(f"{title}: no runs under {directory}", file=sys.stderr)
            continue
        sections.append(publish(title, runs, out_dir or directory, metric or sweep_metric,
                                lambda directory=directory, runs=runs: local_runs_filter(directory, runs), stream))
    return sections


def print_report(sweep_path: str | Path, out_dir: str | Path, trial_ids: Sequence[str] | None = None) -> None:
    """The table of these trials at the end of a sweep (local or Slurm); a report error never hides the
    trials' own outcome."""
    try:
        report([str(sweep_path)], runs_dir=out_dir, trial_ids=trial_ids)
    except Exception as err:  # noqa: BLE001 - the trials are done; say why there is no table
        print(f"[sweep] no report: {type(err).__name__}: {err}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="restorelab report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="*", help="sweep YAMLs (runs under --runs/<name>) or sweep run dirs")
    parser.add_argument("--runs", default="runs", help="root the sweeps ran into (`restorelab sweep --out`)")
    parser.add_argument("--out", help="write <sweep>.md and <sweep>.png here (default: each sweep's run dir, "
                                      "or ./reports for --wandb-sweep)")
    parser.add_argument("--metric", help="validation metric (default: the sweep's, else val/psnr_y)")
    parser.add_argument("--wandb-sweep", action="append", default=[], metavar="ENTITY/PROJECT/ID",
                        help="read a sweep run by W&B agents from the W&B API (needs a key)")
    parser.add_argument("--wandb-report", action="store_true", help="also save the report on W&B")
    parser.add_argument("--project", default="restorelab", help="W&B project of --wandb-report")
    parser.add_argument("--entity", help="W&B entity of --wandb-report")
    parser.add_argument("--readme", help="also write every table, trend and figure between the ablation-report "
                                         "markers of this markdown file (needs --out)")
    args = parser.parse_args(argv)
    if not args.sweeps and not args.wandb_sweep:
        parser.error("give at least one sweep YAML, sweep dir or --wandb-sweep")
    if args.readme and not args.out:
        parser.error("--readme needs --out: the figures it links must live beside it, not in run dirs")

    # a bad sweep file raises SweepConfigError (an AnticipatedError): `restorelab` prints its one line, exits 2
    sections = report(args.sweeps, args.runs, args.out, args.metric)
    for path in args.wandb_sweep:
        title, metric, runs, sweep_id = load_wandb_runs(path, args.metric)
        sections.append(publish(title, runs, args.out or "reports", metric, lambda i=sweep_id: sweep_runs_filter(i)))
    if args.readme and sections:
        from restorelab.model_table import rewrite_readme

        try:
            rewrite_readme(args.readme, readme_section(sections, args.out, args.readme), README_MARKERS)
        except (OSError, ValueError) as e:
            raise AnticipatedError(f"--readme={args.readme}: {e}") from None
        print(f"written into {args.readme}")
    if args.wandb_report and sections:
        print(f"W&B report: {push_wandb_report(sections, args.project, args.entity)}")
    return 0 if sections else 1


if __name__ == "__main__":
    sys.exit(main())
