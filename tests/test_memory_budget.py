"""Evaluation and predict on any size within a memory budget (``lightning_modules.inference``): one-line refusals
of tiles and budgets that cannot work, automatic tiling equal to one pass, a per-pass memory peak that stays flat
as images grow, the output folder checked before any work, no silent overwrite, NLRN's chunked non-local step
equal to the one-piece one, and NLRN's constructor checks.

Tolerances: tiled and one-pass outputs, and NLRN's chunked and one-piece steps, do the same arithmetic per output
value, but on tensors of other shapes, so vectorised reductions may sum in another order: float32 rounding
(eps 1.2e-7) over the few hundred terms of a pixel's sums, through a few layers, stays far below 1e-5 on
outputs of order 1, while any real error (a wrong halo, a misplaced chunk) is of order 1e-2 or more. On 8-bit
PNGs that is at most one grey level where a value sits on a rounding boundary."""
from __future__ import annotations

import os
import subprocess

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from datamodules.errors import AnticipatedError
from lightning_modules.inference import (GB, MemoryBudgetError, _LiveBytes, budgeted_forward, image_bytes,
                                         measure_peak_bytes, min_tile, pass_bytes, plan, tiled_forward)
from lightning_modules.nets.nlrn import NLRN
from restorelab.predict import load_restorer
from tests.conftest import REPO
from tests.test_predict import make_checkpoint, run, write

ATOL = 1e-5  # see the module docstring


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpts")
    return {k: make_checkpoint(folder, k) for k in ("srcnn_y_x3", "dncnn_gray")}


@pytest.fixture
def gray_png(tmp_path):
    return write(tmp_path / "in.png", np.random.default_rng(0).integers(0, 256, (40, 50), dtype=np.uint8))


def one_line(err: str, *words: str) -> None:
    assert len(err.splitlines()) == 1 and err.startswith("restorelab: error: "), err
    assert "Traceback" not in err
    assert all(w in err for w in words), (words, err)


def tight_budget(net: nn.Module, shape: tuple[int, ...], tile: int) -> int:
    """A budget that a ``tile`` pass fits but one pass over ``shape`` does not."""
    budget = plan(net, shape, 1 << 40, tile).total_bytes + 1
    assert plan(net, shape, 1 << 40, 0).total_bytes > budget
    return budget


# ------------------------------------------------------------------------------------ tiles on the command line


def test_tile_too_small_is_one_line_from_the_real_command(ckpts, gray_png, tmp_path):
    """The user's case: ``--tile 1`` ran for minutes; now it is refused at once, saying the minimum."""
    smallest = min_tile(load_restorer(ckpts["dncnn_gray"]).net)
    done = subprocess.run([str(REPO / ".venv" / "bin" / "restorelab"), "predict", "--ckpt", str(ckpts["dncnn_gray"]),
                           "--input", str(gray_png), "--output", str(tmp_path / "out"), "--tile", "1"],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "RESTORELAB_DEBUG": ""})
    assert done.returncode == 2
    one_line(done.stderr.strip(), "--tile 1", f"minimum is {smallest}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, words", [
    (["--tile", "-3"], ["--tile -3", "positive"]),
    (["--tile", "5"], ["--tile 5", "minimum is 16"]),
    (["--memory_budget", "0"], ["--memory_budget=0"]),
    (["--memory_budget", "-2"], ["--memory_budget=-2"]),
    (["--memory_budget", "nan"], ["--memory_budget=nan"]),
])
def test_bad_tiles_and_budgets_are_one_line(ckpts, gray_png, tmp_path, capsys, args, words):
    code, err = run(capsys, "--ckpt", ckpts["dncnn_gray"], "--input", gray_png, "--output", tmp_path / "out", *args)
    assert code == 2
    one_line(err, *words)
    assert not (tmp_path / "out").exists()


def test_one_pass_over_the_budget_is_refused(ckpts, gray_png, tmp_path, capsys):
    net = load_restorer(ckpts["dncnn_gray"]).net
    budget = tight_budget(net, (1, 1, 40, 50), min_tile(net))
    code, err = run(capsys, "--ckpt", ckpts["dncnn_gray"], "--input", gray_png, "--output", tmp_path / "out",
                    "--tile", 0, "--memory_budget", budget / GB)
    assert code == 2
    one_line(err, "--tile 0", "--memory_budget", "leave --tile unset", str(gray_png))


