"""The composed configs (issue 11): every config under configs/ parses, each top-level config and each CPU-budget
experiment stacked on its net's config trains one step through the command line, and the parts (net/, data/,
trainer/) compose as the README says: a top-level config loads `model: net/<net>.yaml` / `data: data/<recipe>.yaml`
(paths relative to the including file), later --config files are merged over earlier ones."""
from __future__ import annotations

import copy

import pytest
import torch
import yaml

from restorelab import model_table as mt
from restorelab.cli import main
from tests.conftest import REPO

CONFIGS = REPO / "configs"
TOP = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment" / "cpu_budget").glob("*.yaml"))
PARTS = sorted(str(p.relative_to(CONFIGS)) for kind in ("net", "data") for p in (CONFIGS / kind).glob("*.yaml"))

NET, DATA = "--model.init_args.net.init_args", "--data.init_args"
ONE_STEP = ["--trainer.max_steps=1", "--trainer.limit_val_batches=0", "--test_after_fit=false",
            "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            f"{DATA}.batch_size=2", f"{DATA}.patches_per_epoch=2"]
# Smaller than the config only where one CPU step at its size would take long: NLRN at the paper's size did not
# finish one step in 10 min (configs/nlrn.yaml), DeepDeblur/SRN at 256x256 take tens of seconds; srcnn_paper
# trains on T91 and the MZSR stages on T91 + BSD200, which are not bundled: the step runs on the bundled photos (their
# parse tests keep the 291 images).
SMALLER = {
    "nlrn": [f"{NET}.features=8", f"{NET}.steps=2", f"{NET}.window=3", f"{NET}.embed_features=4",
             f"{DATA}.patch_size=16"],
    "deepdeblur": [f"{DATA}.patch_size=64"],
    "srn": [f"{DATA}.patch_size=64"],
    "srcnn_paper": [f"{DATA}.train=[skimage:train]", f"{DATA}.val=[skimage:val]", f"{DATA}.test=null"],
    "deblurgan": [f"{DATA}.patch_size=64"],
    # the MZSR stages train on the 291 images of the benchmark folder; one meta-step: one task of 1 + 1 patches
    "mzsr_pretrain": [f"{DATA}.train=[skimage:train]", f"{DATA}.val=[skimage:val]"],
    "mzsr": [f"{DATA}.train=[skimage:train]", f"{DATA}.val=[skimage:val]", "--model.init_args.tasks=1",
             "--model.init_args.task_batch_size=1", f"{DATA}.recipe.init_args.images_per_kernel=2"],
}
NEEDS_VGG = ("srgan", "deblurgan")  # a perceptual loss: the tests make their own VGG19 file


def printed(capsys, *args: str) -> dict:
    with pytest.raises(SystemExit) as e:
        main(["fit", *args, "--print_config"])
    assert e.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def merged(base: dict, delta: dict) -> dict:
    """What a later --config does to an earlier one: mappings merged key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in delta.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def one_step(run_env, experiment: str, *args: str) -> dict:
    with pytest.raises(SystemExit) as e:
        main(["fit", *args, f"--runs_dir={run_env}", *ONE_STEP])
    assert e.value.code == 0
    (last,) = run_env.glob(f"{experiment}/*/checkpoints/last*.ckpt")  # named after the first config's stem
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    # one batch; an adversarial scheme's batch is 1 generator + n_critic discriminator optimizer steps
    assert ckpt["global_step"] == 1 + ckpt["hyper_parameters"].get("n_critic", 0)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    return ckpt


# ------------------------------------------------------------------------------------------------- layout


def test_every_part_is_used_and_every_top_level_config_composes_or_says_why():
    used = set()
    for name in TOP:
        cfg = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
        assert set(cfg) == {"seed_everything", "trainer", "model", "data"}, name
        for key in ("model", "data"):
            if isinstance(cfg[key], str):
                assert (CONFIGS / cfg[key]).is_file(), (name, cfg[key])
                used.add(cfg[key])
        assert isinstance(cfg["data"], str), f"{name}: its data block belongs in configs/data/"
        if not isinstance(cfg["model"], str):  # a CPU variant of a paper's net: written out, and said so
            assert "jsonargparse replaces it whole" in (CONFIGS / f"{name}.yaml").read_text(), name
    assert used == set(PARTS)


def test_the_model_table_nets_are_the_experiment_files():
    assert list(mt.SPECS) == list(mt.TABLE) and sorted(mt.SPECS) == EXPERIMENTS
    for key, spec in mt.SPECS.items():
        assert (REPO / spec.config).is_file() and spec.config == f"configs/{key}.yaml"
        assert spec.experiment == f"configs/experiment/cpu_budget/{key}.yaml"


def test_an_experiment_file_without_a_table_row_is_an_error(tmp_path):
    (tmp_path / "srcnn.yaml").write_text("{}\n")
    (tmp_path / "mystery.yaml").write_text("{}\n")
    with pytest.raises(mt.AnticipatedError, match="mystery not in"):
        mt.load_specs(tmp_path)


# -------------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("name", TOP)
def test_top_level_config_parses(run_env, capsys, name):
    cfg = printed(capsys, "--config", f"configs/{name}.yaml")
    assert cfg["model"]["class_path"] and cfg["data"]["class_path"]


@pytest.mark.parametrize("key", EXPERIMENTS)
def test_experiment_stacks_on_its_config_as_a_merge(run_env, capsys, key):
    base = printed(capsys, "--config", f"configs/{key}.yaml")
    stacked = printed(capsys, "--config", f"configs/{key}.yaml", "--config",
                      f"configs/experiment/cpu_budget/{key}.yaml")
    delta = yaml.safe_load((CONFIGS / "experiment" / "cpu_budget" / f"{key}.yaml").read_text())
    expected = merged(base, delta)
    discriminator = expected["model"]["init_args"].get("discriminator", {}).get("init_args", {})
    if "input_size" in discriminator:  # ${.....data.init_args.patch_size} in configs/net/srgan.yaml follows the data
        discriminator["input_size"] = expected["data"]["init_args"]["patch_size"]
    assert stacked == expected


@pytest.mark.parametrize("trainer", ["cpu", "gpu", "ddp"])
def test_trainer_overlays_parse(run_env, capsys, trainer):
    cfg = printed(capsys, "--config", "configs/srcnn_paper.yaml", "--config", f"configs/trainer/{trainer}.yaml")
    overlay = yaml.safe_load((CONFIGS / "trainer" / f"{trainer}.yaml").read_text())["trainer"]
    assert {k: cfg["trainer"][k] for k in overlay} == overlay
    assert cfg["trainer"]["max_epochs"] == 1000  # the rest of the experiment's trainer stays


def test_parts_compose_on_the_command_line(run_env, capsys):
    """`--data configs/data/<recipe>.yaml` swaps a recipe in; the net/ file's relative ${...} follows the data."""
    blur = printed(capsys, "--config", "configs/srcnn.yaml", "--data", "configs/data/sr_blur.yaml")
    assert blur["data"] == printed(capsys, "--config", "configs/sr_blur.yaml")["data"]
    sr = printed(capsys, "--config", "configs/vdsr.yaml", "--model", "configs/net/srresnet.yaml",
                 "--data", "configs/data/sr_bicubic_rgb.yaml", f"{DATA}.scale=3")
    assert sr["model"]["init_args"]["net"]["init_args"]["scale"] == 3


# ---------------------------------------------------------------------------------------------- one step


def vgg(name: str, path) -> list[str]:
    return [f"--model.init_args.vgg_weights={path}"] if name in NEEDS_VGG else []


@pytest.mark.parametrize("name", TOP)
def test_top_level_config_trains_one_step(run_env, random_vgg19, name):
    one_step(run_env, name, "--config", f"configs/{name}.yaml", *SMALLER.get(name, []), *vgg(name, random_vgg19))


@pytest.mark.parametrize("key", EXPERIMENTS)
def test_experiment_trains_one_step(run_env, random_vgg19, key):
    ckpt = one_step(run_env, key, "--config", f"configs/{key}.yaml", "--config",
                    f"configs/experiment/cpu_budget/{key}.yaml", *SMALLER.get(key, []), *vgg(key, random_vgg19))
    delta = yaml.safe_load((CONFIGS / "experiment" / "cpu_budget" / f"{key}.yaml").read_text())
    hp = ckpt["hyper_parameters"]
    for option, value in delta.get("model", {}).get("init_args", {}).items():
        if option not in ("net", "discriminator"):
            assert hp[option] == value, option
