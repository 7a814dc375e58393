"""``restorelab import --format FORMAT --weights FILE --out OUT.ckpt [--scale S ...] [--sigma SIGMA [HIGH]]
[--channels y|gray|rgb] [--overwrite]``: the authors' released weights of SRCNN, VDSR and DnCNN as a checkpoint
of our own nets, so that ``restorelab benchmark --ckpt``, ``predict --ckpt`` and ``compare`` run the published
model like a trained one. Nothing is downloaded and the repository ships no third-party weights: FILE is a file
the user fetched from the authors.

Formats (each layout as the authors' own test code reads it; the conversion reproduces that code's arithmetic):

* ``srcnn_mat``: the SRCNN authors' MATLAB release (SRCNN_v1 ``model/9-1-5(91 images)/x3.mat``, TPAMI
  ``model/9-5-5(ImageNet)/x3.mat``, ...): variables ``weights_conv1`` f1²×n1, ``biases_conv1`` n1×1,
  ``weights_conv2`` n1×f2²×n2 (n1×1×n2 for f2 = 1; n1×n2 is accepted too), ``biases_conv2`` n2×1,
  ``weights_conv3`` n2×f3², ``biases_conv3`` 1×1. Their ``SRCNN.m`` turns each column into an f×f filter with
  MATLAB's column-major ``reshape(w, f, f)`` and applies it with ``imfilter(..., 'same', 'replicate')``, a
  correlation like PyTorch's conv2d, so filter entry (r, c) is ``w[c·f + r]`` and lands at torch
  ``weight[out, in, r, c]``; our ``SRCNN(padding="same")`` pads each layer by replication as imfilter does.
  f1, f2, f3, n1, n2 come from the shapes. The net works on the MATLAB-bicubic-upsampled Y channel (0..1, BT.601
  16..235 as ``rgb2ycbcr``); the file does not record its scale: ``--scale``, or the ``x2`` / ``x3`` / ``x4`` of
  the authors' file names.
* ``vdsr_mat``: the MatConvNet model of huangzehao/caffe-vdsr (``Test/VDSR_Official.mat``, "an official model
  converted from the official test code"; ``VDSR_170000.mat``, ``VDSR_Adam.mat`` of the same layout): a struct
  ``model`` with cell arrays ``weight`` {H×W×in×out, 3×3×1×64, 3×3×64×64, ..., 3×3×64×1} and ``bias`` {out×1},
  20 of each. ``Test/utils/VDSR_Matconvnet.m`` runs ``vl_nnconv(x, weight{i}, bias{i}, 'Pad', 1)`` (correlation,
  zero padding) with a ReLU between layers and adds the input: our ``VDSR``, weight ``W(r, c, in, out)`` at torch
  ``[out, in, r, c]``. One net restores every scale of the bicubic-upsampled Y channel: recorded as ×2, ×3, ×4
  unless ``--scale`` names others.
* ``dncnn_mat``: the MatConvNet SimpleNN models of cszn/DnCNN (``model/specifics/sigma=25.mat``,
  ``model/GD_Gray_Blind.mat``, the CDnCNN colour models, or a ``net`` saved by its training code): a struct
  ``net`` whose ``layers`` is a cell array of structs with ``type`` 'conv' (``weights`` {W H×W×in×out, b},
  ``pad`` 1, ``stride`` 1), 'bnorm' (``weights`` {gain, offset, moments C×2}: vl_nnbnorm's moments are
  [mean, σ] with σ = sqrt(var + ε) already, so test mode is gain·(x − mean)/σ + offset) and 'relu'; trailing
  'loss' layers are ignored. ``Demo_test_DnCNN.m`` runs ``vl_simplenn`` and takes ``output = input - res``: the
  net predicts the noise, as our ``DnCNN`` (output = input − noise). DagNN models (``dagnn.DagNN`` saved with
  ``saveobj``) are not read.
* ``dncnn_pth``: PyTorch state dicts of DnCNN's Sequential: cszn/DnCNN ``TrainingCodes/dncnn_pytorch`` (keys
  ``dncnn.0.weight``, ``dncnn.0.bias``, ``dncnn.2.weight``, ``dncnn.3.weight/bias/running_mean/running_var``,
  ...; middle and last convs without bias, BatchNorm ε = 1e-4) and KAIR's ``dncnn_15/25/50.pth``,
  ``dncnn_gray_blind.pth``, ``dncnn_color_blind.pth`` (keys ``model.0.weight``, ``model.0.bias``,
  ``model.2.weight``, ...: every conv with a bias, BN already merged). A ``module.`` prefix (DataParallel) is
  dropped; BatchNorm layers in these files are taken with ε = 1e-4, the ε of both codes. Read with
  ``torch.load(weights_only=True)``: dncnn_pytorch's own ``model.pth`` is a whole pickled module (``torch.save
  (model)``), which is not unpickled (that can run code): re-save its ``state_dict()`` and import that. A state
  dict does not record dilation, so a dilated net (IRCNN) of the same keys would be misread.

BatchNorm: our DnCNN keeps its class (conv without bias + BatchNorm2d in every middle block). Every imported
batch norm is folded into the convolution before it (W·gain/σ, gain·(b − mean)/σ + offset, in float64), and
each BatchNorm2d of the imported net is then an exact identity that carries the bias: weight 1, bias = the
folded bias, running_mean 0, running_var 1 − ε (ε = BatchNorm2d's 1e-5). Released models whose BN was merged
already load the same way. The imported net therefore evaluates exactly as the authors' test code (fine-tuning
it with batch statistics would start from identity normalisation, not from the authors' statistics).

Denoisers are recorded with the noise they were made for, ``AWGN(sigma=σ)`` unclipped as the authors' test
code adds it, from ``--sigma 25`` (or ``--sigma 0 55`` for a blind model: σ drawn from [0, 55], evaluated at
25), or else from the authors' file names (``sigma=25``, ``dncnn_25``, ``DnCNN_sigma25/``, ``blind`` = [0, 55]).
Channels: Y for the SR nets, gray or RGB from the denoiser's first layer (``--channels`` may say ``y`` for a
one-channel denoiser meant for luma).

The checkpoint is what ``restorelab fit`` writes for these nets (``hyper_parameters``: the supervised scheme's
class path, the net as class_path/init_args, the scale; ``datamodule_hyper_parameters``: the DataModule, its
channels, scale(s) and recipe; ``state_dict``: ``net.``-prefixed), with no optimizer or loop state, plus
``imported_from``: the format, the file's path, name and SHA-256, the layout found and what was assumed. It is
written beside ``--out`` and moved into place only after ``restorelab.predict.load_restorer`` has loaded it; an
existing ``--out`` is only replaced with ``--overwrite``. Every anticipated problem (missing or unreadable file,
missing variables, shapes that do not fit, unknown format, unwritable ``--out``) is one line naming the file.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from datamodules.errors import AnticipatedError
from restorelab.checkpointing import DEFAULT_SCHEME

FORMATS = {
    "srcnn_mat": "SRCNN authors' MATLAB model (x3.mat: weights_conv1..3, biases_conv1..3)",
    "vdsr_mat": "caffe-vdsr MatConvNet model (VDSR_Official.mat: model.weight{i}, model.bias{i})",
    "dncnn_mat": "cszn/DnCNN MatConvNet SimpleNN model (sigma=25.mat, GD_Gray_Blind.mat: net.layers)",
    "dncnn_pth": "DnCNN PyTorch state dict (cszn dncnn_pytorch dncnn.*, KAIR dncnn_25.pth model.*)",
}
VDSR_SCALES = (2, 3, 4)  # the scales the one VDSR net was trained on
BLIND_SIGMA, BLIND_TEST_SIGMA = (0.0, 55.0), 25.0  # DnCNN-B / CDnCNN-B
PTH_BN_EPS = 1e-4  # nn.BatchNorm2d(eps=0.0001) in dncnn_pytorch and KAIR's basicblock
INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"


class WeightsFileError(AnticipatedError):
    """A weights file that cannot be imported; the message is one line naming it."""


@dataclass
class Converted:
    """A published model as one of our nets: its class path, constructor arguments and loaded instance."""

    class_path: str
    init_args: dict
    net: nn.Module
    task: str  # "sr" or "denoise"
    layout: str  # what was found, in words
    assumed: dict = field(default_factory=dict)


# -------------------------------------------------------------------------------------------- reading files


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_mat(path: Path) -> dict:
    """A MATLAB v5/v7 .mat file's variables, unsqueezed (MATLAB's own dimensions), structs as attributes."""
    from scipy.io import loadmat

    try:
        return loadmat(path, squeeze_me=False, struct_as_record=False)
    except NotImplementedError:  # scipy's answer to v7.3
        raise WeightsFileError(f"{path}: a MATLAB v7.3 (HDF5) .mat file, which scipy cannot read; re-save it in "
                               "MATLAB or Octave with save(file, '-v7') and import that") from None
    except Exception as e:  # noqa: BLE001 - whatever scipy says, the user needs one line naming the file
        raise WeightsFileError(f"{path}: not a readable MATLAB .mat file ({type(e).__name__}: "
                               f"{_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _variables(mat: dict) -> list[str]:
    return [k for k in mat if not k.startswith("__")]


def _scalar(x):
    """A MATLAB 1×1 cell or struct array as its one element."""
    while isinstance(x, np.ndarray) and x.dtype == object and x.size == 1:
        x = x.reshape(-1)[0]
    return x


def _elements(x) -> list:
    """A MATLAB cell or struct array as a list, in MATLAB's linear (column-major) order."""
    if isinstance(x, np.ndarray) and x.dtype == object:
        return [_scalar(e) for e in x.reshape(-1, order="F")]
    return [x]