def test_budget_below_the_smallest_tile_says_what_is_needed(ckpts, gray_png, tmp_path, capsys):
    code, err = run(capsys, "--ckpt", ckpts["dncnn_gray"], "--input", gray_png, "--output", tmp_path / "out",
                    "--memory_budget", "1e-6")
    assert code == 2
    one_line(err, "--memory_budget 1e-06 GB is too small", "raise --memory_budget to at least")


# ------------------------------------------------------------------------------------------ automatic tiling


def test_auto_tiling_under_a_small_budget_equals_one_pass(ckpts):
    image = torch.rand(1, 1, 61, 75, generator=torch.Generator().manual_seed(3))
    one_pass = load_restorer(ckpts["dncnn_gray"], tile=0)
    budget = tight_budget(one_pass.net, tuple(image.shape), 2 * min_tile(one_pass.net))
    chosen = plan(one_pass.net, tuple(image.shape), budget)
    assert chosen.tile > 0 and chosen.passes > 1 and chosen.total_bytes <= budget
    tiled = load_restorer(ckpts["dncnn_gray"], budget=budget)
    passes = []
    tiled.on_tile = lambda done, total: passes.append(total)
    out = tiled({"degraded": image})
    assert passes and passes[-1] == chosen.passes
    torch.testing.assert_close(out, one_pass({"degraded": image}), atol=ATOL, rtol=0)


def test_auto_tiling_from_the_command_line(ckpts, tmp_path, capsys):
    # SRCNN on a colour image: the Y goes through the net bicubic-upsampled (3x), tiles are planned on that
    image = write(tmp_path / "photo.png", np.random.default_rng(4).integers(0, 256, (30, 41, 3), dtype=np.uint8))
    net = load_restorer(ckpts["srcnn_y_x3"]).net
    budget = tight_budget(net, (1, 1, 90, 123), min_tile(net))
    for name, extra in (("whole", ["--tile", 0]), ("auto", ["--memory_budget", budget / GB])):
        code, _ = run(capsys, "--ckpt", ckpts["srcnn_y_x3"], "--input", image, "--output", tmp_path / name, *extra)
        assert code == 0
    whole, auto = (cv2.imread(str(tmp_path / n / "photo.png")).astype(int) for n in ("whole", "auto"))
    assert whole.shape == (90, 123, 3) and np.abs(whole - auto).max() <= 1  # a rounding step may flip


def test_pass_peak_is_flat_in_image_size_when_tiling(ckpts):
    """With tiles, the estimate of a pass and the meter's peak over a whole tiled run less the output image (what
    must grow with the image) do not grow with the image; the estimate covers what the meter measures."""
    net = load_restorer(ckpts["dncnn_gray"]).net
    tile = 2 * min_tile(net)
    budget = plan(net, (1, 1, 256, 256), 1 << 40, tile).total_bytes + 1  # the largest image's tiles fit
    peaks, estimates = {}, {}
    for side in (128, 192, 256):  # from 4 tiles a side: the largest tile has its halo on every side
        x = torch.rand(1, 1, side, side)
        chosen = plan(net, tuple(x.shape), budget, tile)
        auto = plan(net, tuple(x.shape), budget)
        assert auto.passes > 1 and auto.total_bytes <= budget and auto.tile >= tile  # one pass would not fit
        estimates[side] = chosen.pass_bytes
        owned = {t.untyped_storage()._cdata for t in [x, *net.parameters(), *net.buffers()]}
        meter = _LiveBytes(owned, x.device)
        with meter:
            y = budgeted_forward(net, x, budget, tile)
        peaks[side] = meter.peak - y.nbytes
        assert peaks[side] <= chosen.pass_bytes
    assert len(set(estimates.values())) == 1
    assert max(peaks.values()) <= 1.05 * min(peaks.values())


def test_estimate_covers_the_measured_peak_of_one_pass():
    torch.manual_seed(0)
    net = NLRN(features=16, steps=2, window=9, embed_features=8).eval()
    for shape in [(1, 1, 37, 53), (2, 1, 80, 70)]:
        measured = measure_peak_bytes(net, shape, meta=False)  # real data, not the meta probe
        assert measured <= pass_bytes(net, shape) <= 2 * measured
    assert image_bytes(net, (1, 1, 10, 20)) == 4 * 200 * 2


