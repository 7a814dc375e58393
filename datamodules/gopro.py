"""File listings for motion-deblurring data: the GoPro_Large release (Nah et al., CVPR 2017) and plain folders
of consecutive video frames, from which blur is synthesised by ``image_ops.average_frames``.

GoPro_Large layout::

    <root>/train|test/<sequence>/blur/000047.png          plain frame average
                                /blur_gamma/000047.png    average in linear light (gamma 2.2), the paper's
                                /sharp/000047.png         middle frame of the averaged window

``blur_gamma`` is what the paper trains on; in a sequence name GOPRxxxx_yy_zz, yy is the number of 240 fps frames
averaged per blurred image (author's answers in SeungjunNah/DeepDeblur-PyTorch#4, DeepDeblur_release#59).
Only paths are listed here; loading and cropping belong to the DataModule.
"""
from __future__ import annotations

import re
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GOPRO_BLUR_KINDS = ("blur", "blur_gamma")


def _natural_key(path: Path):
    """frame_2 before frame_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _images(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)


def gopro_pairs(root, split: str = "train", blur: str = "blur_gamma") -> list[tuple[Path, Path]]:
    """(blurred, sharp) path pairs of every sequence of ``<root>/<split>``, sequences and frames in order."""
    if blur not in GOPRO_BLUR_KINDS:
        raise ValueError(f"gopro_pairs: blur must be one of {GOPRO_BLUR_KINDS}, got {blur!r}")
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"GoPro: {split_dir} is not a folder (expected <root>/{split}/<sequence>/{blur},sharp)")
    sequences = sorted((d for d in split_dir.iterdir() if d.is_dir()), key=_natural_key)
    if not sequences:
        raise FileNotFoundError(f"GoPro: {split_dir} has no sequence folders")
    pairs = []
    for sequence in sequences:
        blur_dir, sharp_dir = sequence / blur, sequence / "sharp"
        for folder in (blur_dir, sharp_dir):
            if not folder.is_dir():
                raise FileNotFoundError(f"GoPro: {folder} is missing (every sequence needs {blur}/ and sharp/)")
        blurred, sharp = _images(blur_dir), _images(sharp_dir)
        if not blurred or [p.name for p in blurred] != [p.name for p in sharp]:
            raise ValueError(f"GoPro: {sequence} has {len(blurred)} {blur} and {len(sharp)} sharp images "
                             f"whose file names do not pair up one to one")
        pairs += list(zip(blurred, sharp))
    return pairs


def frame_windows(folder, n_frames: int, stride: int = 1) -> list[tuple[Path, ...]]:
    """Windows of ``n_frames`` consecutive frames (natural file-name order) of a folder of video frames,
    starting every ``stride`` frames; average a window to make a blurred image, its middle frame
    (``window[n_frames // 2]``) is the sharp target."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"frame_windows: {folder} is not a folder of video frames")
    frames = _images(folder)
    if len(frames) < n_frames:
        raise ValueError(f"frame_windows: {folder} has {len(frames)} frames, fewer than a window of {n_frames}")
    return [tuple(frames[i:i + n_frames]) for i in range(0, len(frames) - n_frames + 1, stride)]


def frame_folders(root) -> list[Path]:
    """The videos under ``root``: ``root`` itself if it holds frames, else its sub-folders that do (natural
    order), so one spec can name a single video or a whole collection such as GoPro_Large_all/train."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"frame_folders: {root} is not a folder of video frames or of such folders")
    if _images(root):
        return [root]
    videos = [d for d in sorted(root.iterdir(), key=_natural_key) if d.is_dir() and _images(d)]
    if not videos:
        raise FileNotFoundError(f"frame_folders: {root} holds no frames and no folder of frames")
    return videos
