"""The command line: configs parse, overrides apply, the scale is typed once, bad values are named."""
from __future__ import annotations

import pytest
import yaml

from restorelab.cli import main
from tests.conftest import REPO


def print_config(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", "configs/srcnn.yaml", *args, "--print_config"])
    assert e.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


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
