"""Where images come from: folders, the photos bundled with scikit-image, and the benchmark sets.

Every reader returns float32 C×H×W in [0, 1], RGB order, with C = 1 for gray files and C = 3 for
colour ones. Anything that cannot be read raises ``ImageSourceError`` with one line naming the file.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

from datamodules.errors import AnticipatedError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# The embedded default data: natural photos that ship inside the scikit-image wheel (no download).
# Fixed split: the held-out photos are distinct scenes from every training photo (motorcycle_left and
# _right are one stereo pair, so both stay on the training side).
SKIMAGE_TRAIN = (
    "astronaut.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png", "hubble_deep_field.jpg",
    "brick.png", "grass.png", "gravel.png", "coins.png", "moon.png", "ihc.png", "retina.jpg", "page.png",
    "text.png",
)
SKIMAGE_VAL = ("chelsea.png", "coffee.png", "camera.png")

BENCHMARK_SETS = ("Set5", "Set14", "BSD100", "Urban100", "T91", "Set12", "BSD68", "CBSD68", "Kodak24")


class ImageSourceError(AnticipatedError):
    """A file or folder that cannot serve as an image source; the message names it."""


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Read one image file as float32 C×H×W in [0, 1] (C = 1 gray, 3 colour; alpha is dropped)."""
    path = Path(path)
    if not path.is_file():
        raise ImageSourceError(f"{path}: no such image file")
    # cv2.imread cannot open non-ASCII paths on every platform; decoding the bytes always works.
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise ImageSourceError(f"{path}: not a readable image (corrupt or unsupported format)")
    if img.dtype == np.uint8:
        scale = 255.0
    elif img.dtype == np.uint16:
        scale = 65535.0
    elif img.dtype in (np.float32, np.float64):
        scale = 1.0
    else:
        raise ImageSourceError(f"{path}: unsupported pixel type {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        chw = img[None]
    elif img.ndim == 3 and img.shape[2] in (3, 4):
        rgb = cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2RGB)  # cv2 decodes to BGR; nothing else sees it
        chw = rgb.transpose(2, 0, 1)
    elif img.ndim == 3 and img.shape[2] == 2:  # gray + alpha
        chw = img[None, :, :, 0]
    else:
        raise ImageSourceError(f"{path}: unsupported image shape {img.shape}")
    out = torch.from_numpy(np.ascontiguousarray(chw).astype(np.float32) / scale)
    if not torch.isfinite(out).all():
        raise ImageSourceError(f"{path}: image holds NaN or infinite values")
    return out.clamp_(0, 1)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageSourceError(f"{folder}: image folder does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise ImageSourceError(f"{folder}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def skimage_photo_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent


def dataset_root(root: str | os.PathLike | None = None) -> Path:
    """Folder holding the benchmark sets: ``root`` if given, else ``$RESTORELAB_DATA``."""
    root = root or os.environ.get("RESTORELAB_DATA")
    if not root:
        raise ImageSourceError(
            "benchmark sets need a data folder: set RESTORELAB_DATA or data.init_args.data_root (see README)"
        )
    return Path(root).expanduser()


def resolve_source(spec: str, data_root: str | os.PathLike | None = None) -> list[Path]:
    """Image paths for one source spec.

    ``skimage:train`` / ``skimage:val`` — the bundled photos (fixed split above);
    ``skimage:<name>`` — one bundled photo; ``benchmark:<Set>`` — a folder of ``dataset_root()``;
    anything else — a folder or a single image file.
    """
    kind, _, name = spec.partition(":")
    if kind == "skimage" and name:
        base = skimage_photo_dir()
        names = {"train": SKIMAGE_TRAIN, "val": SKIMAGE_VAL}.get(name, (name,))
        missing = [n for n in names if not (base / n).is_file()]
        if missing:
            raise ImageSourceError(f"{spec}: scikit-image has no bundled photo {missing[0]} in {base}")
        return [base / n for n in names]
    if kind == "benchmark" and name:
        return list_images(dataset_root(data_root) / name)
    path = Path(spec).expanduser()
    if not path.exists():
        kind = "image file" if path.suffix.lower() in IMAGE_EXTENSIONS else "image file or folder"
        raise ImageSourceError(f"{path}: no such {kind}")
    if path.is_file():
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ImageSourceError(f"{path}: not an image file ({', '.join(IMAGE_EXTENSIONS)})")
        return [path]
    return list_images(path)


def load_images(specs: str | list[str], data_root=None, min_size: int = 0) -> list[tuple[str, torch.Tensor]]:
    """(name, image) for every image of every spec; images with a side below ``min_size`` are skipped
    with a warning naming them, so one small file does not end a run."""
    specs = [specs] if isinstance(specs, str) else list(specs)
    out = []
    for spec in specs:
        for path in resolve_source(spec, data_root):
            img = read_image(path)
            if min(img.shape[-2:]) < min_size:
                warnings.warn(f"{path}: {img.shape[-1]}x{img.shape[-2]} is smaller than the {min_size}px patch; skipped",
                              stacklevel=2)
                continue
            out.append((path.name, img))
    if not out:
        raise ImageSourceError(f"{', '.join(specs)}: no usable image (all smaller than {min_size}px?)")
    return out
