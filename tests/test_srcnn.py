"""SRCNN: every ablation setting of the paper builds, keeps shapes, and has the receptive field it claims."""
from __future__ import annotations

import lightning as L
import pytest
import torch

from datamodules.restoration import SRDataModule
from lightning_modules.nets.srcnn import SRCNN
from lightning_modules.schemes.supervised import SupervisedScheme

ABLATIONS = [  # (kernel_sizes, filters): the paper's Sec. 4.3 settings
    ([9, 1, 5], [64, 32]), ([9, 3, 5], [64, 32]), ([9, 5, 5], [64, 32]),
    ([9, 5, 5], [32, 16]), ([9, 5, 5], [128, 64]),
    ([9, 1, 1, 5], [64, 32, 16]), ([9, 1, 1, 1, 5], [64, 32, 16, 16]), ([9, 3, 3, 5], [64, 32, 16]),
    ([11, 1, 7], [64, 32]),
]


def support_width(net: SRCNN, size: int = 61) -> int:
    """Width of the input window that one central output pixel depends on (measured with gradients)."""
    x = torch.rand(1, net.in_channels, size, size, dtype=torch.float64, requires_grad=True)
    out = net.double()(x)
    c = out.shape[-1] // 2
    out[0, :, c, c].sum().backward()
    cols = (x.grad.abs().sum(dim=(0, 1, 2)) > 0).nonzero()
    return int(cols.max() - cols.min() + 1)


@pytest.mark.parametrize("kernel_sizes,filters", ABLATIONS)
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_receptive_field(kernel_sizes, filters, channels):
    torch.manual_seed(0)
    net = SRCNN(kernel_sizes=kernel_sizes, filters=filters, channels=channels, init_std=None).eval()
    assert net.receptive_field == sum(kernel_sizes) - len(kernel_sizes) + 1
    x = torch.rand(2, channels, 37, 41)
    assert net(x).shape == x.shape
    assert support_width(net) == net.receptive_field
    valid = SRCNN(kernel_sizes=kernel_sizes, filters=filters, channels=channels, padding="valid")
    b = valid.border
    assert valid.train()(x).shape == (2, channels, 37 - 2 * b, 41 - 2 * b)  # the paper's training setup
    assert valid.eval()(x).shape == x.shape  # test time: replicate-padded, like the authors' 'same' filtering
    n_params = sum(p.numel() for p in net.parameters())
    widths = [channels, *filters, channels]
    assert n_params == sum(widths[i] * widths[i + 1] * k * k + widths[i + 1] for i, k in enumerate(kernel_sizes))


def test_paper_parameter_count():
    # 9-1-5 with n1/n2 = 64/32 on Y: 8,032 weights (+97 biases), the paper's "8,032 parameters"
    net = SRCNN(kernel_sizes=[9, 1, 5], filters=[64, 32])
    assert sum(p.numel() for n, p in net.named_parameters() if n.endswith("weight")) == 8032


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match=r"len\(filters\) == len\(kernel_sizes\) - 1"):
        SRCNN(kernel_sizes=[9, 1, 1, 5], filters=[64, 32])
    with pytest.raises(ValueError, match="odd"):
        SRCNN(kernel_sizes=[9, 4, 5])
    with pytest.raises(ValueError, match="padding"):
        SRCNN(padding="full")
    for mean in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"input_mean=.*must be in \[0, 1\]"):
            SRCNN(input_mean=mean)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_input_mean_is_taken_off_the_input_and_given_back_to_the_output(padding):
    """make train's zero-centred input: the same weights map x - m to y - m, in training and in evaluation."""
    torch.manual_seed(0)
    centred = SRCNN(kernel_sizes=[9, 5, 5], filters=[8, 4], padding=padding, init_std=None, input_mean=0.37)
    plain = SRCNN(kernel_sizes=[9, 5, 5], filters=[8, 4], padding=padding, init_std=None)
    plain.load_state_dict(centred.state_dict())  # no buffer: checkpoints keep the paper net's keys
    x = torch.rand(2, 1, 33, 33)
    for mode in (True, False):
        centred.train(mode), plain.train(mode)
        with torch.no_grad():
            torch.testing.assert_close(centred(x), plain(x - 0.37) + 0.37, rtol=1e-5, atol=1e-6)
            assert (centred(x) - plain(x)).abs().max() > 1e-3  # the offset is no bias the net absorbs by itself


def test_init_and_per_layer_learning_rates():
    net = SRCNN(init_std=1e-3)
    assert abs(float(net.features[0].weight.std()) - 1e-3) < 2e-4
    assert float(net.reconstruction.bias.abs().max()) == 0
    module = SupervisedScheme(net, scale=3, lr=1e-4, optimizer="sgd", lr_multipliers={"reconstruction": 0.1})
    opt = module.configure_optimizers()
    lrs = sorted(g["lr"] for g in opt.param_groups)
    assert lrs == pytest.approx([1e-5, 1e-4])
    assert sum(len(g["params"]) for g in opt.param_groups) == 6


def test_valid_padding_trains_on_the_target_centre():
    """A few real steps with the paper's 'valid' convolutions: the loss is taken on the cropped centre."""
    torch.manual_seed(0)
    module = SupervisedScheme(SRCNN(kernel_sizes=[9, 1, 5], filters=[16, 8], padding="valid"), scale=3)
    data = SRDataModule(scale=3, val=["skimage:chelsea.png"], patch_size=33, batch_size=8, patches_per_epoch=24)
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, accelerator="cpu",
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1)
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 3
    assert torch.isfinite(trainer.callback_metrics["val/psnr_y"])
    with pytest.raises(ValueError, match="upsamples x4 but the data scale is x3"):
        net = SRCNN()
        net.scale = 4
        SupervisedScheme(net, scale=3)


def test_valid_training_runs_no_padding_and_evaluation_replicates_the_border():
    """A 'valid' net pads nothing while training (a zero-width replicate pad would copy every activation and
    gradient), and at evaluation replicates the input's border, as the authors' imfilter(..., 'replicate')."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.__name__)
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    net = SRCNN(kernel_sizes=[9, 5, 5], filters=[8, 4], padding="valid").train()
    x = torch.rand(2, 1, 33, 33)
    with Ops() as ops:
        net(x).square().mean().backward()
    assert not [n for n in ops.names if "pad" in n], ops.names
    net.eval()
    with Ops() as ops, torch.no_grad():
        out = net(x)
    assert out.shape == x.shape
    assert any("pad" in n for n in ops.names), ops.names
    # the same weights on the border-replicated input, 'valid' by hand: equal up to float rounding
    padded = torch.nn.functional.pad(x, [8] * 4, mode="replicate")
    with torch.no_grad():
        ref = net.reconstruction(net.features(padded))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_fit_with_an_impossible_net_size_is_one_line_naming_the_option(tmp_path):
    """Through the real command line: exit 2, the last stderr line names the option, no traceback."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([str(Path(sys.executable).with_name("restorelab")), "fit", "--config", "configs/srcnn.yaml",
                           "--model.init_args.net.init_args.filters=[0, 4]", "--runs_dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=repo, timeout=600)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "restorelab: error: model.init_args.net.init_args.filters=[0, 4]: every entry must be an integer >= 1 "
        "for SRCNN")
