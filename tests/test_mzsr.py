"""MZSR (lightning_modules/schemes/meta_transfer.py, lightning_modules/zero_shot/mzsr.py): the second-order MAML
gradient against finite differences, the per-step query weights, the task layout, which weights a meta-step and
an adaptation step change, the test-time son, the missing-kernel line, and the configs through the command line
(one meta-step, then benchmark with --steps and predict). Tiny nets in float64 where gradients are compared."""
import os
from pathlib import Path

import pytest
import torch

from datamodules.errors import AnticipatedError
from datamodules.image_ops import imresize, quantize
from datamodules.recipes import ClassicalSR
from datamodules.sources import read_image, resolve_source
from lightning_modules.nets.zssr import ZSSRNet
from lightning_modules.restorer import NetRestorer
from lightning_modules.schemes.meta_transfer import MetaTransferScheme, query_loss_weights
from lightning_modules.zero_shot.mzsr import DIRECT_RATES, adapt, adaptation_pair
from lightning_modules.zero_shot.mzsr import TestTimeAdaptation as Adapted  # not a pytest class
from restorelab import zero_shot_table as zst
from restorelab.cli import main
from tests.conftest import REPO


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_scheme(**kw) -> MetaTransferScheme:
    torch.manual_seed(2)  # a seed with no dead unit: every weight has a gradient
    net = ZSSRNet(channels=1, depth=2, features=2, bias=True, init_variance=1.0).double()
    return MetaTransferScheme(net, **{"scale": 2, "tasks": 2, "task_batch_size": 2, "inner_steps": 2,
                                      "inner_lr": 0.5, **kw})


def task_batch(tasks: int = 2, per_task: int = 4, side: int = 6, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(tasks * per_task, 1, side, side, generator=g, dtype=torch.float64)
    upsampled = target + 0.2 * torch.randn(target.shape, generator=g, dtype=torch.float64)
    return {"upsampled": upsampled, "target": target}


def meta_gradient(scheme: MetaTransferScheme, batch: dict) -> torch.Tensor:
    scheme.net.zero_grad()
    loss, _ = scheme.meta_loss(batch, step=0)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in scheme.net.parameters()])


def meta_loss_at(scheme: MetaTransferScheme, batch: dict, flat: torch.Tensor) -> float:
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(flat, scheme.net.parameters())
    with torch.enable_grad():
        return float(scheme.meta_loss(batch, step=0)[0].detach())


def test_second_order_meta_gradient_equals_finite_differences():
    """Every entry of the MAML gradient (inner steps through torch.func, outer through autograd) against central
    differences of the meta-loss in float64, to 1e-6 relative; the first-order gradient misses that by far more,
    so the check would fail if the second-order terms were dropped."""
    scheme, batch = tiny_scheme(), task_batch()
    theta = torch.nn.utils.parameters_to_vector(scheme.net.parameters()).detach().clone()
    analytic = meta_gradient(scheme, batch)
    h, numeric = 1e-6, torch.zeros_like(theta)
    for i in range(len(theta)):
        e = torch.zeros_like(theta)
        e[i] = h
        numeric[i] = (meta_loss_at(scheme, batch, theta + e) - meta_loss_at(scheme, batch, theta - e)) / (2 * h)
    meta_loss_at(scheme, batch, theta)
    scale = numeric.abs().max()
    assert scale > 1e-3
    assert (analytic - numeric).abs().max() < 1e-6 * scale + 1e-9
    first_order = tiny_scheme(first_order=True)
    first_order.net.load_state_dict(scheme.net.state_dict())
    assert (meta_gradient(first_order, batch) - numeric).abs().max() > 1e-3 * scale


def test_query_weights_follow_the_authors_formula():
    assert torch.allclose(query_loss_weights(0, 5), torch.full((5,), 0.2, dtype=torch.float64))
    mid = query_loss_weights(1000, 5)  # 0.2 - 1000 / 5 / (10000 / 3) = 0.14; the last 0.2 + 4 · 0.06
    assert torch.allclose(mid, torch.tensor([0.14] * 4 + [0.44], dtype=torch.float64))
    late = query_loss_weights(10**6, 5)
    assert torch.allclose(late, torch.tensor([0.006] * 4 + [0.976], dtype=torch.float64))
    assert torch.allclose(query_loss_weights(10**6, 5, anneal=False), query_loss_weights(0, 5))
    assert abs(float(mid.sum()) - 1) < 1e-12 and abs(float(late.sum()) - 1) < 1e-12