def _text(x) -> str | None:
    x = _scalar(x)
    if isinstance(x, str):
        return x
    if isinstance(x, np.ndarray) and x.dtype.kind == "U":
        return "".join(x.reshape(-1, order="F"))
    return None


def _struct(mat: dict, name: str, needed: tuple[str, ...], path: Path, expected: str):
    """(the struct ``name`` of a .mat file, its fields), or one line saying what the file holds instead."""
    struct = _scalar(mat.get(name))
    fields = getattr(struct, "_fieldnames", None) or []
    if name not in mat or any(f not in fields for f in needed):
        what = (f"its struct {name} has fields {', '.join(fields) or 'none'}" if name in mat else
                f"it has {', '.join(_variables(mat)) or 'no variables'}")
        raise WeightsFileError(f"{path}: {expected} ({what})")
    return struct, fields


def _numeric(x, path: Path, what: str) -> np.ndarray:
    x = _scalar(x)
    if not (isinstance(x, np.ndarray) and x.dtype.kind in "fiub"):
        raise WeightsFileError(f"{path}: {what} is not a numeric array ({type(x).__name__})")
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise WeightsFileError(f"{path}: {what} holds non-finite values")
    return x


def _shape(x: np.ndarray) -> str:
    return "×".join(map(str, x.shape))