class GlobalGate(nn.Module):
    """Every output pixel depends on the whole image (global mean): cannot be tiled exactly."""

    scale, receptive_field, size_multiple, in_channels, out_channels = 1, None, 1, 1, 1

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.out = nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x):
        return self.out(self.conv(x) * torch.sigmoid(x.mean((-2, -1), keepdim=True)))


def test_global_receptive_field_is_refused_with_what_fits():
    net = GlobalGate().eval()
    budget = plan(net, (1, 1, 100, 100), 1 << 40).total_bytes
    assert plan(net, (1, 1, 100, 100), budget).tile == 0
    with pytest.raises(MemoryBudgetError) as caught:
        plan(net, (1, 1, 400, 300), budget)
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and "global receptive field" in message and "--memory_budget" in message
    side = int(message.split("images up to about ")[1].split("x")[0])
    assert 90 <= side <= 100  # what it says fits does fit, and is not far off
    assert plan(net, (1, 1, side, side), budget).tile == 0


# ------------------------------------------------------------------------------------------------ outputs


def test_output_folder_that_cannot_be_made_fails_before_any_work(ckpts, gray_png, tmp_path, capsys):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    cases = [a_file, a_file / "sub"]
    if os.geteuid() != 0:  # root writes into read-only folders
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases.append(locked / "out")
    for folder in cases:
        code, err = run(capsys, "--ckpt", ckpts["dncnn_gray"], "--input", gray_png, "--output", folder)
        assert code == 2
        one_line(err, str(folder))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.png", "taken", *(["locked"] if len(cases) > 2 else [])])


def test_no_silent_overwrite(ckpts, tmp_path, capsys):
    rng = np.random.default_rng(5)
    inputs = tmp_path / "in"
    inputs.mkdir()
    write(inputs / "a.tif", rng.integers(0, 256, (20, 24), dtype=np.uint8))
    write(inputs / "a.png", rng.integers(0, 256, (20, 24), dtype=np.uint8))
    out = tmp_path / "out"
    # one run: both kept, under their whole names
    assert run(capsys, "--ckpt", ckpts["dncnn_gray"], "--input", inputs, "--output", out)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png.png", "a.tif.png"]
    # two runs into one folder: the second would replace a.png and is refused before any work
    single = tmp_path / "single"
    assert run(capsys, "--ckpt", ckpts["dncnn_gray"], "--input", inputs / "a.tif", "--output", single)[0] == 0
    first = (single / "a.png").read_bytes()
    code, err = run(capsys, "--ckpt", ckpts["dncnn_gray"], "--input", inputs / "a.png", "--output", single)
    assert code == 2
    one_line(err, str(single), "a.png", "--overwrite")
    assert (single / "a.png").read_bytes() == first
    assert run(capsys, "--ckpt", ckpts["dncnn_gray"], "--input", inputs / "a.png", "--output", single,
               "--overwrite")[0] == 0
    assert (single / "a.png").read_bytes() != first


def test_missing_input_file_is_called_a_file(ckpts, tmp_path, capsys):
    code, err = run(capsys, "--ckpt", ckpts["dncnn_gray"], "--input", tmp_path / "nope.png", "--output", tmp_path / "o")
    assert code == 2
    one_line(err, "nope.png", "no such image file")
    assert "folder" not in err


def test_progress_bar_runs_and_can_be_disabled(ckpts, gray_png, tmp_path, capsys):
    for i, extra in enumerate([[], ["--no_progress"]]):
        code, _ = run(capsys, "--ckpt", ckpts["dncnn_gray"], "--input", gray_png, "--output", tmp_path / f"o{i}",
                      "--memory_budget", 1e-3, *extra)
        assert code == 0 and (tmp_path / f"o{i}" / "in.png").is_file()


# ------------------------------------------------------------------------------------ the LightningModule


