"""Training options the papers' recipes need: the summed (Caffe-style) loss, the polynomial decay, per-tensor
gradient clipping."""
from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from datamodules.restoration import SRDataModule
from lightning_modules.losses import PixelLoss
from lightning_modules.nets.srcnn import SRCNN
from lightning_modules.schemes.supervised import SupervisedScheme


def test_summed_loss_is_half_the_per_sample_sum_for_mse():
    pred, target = torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)
    sq = (pred - target) ** 2
    assert PixelLoss("mse")(pred, target) == pytest.approx(float(sq.mean()))
    assert PixelLoss("mse", "sum")(pred, target) == pytest.approx(float(sq.sum() / 4 / 2))
    assert PixelLoss("l1", "sum")(pred, target) == pytest.approx(float((pred - target).abs().sum() / 4))
    # same direction, patch-area times larger: what the papers' SGD rates were chosen for
    assert PixelLoss("mse", "sum")(pred, target) == pytest.approx(float(PixelLoss("mse")(pred, target)) * 64 / 2)
    with pytest.raises(ValueError, match="loss reduction 'total'"):
        PixelLoss("mse", "total")


class RecordLR(L.Callback):
    def __init__(self):
        self.lrs = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_poly_schedule_decays_per_step_to_zero():
    torch.manual_seed(0)
    dm = SRDataModule(scale=3, train=["skimage:coffee.png"], val=["skimage:chelsea.png"], patch_size=24,
                      batch_size=2, patches_per_epoch=8)
    module = SupervisedScheme(SRCNN(kernel_sizes=[3, 1, 3], filters=[4, 4]), scale=3, lr=1e-3,
                               scheduler="poly", power=0.3)
    record = RecordLR()
    L.Trainer(max_steps=10, logger=False, enable_checkpointing=False, accelerator="cpu", devices=1,
              limit_val_batches=0, callbacks=[record], enable_progress_bar=False,
              enable_model_summary=False).fit(module, datamodule=dm)
    assert record.lrs == pytest.approx([1e-3 * (1 - k / 10) ** 0.3 for k in range(10)])


def test_tensor_norm_clipping_clips_each_gradient_on_its_own():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 1, 3))
    module = SupervisedScheme(net, clip_grad=2.5, clip_algorithm="tensor_norm")
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    grads = [torch.full_like(p, 10.0) if i % 2 == 0 else torch.full_like(p, 1e-3) for i, p in enumerate(net.parameters())]
    for p, g in zip(net.parameters(), grads):
        p.grad = g.clone()
    module.configure_gradient_clipping(opt)
    for p, g in zip(net.parameters(), grads):
        if g.norm() > 2.5:  # clipped to the bound, direction kept
            assert p.grad.norm() == pytest.approx(2.5, rel=1e-5)
            assert torch.allclose(p.grad / p.grad.norm(), g / g.norm())
        else:  # small tensors untouched, whatever the others' size (a global norm would shrink them too)
            assert torch.equal(p.grad, g)