def _square_side(n: int, path: Path, what: str) -> int:
    side = math.isqrt(n)
    if side * side != n or side % 2 == 0:
        raise WeightsFileError(f"{path}: {what} has {n} rows, not the square of an odd filter size")
    return side


def _matconvnet_filters(w: np.ndarray) -> np.ndarray:
    """H×W×in×out (MATLAB drops trailing singleton dimensions: 3×3×64 is 3×3×64×1) -> torch out×in×H×W."""
    return w.reshape(w.shape + (1,) * (4 - w.ndim)).transpose(3, 2, 0, 1)


def _copy(module: nn.Module, name: str, value: np.ndarray, path: Path, what: str) -> None:
    target = getattr(module, name)
    value = torch.from_numpy(np.ascontiguousarray(value)).to(target.dtype)
    if tuple(value.shape) != tuple(target.shape):  # shapes are checked before; this is the last guard
        raise WeightsFileError(f"{path}: {what} is {tuple(value.shape)}, the net needs {tuple(target.shape)}")
    with torch.no_grad():
        target.copy_(value)


# -------------------------------------------------------------------------------------------- SRCNN


def srcnn_from_mat(path: Path) -> Converted:
    from lightning_modules.nets.srcnn import SRCNN

    mat = read_mat(path)
    names = ["weights_conv1", "biases_conv1", "weights_conv2", "biases_conv2", "weights_conv3", "biases_conv3"]
    missing = [n for n in names if n not in mat]
    if missing:
        found = ", ".join(_variables(mat)) or "none"
        raise WeightsFileError(f"{path}: not an SRCNN model of the authors' layout: no variable "
                               f"{', '.join(missing)} (it has {found})")
    w1, b1, w2, b2, w3, b3 = (_numeric(mat[n], path, n) for n in names)
    if w1.ndim != 2:
        raise WeightsFileError(f"{path}: weights_conv1 is {_shape(w1)}, expected f1²×n1 (the authors' one-channel "
                               "Y model)")
    f1, n1 = _square_side(w1.shape[0], path, "weights_conv1"), w1.shape[1]
    n2 = b2.size
    if w2.ndim == 3:
        n1_in, f2_squared, n2_out = w2.shape
    elif w2.ndim == 2:  # f2 = 1 saved without its singleton middle dimension
        (n1_in, n2_out), f2_squared = w2.shape, 1
    else:
        raise WeightsFileError(f"{path}: weights_conv2 is {_shape(w2)}, expected n1×f2²×n2")
    f2 = _square_side(f2_squared, path, "weights_conv2's second dimension")
    if w3.ndim != 2:
        raise WeightsFileError(f"{path}: weights_conv3 is {_shape(w3)}, expected n2×f3²")
    f3 = _square_side(w3.shape[1], path, "weights_conv3's columns")
    problems = [(b1.size == n1, f"biases_conv1 has {b1.size} values for n1 = {n1} filters"),
                (n1_in == n1, f"weights_conv2 is {_shape(w2)}: its {n1_in} inputs are not the n1 = {n1} filters of "
                              "conv1"),
                (n2_out == n2, f"weights_conv2 is {_shape(w2)}: {n2_out} filters, but biases_conv2 has {n2}"),
                (w3.shape[0] == n2, f"weights_conv3 is {_shape(w3)}: its {w3.shape[0]} inputs are not the n2 = {n2} "
                                    "filters of conv2"),
                (b3.size == 1, f"biases_conv3 has {b3.size} values, expected 1 (one output channel)")]
    for ok, problem in problems:
        if not ok:
            raise WeightsFileError(f"{path}: {problem}")
    # MATLAB reshape(w, f, f) is column-major: entry (r, c) of a filter is w[r + c·f], i.e. numpy order="F"
    k1 = w1.reshape(f1, f1, n1, order="F").transpose(2, 0, 1)[:, None]  # n1×1×f1×f1
    k2 = w2.reshape(n1, f2, f2, n2, order="F").transpose(3, 0, 1, 2)  # n2×n1×f2×f2
    k3 = w3.reshape(n2, f3, f3, order="F")[None]  # 1×n2×f3×f3
    init_args = {"kernel_sizes": [f1, f2, f3], "filters": [n1, n2], "channels": 1, "padding": "same",
                 "init_std": None}
    net = SRCNN(**init_args)
    for conv, w, b, i in ((net.features[0], k1, b1, 1), (net.features[2], k2, b2, 2), (net.reconstruction, k3, b3, 3)):
        _copy(conv, "weight", w, path, f"weights_conv{i}")
        _copy(conv, "bias", b.reshape(-1), path, f"biases_conv{i}")
    return Converted("lightning_modules.nets.srcnn.SRCNN", init_args, net, "sr",
                     f"SRCNN {f1}-{f2}-{f3}, n1={n1}, n2={n2}, Y channel")