def test_meta_loss_leaves_the_weights_alone_and_one_meta_step_moves_every_one():
    """The inner steps work on fast weights: the net's parameters are untouched by the meta-loss and its
    backward; one Adam meta-step then changes every parameter (each has a meta-gradient)."""
    scheme, batch = tiny_scheme(), task_batch()
    before = {k: v.clone() for k, v in scheme.net.state_dict().items()}
    grads = meta_gradient(scheme, batch)
    assert all(torch.equal(before[k], v) for k, v in scheme.net.state_dict().items())
    assert (grads != 0).all()
    optimizer = scheme.configure_optimizers()
    optimizer.step()
    assert all(not torch.equal(before[k], v) for k, v in scheme.net.state_dict().items())


def test_task_layout_is_checked_in_one_line():
    scheme = tiny_scheme()
    with pytest.raises(AnticipatedError, match=r"batch_size=6 must be .* = 8"):
        scheme.split_tasks(task_batch(tasks=1, per_task=6))
    batch = task_batch() | {"kernel": torch.rand(8, 3, 3)}
    with pytest.raises(AnticipatedError, match="images_per_kernel must be 2 × model.init_args.task_batch_size = 4"):
        scheme.split_tasks(batch)
    shared = torch.rand(2, 1, 3, 3).expand(2, 4, 3, 3).reshape(8, 3, 3)
    support_x, _, query_x, _ = scheme.split_tasks(batch | {"kernel": shared})
    assert support_x.shape == query_x.shape == (2, 2, 1, 6, 6)


def test_recipe_draws_one_kernel_per_task():
    recipe = ClassicalSR(kernel="mzsr", images_per_kernel=4, order="blur_decimate")
    kernels = recipe.kernels(8, 2, torch.Generator().manual_seed(0))
    assert torch.equal(kernels[:4], kernels[:1].expand(4, -1, -1)) and not torch.equal(kernels[0], kernels[4])
    with pytest.raises(AnticipatedError, match="images_per_kernel=0"):
        ClassicalSR(kernel="mzsr", images_per_kernel=0)


@pytest.fixture(scope="module")
def camera() -> torch.Tensor:
    return read_image(resolve_source("skimage:camera.png")[0])[None][..., 180:244, 200:264].float()


def test_adaptation_example_is_the_recipes_lr_of_the_lr(camera):
    """The test-time son is made by the recipe's degradation (here: ClassicalSR's own pair of the LR image)."""
    recipe = ClassicalSR(kernel="gd_ani", round_lr=False)
    pair = recipe(camera, 2, None, None)
    inputs, target = adaptation_pair(camera, 2, pair["kernel"][0], pair["order"])
    assert torch.equal(target, camera)
    assert (inputs - imresize(pair["degraded"].clamp(0, 1), size=(64, 64))).abs().max() < 1e-6
    assert pair["order"] == "blur_decimate" and ClassicalSR(kernel="gb_1.3")(camera, 2, None, None)["order"] == "blur_bicubic"


def tiny_restorer() -> NetRestorer:
    torch.manual_seed(0)
    return NetRestorer(ZSSRNet(channels=1, depth=3, features=4, bias=True, init_variance=1.0).eval(), "y", "tiny",
                       "sr", (2,), tile=0)


def test_one_adaptation_step_changes_a_copy_of_the_net_only(camera):
    """One step at the authors' first rate moves every weight of the per-image copy; the loaded net stays as it
    was, so the next image starts from the same weights; 0 steps is the net itself."""
    restorer = tiny_restorer()
    initial = {k: v.clone() for k, v in restorer.net.state_dict().items()}
    lr = quantize(imresize(camera, size=(32, 32)))
    pair = {"degraded": lr, "scale": torch.tensor([2]), "kernel": ClassicalSR(kernel="gd_2.0").fixed_kernel[None]}
    one = Adapted(restorer, 1)
    first = one(pair)
    assert all(torch.equal(initial[k], v) for k, v in restorer.net.state_dict().items())
    assert torch.equal(one(pair), first) and one.last_budget["updates"] == 1
    assert not torch.equal(first, Adapted(restorer, 0)(pair))
    assert torch.equal(Adapted(restorer, 0)(pair), restorer(pair).clamp(0, 1))

    copy = ZSSRNet(channels=1, depth=3, features=4, bias=True)
    copy.load_state_dict(initial)
    inputs, target = adaptation_pair(lr, 2, pair["kernel"][0], "blur_decimate")
    assert adapt(copy, inputs, target, 1, DIRECT_RATES) == 1
    assert all(not torch.equal(initial[k], v) for k, v in copy.state_dict().items())


