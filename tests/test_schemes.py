"""The scheme base is reusable: a manual-optimization scheme with two optimizers, written as only its training
step and its optimizers, trains and is evaluated, logged, guarded and reloaded by ``RestorationScheme``; and
``load_scheme`` rebuilds a checkpoint as the scheme it names, or refuses it in one line."""
from __future__ import annotations

import lightning
import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from datamodules.errors import DivergenceError
from lightning_modules.nets.dncnn import DnCNN
from lightning_modules.protocol import Protocol
from lightning_modules.schemes.base import RestorationScheme
from lightning_modules.schemes.supervised import SupervisedScheme
from restorelab.checkpointing import CheckpointError, load_scheme

NET = {"class_path": "lightning_modules.nets.dncnn.DnCNN", "init_args": {"channels": 1, "depth": 3, "features": 8}}


class TwoOptimizerScheme(RestorationScheme):
    """Alternates, by hand, an Adam step on the first half of the net's tensors and an SGD step on the rest."""

    automatic_optimization = False

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.guard(F.mse_loss(self.net(self.net_input(batch)), batch["target"]))
        optimizer = self.optimizers()[batch_idx % 2]
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        self.log("train/loss", loss, batch_size=len(batch["target"]))
        return loss

    def configure_optimizers(self):
        params = list(self.net.parameters())
        half = len(params) // 2
        return [torch.optim.Adam(params[:half], lr=1e-2), torch.optim.SGD(params[half:], lr=1e-2)]


class NaNScheme(TwoOptimizerScheme):
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.guard(F.mse_loss(self.net(self.net_input(batch)), batch["target"]) * float("nan"))


class Noisy(Dataset):
    """Gray 24×24 images with σ = 25 noise; the noisy image is the net's input and the baseline."""

    def __init__(self, n: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        ramps = torch.linspace(0, 1, 24).view(1, 24, 1) * torch.linspace(0, 1, 24).view(1, 1, 24)
        self.items = []
        for i in range(n):
            clean = (ramps + 0.2 * torch.rand(1, 24, 24, generator=g)).clamp(0, 1)
            noisy = clean + 25 / 255 * torch.randn(1, 24, 24, generator=g)
            self.items.append({"target": clean, "degraded": noisy, "upsampled": noisy, "name": f"img{i}.png"})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def trainer(**options) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **options)


def test_a_manual_two_optimizer_scheme_trains_and_is_evaluated_by_the_base():
    torch.manual_seed(0)
    module = TwoOptimizerScheme(DnCNN(channels=1, depth=3, features=8))
    before = [p.detach().clone() for p in module.net.parameters()]
    fit = trainer(max_epochs=1, limit_train_batches=4, limit_val_batches=2)
    fit.fit(module, DataLoader(Noisy(8), batch_size=2), DataLoader(Noisy(2, seed=1), batch_size=1))
    after = list(module.net.parameters())
    half = len(before) // 2
    # each optimizer stepped its own half
    assert any(not torch.equal(b, a) for b, a in zip(before[:half], after[:half]))
    assert any(not torch.equal(b, a) for b, a in zip(before[half:], after[half:]))
    metrics = fit.callback_metrics
    assert module.monitor == "val/psnr_y"
    for name in ("val/psnr_y", "val/ssim_y", "val/baseline_psnr_y", "val/baseline_ssim_y", "train/loss"):
        assert name in metrics and torch.isfinite(metrics[name]), name
    assert float(metrics["val/baseline_psnr_y"]) == pytest.approx(20.2, abs=1.0)  # σ = 25 noise, clipped edges

    # test rows: per image, the protocol's own scores of the same views
    data = Noisy(2, seed=2)
    trainer().test(module, DataLoader(data, batch_size=1), verbose=False)
    assert [r["image"] for r in module.test_rows] == ["img0.png", "img1.png"]
    protocol = Protocol.for_task(1, "y")
    module.eval()
    with torch.no_grad():
        for row, item in zip(module.test_rows, data):
            batch = {k: v[None] if torch.is_tensor(v) else [v] for k, v in item.items()}
            model = protocol.score(protocol.view(module.restore(batch)), protocol.view(batch["target"]))
            base = protocol.score(protocol.view(batch["upsampled"]), protocol.view(batch["target"]))
            assert row == {"image": item["name"], "baseline_psnr": base["psnr"], "baseline_ssim": base["ssim"],
                           "model_psnr": model["psnr"], "model_ssim": model["ssim"]}


