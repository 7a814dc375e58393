"""The papers' configs: each parses with the paper's recipe, each trains one step on the CPU through the command
line (tiny widths), and ``restorelab models`` rewrites only the marked section of the README."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from restorelab import model_table as mt
from restorelab.cli import main
from tests.conftest import REPO

CONFIGS = ("vdsr", "dncnn_s", "dncnn_b", "nlrn", "srresnet", "deepdeblur", "srn")

# What each config must keep from its paper (or the authors' released code), as the printed config shows it.
PAPER_VALUES = {
    "vdsr": {"net.depth": 20, "net.features": 64, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
             "weight_decay": 1e-4, "scheduler": "step", "step_size": 20, "gamma": 0.1, "clip_grad": 0.01,
             "clip_algorithm": "value", "clip_grad_by_lr": True, "data.scales": [2, 3, 4], "data.batch_size": 64,
             "data.recipe": "datamodules.recipes.BicubicSR",
             "data.channels": "y", "max_epochs": 80, "loss_reduction": "sum", "data.train_crop": 41},
    "dncnn_s": {"net.depth": 17, "net.features": 64, "optimizer": "adam", "lr": 1e-3, "milestones": [30],
                "data.recipe": "datamodules.recipes.AWGN", "data.recipe.sigma": 25.0, "data.recipe.clip": False,
                "data.patch_size": 40, "data.batch_size": 128, "max_epochs": 50,
                "loss_reduction": "sum"},
    "dncnn_b": {"net.depth": 20, "net.features": 64, "data.recipe": "datamodules.recipes.AWGN",
                "data.recipe.sigma": [0.0, 55.0], "data.recipe.test_sigma": 25.0, "data.patch_size": 50,
                "data.batch_size": 128},
    "nlrn": {"net.features": 128, "net.steps": 12, "net.window": 45, "lr": 1e-3, "gamma": 0.5, "clip_grad": 2.5,
             "clip_algorithm": "tensor_norm", "data.patch_size": 43, "data.batch_size": 16, "data.recipe.sigma": 25.0},
    "srresnet": {"net.blocks": 16, "net.features": 64, "net.scale": 4, "optimizer": "adam", "lr": 1e-4,
                 "loss": "mse", "data.scale": 4, "data.patch_size": 96, "data.batch_size": 16, "data.channels": "rgb",
                 "data.recipe": "datamodules.recipes.BicubicSR"},
    "deepdeblur": {"net.blocks": 19, "net.features": 64, "net.kernel_size": 5, "net.scales": 3, "lr": 5e-5,
                   "loss": "mse", "data.pyramid_levels": 3, "data.patch_size": 256, "data.batch_size": 4,
                   "data.recipe": "datamodules.recipes.MotionBlur", "data.recipe.source": "synthetic",
                   "data.recipe.n_frames": [7, 13], "data.recipe.camera_gamma": 2.2},
    "srn": {"net.features": 32, "net.blocks": 3, "net.use_lstm": True, "net.scales": 3, "lr": 1e-4,
            "data.pyramid_levels": 3, "data.patch_size": 256, "data.batch_size": 16, "scheduler": "poly",
            "power": 0.3, "data.recipe.source": "synthetic", "data.recipe.n_frames": [7, 13]},
}

NET, MODEL, DATA = "--model.init_args.net.init_args", "--model.init_args", "--data.init_args"
TINY = {
    "vdsr": [f"{NET}.depth=3", f"{NET}.features=8", f"{DATA}.patch_size=24", f"{DATA}.train_crop=20"],
    "dncnn_s": [f"{NET}.depth=3", f"{NET}.features=8", f"{DATA}.patch_size=16"],
    "dncnn_b": [f"{NET}.depth=3", f"{NET}.features=8", f"{DATA}.patch_size=16"],
    "nlrn": [f"{NET}.features=8", f"{NET}.steps=2", f"{NET}.window=3", f"{NET}.embed_features=4",
             f"{DATA}.patch_size=16"],
    "srresnet": [f"{NET}.blocks=1", f"{NET}.features=8", f"{DATA}.patch_size=24"],
    "deepdeblur": [f"{NET}.blocks=1", f"{NET}.features=8", f"{DATA}.patch_size=16"],
    "srn": [f"{NET}.features=4", f"{NET}.blocks=1", f"{DATA}.patch_size=16"],
}
ONE_STEP = ["--trainer.max_steps=1", "--trainer.limit_val_batches=0", "--test_after_fit=false",
            "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            f"{DATA}.batch_size=2", f"{DATA}.patches_per_epoch=2"]


def printed_config(capsys, name: str, *args: str) -> dict:
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", f"configs/{name}.yaml", *args, "--print_config"])
    assert e.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def lookup(cfg: dict, key: str):
    """``net.x`` / ``data.x`` / ``data.recipe`` (its class) / ``data.recipe.x`` / ``max_epochs`` / a module argument,
    in a printed config."""
    if key == "data.recipe":
        return cfg["data"]["init_args"]["recipe"]["class_path"]
    if key.startswith("data.recipe."):
        return cfg["data"]["init_args"]["recipe"]["init_args"][key[len("data.recipe."):]]
    if key.startswith("net."):
        return cfg["model"]["init_args"]["net"]["init_args"][key[4:]]
    if key.startswith("data."):
        return cfg["data"]["init_args"][key[5:]]
    if key == "max_epochs":
        return cfg["trainer"]["max_epochs"]
    return cfg["model"]["init_args"][key]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_parses_with_the_papers_recipe(run_env, capsys, name):
    cfg = printed_config(capsys, name)
    got = {key: lookup(cfg, key) for key in PAPER_VALUES[name]}
    assert got == PAPER_VALUES[name]
    assert cfg["data"]["init_args"]["train"] == ["skimage:train"] and cfg["data"]["init_args"]["val"] == ["skimage:val"]


def test_srresnet_scale_follows_the_data_scale(run_env, capsys):
    cfg = printed_config(capsys, "srresnet", f"{DATA}.scale=3")
    assert cfg["model"]["init_args"]["net"]["init_args"]["scale"] == 3


@pytest.mark.parametrize("name", CONFIGS)
def test_one_training_step_from_the_config(run_env, name):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", f"configs/{name}.yaml", f"--runs_dir={run_env}", *ONE_STEP, *TINY[name]])
    assert e.value.code == 0
    # the run is named after the config file, ${...} interpolations in it or not (srresnet has one)
    (last,) = run_env.glob(f"{name}/*/checkpoints/last*.ckpt")
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 1
    hp = ckpt["hyper_parameters"]
    # the tiny width reached the net, and the paper's optimizer made the step
    assert ckpt["state_dict"] and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    state = next(iter(ckpt["optimizer_states"][0]["state"].values()))
    assert ("momentum_buffer" in state) == (hp["optimizer"] == "sgd")
    assert ("exp_avg" in state) == (hp["optimizer"] == "adam")
    group = ckpt["optimizer_states"][0]["param_groups"][0]
    assert group.get("initial_lr", group["lr"]) == pytest.approx(hp["lr"])  # a scheduler may have stepped since


# ------------------------------------------------------------------------------------------ model table


def fake_row(net: str, psnr: float) -> dict:
    return {"net": net, "paper": "Someone et al., 2017", "task": "sr", "setting": "×3", "config": "configs/x.yaml",
            "budget_seconds": 60, "steps": 123, "train_seconds": 61.0, "budget_note": "tiny", "overrides": ["--a=1"],
            "baseline": "bicubic", "baseline_psnr": 30.0, "baseline_ssim": 0.8, "model_psnr": psnr,
            "model_ssim": 0.85, "gain_db": psnr - 30.0}


def split_readme(text: str) -> tuple[str, str, str]:
    head, rest = text.split(mt.START)
    inside, tail = rest.split(mt.END)
    return head, inside, tail


def test_readme_rewrite_touches_only_the_marked_section(tmp_path):
    readme = tmp_path / "README.md"
    shutil.copy(REPO / "README.md", readme)
    head, _, tail = split_readme(readme.read_text())
    table = mt.render_table([fake_row("VDSR", 31.234), fake_row("SRCNN", 29.5)])
    mt.rewrite_readme(readme, table)
    new_head, inside, new_tail = split_readme(readme.read_text())
    assert (new_head, new_tail) == (head, tail)
    assert inside.strip() == table.strip()
    assert "| VDSR | Someone et al., 2017 | SR ×3 | `configs/x.yaml` | 123 steps, 1.0 min; tiny | bicubic | " \
           "30.00 / 0.8000 | 31.23 / 0.8500 | +1.23 |" in inside
    assert "| -0.50 |" in inside  # a loss is shown as such
    mt.rewrite_readme(readme, table)  # idempotent
    assert split_readme(readme.read_text())[1] == inside


def test_readme_without_markers_is_refused(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# title\nno table here\n")
    with pytest.raises(ValueError, match="model-table:start"):
        mt.rewrite_readme(readme, "table")
    assert readme.read_text() == "# title\nno table here\n"


def test_models_command_keeps_other_nets_rows_and_writes_json_and_csv(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    shutil.copy(REPO / "README.md", readme)
    out = tmp_path / "out"
    out.mkdir()
    (out / "models.json").write_text(json.dumps([fake_row("SRN", 25.0), fake_row("VDSR", 29.0)]))
    calls = []
    monkeypatch.setattr(mt, "run_model",
                        lambda key, budget, work: calls.append((key, budget)) or [fake_row("VDSR", 32.0)])
    assert mt.main(["--only", "vdsr", "--budget-seconds", "42", "--readme", str(readme), "--out", str(out),
                    "--no_classical"]) == 0
    assert calls == [("vdsr", 42.0)]
    rows = json.loads((out / "models.json").read_text())
    assert [(r["net"], r["model_psnr"]) for r in rows] == [("VDSR", 32.0), ("SRN", 25.0)]  # SPECS order
    csv_lines = (out / "models.csv").read_text().splitlines()
    assert csv_lines[0].startswith("net,paper,task") and len(csv_lines) == 3
    inside = split_readme(readme.read_text())[1]
    assert "32.00 / 0.8500" in inside and "25.00 / 0.8500" in inside and "29.00" not in inside


def test_classical_rows_sit_beside_the_nets_tuned_on_training_photos(tmp_path, monkeypatch):
    from tests.test_predict import make_checkpoint
    from tests.test_tune import SEEN, spy_config

    path = make_checkpoint(tmp_path, "dncnn_gray")  # a gray σ=25 denoiser: its recipe degrades the photos
    monkeypatch.setitem(mt.CLASSICAL, "denoise", [str(spy_config(tmp_path))])
    monkeypatch.setitem(mt.CLASSICAL, "deblur", [])
    SEEN.clear()
    net_row = {**fake_row("DnCNN-S", 30.0), "task": "denoise", "setting": "σ=25", "checkpoint": str(path)}
    classical = mt.classical_rows([net_row], tmp_path)
    (row,) = classical
    assert row["method"] == "Spy filter" and row["nets"] == ["DnCNN-S"] and "sigma=" in row["choice"]
    tuned_on = {image for _, image, _ in SEEN} - {"chelsea.png", "coffee.png", "camera.png"}
    assert len(tuned_on) == mt.TUNE_IMAGES  # the grid saw training photos only; the measured three came after
    # smoothing σ = 25 noise helps a lot over the noisy input (about 20.2 dB)
    assert row["psnr"] > row["baseline_psnr"] + 4
    assert mt.classical_rows([net_row], tmp_path, tasks=["sr"]) == []  # --classical_only sr: none of these
    (with_best,) = mt.with_best_classical([net_row], classical)
    assert with_best["best_classical"] == "Spy filter"
    table = mt.render_table([with_best]) + mt.render_classical(classical)
    assert f"Spy filter: {row['psnr']:.2f}" in table and f"{30.0 - row['psnr']:+.2f}" in table


def test_max_time_is_lightnings_format():
    assert mt.max_time(150) == "00:00:02:30" and mt.max_time(90061) == "01:01:01:01"


def test_models_command_trains_nets_in_parallel_processes(tmp_path):
    """--jobs 2: two real (very short) trainings in spawned processes, both rows kept, the README untouched."""
    out = tmp_path / "out"
    assert mt.main(["--only", "srcnn", "dncnn_s", "--budget-seconds", "2", "--threads", "1", "--jobs", "2",
                    "--readme", "", "--out", str(out), "--no_classical"]) == 0
    rows = json.loads((out / "models.json").read_text())
    assert sorted({r["net"] for r in rows}) == ["DnCNN-S", "SRCNN"]
    assert all(r["jobs"] == 2 and r["threads"] == 1 and r["steps"] > 0 for r in rows)
    assert "2 nets training at once" in mt.render_table(rows)