def test_a_missing_kernel_is_one_line(camera):
    pair = {"degraded": camera[..., :32, :32], "scale": torch.tensor([2])}
    with pytest.raises(AnticipatedError, match="needs the .*kernel.* the pair of x.png has none"):
        Adapted(tiny_restorer(), 1, use_kernel=True)(pair, "x.png")
    Adapted(tiny_restorer(), 1)(pair)  # without a kernel: bicubic sons, as the authors' main.py falls back
    with pytest.raises(AnticipatedError, match="--steps=-1"):
        Adapted(tiny_restorer(), -1)


QUIET = ["--test_after_fit=false", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
         "--trainer.enable_model_summary=false", "--trainer.max_steps=1"]
ON_PHOTOS = ["--model.init_args.net.init_args.features=4", "--data.init_args.patch_size=16",
             "--data.init_args.train=[skimage:train]", "--data.init_args.val=[skimage:val]"]
TINY_META = [*ON_PHOTOS, "--model.init_args.tasks=1", "--model.init_args.task_batch_size=2",
             "--model.init_args.inner_steps=2", "--data.init_args.recipe.init_args.images_per_kernel=4",
             "--data.init_args.batch_size=4", *QUIET]


def fit(*args: str) -> None:
    with pytest.raises(SystemExit) as e:
        main(["fit", *args])
    assert e.value.code == 0


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> Path:
    """The two MZSR stages through their configs, one step each on the bundled photos with a 4-channel net, in the
    layout `restorelab zero-shot` reuses (<out>/runs/<stage>/cpu-budget); the meta-stage validates once (the
    adapted net, in Lightning's inference mode)."""
    out = tmp_path_factory.mktemp("zero_shot")
    runs = out / "runs"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        mp.delenv("RESTORELAB_RUN_DIR", raising=False)
        fit("--config", "configs/mzsr_pretrain.yaml", f"--runs_dir={runs}", "--run_id=cpu-budget", *ON_PHOTOS,
            "--data.init_args.batch_size=2", "--trainer.limit_val_batches=0", *QUIET)
        pre = runs / "mzsr_pretrain" / "cpu-budget" / "checkpoints" / "last.ckpt"
        fit("--config", "configs/mzsr.yaml", f"--runs_dir={runs}", "--run_id=cpu-budget",
            f"--model.init_args.init_from={pre}", *TINY_META, "--trainer.limit_val_batches=1",
            "--data.init_args.patches_per_epoch=4")
    return out