# -------------------------------------------------------------------------------------------- VDSR


def vdsr_from_mat(path: Path) -> Converted:
    from lightning_modules.nets.vdsr import VDSR

    mat = read_mat(path)
    model, _ = _struct(mat, "model", ("weight", "bias"), path,
                       "not a caffe-vdsr MatConvNet model: no struct model with cell arrays weight and bias")
    weights, biases = _elements(model.weight), _elements(model.bias)
    if len(weights) != len(biases) or len(weights) < 2:
        raise WeightsFileError(f"{path}: model.weight has {len(weights)} layers and model.bias {len(biases)}; "
                               "expected the same number, at least 2")
    filters, shifts = [], []
    for i, (w, b) in enumerate(zip(weights, biases), 1):
        w, b = _numeric(w, path, f"model.weight{{{i}}}"), _numeric(b, path, f"model.bias{{{i}}}").reshape(-1)
        if w.ndim not in (2, 3, 4) or w.shape[:2] != (3, 3):
            raise WeightsFileError(f"{path}: model.weight{{{i}}} is {_shape(w)}, expected 3×3×in×out")
        k = _matconvnet_filters(w)
        if b.size != k.shape[0]:
            raise WeightsFileError(f"{path}: model.bias{{{i}}} has {b.size} values for the {k.shape[0]} filters "
                                   f"of model.weight{{{i}}}")
        if filters and k.shape[1] != filters[-1].shape[0]:
            raise WeightsFileError(f"{path}: model.weight{{{i}}} takes {k.shape[1]} channels but layer {i - 1} "
                                   f"gives {filters[-1].shape[0]}")
        filters.append(k)
        shifts.append(b)
    channels, features, depth = filters[0].shape[1], filters[0].shape[0], len(filters)
    _check_image_channels(path, channels, filters[-1].shape[0], "model.weight")
    odd = [i for i, k in enumerate(filters[1:-1], 2) if k.shape[:2] != (features, features)]
    if odd:
        raise WeightsFileError(f"{path}: model.weight{{{odd[0]}}} is not {features}→{features} like the other "
                               "middle layers")
    init_args = {"channels": channels, "depth": depth, "features": features}
    net = VDSR(**init_args)
    convs = [m for m in net.residual if isinstance(m, nn.Conv2d)]
    for i, (conv, k, b) in enumerate(zip(convs, filters, shifts), 1):
        _copy(conv, "weight", k, path, f"model.weight{{{i}}}")
        _copy(conv, "bias", b, path, f"model.bias{{{i}}}")
    return Converted("lightning_modules.nets.vdsr.VDSR", init_args, net, "sr",
                     f"VDSR, {depth} layers of {features} filters, {'Y' if channels == 1 else 'RGB'}")


def _check_image_channels(path: Path, first_in: int, last_out: int, what: str) -> None:
    if first_in in (2, 4, 5):
        raise WeightsFileError(f"{path}: its first layer takes {first_in} channels (an image plus a noise-level "
                               "map, as FFDNet / FDnCNN), which our nets do not take")
    if first_in not in (1, 3):
        raise WeightsFileError(f"{path}: its first layer takes {first_in} channels; our nets take 1 (gray / Y) or 3 "
                               "(RGB)")
    if last_out != first_in:
        raise WeightsFileError(f"{path}: {what}: the last layer gives {last_out} channels for {first_in} in")


# -------------------------------------------------------------------------------------------- DnCNN


@dataclass
class ConvUnit:
    """One convolution of a DnCNN as float64 torch-layout arrays, a batch norm after it folded in."""

    weight: np.ndarray  # out×in×3×3
    bias: np.ndarray  # out
    where: str  # how the file names it, for messages

    def fold_batch_norm(self, gain, offset, mean, sigma) -> None:
        """BN(conv(x)) = gain·(W·x + b − mean)/σ + offset = (W·a)·x + a·(b − mean) + offset, a = gain/σ."""
        a = gain / sigma
        self.weight = self.weight * a[:, None, None, None]
        self.bias = a * (self.bias - mean) + offset


