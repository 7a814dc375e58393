"""`restorelab predict`: sizes and bit depth of the outputs for gray / RGBA / 16-bit inputs, tiled == untiled,
and one-line errors for checkpoints that do not fit. Checkpoints are tiny random nets saved with the keys the
CLI writes (``make_checkpoint``, also used by the benchmark and compare tests)."""
from __future__ import annotations

import importlib
import struct
from pathlib import Path

import cv2
import lightning
import numpy as np
import pytest
import torch

from restorelab.checkpointing import CheckpointError
from restorelab.predict import load_restorer

NETS = {  # name -> (class path, init args, task scale, training channels)
    "srcnn_y_x3": ("lightning_modules.nets.srcnn.SRCNN",
                   {"kernel_sizes": [5, 1, 3], "filters": [8, 4], "channels": 1, "init_std": None}, 3, "y"),
    "srresnet_rgb_x2": ("lightning_modules.nets.srresnet.SRResNet",
                        {"channels": 3, "scale": 2, "blocks": 1, "features": 8}, 2, "rgb"),
    "dncnn_gray": ("lightning_modules.nets.dncnn.DnCNN", {"channels": 1, "depth": 3, "features": 8}, 1, "gray"),
}


def make_checkpoint(folder: Path, kind: str, seed: int = 0) -> Path:
    """A checkpoint shaped like the CLI's (net recorded as class_path/init_args), with random weights."""
    class_path, init_args, scale, channels = NETS[kind]
    module, name = class_path.rsplit(".", 1)
    torch.manual_seed(seed)
    net = getattr(importlib.import_module(module), name)(**init_args)
    for m in net.modules():  # random BN statistics too, so eval-mode BN is not an identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ckpt = {
        "pytorch-lightning_version": lightning.__version__,
        "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
        "hyper_parameters": {"_class_path": "lightning_modules.schemes.supervised.SupervisedScheme",
                             "net": {"class_path": class_path, "init_args": init_args}, "scale": scale,
                             "_instantiator": "lightning.pytorch.cli.instantiate_module"},
        "datamodule_hyper_parameters": {"scale": scale, "channels": channels, "recipe": {
            "class_path": "datamodules.recipes.BicubicSR" if scale > 1 else "datamodules.recipes.AWGN"}},
    }
    path = folder / f"{kind}.ckpt"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ckpts")
    return {kind: make_checkpoint(folder, kind) for kind in NETS}


def write(path: Path, pixels: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), pixels)
    return path


def png_chunks(path: Path) -> list[bytes]:
    data, pos, chunks = path.read_bytes(), 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunks.append(kind)
        pos += 12 + length
    return chunks


def as_pair(degraded: torch.Tensor, scale: int) -> dict:
    """An image file's pair as ``restorelab predict`` makes it: the file is the degraded input."""
    return {"degraded": degraded, "scale": scale}


def run(capsys, *argv, tool: str = "predict") -> tuple[int, str]:
    """``restorelab <tool> ARGV`` through the real command line (``restorelab.cli.main``): (exit code, stderr)."""
    from restorelab.cli import main as cli

    with pytest.raises(SystemExit) as stop:
        cli([tool, *map(str, argv)])
    code = stop.value.code
    return (0 if code is None else code), capsys.readouterr().err.strip()


def test_gray_rgba_16bit_inputs_give_scaled_8bit_pngs(ckpts, tmp_path, capsys):
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    inputs = tmp_path / "in"
    inputs.mkdir()
    write(inputs / "gray.png", rng.integers(0, 256, (16, 20), dtype=np.uint8))
    write(inputs / "colour.png", bgr)
    write(inputs / "rgba.png", np.dstack([bgr, rng.integers(0, 256, (13, 17), dtype=np.uint8)]))
    write(inputs / "deep.png", bgr.astype(np.uint16) * 257)  # 16 bit, same picture as colour.png
    write(inputs / "deep_gray.png", rng.integers(0, 65536, (9, 11), dtype=np.uint16))

    code, _ = run(capsys, "--ckpt", ckpts["srcnn_y_x3"], "--input", inputs, "--output", tmp_path / "out", "--scale", 3)
    assert code == 0
    out = {p.stem: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in (tmp_path / "out").glob("*.png")}
    assert sorted(out) == ["colour", "deep", "deep_gray", "gray", "rgba"]
    assert all(img.dtype == np.uint8 for img in out.values())
    assert out["gray"].shape == (48, 60)  # gray stays gray
    assert out["deep_gray"].shape == (27, 33)
    assert out["colour"].shape == out["rgba"].shape == out["deep"].shape == (39, 51, 3)  # alpha dropped
    np.testing.assert_array_equal(out["rgba"], out["colour"])  # the alpha plays no part
    np.testing.assert_array_equal(out["deep"], out["colour"])  # 257·v / 65535 == v / 255
    assert set(png_chunks(tmp_path / "out" / "colour.png")) <= {b"IHDR", b"IDAT", b"IEND"}  # no metadata