def test_module_restore_tiles_within_its_budget():
    from lightning_modules.nets.dncnn import DnCNN
    from lightning_modules.schemes.supervised import SupervisedScheme

    torch.manual_seed(0)
    module = SupervisedScheme(DnCNN(channels=1, depth=4, features=8)).eval()
    x = torch.rand(1, 1, 70, 90)
    with torch.no_grad():
        whole = module.net(x)
        module.memory_budget = tight_budget(module.net, tuple(x.shape), min_tile(module.net))
        assert plan(module.net, tuple(x.shape), module.memory_budget).passes > 1
        tiled = module.restore({"upsampled": x, "degraded": x, "name": ["a.png"]})
        torch.testing.assert_close(tiled, whole, atol=ATOL, rtol=0)
        module.memory_budget = 1000
        with pytest.raises(MemoryBudgetError, match="RESTORELAB_MEMORY_BUDGET"):
            module.restore({"upsampled": x, "degraded": x, "name": ["a.png"]})


# ------------------------------------------------------------------------------------------------- NLRN


def random_nlrn(**kwargs) -> NLRN:
    torch.manual_seed(0)
    net = NLRN(**kwargs).eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    nn.init.normal_(net.non_local.g.weight, std=0.1)  # g starts at 0: the attention would play no part
    return net


def test_nlrn_chunked_non_local_equals_one_piece():
    net = random_nlrn(features=16, steps=3, window=7, embed_features=8)
    x = torch.rand(2, 1, 23, 19, generator=torch.Generator().manual_seed(1))
    outputs = {}
    with torch.no_grad():
        for rows in (0, 1, 5, None):  # 0: one piece; None: sized by CHUNK_BYTES
            net.non_local.chunk_rows = rows
            outputs[rows] = net(x)
    trained = net(x)  # with autograd: one piece
    assert (outputs[0] - x).abs().max() > 1e-2  # the attention changes the output
    for rows in (1, 5, None):
        torch.testing.assert_close(outputs[rows], outputs[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(trained.detach(), outputs[0], atol=ATOL, rtol=0)


def test_nlrn_chunks_bound_memory_and_tiles_equal_one_pass():
    net = random_nlrn(features=32, steps=2, window=15, embed_features=16)
    shape = (1, 1, 96, 96)
    net.non_local.chunk_rows = 0
    whole = measure_peak_bytes(net, shape)
    net.non_local.chunk_rows = 8
    chunked = measure_peak_bytes(net, shape)
    assert chunked < 0.6 * whole  # one correlation kept whole, the rest of a step per chunk
    net.non_local.chunk_rows = None
    x = torch.rand(1, 1, 50, 47, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(tiled_forward(net, x, tile=min_tile(net)), net(x), atol=ATOL, rtol=0)


@pytest.mark.parametrize("name, value", [("window", 44), ("window", 0), ("window", -3), ("steps", 0),
                                         ("features", 0), ("embed_features", 0), ("channels", 2)])
def test_nlrn_arguments_are_checked(name, value):
    with pytest.raises(AnticipatedError) as caught:
        NLRN(**{name: value})
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and message.startswith(f"model.init_args.net.init_args.{name}={value}:")


def test_nlrn_argument_error_from_the_command_line(run_env, capsys):
    code, err = run(capsys, "--config", "configs/nlrn.yaml", "--model.init_args.net.init_args.window", 44,
                    "--runs_dir", run_env / "runs", "--trainer.fast_dev_run", "true", tool="fit")
    assert code == 2
    one_line(err, "model.init_args.net.init_args.window=44", "odd")


def test_nlrn_paper_window_memory_per_pixel():
    """The user's case (configs/nlrn.yaml, 18.8 GB validating 512² photos): with the 45×45 window and 128 features,
    a chunked step holds about one window² correlation per pixel (8.1 kB) plus the features; one piece held
    several. Per step, so 2 of the 12 steps are enough to measure (on the meta device: shapes only)."""
    net = NLRN(features=128, steps=2, window=45, embed_features=64).eval()
    shape = (1, 1, 128, 128)
    chunked = measure_peak_bytes(net, shape)
    net.non_local.chunk_rows = 0
    whole = measure_peak_bytes(net, shape)
    assert chunked < 0.5 * whole
    assert chunked / 128**2 < 16_000  # bytes per pixel: a 512² photo's pass in about 4 GB
