"""The command line: configs parse, overrides apply, the scale is typed once, bad values are named."""
from __future__ import annotations

import pytest
import yaml

from restorelab.cli import main
from tests.conftest import REPO


def print_config(capsys, *args, config="configs/srcnn.yaml"):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", config, *args, "--print_config"])
    assert e.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def recipe_of(cfg: dict) -> dict:
    return cfg["data"]["init_args"]["recipe"]


def test_print_config_and_overrides(run_env, capsys):
    cfg = print_config(capsys, "--model.init_args.net.init_args.filters=[128, 64]",
                       "--model.init_args.net.init_args.kernel_sizes=[9, 1, 1, 5]",
                       "--model.init_args.net.init_args.filters=[64, 32, 16]", "--model.init_args.lr=0.01")
    net = cfg["model"]["init_args"]["net"]["init_args"]
    assert net["kernel_sizes"] == [9, 1, 1, 5] and net["filters"] == [64, 32, 16]
    assert cfg["model"]["init_args"]["lr"] == 0.01
    assert cfg["data"]["class_path"] == "datamodules.restoration.SRDataModule"


def test_scale_is_linked_from_data_to_model(run_env, capsys):
    cfg = print_config(capsys, "--data.init_args.scale=4", "--data.init_args.patch_size=32")
    assert cfg["data"]["init_args"]["scale"] == 4
    # the linked target is not an option of its own: it cannot be typed a second time
    assert "scale" not in cfg["model"]["init_args"]


def test_bad_values_are_named(run_env, capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", "configs/srcnn.yaml", "--model.init_args.net.init_args.padding=full",
              "--print_config"])
    assert e.value.code != 0
    assert "padding" in capsys.readouterr().err


@pytest.mark.parametrize("config", sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").glob("*.yaml")))
def test_every_config_parses(run_env, capsys, config):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", config, "--print_config"])
    assert e.value.code == 0


def test_trainer_configs_stack_on_an_experiment(run_env, capsys):
    cfg = print_config(capsys, "--config", "configs/trainer/ddp.yaml")
    assert cfg["trainer"]["strategy"] == "ddp" and cfg["trainer"]["devices"] == -1
    assert cfg["model"]["init_args"]["net"]["class_path"] == "lightning_modules.nets.srcnn.SRCNN"


RECIPE = "--data.init_args.recipe"


def test_recipe_options_are_overridden_on_the_recipe(run_env, capsys):
    recipe = recipe_of(print_config(capsys, f"{RECIPE}.init_args.sigma=50", config="configs/denoise.yaml"))
    assert recipe["class_path"] == "datamodules.recipes.AWGN" and recipe["init_args"]["sigma"] == 50
    assert recipe["init_args"]["clip"] is False  # the config's other recipe options stay
    recipe = recipe_of(print_config(capsys, f"{RECIPE}.init_args.sigma=[0, 55]", f"{RECIPE}.init_args.test_sigma=25",
                                    config="configs/denoise.yaml"))
    assert recipe["init_args"]["sigma"] == [0, 55] and recipe["init_args"]["test_sigma"] == 25
    # another recipe, by class name, with its own options
    recipe = recipe_of(print_config(capsys, f"{RECIPE}=ClassicalSR", f"{RECIPE}.init_args.kernel=gd_2.0",
                                    f"{RECIPE}.init_args.noise_sigma=5"))
    assert recipe["class_path"] == "datamodules.recipes.ClassicalSR"
    assert recipe["init_args"]["kernel"] == "gd_2.0" and recipe["init_args"]["noise_sigma"] == 5
    recipe = recipe_of(print_config(capsys, f"{RECIPE}.init_args.n_frames=[5, 9]", f"{RECIPE}.init_args.source=frames",
                                    config="configs/deblur.yaml"))
    assert recipe["init_args"]["n_frames"] == [5, 9] and recipe["init_args"]["source"] == "frames"
    # SRDataModule takes SR recipes only
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", "configs/srcnn.yaml", f"{RECIPE}=AWGN", "--print_config"])
    assert e.value.code != 0


@pytest.mark.parametrize("old", ["--data.init_args.noise_sigma=50", "--data.init_args.test_sigma=25",
                                 "--data.init_args.jpeg_quality=10"])
def test_the_old_data_options_are_refused_by_name(run_env, capsys, old):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", "configs/denoise.yaml", old, "--print_config"])
    assert e.value.code != 0
    assert old.split("=")[0] in capsys.readouterr().err


@pytest.mark.parametrize("config, override, message", [
    ("configs/denoise.yaml", f"{RECIPE}.init_args.sigma=-5",
     "data.init_args.recipe.init_args.sigma=-5.0 must be a number or a [low, high] range"),
    ("configs/sr_blur.yaml", f"{RECIPE}.init_args.kernel=gd_2.0 {RECIPE}.init_args.order=blur_bicubic",
     "data.init_args.recipe.init_args.order='blur_bicubic' contradicts kernel='gd_2.0'"),
    ("configs/deblur.yaml", f"{RECIPE}.init_args.n_frames=[8, 8]",
     "data.init_args.recipe.init_args.n_frames=(8, 8) must include an odd count"),
])
def test_bad_recipe_values_are_one_line_naming_the_recipe_option(run_env, capsys, config, override, message):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", config, *(o if i == 0 else "--data" + o for i, o in enumerate(override.split(" --data"))), f"--runs_dir={run_env}", "--trainer.logger=false"])
    assert e.value.code != 0
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("restorelab: error:")]
    assert len(errors) == 1 and message in errors[0], errors
