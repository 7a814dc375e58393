"""`restorelab import`: for each published layout, a file written here in the authors' layout with random weights
(scipy.io.savemat for .mat, torch.save for .pth) becomes a checkpoint whose net computes what the authors' test
code computes, re-implemented here apart from the converter: SRCNN.m in numpy with ``scipy.ndimage.correlate``
(mode "nearest" = imfilter 'replicate'), VDSR_Matconvnet.m / vl_simplenn with zero-padded correlations
(``vl_nnconv``), batch norm as vl_nnbnorm's test mode, and the authors' PyTorch DnCNN classes. Each imported
checkpoint then loads with ``load_restorer`` and runs through ``run_benchmark``; bad inputs exit 2 with one line.
Nets are small where they are run (the real 9-5-5 / 20-layer / 17-layer shapes are converted, not benchmarked)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.io
import torch
from scipy.ndimage import correlate
from torch import nn

from restorelab.benchmark import run_benchmark
from restorelab.predict import load_restorer

TOLERANCE = 1e-5  # |ours - reference| / max(1, |reference|), float32 net against a float64 reference
DNCNN_TOLERANCE = 1e-4  # the folded batch norms: also float32 against float64


def run(capsys, *argv) -> tuple[int, str, str]:
    """``restorelab import ARGV`` through the real command line: (exit code, stdout, stderr)."""
    from restorelab.cli import main as cli

    with pytest.raises(SystemExit) as stop:
        cli(["import", *map(str, argv)])
    captured = capsys.readouterr()
    return (0 if stop.value.code is None else stop.value.code), captured.out.strip(), captured.err.strip()


def imported(capsys, tmp_path, fmt: str, weights, *extra, name: str = "published.ckpt"):
    code, out, err = run(capsys, "--format", fmt, "--weights", weights, "--out", tmp_path / name, *extra)
    assert code == 0, err
    assert str(weights) in out
    return load_restorer(tmp_path / name)


def matlab(a: np.ndarray) -> np.ndarray:
    """An array as MATLAB stores it: trailing singleton dimensions beyond the second dropped."""
    shape = list(a.shape)
    while len(shape) > 2 and shape[-1] == 1:
        shape.pop()
    return a.reshape(shape)


def cell(items) -> np.ndarray:
    c = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        c[0, i] = item
    return c


def image(h=19, w=23, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(16 / 255, 235 / 255, (h, w))


def assert_close(ours: torch.Tensor, reference: np.ndarray, tolerance: float) -> None:
    ours = ours.detach().double().numpy().reshape(reference.shape)
    error = np.abs(ours - reference).max() / max(1.0, np.abs(reference).max())
    assert error <= tolerance, f"relative error {error:.2e} > {tolerance:g}"


def net_output(restorer, x: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return restorer.net(torch.from_numpy(x).float()[None, None] if x.ndim == 2 else torch.from_numpy(x).float()[None])


# -------------------------------------------------------------------------------------------- SRCNN


def srcnn_file(path, f=(9, 5, 5), n=(64, 32), seed=0, squeeze_f2=False, identity=False):
    """x3.mat as the authors store it, from the f×f filters as SRCNN.m sees them after MATLAB's reshape."""
    rng = np.random.default_rng(seed)
    f1, f2, f3 = f
    n1, n2 = n
    k1 = rng.normal(0, math.sqrt(2 / f1**2), (f1, f1, n1))  # reshape(weights_conv1, f1, f1, n1)
    k2 = rng.normal(0, math.sqrt(2 / (n1 * f2**2)), (n1, n2, f2, f2))  # reshape(weights_conv2(j,:,i), f2, f2)
    k3 = rng.normal(0, math.sqrt(1 / (n2 * f3**2)), (n2, f3, f3))  # reshape(weights_conv3(i,:), f3, f3)
    b1, b2, b3 = rng.normal(0, 0.1, n1), rng.normal(0, 0.1, n2), rng.normal(0, 0.1, 1)
    if identity:  # channel 0 passes the image through every layer: the net is the bicubic input itself
        for k in (k1, k2, k3):
            k[...] = 0
        k1[f1 // 2, f1 // 2, 0] = k2[0, 0, f2 // 2, f2 // 2] = k3[0, f3 // 2, f3 // 2] = 1
        b1[:], b2[:], b3[:] = 0, 0, 0
    w1 = k1.reshape(f1 * f1, n1, order="F")  # MATLAB is column-major: the inverse of that reshape
    w2 = np.stack([[k2[j, i].reshape(-1, order="F") for i in range(n2)] for j in range(n1)]).transpose(0, 2, 1)
    if squeeze_f2:
        w2 = w2[:, 0, :]
    scipy.io.savemat(path, {"weights_conv1": w1, "biases_conv1": b1[:, None], "weights_conv2": w2,
                            "biases_conv2": b2[:, None], "weights_conv3": np.stack([k.reshape(-1, order="F") for k in k3]),
                            "biases_conv3": b3[:, None]})
    return k1, b1, k2, b2, k3, b3


def srcnn_matlab(im, k1, b1, k2, b2, k3, b3):
    """SRCNN.m: imfilter(..., 'same', 'replicate') per filter, ReLU after conv1 and conv2."""
    conv1 = [np.maximum(correlate(im, k1[:, :, i], mode="nearest") + b1[i], 0) for i in range(k1.shape[2])]
    conv2 = [np.maximum(sum(correlate(conv1[j], k2[j, i], mode="nearest") for j in range(len(conv1))) + b2[i], 0)
             for i in range(k2.shape[1])]
    return sum(correlate(conv2[i], k3[i], mode="nearest") for i in range(len(conv2))) + b3[0]


@pytest.mark.parametrize("f, n, squeeze", [((9, 5, 5), (64, 32), False), ((9, 1, 5), (64, 32), False),
                                           ((9, 1, 5), (64, 32), True)], ids=["9-5-5", "9-1-5", "9-1-5 n1xn2"])
def test_srcnn_mat_computes_srcnn_m(tmp_path, capsys, f, n, squeeze):
    weights = tmp_path / "x3.mat"
    layers = srcnn_file(weights, f, n, squeeze_f2=squeeze)
    restorer = imported(capsys, tmp_path, "srcnn_mat", weights)
    assert restorer.net.features[0].kernel_size == (f[0], f[0]) and restorer.net.features[2].out_channels == n[1]
    assert restorer.channels == "y" and restorer.task == "sr" and restorer.scales == (3,)  # x3 from the name
    im = image()
    assert_close(net_output(restorer, im), srcnn_matlab(im, *layers), TOLERANCE)

    ckpt = torch.load(tmp_path / "published.ckpt", weights_only=True)
    record = ckpt["imported_from"]
    assert record["format"] == "srcnn_mat" and record["name"] == "x3.mat" and len(record["sha256"]) == 64
    assert record["label"] == "SRCNN (published x3.mat)"
    assert ckpt["hyper_parameters"]["net"]["init_args"]["kernel_sizes"] == list(f)


# -------------------------------------------------------------------------------------------- VDSR


def vdsr_file(path, depth=20, features=64, seed=0):
    """VDSR_Official.mat: struct model, cells weight {3×3×in×out} and bias {out×1}."""
    rng = np.random.default_rng(seed)
    widths = [1] + [features] * (depth - 1) + [1]
    weights = [rng.normal(0, math.sqrt(2 / (9 * i)), (3, 3, i, o)) for i, o in zip(widths, widths[1:])]
    biases = [rng.normal(0, 0.05, (o, 1)) for o in widths[1:]]
    scipy.io.savemat(path, {"model": {"weight": cell([matlab(w) for w in weights]), "bias": cell(biases)}})
    return weights, biases


def vl_nnconv(x, w, b):
    """vl_nnconv(x, w, b, 'Pad', 1) of an in×H×W stack: correlation with zero padding."""
    return np.stack([sum(correlate(x[d], w[:, :, d, o], mode="constant") for d in range(w.shape[2])) + b[o]
                     for o in range(w.shape[3])])


def test_vdsr_mat_computes_vdsr_matconvnet(tmp_path, capsys):
    real = tmp_path / "VDSR_Official.mat"
    vdsr_file(real)
    restorer = imported(capsys, tmp_path, "vdsr_mat", real, name="real.ckpt")
    ckpt = torch.load(tmp_path / "real.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["net"]["init_args"] == {"channels": 1, "depth": 20, "features": 64}
    assert restorer.scales == (2, 3, 4) and restorer.channels == "y"

    weights_path = tmp_path / "VDSR_small.mat"
    weights, biases = vdsr_file(weights_path, depth=5, features=6, seed=1)
    restorer = imported(capsys, tmp_path, "vdsr_mat", weights_path, "--scale", 2, 3)
    assert restorer.scales == (2, 3)
    im = image()
    x = im[None]
    for i, (w, b) in enumerate(zip(weights, biases)):
        x = vl_nnconv(np.maximum(x, 0) if i else x, w, b[:, 0])
    assert_close(net_output(restorer, im), im + x[0], TOLERANCE)


def test_sr_imports_run_through_the_benchmark(tmp_path, capsys):
    """A pass-through SRCNN (channel 0 carries the image) scores as bicubic: the restorer runs the file's weights on
    the upsampled Y the benchmark gives it, at the scale given (the name says nothing here). Exactly on the gray
    photo; within 0.02 dB on the colour ones, whose Y goes back through 8-bit RGB with bicubic chroma. A VDSR
    import runs beside it."""
    weights = tmp_path / "srcnn_small.mat"
    srcnn_file(weights, (5, 3, 3), (6, 4), identity=True)
    code, _, err = run(capsys, "--format", "srcnn_mat", "--weights", weights, "--out", tmp_path / "s.ckpt")
    assert code == 2 and "--scale" in err and str(weights) in err
    srcnn = imported(capsys, tmp_path, "srcnn_mat", weights, "--scale", 3, name="srcnn.ckpt")
    vdsr_file(tmp_path / "VDSR_small.mat", depth=4, features=4)
    vdsr = imported(capsys, tmp_path, "vdsr_mat", tmp_path / "VDSR_small.mat", name="vdsr.ckpt")
    result = run_benchmark([srcnn, vdsr], sets=["skimage:val"], scales=[3], extra_metrics=False, progress=False)
    ours = [r for r in result.rows if r["method"] == srcnn.label]
    bicubic = {r["image"]: r["psnr"] for r in result.rows if r["method"] not in (srcnn.label, vdsr.label)}
    assert len(ours) == 3 and all(r["psnr"] == pytest.approx(bicubic[r["image"]], abs=0.02) for r in ours)
    assert next(r["psnr"] for r in ours if r["image"] == "camera.png") == pytest.approx(bicubic["camera.png"], abs=1e-6)
    assert sum(r["method"] == vdsr.label and np.isfinite(r["psnr"]) for r in result.rows) == 3


# -------------------------------------------------------------------------------------------- DnCNN, MatConvNet


def dncnn_mat_file(path, depth=5, features=6, channels=1, bnorm=True, seed=0):
    """A SimpleNN net as DnCNN's training code builds it (conv, [bnorm,] relu, ..., conv, loss)."""
    rng = np.random.default_rng(seed)
    widths = [channels] + [features] * (depth - 1) + [channels]
    layers = []
    for k, (i, o) in enumerate(zip(widths, widths[1:])):
        w, b = rng.normal(0, math.sqrt(2 / (9 * i)), (3, 3, i, o)), rng.normal(0, 0.05, (o, 1))
        layers.append({"type": "conv", "weights": cell([matlab(w), b]), "stride": 1.0, "pad": 1.0})
        if bnorm and 0 < k < depth - 1:
            moments = np.stack([rng.normal(0, 0.2, o), rng.uniform(0.5, 1.5, o)], axis=1)  # [mean, sigma]
            layers.append({"type": "bnorm", "weights": cell([rng.uniform(0.5, 1.5, (o, 1)), rng.normal(0, 0.1, (o, 1)),
                                                             moments])})
        if k < depth - 1:
            layers.append({"type": "relu", "leak": 0.0})
    layers.append({"type": "loss"})
    scipy.io.savemat(path, {"net": {"layers": cell(layers), "meta": {"note": "random"}}})
    return layers


def vl_simplenn(layers, x):
    """vl_simplenn(net, x, 'mode', 'test')'s last output (the noise) of a C×H×W image."""
    for layer in layers:
        if layer["type"] == "conv":
            w, b = layer["weights"][0, 0], layer["weights"][0, 1]
            x = vl_nnconv(x, w.reshape(w.shape + (1,) * (4 - w.ndim)), b[:, 0])
        elif layer["type"] == "bnorm":
            gain, offset, moments = (layer["weights"][0, i] for i in range(3))
            x = (x - moments[:, 0, None, None]) / moments[:, 1, None, None] * gain[:, :, None] + offset[:, :, None]
        elif layer["type"] == "relu":
            x = np.maximum(x, 0)
    return x


@pytest.mark.parametrize("bnorm", [True, False], ids=["bnorm", "merged"])
def test_dncnn_mat_equals_the_unfolded_matconvnet_net(tmp_path, capsys, bnorm):
    weights = tmp_path / "sigma=25.mat"
    layers = dncnn_mat_file(weights, bnorm=bnorm)
    restorer = imported(capsys, tmp_path, "dncnn_mat", weights)
    assert restorer.task == "denoise" and restorer.channels == "gray"
    ckpt = torch.load(tmp_path / "published.ckpt", weights_only=True)
    assert ckpt["datamodule_hyper_parameters"]["recipe"]["init_args"]["sigma"] == 25.0  # from sigma=25.mat
    noisy = image(seed=2)
    assert_close(net_output(restorer, noisy), noisy - vl_simplenn(layers, noisy[None])[0], DNCNN_TOLERANCE)


def test_dncnn_mat_real_shapes_and_colour(tmp_path, capsys):
    weights = tmp_path / "GD_Gray_Blind.mat"
    dncnn_mat_file(weights, depth=20, features=64, bnorm=False)
    imported(capsys, tmp_path, "dncnn_mat", weights)
    ckpt = torch.load(tmp_path / "published.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["net"]["init_args"] == {"channels": 1, "depth": 20, "features": 64}
    assert ckpt["datamodule_hyper_parameters"]["recipe"]["init_args"]["sigma"] == [0.0, 55.0]  # blind

    weights = tmp_path / "CDnCNN.mat"
    layers = dncnn_mat_file(weights, depth=4, features=5, channels=3, seed=3)
    restorer = imported(capsys, tmp_path, "dncnn_mat", weights, "--sigma", 0, 55, name="colour.ckpt")
    assert restorer.channels == "rgb"
    noisy = np.random.default_rng(4).uniform(0, 1, (3, 11, 13))
    assert_close(net_output(restorer, noisy), noisy - vl_simplenn(layers, noisy), DNCNN_TOLERANCE)


# -------------------------------------------------------------------------------------------- DnCNN, PyTorch


class CsznDnCNN(nn.Module):
    """cszn/DnCNN TrainingCodes/dncnn_pytorch's DnCNN, as its main_train.py defines it."""

    def __init__(self, depth=17, n_channels=64, image_channels=1):
        super().__init__()
        layers = [nn.Conv2d(image_channels, n_channels, 3, padding=1, bias=True), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(n_channels, n_channels, 3, padding=1, bias=False),
                       nn.BatchNorm2d(n_channels, eps=0.0001, momentum=0.95), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(n_channels, image_channels, 3, padding=1, bias=False))
        self.dncnn = nn.Sequential(*layers)

    def forward(self, x):
        return x - self.dncnn(x)


class KairDnCNN(nn.Module):
    """KAIR's DnCNN with act_mode='R' (the released dncnn_25.pth): conv + bias, ReLU, no batch norm."""

    def __init__(self, in_nc=1, nc=64, nb=17):
        super().__init__()
        layers = [nn.Conv2d(in_nc, nc, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(nb - 2):
            layers += [nn.Conv2d(nc, nc, 3, padding=1), nn.ReLU(inplace=True)]
        self.model = nn.Sequential(*layers, nn.Conv2d(nc, in_nc, 3, padding=1))

    def forward(self, x):
        return x - self.model(x)


def randomised(net: nn.Module, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            for t, (low, high) in ((m.weight, (0.5, 1.5)), (m.bias, (-0.1, 0.1)), (m.running_mean, (-0.2, 0.2)),
                                   (m.running_var, (0.3, 2.0))):
                t.data.uniform_(low, high)
    return net.eval()


@pytest.mark.parametrize("kind", ["cszn", "kair"])
def test_dncnn_pth_equals_the_authors_pytorch_net(tmp_path, capsys, kind):
    reference = randomised(CsznDnCNN(depth=5, n_channels=6) if kind == "cszn" else KairDnCNN(nc=6, nb=5))
    folder = tmp_path / "DnCNN_sigma25"
    folder.mkdir()
    weights = folder / "state_dict.pth"
    torch.save({f"module.{k}" if kind == "cszn" else k: v for k, v in reference.state_dict().items()}, weights)
    restorer = imported(capsys, tmp_path, "dncnn_pth", weights)  # σ 25 from the folder's name
    noisy = torch.from_numpy(image(seed=5)).float()[None, None]
    with torch.no_grad():
        assert_close(net_output(restorer, noisy[0, 0].double().numpy()), reference(noisy).double().numpy(),
                     DNCNN_TOLERANCE)


def test_denoiser_imports_run_through_the_benchmark(tmp_path, capsys):
    dncnn_mat_file(tmp_path / "sigma=25.mat")
    from_mat = imported(capsys, tmp_path, "dncnn_mat", tmp_path / "sigma=25.mat", name="mat.ckpt")
    torch.save(randomised(CsznDnCNN(depth=4, n_channels=4)).state_dict(), tmp_path / "dncnn.pth")
    from_pth = imported(capsys, tmp_path, "dncnn_pth", tmp_path / "dncnn.pth", "--sigma", 25, name="pth.ckpt")
    result = run_benchmark([from_mat, from_pth], sets=["skimage:val"], task="denoise", sigmas=[25],
                           extra_metrics=False, progress=False, channels="gray")
    for restorer in (from_mat, from_pth):
        assert sum(r["method"] == restorer.label and np.isfinite(r["psnr"]) for r in result.rows) == 3


def test_dncnn_pth_real_shapes(tmp_path, capsys):
    weights = tmp_path / "dncnn_25.pth"
    torch.save(KairDnCNN().state_dict(), weights)
    imported(capsys, tmp_path, "dncnn_pth", weights)
    ckpt = torch.load(tmp_path / "published.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["net"]["init_args"] == {"channels": 1, "depth": 17, "features": 64}
    assert ckpt["datamodule_hyper_parameters"]["recipe"]["init_args"]["sigma"] == 25.0


# -------------------------------------------------------------------------------------------- bad inputs


def test_bad_inputs_are_one_line_naming_the_file(tmp_path, capsys):
    good = tmp_path / "x3.mat"
    srcnn_file(good, (5, 1, 3), (4, 2))
    no_conv3 = tmp_path / "no_conv3.mat"
    mat = scipy.io.loadmat(good)
    scipy.io.savemat(no_conv3, {k: v for k, v in mat.items() if not k.startswith("__") and k != "weights_conv3"})
    pickled = tmp_path / "model.pth"
    torch.save(CsznDnCNN(depth=3, n_channels=4), pickled)  # what dncnn_pytorch's main_train.py saves
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"not a mat file at all")
    wrong_net = tmp_path / "vdsr_as_dncnn.mat"
    vdsr_file(wrong_net, depth=3, features=4)
    existing = tmp_path / "existing.ckpt"
    existing.write_bytes(b"keep me")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = tmp_path / "out.ckpt"
    cases = [
        (["--format", "srcnn_mat", "--weights", no_conv3, "--out", out], no_conv3, "weights_conv3"),
        (["--format", "srcnn_caffe", "--weights", good, "--out", out], good, "unknown --format srcnn_caffe"),
        (["--format", "srcnn_mat", "--weights", tmp_path / "missing.mat", "--out", out], tmp_path / "missing.mat",
         "no such weights file"),
        (["--format", "dncnn_pth", "--weights", pickled, "--sigma", 25, "--out", out], pickled, "state_dict"),
        (["--format", "dncnn_mat", "--weights", junk, "--sigma", 25, "--out", out], junk, "not a readable MATLAB"),
        (["--format", "dncnn_pth", "--weights", good, "--sigma", 25, "--out", out], good, "MATLAB .mat file"),
        (["--format", "dncnn_mat", "--weights", wrong_net, "--sigma", 25, "--out", out], wrong_net, "no struct net"),
        (["--format", "srcnn_mat", "--weights", good, "--out", existing], existing, "--overwrite"),
        (["--format", "srcnn_mat", "--weights", good, "--out", blocker / "x.ckpt"], blocker / "x.ckpt",
         "cannot write --out"),
        (["--format", "srcnn_mat", "--weights", good, "--sigma", 25, "--out", out], good, "--sigma"),
        (["--format", "dncnn_pth", "--weights", pickled.with_name("dncnn.pth"), "--out", out],
         pickled.with_name("dncnn.pth"), "no such weights file"),
    ]
    for argv, named, words in cases:
        code, _, err = run(capsys, *argv)
        assert code == 2, (argv, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert str(named) in err and words in err, err
    assert existing.read_bytes() == b"keep me" and not out.exists()
    assert not list(tmp_path.glob(".*.partial"))

    # --overwrite replaces it, and the result loads
    code, _, err = run(capsys, "--format", "srcnn_mat", "--weights", good, "--out", existing, "--overwrite")
    assert code == 0, err
    assert load_restorer(existing).scales == (3,)