def test_the_guard_stops_a_nan_loss_under_manual_optimization():
    module = NaNScheme(DnCNN(channels=1, depth=3, features=8))
    with pytest.raises(DivergenceError, match=r"training loss is nan at step 0 \(lr=0.01\)"):
        trainer(max_steps=3).fit(module, DataLoader(Noisy(4), batch_size=2))
    with pytest.raises(DivergenceError, match="discriminator loss is inf"):
        module.guard(torch.tensor(float("inf")), "discriminator loss")  # no trainer attached
    assert module.guard(torch.tensor(0.5)) == 0.5


def test_the_supervised_guard_keeps_its_resume_rate():
    module = SupervisedScheme(DnCNN(channels=1, depth=3, features=8), lr=0.05)
    with pytest.raises(DivergenceError) as e:
        module.guard(torch.tensor(float("nan")))
    assert e.value.lr == 0.05


def checkpoint(tmp_path, class_path: str | None, module: RestorationScheme | None = None, name: str = "s.ckpt"):
    """A checkpoint with the keys the CLI writes (``_class_path`` only where given)."""
    module = module or TwoOptimizerScheme(DnCNN(**NET["init_args"]))
    hparams = {"net": NET, "scale": 1, "metric_space": "y", "_instantiator": "lightning.pytorch.cli.instantiate_module"}
    if class_path is not None:
        hparams["_class_path"] = class_path
    path = tmp_path / name
    torch.save({"pytorch-lightning_version": lightning.__version__, "state_dict": module.state_dict(),
                "hyper_parameters": hparams}, path)
    return path


def test_load_scheme_rebuilds_the_scheme_the_checkpoint_names(tmp_path):
    torch.manual_seed(1)
    saved = TwoOptimizerScheme(DnCNN(**NET["init_args"]))
    module = load_scheme(checkpoint(tmp_path, f"{__name__}.TwoOptimizerScheme", saved))
    assert type(module).__name__ == "TwoOptimizerScheme" and not module.training
    for (k, a), b in zip(saved.state_dict().items(), module.state_dict().values()):
        assert torch.equal(a, b), k
    assert load_scheme(checkpoint(tmp_path, f"{__name__}.TwoOptimizerScheme"), metric_space="rgb").monitor == \
        "val/psnr_rgb"  # overrides replace saved hyper-parameters


@pytest.mark.parametrize("class_path", [None, "lightning_modules.restoration.RestorationModule"])
def test_load_scheme_falls_back_to_the_supervised_scheme(tmp_path, class_path):
    module = load_scheme(checkpoint(tmp_path, class_path, SupervisedScheme(DnCNN(**NET["init_args"]))))
    assert type(module) is SupervisedScheme and type(module.net) is DnCNN


@pytest.mark.parametrize("class_path, words", [
    ("torch.nn.Linear", "not a training scheme"),
    ("nowhere.at_all.Scheme", "cannot be imported"),
    ("lightning_modules.schemes.base.Missing", "cannot be imported"),
])
def test_load_scheme_refuses_what_is_no_scheme_in_one_line(tmp_path, class_path, words):
    with pytest.raises(CheckpointError) as e:
        load_scheme(checkpoint(tmp_path, class_path))
    assert words in str(e.value) and class_path in str(e.value) and len(str(e.value).splitlines()) == 1


def test_load_scheme_says_when_the_recorded_net_no_longer_fits(tmp_path):
    path = checkpoint(tmp_path, "lightning_modules.schemes.supervised.SupervisedScheme",
                      SupervisedScheme(DnCNN(channels=1, depth=4, features=8)))
    with pytest.raises(CheckpointError, match="cannot rebuild its SupervisedScheme") as e:
        load_scheme(path)
    assert len(str(e.value).splitlines()) == 1