def dncnn_from_units(path: Path, units: list[ConvUnit], layout: str) -> Converted:
    """Our DnCNN with the convolutions of ``units`` (batch norms folded in): BNs are identities carrying the bias."""
    from lightning_modules.nets.dncnn import DnCNN

    if len(units) < 2:
        raise WeightsFileError(f"{path}: {len(units)} convolution(s); a DnCNN has at least 2")
    for previous, unit in zip(units, units[1:]):
        if unit.weight.shape[1] != previous.weight.shape[0]:
            raise WeightsFileError(f"{path}: {unit.where} takes {unit.weight.shape[1]} channels but {previous.where} "
                                   f"gives {previous.weight.shape[0]}")
    for unit in units:
        if unit.weight.shape[2:] != (3, 3):
            raise WeightsFileError(f"{path}: {unit.where} has {unit.weight.shape[2]}×{unit.weight.shape[3]} filters; "
                                   "DnCNN's are 3×3")
        if not (np.isfinite(unit.weight).all() and np.isfinite(unit.bias).all()):
            raise WeightsFileError(f"{path}: {unit.where} holds non-finite weights (σ = 0 in its batch norm?)")
    channels, features = units[0].weight.shape[1], units[0].weight.shape[0]
    _check_image_channels(path, channels, units[-1].weight.shape[0], "DnCNN")
    odd = [u for u in units[1:-1] if u.weight.shape[:2] != (features, features)]
    if odd:
        raise WeightsFileError(f"{path}: {odd[0].where} is not {features}→{features} like the other middle layers")
    init_args = {"channels": channels, "depth": len(units), "features": features}
    net = DnCNN(**init_args)
    convs = [m for m in net.noise if isinstance(m, nn.Conv2d)]
    norms = [m for m in net.noise if isinstance(m, nn.BatchNorm2d)]
    for i, (conv, unit) in enumerate(zip(convs, units)):
        _copy(conv, "weight", unit.weight, path, unit.where)
        if conv.bias is not None:  # the first and the last
            _copy(conv, "bias", unit.bias, path, unit.where)
            continue
        bn = norms[i - 1]
        _copy(bn, "weight", np.ones(features), path, unit.where)
        _copy(bn, "bias", unit.bias, path, unit.where)
        _copy(bn, "running_mean", np.zeros(features), path, unit.where)
        _copy(bn, "running_var", np.full(features, 1.0 - bn.eps), path, unit.where)
    colour = "gray" if channels == 1 else "RGB"
    return Converted("lightning_modules.nets.dncnn.DnCNN", init_args, net, "denoise",
                     f"DnCNN, {len(units)} layers of {features} filters, {colour} ({layout})")


def dncnn_from_mat(path: Path) -> Converted:
    mat = read_mat(path)
    net, fields = _struct(mat, "net", ("layers",), path,
                          "not a MatConvNet SimpleNN model: no struct net with a cell array layers")
    layers = _elements(net.layers)
    if "params" in fields or any("block" in (getattr(l, "_fieldnames", None) or []) for l in layers):
        raise WeightsFileError(f"{path}: a MatConvNet DagNN model; only SimpleNN models (net.layers a cell array of "
                               "conv / bnorm / relu structs, as cszn/DnCNN's model/ folder) are read")
    kinds = []
    for i, layer in enumerate(layers, 1):
        kind = _text(getattr(layer, "type", None)) if hasattr(layer, "_fieldnames") else None
        if kind is None:
            raise WeightsFileError(f"{path}: net.layers{{{i}}} is not a struct with a type")
        kinds.append(kind.lower())
    while kinds and "loss" in kinds[-1]:  # a training snapshot ends with its loss
        kinds.pop()
    tokens = {"conv": "C", "bnorm": "B", "relu": "R"}
    unknown = [(i, k) for i, k in enumerate(kinds, 1) if k not in tokens]
    if unknown:
        raise WeightsFileError(f"{path}: net.layers{{{unknown[0][0]}}} is a '{unknown[0][1]}' layer; a DnCNN has "
                               "only conv, bnorm and relu")
    pattern = "".join(tokens[k] for k in kinds)
    if not re.fullmatch(r"(CB?R)+CB?", pattern):
        raise WeightsFileError(f"{path}: its layers ({' '.join(kinds)}) are not DnCNN's conv [bnorm] relu ... conv")
    units: list[ConvUnit] = []
    for i, (layer, kind) in enumerate(zip(layers, kinds), 1):
        where = f"net.layers{{{i}}}"
        if kind == "conv":
            units.append(_matconvnet_conv(path, layer, where))
        elif kind == "bnorm":
            gain, offset, moments = _layer_weights(path, layer, where, ("gain", "offset", "moments"))
            features = units[-1].weight.shape[0]
            gain, offset = gain.reshape(-1), offset.reshape(-1)
            if gain.size != features or offset.size != features or moments.shape != (features, 2):
                raise WeightsFileError(f"{path}: {where} (bnorm) has gain {_shape(gain)}, offset {_shape(offset)}, "
                                       f"moments {_shape(moments)}; expected {features}, {features}, {features}×2")
            units[-1].fold_batch_norm(gain, offset, moments[:, 0], moments[:, 1])
        elif _field(layer, "leak") is not None and np.any(_numeric(_field(layer, "leak"), path, f"{where}.leak")):
            raise WeightsFileError(f"{path}: {where} is a leaky ReLU; DnCNN's is plain")  # kind == "relu" here
    return dncnn_from_units(path, units, "MatConvNet SimpleNN")


def _field(struct, name: str):
    return getattr(struct, name) if name in (getattr(struct, "_fieldnames", None) or []) else None


def _layer_weights(path: Path, layer, where: str, names: tuple[str, ...]) -> list[np.ndarray]:
    """A layer's ``weights`` cell ({W, b} or {gain, offset, moments}); older MatConvNet: ``filters``/``biases``."""
    if _field(layer, "weights") is not None:
        values = _elements(_field(layer, "weights"))
    elif _field(layer, "filters") is not None and len(names) == 2:
        values = [_field(layer, "filters"), _field(layer, "biases")]
    else:
        raise WeightsFileError(f"{path}: {where} has no weights")
    if len(values) != len(names):
        raise WeightsFileError(f"{path}: {where}.weights has {len(values)} arrays, expected {len(names)} "
                               f"({', '.join(names)})")
    return [_numeric(v, path, f"{where} {name}") if v is not None and np.size(v) else np.zeros(0)
            for v, name in zip(values, names)]


