"""The adversarial scheme (lightning_modules.schemes.adversarial): each player's step moves only its own weights,
WGAN-GP's penalty on a known critic, a CLI run that resumes at its step with both optimizers' states, EMA weights
saved beside the raw ones and taken by predict, and the one-line refusal of a perceptual loss without VGG weights."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from datamodules.restoration import SRDataModule
from lightning_modules.losses import GANLoss, gradient_penalty
from lightning_modules.nets.srgan import SRGANDiscriminator
from lightning_modules.nets.srresnet import SRResNet
from lightning_modules.nets.vgg import save_random_vgg
from lightning_modules.schemes.adversarial import AdversarialScheme
from restorelab.cli import main

REPO = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false"]


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    save_random_vgg(path, depth=19, seed=0)
    return path


def tiny_scheme(vgg: Path | None, **options) -> AdversarialScheme:
    torch.manual_seed(0)
    return AdversarialScheme(SRResNet(channels=3, scale=2, blocks=1, features=8),
                             SRGANDiscriminator(channels=3, input_size=16, features=8), scale=2,
                             vgg_weights=str(vgg) if vgg else None, **options)


def tiny_data() -> SRDataModule:
    return SRDataModule(scale=2, train=["skimage:train"], val=["skimage:chelsea.png"], channels="rgb", patch_size=16,
                        batch_size=2, patches_per_epoch=8, num_workers=0)


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def changed(before: dict, module: nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.named_parameters())


@pytest.mark.parametrize("gan_loss", ["vanilla", "wgan_gp", "ragan"])
def test_each_players_step_moves_only_its_own_weights(vgg_file, gan_loss):
    scheme = tiny_scheme(vgg_file, perceptual_weight=1.0, perceptual_layer="conv2_2", gan_loss=gan_loss, n_critic=2)
    steps = []  # (which optimizer, generator moved, discriminator moved) after each optimizer step
    step = scheme._step

    def recorded(optimizer, loss):
        g, d = snapshot(scheme.net), snapshot(scheme.discriminator)
        step(optimizer, loss)
        steps.append(("g" if optimizer.optimizer.param_groups[0]["params"][0] is next(scheme.net.parameters())
                      else "d", changed(g, scheme.net), changed(d, scheme.discriminator)))

    scheme._step = recorded
    trainer = L.Trainer(max_steps=3, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(scheme, datamodule=tiny_data())
    assert steps == [("g", True, False), ("d", False, True), ("d", False, True)]
    assert trainer.global_step == 3  # Lightning counts both players' optimizer steps


def test_gradient_penalty_of_a_linear_critic_is_its_norms_distance_from_one():
    torch.manual_seed(0)
    critic = nn.Linear(12, 1, bias=True)
    with torch.no_grad():
        critic.weight.copy_(torch.arange(12.0).reshape(1, 12) / 10)
    real, fake = torch.rand(4, 12), torch.rand(4, 12)
    expected = (critic.weight.norm() - 1) ** 2  # ∇D(x̂) = w wherever x̂ lies
    assert torch.allclose(gradient_penalty(critic, real, fake), expected, rtol=1e-5)
    with torch.no_grad():
        critic.weight.div_(critic.weight.norm())
    assert gradient_penalty(critic, real, fake).item() < 1e-10
    penalty = gradient_penalty(critic, real, fake)
    assert penalty.requires_grad  # the critic's step minimises it


def test_gan_losses_push_the_players_apart():
    real, fake = torch.full((4, 1), 3.0), torch.full((4, 1), -3.0)  # a discriminator that tells them apart
    for name in ("vanilla", "lsgan", "ragan"):
        loss = GANLoss(name)
        assert loss.discriminator(real, fake) < loss.discriminator(fake, real), name
        assert loss.generator(fake, real) > loss.generator(real, fake), name
    wgan = GANLoss("wgan_gp")
    assert wgan.discriminator(real, fake).item() == pytest.approx(-6.0)
    assert wgan.generator(fake).item() == pytest.approx(3.0)


def cli_fit(runs: Path, vgg: Path, *extra: str) -> int:
    args = ["fit", "--config", "configs/srgan.yaml", f"--runs_dir={runs}", "--run_id=tiny", "--seed_everything=0",
            "--model.init_args.net.init_args.blocks=1", "--model.init_args.net.init_args.features=8",
            "--model.init_args.discriminator.init_args.features=8", f"--model.init_args.vgg_weights={vgg}",
            "--model.init_args.perceptual_layer=conv2_2", "--model.init_args.ema_decay=0.9",
            "--data.init_args.scale=2", "--data.init_args.patch_size=16", "--data.init_args.batch_size=2",
            "--data.init_args.patches_per_epoch=8", "--data.init_args.val=[skimage:chelsea.png]",
            "--data.init_args.num_workers=0", "--trainer.limit_val_batches=0", "--test_after_fit=false", *QUIET, *extra]
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code


def test_resume_continues_at_its_step_with_both_optimizers_and_the_average(run_env, vgg_file):
    assert cli_fit(run_env, vgg_file, "--trainer.max_steps=6") == 0
    last = run_env / "srgan" / "tiny" / "checkpoints" / "last.ckpt"
    first = torch.load(last, map_location="cpu", weights_only=True)
    assert first["global_step"] == 6
    assert len(first["optimizer_states"]) == 2 and all(s["state"] for s in first["optimizer_states"])
    # Lightning's EMA callback: the average in state_dict, the raw weights beside it
    assert "current_model_state" in first
    ema, raw = first["state_dict"], first["current_model_state"]
    assert any(not torch.equal(ema[k], raw[k]) for k in raw if k.startswith("net.") and raw[k].is_floating_point())

    assert cli_fit(run_env, vgg_file, "--trainer.max_steps=10", "--ckpt_path=last") == 0
    second = torch.load(last, map_location="cpu", weights_only=True)
    assert second["global_step"] == 10
    # Adam's step counts went on from the saved ones: 3 + 2 generator steps, 3 + 2 discriminator steps
    for state in second["optimizer_states"]:
        assert {float(s["step"]) for s in state["state"].values()} == {5.0}

    # evaluation rebuilds the scheme with the averaged weights; predict takes its generator
    from restorelab.checkpointing import load_scheme
    loaded = load_scheme(last)
    assert all(torch.equal(v, second["state_dict"][f"net.{k}"]) for k, v in loaded.net.state_dict().items())
    image = run_env / "in.png"
    from PIL import Image
    Image.fromarray((torch.rand(12, 12, 3) * 255).byte().numpy()).save(image)
    out = run_env / "out"
    done = subprocess.run([sys.executable, "-m", "restorelab.cli", "predict", "--ckpt", str(last), "--input",
                           str(image), "--output", str(out)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "WANDB_MODE": "offline"}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert Image.open(next(out.glob("*.png"))).size == (24, 24)


def test_perceptual_loss_without_vgg_weights_fails_in_one_line(run_env):
    done = subprocess.run([sys.executable, "-m", "restorelab.cli", "fit", "--config", "configs/srgan.yaml",
                           f"--runs_dir={run_env}", "--trainer.max_steps=2", "--data.init_args.patch_size=16",
                           "--model.init_args.net.init_args.blocks=1", *QUIET],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"},
                          timeout=300)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    assert "vgg_weights" in lines[-1] and "torchvision" in lines[-1], done.stderr[-2000:]


def test_generator_starts_from_another_runs_net_or_says_in_one_line_why_not(tmp_path, vgg_file):
    from datamodules.errors import AnticipatedError

    source = SRResNet(channels=3, scale=2, blocks=1, features=8)
    path = tmp_path / "srresnet.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in source.state_dict().items()},
                "pytorch-lightning_version": L.__version__}, path)
    scheme = tiny_scheme(vgg_file, generator_init=str(path))
    scheme.setup("fit")
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in scheme.net.state_dict().items())
    wider = AdversarialScheme(SRResNet(channels=3, scale=2, blocks=1, features=16),
                              SRGANDiscriminator(channels=3, input_size=16, features=8), scale=2,
                              generator_init=str(path))
    with pytest.raises(AnticipatedError, match="srresnet.ckpt: model.init_args.generator_init holds another net"):
        wider.setup("fit")


def test_a_non_finite_loss_stops_the_adversarial_run_naming_the_loss():
    from datamodules.errors import DivergenceError

    scheme = tiny_scheme(None, pixel_weight=1.0, perceptual_weight=0.0)
    with torch.no_grad():
        next(scheme.discriminator.parameters()).fill_(float("nan"))
    trainer = L.Trainer(max_steps=4, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(DivergenceError, match=r"generator loss is nan at step 0 \(lr=0.0001\)"):
        trainer.fit(scheme, datamodule=tiny_data())


def test_gradient_clipping_applies_to_both_players_under_manual_optimization():
    norms = []

    class GradientNorms(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    scheme = tiny_scheme(None, clip_grad=1e-3)
    trainer = L.Trainer(max_steps=4, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[GradientNorms()])
    trainer.fit(scheme, datamodule=tiny_data())
    assert len(norms) == 4 and max(norms) <= 1e-3 * (1 + 1e-4)
