"""The texture statistics in the one protocol: ``Protocol(texture=True)`` scores them, ``restorelab benchmark
--texture`` / ``--lpips`` tabulate them, ``restorelab models`` carries them beside PSNR, and orders and feeds the
adversarial rows (SRGAN after the SRResNet it starts from, a VGG19 file for perceptual losses)."""
from __future__ import annotations

import pytest
import torch

from datamodules.errors import AnticipatedError
from lightning_modules import texture
from lightning_modules.nets.vgg import save_random_vgg
from lightning_modules.protocol import Protocol
from restorelab import model_table as mt
from restorelab.benchmark import markdown_tables, run_benchmark


def test_protocol_scores_texture_only_when_asked():
    torch.manual_seed(0)
    target = torch.rand(1, 1, 64, 64)
    blurred = torch.nn.functional.avg_pool2d(target, 3, 1, 1, count_include_pad=False)
    plain = Protocol().score(blurred, target)
    assert plain["spectrum"] is None and plain["gradient"] is None
    scores = Protocol(texture=True).score(blurred, target)
    assert scores["spectrum"] == pytest.approx(texture.spectrum_distance(blurred, target), rel=1e-9)
    assert scores["gradient"] == pytest.approx(texture.gradient_histogram_distance(blurred, target), rel=1e-9)
    assert scores["spectrum"] > 0.5 and Protocol(texture=True).score(target, target)["spectrum"] == 0
    assert "spectrum = mean |Δ log10 radially averaged power|" in Protocol(texture=True).sentence()


def test_benchmark_tabulates_texture_and_lpips(tmp_path):
    vgg16 = tmp_path / "vgg16.pth"
    save_random_vgg(vgg16, depth=16, seed=0)
    result = run_benchmark([], ["skimage:chelsea.png"], "sr", scales=[4], extra_metrics=False, progress=False,
                           texture=True, lpips_weights=str(vgg16))
    (row,) = result.rows
    assert row["spectrum"] > 0 and row["gradient"] > 0 and row["lpips"] > 0
    tables = markdown_tables(result)
    assert "×4 spectrum / gradient distance" in tables and "×4 LPIPS" in tables and "LPIPS (VGG16" in tables
    with pytest.raises(AnticipatedError, match="missing.pth"):
        run_benchmark([], ["skimage:chelsea.png"], "sr", scales=[4], progress=False, lpips_weights=str(tmp_path / "missing.pth"))


def test_a_row_that_starts_from_another_waits_for_it_and_names_it_when_missing(tmp_path, monkeypatch):
    with pytest.raises(AnticipatedError, match=r"srresnet/cpu-budget-x4/checkpoints/last.ckpt: SRGAN starts from the "
                                               r"SRResNet ×4 row's checkpoint; train it first \(restorelab models --only srresnet\)"):
        mt.start_checkpoint(mt.SPECS["srgan"], tmp_path, 4)
    order = []
    monkeypatch.setattr(mt, "run_model", lambda key, budget, out: order.append(key) or [])
    list(mt._trained_rows(["srgan", "srresnet", "srcnn"], 1, tmp_path, None, 1))
    assert order == ["srresnet", "srcnn", "srgan"]


def test_perceptual_rows_get_the_users_vgg_or_a_random_one_said_so(tmp_path, monkeypatch):
    monkeypatch.delenv(mt.VGG_ENV, raising=False)
    path, words = mt.vgg_weights(tmp_path)
    assert path.is_file() and "random weights" in words
    monkeypatch.setenv(mt.VGG_ENV, str(tmp_path / "vgg19-dcbb9e9d.pth"))
    assert mt.vgg_weights(tmp_path) == (tmp_path / "vgg19-dcbb9e9d.pth", "VGG19 from $RESTORELAB_VGG19 (vgg19-dcbb9e9d.pth)")