def _matconvnet_conv(path: Path, layer, where: str) -> ConvUnit:
    w, b = _layer_weights(path, layer, where, ("filters", "biases"))
    if w.ndim not in (2, 3, 4):
        raise WeightsFileError(f"{path}: {where} has filters {_shape(w)}, expected H×W×in×out")
    k = _matconvnet_filters(w)
    b = np.zeros(k.shape[0]) if b.size == 0 else b.reshape(-1)
    if b.size != k.shape[0]:
        raise WeightsFileError(f"{path}: {where} has {b.size} biases for {k.shape[0]} filters")
    for name, wanted in (("pad", 1), ("stride", 1), ("dilate", 1)):
        value = _field(layer, name)
        if value is not None and np.size(value) and not np.all(_numeric(value, path, f"{where}.{name}") == wanted):
            raise WeightsFileError(f"{path}: {where} has {name} {_numeric(value, path, name).reshape(-1).tolist()}; "
                                   f"DnCNN's 3×3 convolutions have {name} {wanted}")
    return ConvUnit(k, b, where)


STATE_KEY = re.compile(r"(?P<prefix>(?:.*\.)?)(?P<index>\d+)\.(?P<param>weight|bias|running_mean|running_var|"
                       r"num_batches_tracked)")


def read_pth(path: Path) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a pickled module, or not a PyTorch file at all
        found = re.search(r"GLOBAL ([\w.]+)", str(e))  # weights_only names the class it refused
        if found:
            raise WeightsFileError(f"{path}: holds a pickled Python object ({found.group(1)}), such as a whole model "
                                   "saved with torch.save(model), which is not unpickled (that can run code); load it "
                                   "where its class is defined and re-save its weights with torch.save("
                                   "model.state_dict(), 'state_dict.pth'), then import that") from None
        with open(path, "rb") as f:
            hint = "; it is a MATLAB .mat file (--format dncnn_mat?)" if f.read(6) == b"MATLAB" else ""
        raise WeightsFileError(f"{path}: not a file torch.load can read ({type(e).__name__}){hint}") from None
    for key in ("state_dict", "model_state_dict", "params"):  # one level of wrapping
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsFileError(f"{path}: not a state dict (a dict of tensors) but {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def dncnn_from_pth(path: Path) -> Converted:
    state = read_pth(path)
    parsed = {k: STATE_KEY.fullmatch(k) for k in state}
    strange = [k for k, m in parsed.items() if m is None]
    if strange:
        raise WeightsFileError(f"{path}: key {strange[0]} is not <prefix>.<index>.<weight|bias|running_...> of a "
                               "DnCNN Sequential (dncnn.0.weight, model.0.weight, ...)")
    prefixes = sorted({m["prefix"] for m in parsed.values()})
    if len(prefixes) != 1:
        raise WeightsFileError(f"{path}: keys of several modules ({', '.join(p.rstrip('.') or '<none>' for p in prefixes)}); "
                               "a DnCNN state dict has one Sequential")
    prefix = prefixes[0]
    layers: dict[int, dict[str, np.ndarray]] = {}
    for key, m in parsed.items():
        if m["param"] != "num_batches_tracked":
            layers.setdefault(int(m["index"]), {})[m["param"]] = state[key].detach().double().numpy()
    units: list[ConvUnit] = []
    last_conv = None
    for index in sorted(layers):
        params, where = layers[index], f"{prefix}{index}"
        if "running_mean" in params:
            if last_conv != index - 1 or set(params) != {"weight", "bias", "running_mean", "running_var"}:
                raise WeightsFileError(f"{path}: {where} is a batch norm that does not follow a convolution (or lacks "
                                       "weight/bias/running_mean/running_var)")
            sigma = np.sqrt(params["running_var"] + PTH_BN_EPS)
            n = units[-1].weight.shape[0]
            if any(params[p].shape != (n,) for p in params):
                raise WeightsFileError(f"{path}: {where} is a batch norm of other than the {n} channels before it")
            units[-1].fold_batch_norm(params["weight"], params["bias"], params["running_mean"], sigma)
            continue
        weight = params.get("weight")
        if weight is None or weight.ndim != 4 or set(params) - {"weight", "bias"}:
            raise WeightsFileError(f"{path}: {where} is neither a convolution (4-D weight, optional bias) nor a batch "
                                   "norm")
        bias = params.get("bias", np.zeros(weight.shape[0]))
        if bias.shape != (weight.shape[0],):
            raise WeightsFileError(f"{path}: {where}.bias has {bias.size} values for {weight.shape[0]} filters")
        units.append(ConvUnit(weight, bias, f"{where}.weight"))
        last_conv = index
    source = {"dncnn.": "cszn/DnCNN dncnn_pytorch state dict", "model.": "KAIR state dict"}.get(
        prefix, f"state dict of {prefix.rstrip('.') or 'a Sequential'}")
    return dncnn_from_units(path, units, source)


CONVERTERS = {"srcnn_mat": srcnn_from_mat, "vdsr_mat": vdsr_from_mat, "dncnn_mat": dncnn_from_mat,
              "dncnn_pth": dncnn_from_pth}


# -------------------------------------------------------------------------------------------- the checkpoint


def scale_from_name(path: Path) -> int | None:
    """The authors name SRCNN's models x2.mat, x3.mat, x4.mat."""
    m = re.fullmatch(r"x(\d+)", path.stem, re.IGNORECASE)
    return int(m.group(1)) if m else None


def sigma_from_name(path: Path) -> float | tuple[float, float] | None:
    """sigma=25.mat (cszn/DnCNN), dncnn_25.pth (KAIR), DnCNN_sigma25/model.pth (dncnn_pytorch); 'blind': [0, 55]."""
    if "blind" in path.stem.lower():
        return BLIND_SIGMA
    for name in (path.stem, path.parent.name):  # not dncnn3 (KAIR's DnCNN-3: denoising, SR and JPEG in one)
        m = re.search(r"sigma[=_]?(\d+(?:\.\d+)?)", name, re.IGNORECASE) or \
            re.fullmatch(r"c?dncnn[_-](\d+)", name, re.IGNORECASE)
        if m:
            return float(m.group(1))
    return None


def noise_recipe(sigma: float | tuple[float, float]) -> dict:
    init = {"sigma": list(sigma) if isinstance(sigma, tuple) else sigma, "clip": False, "jpeg_quality": None,
            "test_sigma": None}
    if isinstance(sigma, tuple) and sigma[0] <= BLIND_TEST_SIGMA <= sigma[1]:
        init["test_sigma"] = BLIND_TEST_SIGMA
    return {"class_path": "datamodules.recipes.AWGN", "init_args": init}


def build_checkpoint(converted: Converted, path: Path, fmt: str, scales: list[int], channels: str,
                     sigma: float | tuple[float, float] | None, digest: str) -> dict:
    """The dict ``restorelab fit`` would save for this net (weights only), plus ``imported_from``."""
    import lightning

    sr = converted.task == "sr"
    scale = (3 if 3 in scales else scales[0]) if sr else 1
    label = f"{type(converted.net).__name__} (published {path.name})"
    data = {"_class_path": f"datamodules.restoration.{'SRDataModule' if sr else 'DenoiseDataModule'}",
            "_instantiator": INSTANTIATOR, "channels": channels, "scale": scale,
            "recipe": {"class_path": "datamodules.recipes.BicubicSR"} if sr else noise_recipe(sigma)}
    if sr:
        data["scales"] = list(scales) if len(scales) > 1 else None
    return {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": lightning.__version__,
        "state_dict": {f"net.{k}": v.detach().clone().contiguous() for k, v in converted.net.state_dict().items()},
        "hparams_name": "kwargs",
        "hyper_parameters": {"_class_path": DEFAULT_SCHEME, "_instantiator": INSTANTIATOR,
                             "net": {"class_path": converted.class_path, "init_args": converted.init_args},
                             "scale": scale, "metric_space": "rgb" if channels == "rgb" and not sr else "y"},
        "datamodule_hparams_name": "kwargs",
        "datamodule_hyper_parameters": data,
        "imported_from": {"format": fmt, "file": str(path.resolve()), "name": path.name, "sha256": digest,
                          "layout": converted.layout, "label": label, "assumed": converted.assumed},
    }


def _levels(args, fmt: str, path: Path, converted: Converted) -> tuple[list[int], float | tuple | None]:
    """The SR scales or the noise σ to record, from the options or the authors' file names."""
    if converted.task == "sr":
        if args.sigma is not None:
            raise WeightsFileError(f"{path}: --sigma is for denoisers; {fmt} is a super-resolution model (--scale)")
        if args.scale and any(s < 2 for s in args.scale):
            raise WeightsFileError(f"{path}: --scale {' '.join(map(str, args.scale))}: SR factors are at least 2")
        if fmt == "vdsr_mat":
            scales = sorted(set(args.scale or VDSR_SCALES))
            converted.assumed["scales"] = f"{scales} ({'--scale' if args.scale else 'VDSR is trained on x2, x3, x4'})"
            return scales, None
        if args.scale and len(args.scale) > 1:
            raise WeightsFileError(f"{path}: an SRCNN model is made for one scale; give one --scale, not "
                                   f"{' '.join(map(str, args.scale))}")
        scale = args.scale[0] if args.scale else scale_from_name(path)
        if scale is None:
            raise WeightsFileError(f"{path}: the file does not record its SR factor; give --scale (the authors' "
                                   "files are named x2.mat, x3.mat, x4.mat)")
        converted.assumed["scale"] = f"{scale} ({'--scale' if args.scale else 'from the file name'})"
        return [scale], None
    if args.scale:
        raise WeightsFileError(f"{path}: --scale is for super-resolution; {fmt} is a denoiser (--sigma)")
    if args.sigma is None:
        sigma = sigma_from_name(path)
        if sigma is None:
            raise WeightsFileError(f"{path}: the file does not record the noise level it was trained for; give "
                                   "--sigma 25 (or --sigma 0 55 for a blind model)")
        converted.assumed["sigma"] = f"{list(sigma) if isinstance(sigma, tuple) else sigma} (from the file name)"
        return [1], sigma
    if len(args.sigma) > 2 or not all(0 <= s <= 255 for s in args.sigma) or (
            len(args.sigma) == 2 and not args.sigma[0] < args.sigma[1]):
        raise WeightsFileError(f"{path}: --sigma {' '.join(f'{s:g}' for s in args.sigma)}: give one σ, or a range "
                               "LOW HIGH with LOW < HIGH, on the 0..255 scale")
    sigma = args.sigma[0] if len(args.sigma) == 1 else (args.sigma[0], args.sigma[1])
    converted.assumed["sigma"] = f"{list(sigma) if isinstance(sigma, tuple) else sigma} (--sigma)"
    return [1], sigma


def _channels(args, path: Path, converted: Converted) -> str:
    n = converted.init_args["channels"]
    allowed = (["y"] if converted.task == "sr" else ["gray", "y"]) if n == 1 else ["rgb"]
    if args.channels is not None and args.channels not in allowed:
        raise WeightsFileError(f"{path}: --channels {args.channels} does not fit a {n}-channel "
                               f"{converted.task} net; it takes {' or '.join(allowed)}")
    chosen = args.channels or allowed[0]
    converted.assumed["channels"] = f"{chosen} ({'--channels' if args.channels else f'{n}-channel net'})"
    return chosen


def check_out(out: Path, weights: Path, overwrite: bool) -> None:
    if out.exists() and out.is_dir():
        raise WeightsFileError(f"{out}: --out is a folder; give the checkpoint's file name")
    if out.exists() and out.resolve() == weights.resolve():
        raise WeightsFileError(f"{out}: --out is the --weights file itself; choose another --out")
    if out.exists() and not overwrite:
        raise WeightsFileError(f"{out}: --out already exists; pass --overwrite to replace it, or choose another --out")


def write_checkpoint(ckpt: dict, out: Path) -> None:
    """Written beside ``out``, loaded back by ``load_restorer``, then moved into place."""
    from restorelab.predict import load_restorer

    partial = out.with_name(f".{out.name}.partial")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(ckpt, partial)
    except OSError as e:
        _remove(partial)
        raise WeightsFileError(f"{out}: cannot write --out ({e.strerror or type(e).__name__}); choose another "
                               "--out") from None
    try:
        load_restorer(partial)
        os.replace(partial, out)
    except OSError as e:
        raise WeightsFileError(f"{out}: cannot write --out ({e.strerror or type(e).__name__}); choose another "
                               "--out") from None
    finally:
        _remove(partial)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # its folder cannot be written or is not one: nothing was left there
        pass


def import_weights(fmt: str, weights: str | Path, out: str | Path, scale: Sequence[int] | None = None,
                   sigma: Sequence[float] | None = None, channels: str | None = None,
                   overwrite: bool = False) -> dict:
    """Convert ``weights`` (``fmt`` of ``FORMATS``) into the checkpoint ``out``; returns its ``imported_from``."""
    weights, out = Path(weights), Path(out)
    if fmt not in CONVERTERS:
        raise WeightsFileError(f"{weights}: unknown --format {fmt}; one of {', '.join(CONVERTERS)}")
    if not weights.is_file():
        raise WeightsFileError(f"{weights}: no such weights file" + (" (it is a folder)" if weights.is_dir() else ""))
    check_out(out, weights, overwrite)
    args = argparse.Namespace(scale=list(scale) if scale else None, sigma=list(sigma) if sigma else None,
                              channels=channels)
    converted = CONVERTERS[fmt](weights)
    scales, noise = _levels(args, fmt, weights, converted)
    colours = _channels(args, weights, converted)
    try:
        digest = sha256(weights)
    except OSError as e:
        raise WeightsFileError(f"{weights}: cannot read the weights file ({e.strerror})") from None
    ckpt = build_checkpoint(converted, weights, fmt, scales, colours, noise, digest)
    write_checkpoint(ckpt, out)
    return ckpt["imported_from"]


def main(argv: Sequence[str] | None = None) -> int:
    """The command; anticipated errors (``AnticipatedError``) propagate for ``restorelab``'s one-line report."""
    parser = argparse.ArgumentParser(prog="restorelab import", description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", required=True,
                        help="; ".join(f"{name}: {what}" for name, what in FORMATS.items()))
    parser.add_argument("--weights", required=True, help="the authors' file (.mat / .pth), as downloaded")
    parser.add_argument("--out", required=True, help="the checkpoint to write (e.g. published/srcnn_x3.ckpt)")
    parser.add_argument("--scale", type=int, nargs="+", default=None,
                        help="SR factor(s): SRCNN's one (default: from x2/x3/x4.mat), VDSR's (default: 2 3 4)")
    parser.add_argument("--sigma", type=float, nargs="+", default=None, metavar="SIGMA",
                        help="denoisers: the noise σ (0..255) the model was made for, or LOW HIGH for a blind model "
                             "(default: from the file name: sigma=25.mat, dncnn_25.pth, *blind* = 0 55)")
    parser.add_argument("--channels", default=None,
                        help="y (SR default), gray (one-channel denoiser default) or rgb (three-channel nets)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    if args.channels is not None and args.channels not in ("y", "gray", "rgb"):
        raise WeightsFileError(f"{args.weights}: --channels {args.channels} must be y, gray or rgb")
    record = import_weights(args.format, args.weights, args.out, args.scale, args.sigma, args.channels,
                            args.overwrite)
    assumed = "; ".join(f"{k} {v}" for k, v in record["assumed"].items())
    print(f"{args.weights} ({args.format}, sha256 {record['sha256'][:12]}) -> {args.out}: {record['layout']}"
          + (f"; {assumed}" if assumed else ""))
    return 0


if __name__ == "__main__":
    from restorelab.cli import main as restorelab_main

    restorelab_main(["import", *sys.argv[1:]])
