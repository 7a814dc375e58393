"""Every kind of input a user may point the suite at: good ones read right, bad ones give one line naming
the file, folder or value."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from datamodules.image_ops import to_channels
from datamodules.restoration import SRDataModule
from datamodules.sources import (
    SKIMAGE_TRAIN,
    SKIMAGE_VAL,
    ImageSourceError,
    load_images,
    read_image,
    resolve_source,
)


def write(path, array):
    assert cv2.imwrite(str(path), array)
    return path


@pytest.fixture
def rgb_u8():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tif"])
def test_formats_read_as_rgb_float(tmp_path, rgb_u8, ext):
    img = read_image(write(tmp_path / f"a{ext}", rgb_u8[:, :, ::-1]))  # cv2 writes BGR
    assert img.shape == (3, 20, 30) and img.dtype == torch.float32
    if ext in (".png", ".bmp", ".tif"):  # lossless: exact, and in RGB order
        assert torch.equal(img, torch.from_numpy(rgb_u8).permute(2, 0, 1).float() / 255)


def test_gray_rgba_16bit(tmp_path, rgb_u8):
    gray = read_image(write(tmp_path / "g.png", rgb_u8[:, :, 0]))
    assert gray.shape == (1, 20, 30)
    rgba = np.dstack([rgb_u8[:, :, ::-1], np.full((20, 30), 7, np.uint8)])
    img = read_image(write(tmp_path / "rgba.png", rgba))
    assert img.shape == (3, 20, 30)
    assert torch.equal(img, torch.from_numpy(rgb_u8).permute(2, 0, 1).float() / 255)  # alpha dropped
    deep = (rgb_u8.astype(np.uint16) * 257 + 3)[:, :, ::-1]
    img16 = read_image(write(tmp_path / "deep.png", np.ascontiguousarray(deep)))
    assert torch.allclose(img16, torch.from_numpy(deep[:, :, ::-1].astype(np.float32)).permute(2, 0, 1) / 65535)
    from PIL import Image

    Image.fromarray(np.dstack([rgb_u8[:, :, 0], rgb_u8[:, :, 1]]), mode="LA").save(tmp_path / "la.png")
    gray_alpha = read_image(tmp_path / "la.png")  # decoders may expand gray+alpha to colour; values agree
    assert torch.allclose(gray_alpha, torch.from_numpy(rgb_u8[:, :, 0]).float().div(255).expand_as(gray_alpha))


def test_bad_files_and_folders_name_themselves(tmp_path, rgb_u8):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(ImageSourceError, match="corrupt.png: not a readable image"):
        read_image(corrupt)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageSourceError, match="empty.jpg"):
        read_image(empty)
    with pytest.raises(ImageSourceError, match="missing.png: no such image file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ImageSourceError, match="nowhere: no such image file or folder"):
        resolve_source(str(tmp_path / "nowhere"))
    with pytest.raises(ImageSourceError, match="gone.png: no such image file$"):  # a file, not a "folder"
        resolve_source(str(tmp_path / "gone.png"))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("x")
    with pytest.raises(ImageSourceError, match="docs: folder holds no images"):
        resolve_source(str(tmp_path / "docs"))
    with pytest.raises(ImageSourceError, match="readme.txt: not an image file"):
        resolve_source(str(tmp_path / "docs" / "readme.txt"))
    with pytest.raises(ImageSourceError, match="no bundled photo nope.png"):
        resolve_source("skimage:nope.png")


def test_error_is_one_line(tmp_path):
    with pytest.raises(ImageSourceError) as e:
        resolve_source(str(tmp_path / "nowhere"))
    assert "\n" not in str(e.value)


def test_benchmark_needs_a_root(monkeypatch):
    monkeypatch.delenv("RESTORELAB_DATA", raising=False)
    with pytest.raises(ImageSourceError, match="RESTORELAB_DATA"):
        resolve_source("benchmark:Set5")


def test_benchmark_from_env(monkeypatch, datasets_root):
    monkeypatch.setenv("RESTORELAB_DATA", str(datasets_root))
    assert [p.name for p in resolve_source("benchmark:Set5")] == [
        "baby.png", "bird.png", "butterfly.png", "head.png", "woman.png"]


def test_small_images_skipped_with_warning(tmp_path, rgb_u8):
    write(tmp_path / "big.png", np.zeros((64, 64, 3), np.uint8))
    write(tmp_path / "tiny.png", rgb_u8)
    with pytest.warns(UserWarning, match="tiny.png: 30x20 is smaller than the 33px patch; skipped"):
        images = load_images(str(tmp_path), min_size=33)
    assert [n for n, _ in images] == ["big.png"]
    with pytest.raises(ImageSourceError, match="no usable image"), pytest.warns(UserWarning):
        load_images(str(tmp_path / "tiny.png"), min_size=33)


def test_skimage_split_is_fixed_and_disjoint():
    train, val = resolve_source("skimage:train"), resolve_source("skimage:val")
    assert [p.name for p in train] == list(SKIMAGE_TRAIN) and [p.name for p in val] == list(SKIMAGE_VAL)
    assert not set(SKIMAGE_TRAIN) & set(SKIMAGE_VAL)


def test_wrong_scale_and_patch_are_named():
    with pytest.raises(ValueError, match="data.init_args.scale must be one of 2, 3, 4, 8; got 5"):
        SRDataModule(scale=5)
    with pytest.raises(ValueError, match="data.init_args.patch_size=32 must be a multiple of 3"):
        SRDataModule(scale=3, patch_size=32)


def test_channels():
    rgb = torch.rand(2, 3, 4, 4)
    gray = torch.rand(2, 1, 4, 4)
    assert to_channels(rgb, "y").shape[1] == 1 and to_channels(gray, "y") is gray
    assert torch.equal(to_channels(gray, "rgb")[:, 2], gray[:, 0])
    assert torch.allclose(to_channels(torch.ones(1, 3, 2, 2), "gray"), torch.ones(1, 1, 2, 2))