def test_rgb_net_keeps_gray_gray_and_y_net_upscales_chroma(ckpts, tmp_path):
    gray = torch.rand(1, 1, 12, 10)
    rgb_net = load_restorer(ckpts["srresnet_rgb_x2"])
    out = rgb_net(as_pair(gray, 2))
    assert out.shape == (1, 1, 24, 20)
    # gray in: the net sees R=G=B and its output's luma comes back
    full = rgb_net.run(as_pair(gray.expand(1, 3, 12, 10), 2), "")
    torch.testing.assert_close(out, (full * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True))

    from datamodules.image_ops import bicubic_upsample, rgb_to_ycbcr

    colour = torch.rand(1, 3, 12, 10)
    y_net = load_restorer(ckpts["srcnn_y_x3"])
    image, measured = y_net.restore(as_pair(colour, 3))
    ycbcr = rgb_to_ycbcr(image)
    torch.testing.assert_close(ycbcr[:, :1], measured, atol=1e-5, rtol=0)
    torch.testing.assert_close(ycbcr[:, 1:], bicubic_upsample(rgb_to_ycbcr(colour)[:, 1:], 3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["srcnn_y_x3", "srresnet_rgb_x2", "dncnn_gray"])
def test_tiled_equals_untiled(ckpts, kind):
    channels = 3 if kind == "srresnet_rgb_x2" else 1
    image = torch.rand(1, channels, 37, 45, generator=torch.Generator().manual_seed(1))
    scale = NETS[kind][2]
    whole = load_restorer(ckpts[kind], tile=0)(as_pair(image, scale))
    tiled = load_restorer(ckpts[kind], tile=16)(as_pair(image, scale))
    assert tiled.shape == whole.shape
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)


def test_tiled_and_self_ensemble_from_the_command_line(ckpts, tmp_path, capsys):
    bgr = np.random.default_rng(2).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    image = write(tmp_path / "photo.png", bgr)
    outputs = {}
    for name, extra in (("whole", ["--tile", 0]), ("tiled", ["--tile", 16]), ("ensemble", ["--self_ensemble"])):
        code, _ = run(capsys, "--ckpt", ckpts["srresnet_rgb_x2"], "--input", image, "--output", tmp_path / name, *extra)
        assert code == 0
        outputs[name] = cv2.imread(str(tmp_path / name / "photo.png"), cv2.IMREAD_UNCHANGED).astype(int)
    assert outputs["whole"].shape == outputs["ensemble"].shape == (60, 82, 3)
    assert np.abs(outputs["tiled"] - outputs["whole"]).max() <= 1  # float rounding may flip a rounding step
    assert np.abs(outputs["ensemble"] - outputs["whole"]).max() > 1  # a random net is not flip-equivariant


def test_errors_are_one_line(ckpts, tmp_path, capsys):
    colour = write(tmp_path / "colour.png", np.zeros((8, 8, 3), np.uint8))
    junk = tmp_path / "notes.ckpt"
    junk.write_text("not a checkpoint")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    cases = [
        (["--ckpt", ckpts["srcnn_y_x3"], "--scale", 4], ["x3", "--scale 4"]),
        (["--ckpt", ckpts["dncnn_gray"]], ["gray", "colour"]),
        (["--ckpt", junk], ["not a readable PyTorch checkpoint"]),
        (["--ckpt", colour], ["not a readable PyTorch checkpoint"]),
        (["--ckpt", foreign], ["not a Lightning checkpoint"]),
        (["--ckpt", tmp_path / "missing.ckpt"], ["no such checkpoint"]),
    ]
    for args, words in cases:
        code, err = run(capsys, *args, "--input", colour, "--output", tmp_path / "out")
        assert code == 2, args
        assert len(err.splitlines()) == 1 and err.startswith("restorelab: error: "), err
        assert all(w in err for w in words), err
    assert not (tmp_path / "out").exists()
    with pytest.raises(CheckpointError):
        load_restorer(junk)
