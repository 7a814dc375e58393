"""Classical methods by name, and their free parameters chosen on validation images only."""
import json
from pathlib import Path

import pytest
import torch

from datamodules.errors import AnticipatedError
from datamodules.recipes import KernelBlur, evaluation_pair
from datamodules.image_ops import blur
from datamodules.sources import resolve_source
from lightning_modules.classical.filters import GaussianFilter
from restorelab.benchmark import run_benchmark
from restorelab.cli import main as cli
from restorelab.methods import method_names, read_method
from restorelab.tune import check_disjoint, validation_set

SEEN: list[tuple[int, str, float]] = []  # (restorer id, image, its σ) of every image a spy filter restored


class SpyFilter(GaussianFilter):
    """A real Gaussian filter that notes which images it was given."""

    def run(self, pair, what):
        SEEN.append((id(self), what.rpartition("/")[2], self.sigma))
        return super().run(pair, what)


def spy_config(tmp_path: Path) -> Path:
    path = tmp_path / "spy.yaml"
    path.write_text("label: Spy filter\nmethod:\n  class_path: tests.test_tune.SpyFilter\n  init_args: {sigma: 1.0}\n"
                    "tune:\n  sigma: [0.5, 1.0, 2.0]\n")
    return path


def test_parameters_are_chosen_on_validation_images_never_on_test_images(tmp_path):
    SEEN.clear()
    val = {p.name for p in resolve_source("skimage:train")[:3]}
    test = {p.name for p in resolve_source("skimage:val")}
    assert not val & test
    result = run_benchmark([], ["skimage:val"], "denoise", sigmas=[25], method_specs=[str(spy_config(tmp_path))],
                           tune_on="skimage:train", val_images=3, progress=False)
    by_restorer: dict[int, set[str]] = {}
    for rid, image, _ in SEEN:
        by_restorer.setdefault(rid, set()).add(image)
    measured = [rid for rid, images in by_restorer.items() if images & test]
    assert len(by_restorer) == 3 and len(measured) == 1  # three grid points tried, one measured
    assert all(images <= val for rid, images in by_restorer.items() if rid not in measured)
    assert by_restorer[measured[0]] == val | test  # it was tuned on val, then measured on test
    chosen = next(s for rid, _, s in SEEN if rid == measured[0])
    assert f"sigma={chosen:g}" in result.choices[0] and "skimage:train" in result.choices[0]
    assert {r["method"] for r in result.rows} == {"Noisy input", "Spy filter"}


def test_a_validation_set_sharing_an_image_with_a_test_set_is_refused(tmp_path):
    with pytest.raises(AnticipatedError, match="shares .* image.*parameters must be chosen on other images"):
        run_benchmark([], ["skimage:val"], "denoise", sigmas=[25], method_specs=["gaussian"], tune_on="skimage:val",
                      progress=False)
    recipe = KernelBlur()
    check_disjoint(validation_set("skimage:train", None, recipe, 2), [validation_set("skimage:val", None, recipe, 0)])


def test_tune_records_the_choice_and_benchmark_reuses_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli(["tune", "--method", "gaussian", "--task", "denoise", "--sigmas", "15", "50", "--val_images", "2",
             "--out", str(tmp_path)])
    assert e.value.code == 0
    record = json.loads((tmp_path / "gaussian.json").read_text())
    assert record["validation"] == "skimage:train" and len(record["images"]) == 2
    picks = {c["level"]: c["params"]["sigma"] for c in record["choices"]}
    assert picks[50] > picks[15]  # stronger noise, wider filter
    assert "(chosen)" in capsys.readouterr().out
    inline = run_benchmark([], ["skimage:val"], "denoise", sigmas=[15, 50], method_specs=["gaussian"], val_images=2,
                           progress=False)
    reused = run_benchmark([], ["skimage:val"], "denoise", sigmas=[15, 50], method_specs=["gaussian"],
                           tuned=[tmp_path / "gaussian.json"], progress=False)
    assert [r["psnr"] for r in inline.rows] == pytest.approx([r["psnr"] for r in reused.rows], abs=1e-9)
    assert inline.choices == reused.choices


def test_method_specs_fix_parameters_and_bad_ones_get_one_line(tmp_path):
    assert {"bicubic", "gaussian"} <= set(method_names())
    config, fixed = read_method("gaussian:sigma=2.5")
    assert fixed == {"sigma": 2.5} and config.build(**fixed).sigma == 2.5
    assert config.grid_points(exclude=fixed) == [{}]
    with pytest.raises(AnticipatedError, match="no such method"):
        read_method("no_such_filter")
    with pytest.raises(AnticipatedError, match="unknown parameter.*radius"):
        config.build(radius=3)
    with pytest.raises(AnticipatedError, match="key=value"):
        read_method("gaussian:2")
    bad = tmp_path / "bad.yaml"
    bad.write_text("label: x\n")
    with pytest.raises(AnticipatedError, match="not a method config"):
        read_method(str(bad))


def test_kernel_blur_pairs_carry_the_kernel_they_were_made_with():
    clean = torch.rand(1, 3, 64, 64)
    pair = evaluation_pair(KernelBlur(noise_sigma=0.0), {"target": clean, "name": ["a.png"]}, 1, None)
    assert pair["kernel"].shape == (1, 31, 31) and pair["kernel"].sum().item() == pytest.approx(1, abs=1e-5)
    expected = (blur(clean, pair["kernel"][0]) * 255).round().clamp(0, 255) / 255
    assert torch.allclose(pair["degraded"], expected, atol=1e-6)
    noisy = evaluation_pair(KernelBlur(), {"target": clean, "name": ["a.png"]}, 1, None)
    assert float(noisy["sigma"][0]) == pytest.approx(2.55) and "kernel known" in KernelBlur().describe()


def test_predict_runs_a_method_on_files(tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        cli(["predict", "--method", "gaussian:sigma=1", "--input", "skimage:val", "--output", str(out),
             "--no_progress"])
    assert e.value.code == 0 and len(list(out.glob("*.png"))) == len(resolve_source("skimage:val"))
    with pytest.raises(SystemExit) as e:
        cli(["predict", "--method", "bicubic", "--input", "skimage:val", "--output", str(tmp_path / "o2")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "give --scale" in err and "Traceback" not in err


def test_the_default_validation_set_is_bsd200_where_the_data_folder_has_it(tmp_path):
    from restorelab.tune import default_validation
    from tests.conftest import benchmark_root

    assert default_validation(tmp_path) == "skimage:train"  # a data folder without BSD200
    root = benchmark_root()
    if root is None or not (root / "BSD200").is_dir():
        pytest.skip("BSD200 not found (RESTORELAB_DATA / ../shared/datasets)")
    bench = validation_set(None, root, KernelBlur(), 2)
    assert default_validation(root) == "benchmark:BSD200" and bench.name == "BSD200" and len(bench.samples) == 2
