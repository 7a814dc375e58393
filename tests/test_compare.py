"""`restorelab compare`: a PNG of the expected size with one panel per method, captions agreeing with the
benchmark, one-line errors for a bad box or a checkpoint that does not fit."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from lightning_modules.classical import baseline_for
from restorelab.benchmark import run_benchmark, set_means
from restorelab.compare import CAPTION, GAP, TITLE, compare, main, resolve_image
from restorelab.predict import load_restorer
from tests.test_predict import make_checkpoint, run

SR_BASELINE = baseline_for("sr").label


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpts")
    return {k: make_checkpoint(folder, k) for k in ("srcnn_y_x3", "srresnet_rgb_x2", "dncnn_gray")}


def test_sr_figure_size_panels_and_captions(ckpts, tmp_path):
    out = tmp_path / "fig.png"
    image = resolve_image("skimage:chelsea.png")
    scores = compare(image, (120, 60, 50, 25), [ckpts["srcnn_y_x3"]], out, scale=3, panel=200)
    figure = cv2.imread(str(out))
    # HR | bicubic | one checkpoint, each crop zoomed to 200x100
    assert figure.shape == (TITLE + 100 + CAPTION, 3 * 200 + 4 * GAP, 3)
    assert [name for name, _, _ in scores] == [SR_BASELINE, load_restorer(ckpts["srcnn_y_x3"]).label]
    # the whole-image PSNR of a caption is the benchmark's number for that image
    rows = run_benchmark([load_restorer(ckpts["srcnn_y_x3"])], ["skimage:chelsea.png"], "sr", scales=[3],
                         extra_metrics=False, progress=False).rows
    means = set_means(rows)
    for name, whole, _ in scores:
        assert whole == pytest.approx(means[("skimage:chelsea.png", name, 3)]["psnr"], abs=1e-4)
    # the HR panel shows the HR crop, zoomed x4 by nearest neighbour: the centre of every 4x4 block is its pixel
    hr = cv2.imread(str(image))[60:85, 120:170].astype(int)
    panel = figure[TITLE : TITLE + 100, GAP : GAP + 200].astype(int)
    assert np.abs(panel[2::4, 2::4] - hr).max() <= 2


def test_denoising_figure_from_the_command_line(ckpts, tmp_path, capsys):
    out = tmp_path / "noise.png"
    code = main(["--image", "skimage:camera.png", "--box", "0", "0", "64", "64", "--ckpt", str(ckpts["dncnn_gray"]),
                 "--sigma", "25", "--panel", "128", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert cv2.imread(str(out)).shape == (TITLE + 128 + CAPTION, 3 * 128 + 4 * GAP, 3)
    noisy_psnr = float(printed.splitlines()[0].split(":")[1].split("dB")[0])
    assert noisy_psnr == pytest.approx(20 * math.log10(255 / 25), abs=0.3)


def test_errors_are_one_line(ckpts, tmp_path, capsys):
    cases = [
        (["--image", "skimage:camera.png", "--box", "500", "0", "64", "64", "--ckpt", str(ckpts["srcnn_y_x3"])],
         "not inside"),
        (["--image", "skimage:camera.png", "--box", "0", "0", "8", "8", "--ckpt", str(ckpts["srresnet_rgb_x2"]),
          "--scale", "3"], "x2"),
        (["--image", "skimage:chelsea.png", "--box", "0", "0", "8", "8", "--ckpt", str(ckpts["dncnn_gray"]),
          "--sigma", "15"], "gray"),
    ]
    for args, words in cases:
        code, err = run(capsys, *args, "--out", tmp_path / "fig.png", tool="compare")
        assert code == 2 and len(err.splitlines()) == 1 and err.startswith("restorelab: error: ") and words in err, err
    assert not (tmp_path / "fig.png").exists()