def test_meta_training_starts_from_the_pretrained_net_and_moves_every_weight(tiny_runs):
    start = torch.load(tiny_runs / "runs/mzsr_pretrain/cpu-budget/checkpoints/last.ckpt", map_location="cpu",
                       weights_only=True)["state_dict"]
    meta = torch.load(tiny_runs / "runs/mzsr/cpu-budget/checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert meta["global_step"] == 1
    # validation ran on the adapted net (in inference mode) and chose a checkpoint by it
    assert list((tiny_runs / "runs/mzsr/cpu-budget/checkpoints").glob("best-*.ckpt"))
    assert set(start) == set(meta["state_dict"]) and all(not torch.equal(start[k], meta["state_dict"][k]) for k in start)


def test_benchmark_and_predict_adapt_with_steps(run_env, tiny_runs, capsys):
    """``benchmark --steps 0 1``: one row each, with the updates; ``predict --steps 1 --kernel gd_2.0``."""
    meta = tiny_runs / "runs/mzsr/cpu-budget/checkpoints/last.ckpt"
    with pytest.raises(SystemExit) as e:
        main(["benchmark", "--ckpt", str(meta), "--names", "MZSR", "--steps", "0", "1", "--sets",
              "skimage:camera.png", "--scales", "2", "--kernel", "gd_2.0", "--no_extra_metrics", "--no_progress",
              "--out", str(run_env / "bench")])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "| MZSR, 0 steps |" in out and "| MZSR, 1 step |" in out and "| 1 / " in out
    with pytest.raises(SystemExit) as e:
        main(["predict", "--ckpt", str(meta), "--steps", "1", "--kernel", "gd_2.0", "--input", "skimage:camera.png",
              "--output", str(run_env / "sr"), "--no_progress"])
    assert e.value.code == 0
    assert (run_env / "sr" / "camera.png").is_file()


def test_zero_shot_command_reuses_the_runs_and_writes_the_readme_table(run_env, tiny_runs, capsys):
    """`restorelab zero-shot` on one photo and one kernel, reusing the stages' checkpoints and a given supervised
    net: every method's row, the kernels as columns, and only the marked README section rewritten."""
    readme = run_env / "README.md"
    readme.write_text(f"before\n{zst.START}\nold\n{zst.END}\nafter\n")
    pre = tiny_runs / "runs/mzsr_pretrain/cpu-budget/checkpoints/last.ckpt"
    data_before = os.environ.get("RESTORELAB_DATA")
    with pytest.raises(SystemExit) as e:
        main(["zero-shot", "--sets", "skimage:camera.png", "--kernels", "gd_2.0", "--steps", "1", "--zssr",
              "zssr:max_iters=2,features=4,depth=2,ensemble=false,back_projection_iters=1", "--supervised", str(pre),
              "--out", str(tiny_runs), "--readme", str(readme), "--no_progress", "--data_root", str(run_env)])
    assert e.value.code == 0
    assert os.environ.get("RESTORELAB_DATA") == data_before  # --data_root reached the stages only
    text = readme.read_text()
    assert text.startswith(f"before\n{zst.START}\n") and text.endswith(f"{zst.END}\nafter\n") and "old" not in text
    labels = ["Bicubic", zst.SUPERVISED_LABEL, f"{zst.PRETRAINED_LABEL}, 0 steps", f"{zst.PRETRAINED_LABEL}, 1 step",
              "ZSSR", "MZSR, 0 steps", "MZSR, 1 step"]
    at = [text.index(f"| {label}") for label in labels]
    assert at == sorted(at)  # in the table's order
    assert "g^d_2.0" in text and (tiny_runs / "zero_shot.csv").is_file()
    rows = [line for line in text.splitlines() if line.startswith("| MZSR, 1 step |")]
    assert rows and rows[0].split("|")[-3].strip() == "1"  # one update per image


def test_zero_shot_without_markers_is_one_line(tmp_path):
    (tmp_path / "README.md").write_text("no markers\n")
    with pytest.raises(AnticipatedError, match="needs the markers"):
        zst.rewrite_readme(tmp_path / "README.md", "table")


def test_init_from_a_missing_file_is_one_line(run_env, capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", "configs/mzsr.yaml", f"--runs_dir={run_env}",
              f"--model.init_args.init_from={run_env / 'nowhere.ckpt'}", *TINY_META, "--trainer.limit_val_batches=0"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("restorelab: error: ") and "nowhere.ckpt: no such checkpoint file" in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_a_kernel_method_on_pairs_without_one_is_one_line_on_the_command_line(run_env, capsys):
    """ZSSR told to use the kernel, on bicubic pairs (which record none): exit 2, one line naming the image."""
    with pytest.raises(SystemExit) as e:
        main(["benchmark", "--method", "zssr:use_kernel=true,max_iters=1", "--sets", "skimage:camera.png",
              "--scales", "2", "--no_extra_metrics", "--no_progress", "--out", str(run_env / "bench")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("restorelab: error: ") and "kernel" in err[-1] and "camera.png" in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_zero_shot_without_the_benchmark_sets_is_one_line(run_env, monkeypatch, capsys):
    monkeypatch.delenv("RESTORELAB_DATA", raising=False)
    with pytest.raises(SystemExit) as e:
        main(["zero-shot", "--out", str(run_env / "zs"), "--readme", ""])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("restorelab: error: ") and "RESTORELAB_DATA" in err[0]
    with pytest.raises(SystemExit) as e:
        main(["zero-shot", "--data_root", str(run_env / "nowhere"), "--readme", ""])
    assert e.value.code == 2 and "nowhere: no such benchmark folder" in capsys.readouterr().err
