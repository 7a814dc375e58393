"""The task DataModules: fixed evaluation pairs, what each degradation makes, paired augmentation, the batch keys
the module reads, tiny Lightning runs of every task, and one-line errors for bad options."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import pytest
import skimage.data
import torch

from datamodules import image_ops as d
from datamodules.image_ops import to_channels
from datamodules.restoration import (
    DeblurDataModule,
    DenoiseDataModule,
    FullImages,
    RandomPatches,
    RestorationDataModule,
    SRDataModule,
)
from datamodules.recipes import AWGN, JPEG, ClassicalSR, MotionBlur, image_seed
from lightning_modules.nets.deepdeblur import DeepDeblur
from lightning_modules.nets.dncnn import DnCNN
from lightning_modules.nets.srcnn import SRCNN
from lightning_modules.nets.srn import SRN
from lightning_modules.nets.srresnet import SRResNet
from lightning_modules.nets.vdsr import VDSR
from lightning_modules.schemes.supervised import SupervisedScheme


def write_png(path, chw: np.ndarray) -> None:
    """Save a C×H×W uint8 RGB or gray array."""
    hwc = chw.transpose(1, 2, 0)
    assert cv2.imwrite(str(path), hwc[..., ::-1] if hwc.shape[-1] == 3 else hwc[..., 0])


def u8(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image.transpose(2, 0, 1) if image.ndim == 3 else image[None])


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Small real photos: train/ (a colour and a gray one) and val/ (two colour ones)."""
    root = tmp_path_factory.mktemp("photos")
    (root / "train").mkdir()
    (root / "val").mkdir()
    write_png(root / "train" / "astronaut.png", u8(skimage.data.astronaut()[60:156, 150:246]))
    write_png(root / "train" / "camera.png", u8(skimage.data.camera()[100:180, 200:296]))
    write_png(root / "val" / "coffee.png", u8(skimage.data.coffee()[100:160, 200:274]))
    write_png(root / "val" / "chelsea.png", u8(skimage.data.chelsea()[80:134, 150:216]))
    return {"train": [str(root / "train")], "val": [str(root / "val")]}


@pytest.fixture(scope="module")
def gopro(tmp_path_factory):
    """A GoPro_Large layout whose blurred image is the negative of the sharp one, so any misalignment shows."""
    root = tmp_path_factory.mktemp("GoPro_Large")
    photo = skimage.data.astronaut()
    for split, sequences in (("train", ("GOPR0372_07_00", "GOPR0374_11_01")), ("test", ("GOPR0384_11_00",))):
        for s, sequence in enumerate(sequences):
            for kind in ("blur", "blur_gamma", "sharp"):
                (root / split / sequence / kind).mkdir(parents=True)
            for f in range(2):
                sharp = u8(photo[40 * s + 10 * f:][:48, 100:164])
                write_png(root / split / sequence / "sharp" / f"{f:06d}.png", sharp)
                for kind in ("blur", "blur_gamma"):
                    write_png(root / split / sequence / kind / f"{f:06d}.png", 255 - sharp)
    return root


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """Nine 48×64 frames of a camera panning right one pixel per frame."""
    root = tmp_path_factory.mktemp("video")
    photo = skimage.data.coffee()
    for t in range(9):
        write_png(root / f"frame_{t}.png", u8(photo[100:148, 200 + t:264 + t]))
    return root


def first(loader) -> dict:
    return next(iter(loader))


def eval_pairs(dm: RestorationDataModule) -> list[dict]:
    dm.setup("validate")
    return [dm.fixed_pairs(batch) for batch in dm.val_dataloader()]


def training_batch(dm: RestorationDataModule) -> dict:
    dm.setup("fit")
    return dm.degrade(first(dm.train_dataloader()))


# ------------------------------------------------------------------------------------ fixed evaluation pairs

EVAL_CASES = {
    "sr_random_gaussian_noise": lambda p: SRDataModule(recipe=ClassicalSR(kernel="random_gaussian",
                                                                          noise_sigma=(0, 15)),
                                                       scale=3, patch_size=33, **p),
    "sr_mzsr": lambda p: SRDataModule(recipe=ClassicalSR(kernel="mzsr", order="blur_decimate"), scale=2,
                                      patch_size=32, **p),
    "sr_motion": lambda p: SRDataModule(recipe=ClassicalSR(kernel="motion", kernel_size=9), scale=2, patch_size=32,
                                        **p),
    "denoise_blind_jpeg": lambda p: DenoiseDataModule(recipe=AWGN(sigma=(0, 55), jpeg_quality=(20, 60)),
                                                      channels="rgb", **p),
    "deblur_synthetic": lambda p: DeblurDataModule(recipe=MotionBlur(), patch_size=32, pyramid_levels=2, **p),
}


@pytest.mark.parametrize("case", EVAL_CASES)
def test_eval_pairs_are_identical_across_instantiations(photos, case):
    torch.manual_seed(0)
    a = eval_pairs(EVAL_CASES[case](photos))
    torch.manual_seed(123)  # the global RNG plays no part in evaluation pairs
    torch.rand(1000)
    b = eval_pairs(EVAL_CASES[case](photos))
    assert [x["name"] for x in a] == [["chelsea.png"], ["coffee.png"]]
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in ("degraded", "upsampled", "target", "scale", "sigma", "kernel", "n_frames"):
            if key in x:
                assert torch.equal(x[key], y[key]), key
    other = eval_pairs(EVAL_CASES[case]({**photos, "seed": 1}))
    assert not torch.equal(a[0]["degraded"], other[0]["degraded"])  # the seed option does change them
    assert (a[0]["upsampled"] - a[0]["target"]).abs().mean() > 0.005  # a real degradation


def test_eval_pairs_are_identical_in_another_process(photos):
    import subprocess
    import sys

    script = ("import sys; from datamodules.restoration import DenoiseDataModule as D; "
              "from datamodules.recipes import AWGN; "
              "dm = D(recipe=AWGN(sigma=[0, 55]), channels='rgb', train=[sys.argv[1]], val=[sys.argv[2]]); "
              "dm.setup('validate'); "
              "print([dm.fixed_pairs(b)['degraded'].double().sum().item() for b in dm.val_dataloader()])")
    out = subprocess.run([sys.executable, "-c", script, *photos["train"], *photos["val"]], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    dm = DenoiseDataModule(recipe=AWGN(sigma=[0, 55]), channels="rgb", **photos)
    assert out.strip() == str([p["degraded"].double().sum().item() for p in eval_pairs(dm)])


def test_eval_pair_is_the_documented_classical_degradation(photos):
    """Per image: kernel, then noise, drawn from a CPU generator seeded by image_seed(name, seed)."""
    dm = SRDataModule(recipe=ClassicalSR(kernel="random_gaussian", sigma_range=(0.5, 3.0), kernel_size=15,
                                         noise_sigma=(5, 10), order="bicubic_blur"), scale=3, seed=7, **photos)
    pair = eval_pairs(dm)[0]
    name, hr = dm.val_set[0]["name"], dm.val_set[0]["target"][None]
    g = torch.Generator().manual_seed(image_seed(name, 7))
    kernel = d.random_gaussian_kernel(1, 15, (0.5, 3.0), False, g)
    lr = to_channels(d.quantize(d.classical_degradation(hr, 3, kernel, "bicubic_blur")), "y")
    sigma = d.sample_sigma(1, 5, 10, g)
    lr = d.add_gaussian_noise(lr, sigma, g)
    assert torch.equal(pair["degraded"], lr)
    assert torch.equal(pair["kernel"], kernel) and torch.equal(pair["sigma"], sigma)  # what made it, per image
    assert torch.equal(pair["scale"], torch.tensor([3]))
    assert torch.equal(pair["upsampled"], d.bicubic_upsample(lr, 3))
    assert torch.equal(pair["target"], hr)  # "y" pairs keep the target in the file's colours (NOTES.md)


def test_bicubic_sr_is_unchanged(photos):
    """Bicubic SR keeps the benchmark protocol: 8-bit RGB LR, then Y."""
    pair = eval_pairs(SRDataModule(scale=2, patch_size=32, **photos))[0]
    hr = FullImages(SRDataModule(scale=2, patch_size=32).source_items(photos["val"], 2), 2)[0]["target"][None]
    lr = d.quantize(d.bicubic_downsample(hr, 2))
    assert torch.equal(pair["degraded"], d.rgb_to_y(lr))
    assert torch.equal(pair["upsampled"], d.rgb_to_y(d.bicubic_upsample(lr, 2)))


def test_fixed_gaussian_and_file_kernels_agree(photos, tmp_path):
    kernel = d.gaussian_kernel(13, 2.0, 1.0, math.radians(30))
    np.save(tmp_path / "k.npy", kernel.numpy() * 5)  # the file's scale does not matter
    a = SRDataModule(recipe=ClassicalSR(kernel="gaussian", kernel_size=13, sigma=2.0, sigma2=1.0, theta=30), scale=2,
                     patch_size=32, batch_size=4, patches_per_epoch=4, **photos)
    b = SRDataModule(recipe=ClassicalSR(kernel="file", kernel_file=str(tmp_path / "k.npy")), scale=2, patch_size=32,
                     **photos)
    assert torch.allclose(a.recipe.fixed_kernel, b.recipe.fixed_kernel, atol=1e-7)
    torch.manual_seed(0)
    batch = training_batch(a)
    expected = d.quantize(d.classical_degradation(batch["target"], 2, kernel, "blur_bicubic"))
    assert torch.equal(batch["degraded"], expected) and batch["degraded"].shape == (4, 1, 16, 16)
    assert torch.equal(batch["kernel"], a.recipe.fixed_kernel.expand(4, 13, 13))  # one kernel per patch
    assert torch.equal(batch["sigma"], torch.zeros(4)) and torch.equal(batch["scale"], torch.full((4,), 2))


# --------------------------------------------------------------------------------------------- training batches


# The module degrades each scale's samples as one sub-batch; the test redoes one image alone. Same functions, but
# torch may reduce a sum of N products in another order for another batch size (AVX-512 CPUs do: ~1e-7 apart),
# so a value is equal only to float32 rounding: each of the two bicubic passes sums <= 4*s products of weights
# (sum |w| < 1.6) and values in [0, 1], an error of a few ulps of 1 (eps = 1.2e-7) per pass; FLOAT_TOL = 64 eps
# is far above that and far below one 8-bit level (1/255 = 3.9e-3). The 8-bit rounding of the LR image is the
# one step that can turn such a difference into a whole level: where 255·LR sits within 255·FLOAT_TOL of a
# .5 the two paths may round differently. Those LR pixels are found, and only the HR pixels within the
# upsampling kernel's reach of them (2 LR pixels = 2s HR pixels each side) may differ, by a level per tie.
FLOAT_TOL = 64 * torch.finfo(torch.float32).eps


def assert_same_bicubic_pair(upsampled: torch.Tensor, hr: torch.Tensor, s: int) -> float:
    """Return the fraction of HR pixels held to FLOAT_TOL (no LR tie within reach)."""
    exact = d.bicubic_downsample(hr, s)
    expected = d.bicubic_upsample(d.quantize(exact), s)
    levels = exact.clamp(0, 1) * 255
    tie = ((levels - levels.floor() - 0.5).abs() < 255 * FLOAT_TOL).float()  # may round either way
    # how many tie pixels each HR pixel's 4x4 LR taps hold (each of the s*s HR copies of a tie counts 1/s^2)
    near = torch.nn.functional.avg_pool2d(tie.repeat_interleave(s, -2).repeat_interleave(s, -1), 4 * s + 1,
                                          stride=1, padding=2 * s, divisor_override=s * s)
    tol = FLOAT_TOL + near / 255  # a 2-D bicubic weight is a product of two 1-D ones, each at most 1
    assert ((upsampled - expected).abs() <= tol).all(), (upsampled - expected).abs().max()
    return (near == 0).float().mean().item()


def test_multiscale_batches_mix_scales_and_degrade_each_at_its_own(photos):
    dm = SRDataModule(scale=3, scales=[2, 3, 4], patch_size=24, batch_size=24, patches_per_epoch=24, **photos)
    torch.manual_seed(0)
    batch = training_batch(dm)
    assert "degraded" not in batch and batch["upsampled"].shape == batch["target"].shape == (24, 1, 24, 24)
    assert set(batch["scale"].tolist()) == {2, 3, 4}
    strict = [assert_same_bicubic_pair(batch["upsampled"][i : i + 1], batch["target"][i : i + 1], s)
              for i, s in enumerate(batch["scale"].tolist())]
    # 8-bit patches do hold exact ties (two levels averaged), but most pixels are still held to float rounding
    assert sum(strict) / len(strict) > 0.5, strict
    assert eval_pairs(dm)[0]["degraded"].shape[-2] * 3 == eval_pairs(dm)[0]["target"].shape[-2]  # eval at `scale`
    with pytest.raises(ValueError, match="must be a multiple of 12"):
        SRDataModule(scale=3, scales=[2, 3, 4], patch_size=30)
    with pytest.raises(ValueError, match=r"data.init_args.scales=\[2, 3\] mixes scales .* SRResNet has scale 2"):
        SRDataModule(scale=2, scales=[2, 3], patch_size=24).check_net(SRResNet(channels=1, scale=2, blocks=1))


def test_train_crop_cuts_vdsr_pairs_from_the_centre_of_degraded_patches(photos):
    dm = SRDataModule(scale=3, scales=[2, 3, 4], patch_size=48, train_crop=41, batch_size=12, patches_per_epoch=12,
                      **photos)
    torch.manual_seed(0)
    batch = training_batch(dm)
    assert "degraded" not in batch and batch["upsampled"].shape == batch["target"].shape == (12, 1, 41, 41)
    torch.manual_seed(0)
    whole = SRDataModule(scale=3, scales=[2, 3, 4], patch_size=48, batch_size=12, patches_per_epoch=12, **photos)
    full = training_batch(whole)
    for key in ("upsampled", "target"):  # the same patches, degraded at 48x48, then cut to their centre 41x41
        assert torch.equal(batch[key], full[key][..., 3:44, 3:44])
    assert eval_pairs(dm)[0]["degraded"].shape[-2] * 3 == eval_pairs(dm)[0]["target"].shape[-2]  # eval: whole
    with pytest.raises(ValueError, match="data.init_args.train_crop=49 must be .* no larger than data.init_args.patch_size=48"):
        SRDataModule(scale=3, scales=[2, 3, 4], patch_size=48, train_crop=49)
    with pytest.raises(ValueError, match="data.init_args.train_crop=20 crops the upsampled input, but SRResNet"):
        SRDataModule(scale=2, patch_size=24, train_crop=20).check_net(SRResNet(channels=1, scale=2, blocks=1))


def test_gray_files_are_measured_as_gray_by_an_rgb_net(photos):
    """camera.png through an RGB SR pipeline scores exactly what it scores as its own Y."""
    def baseline_psnr(channels: str) -> float:
        dm = SRDataModule(scale=3, channels=channels, patch_size=24, train=photos["train"],
                          val=[str(Path(photos["train"][0]) / "camera.png")])
        net = SRResNet(channels=3 if channels == "rgb" else 1, scale=3, blocks=1, features=4)
        module = SupervisedScheme(net, scale=3, metric_space="y")
        L.Trainer(logger=False, accelerator="cpu", devices=1, enable_progress_bar=False,
                  enable_model_summary=False).test(module, datamodule=dm, verbose=False)
        (row,) = module.test_rows
        return row["baseline_psnr"]

    # the luma of three equal channels is the channel to an ulp, not bit for bit (0.299x + 0.587x + 0.114x); the
    # 8-bit rounding of the baseline can turn that ulp into one level where a value sits at a .5 tie, and one level
    # on one pixel of this 80x96 crop moves the PSNR by ~3e-4 dB: 1e-3 dB allows a few such pixels, nothing more
    assert baseline_psnr("rgb") == pytest.approx(baseline_psnr("y"), abs=1e-3)


def test_blind_sigma_spans_its_range_and_is_the_noise_drawn(photos):
    dm = DenoiseDataModule(recipe=AWGN(sigma=[0, 55]), patch_size=40, batch_size=64, patches_per_epoch=64, **photos)
    torch.manual_seed(0)
    batch = training_batch(dm)
    sigma = batch["sigma"]
    assert sigma.shape == (64,) and sigma.min() >= 0 and sigma.max() <= 55
    assert sigma.min() < 6 and sigma.max() > 49 and sigma.std() > 12  # ~U[0, 55]: std 15.9
    measured = (batch["degraded"] - batch["target"]).flatten(1).std(dim=1) * 255
    assert torch.allclose(measured, sigma, rtol=0.1, atol=0.5)
    assert torch.equal(batch["upsampled"], batch["degraded"]) and batch["target"].shape == (64, 1, 40, 40)
    # evaluation at one level of the blind range
    pairs = eval_pairs(DenoiseDataModule(recipe=AWGN(sigma=[0, 55], test_sigma=25), **photos))
    assert all(p["sigma"].item() == 25 for p in pairs)
    fixed = training_batch(DenoiseDataModule(recipe=AWGN(sigma=15), batch_size=8, patches_per_epoch=8, **photos))
    assert torch.equal(fixed["sigma"], torch.full((8,), 15.0))


def test_denoise_clip_and_jpeg(photos):
    torch.manual_seed(0)
    clipped = training_batch(DenoiseDataModule(recipe=AWGN(sigma=50, clip=True), batch_size=4, patches_per_epoch=4,
                                               **photos))["degraded"]
    assert clipped.min() >= 0 and clipped.max() <= 1
    for recipe in (AWGN(sigma=0, jpeg_quality=10), JPEG(jpeg_quality=10)):  # σ 0 + JPEG = deblocking = JPEG alone
        jpeg = training_batch(DenoiseDataModule(recipe=recipe, channels="rgb", batch_size=4, patches_per_epoch=4,
                                                **photos))
        assert torch.equal(jpeg["degraded"], d.jpeg_compress(jpeg["target"], 10))
        assert jpeg["degraded"].shape[1] == 3 and (jpeg["degraded"] - jpeg["target"]).abs().mean() > 0.005
        assert torch.equal(jpeg["sigma"], torch.zeros(4))


def test_pyramid_keys_have_the_right_shapes(photos):
    dm = DeblurDataModule(recipe=MotionBlur(), pyramid_levels=3, patch_size=32, batch_size=2, patches_per_epoch=2,
                          **photos)
    torch.manual_seed(0)
    batch = training_batch(dm)
    for key, pyramid in (("degraded", batch["degraded_pyramid"]), ("target", batch["target_pyramid"])):
        assert [tuple(x.shape) for x in pyramid] == [(2, 3, 32, 32), (2, 3, 16, 16), (2, 3, 8, 8)]
        assert torch.equal(pyramid[0], batch[key])
        assert torch.equal(pyramid[2], d.bicubic_downsample(pyramid[1], 2))
    assert (batch["degraded"] - batch["target"]).abs().mean() > 0.005
    pair = eval_pairs(dm)[1]  # coffee, 60×74, cropped to multiples of 4
    assert [tuple(x.shape) for x in pair["target_pyramid"]] == [(1, 3, 60, 72), (1, 3, 30, 36), (1, 3, 15, 18)]
    with pytest.raises(ValueError, match=r"data.init_args.pyramid_levels=3 but DeepDeblur works on 2 levels"):
        dm.check_net(DeepDeblur(scales=2, blocks=1, features=4))
    dm.check_net(SRN(scales=3, features=4, blocks=1))  # 32 is a multiple of SRN's 4 * 2**2
    with pytest.raises(ValueError, match=r"data.init_args.patch_size=40 must be a multiple of 16 for SRN"):
        DeblurDataModule(pyramid_levels=3, patch_size=40).check_net(SRN(scales=3, features=4, blocks=1))


def test_gopro_pairs_are_cropped_and_flipped_together(gopro):
    dm = DeblurDataModule(recipe=MotionBlur(source="gopro"), train=[str(gopro / "train")], val=[str(gopro / "test")],
                          patch_size=32, batch_size=16, patches_per_epoch=16, pyramid_levels=2)
    torch.manual_seed(0)
    batch = training_batch(dm)
    assert batch["degraded"].shape == (16, 3, 32, 32)
    assert torch.allclose(batch["degraded"], 1 - batch["target"], atol=1e-6)  # the fixture's blur is 255 - sharp
    assert batch["target"].std(dim=(1, 2, 3)).min() > 0.01
    pairs = eval_pairs(dm)
    assert [p["name"] for p in pairs] == [["GOPR0384_11_00/000000.png"], ["GOPR0384_11_00/000001.png"]]
    assert torch.allclose(pairs[0]["degraded"], 1 - pairs[0]["target"], atol=1e-6)
    assert pairs[0]["target"].shape == (1, 3, 48, 64)


def test_video_frames_are_averaged_in_linear_light(video):
    dm = DeblurDataModule(recipe=MotionBlur(source="frames", n_frames=(5, 7)), train=[str(video)], val=[str(video)],
                          patch_size=32, batch_size=12, patches_per_epoch=12)
    pair = eval_pairs(dm)  # one window of 7: evaluation windows do not overlap
    assert [p["name"] for p in pair] == [[f"{video.name}/frame_3.png"]]
    frames = torch.stack([torch.from_numpy(cv2.imread(str(video / f"frame_{t}.png"))[..., ::-1].copy())
                          for t in range(7)]).permute(0, 3, 1, 2).float()[None] / 255
    assert torch.allclose(pair[0]["target"], frames[:, 3], atol=1e-6)
    g = torch.Generator().manual_seed(image_seed(pair[0]["name"][0], 0))
    count = 5 + 2 * int(torch.randint(0, 2, (1,), generator=g))
    assert torch.allclose(pair[0]["degraded"], d.average_frames(frames[:, 3 - count // 2 : 4 + count // 2]), atol=1e-6)
    assert torch.equal(pair[0]["n_frames"], torch.tensor([count]))
    torch.manual_seed(0)
    batch = training_batch(dm)  # 3 windows of 7 frames (stride 1); 5 or 7 of them averaged per sample
    assert batch["degraded"].shape == batch["target"].shape == (12, 3, 32, 32)
    assert (batch["degraded"] - batch["target"]).abs().mean() > 0.005
    assert set(batch["n_frames"].tolist()) <= {5, 7}


def test_plain_patches_and_full_images_keep_their_api():
    img = torch.rand(3, 40, 50)
    patches = RandomPatches([("a.png", img)], 16, length=5, channels="y")
    assert len(patches) == 5 and patches[0]["target"].shape == (1, 16, 16)
    full = FullImages([("a.png", img)], multiple=3)[0]
    assert full["name"] == "a.png" and full["index"] == 0 and torch.equal(full["target"], img[:, :39, :48])


# ------------------------------------------------------------------------------------------ through Lightning

TINY_RUNS = {
    "sr_gaussian": (lambda p: SRDataModule(recipe=ClassicalSR(kernel="gaussian", kernel_size=7, sigma=1.0,
                                                              noise_sigma=5), scale=2, patch_size=24, **p),
                    lambda: SRCNN(kernel_sizes=[3, 1, 3], filters=[4, 4], init_std=None)),
    "sr_multiscale": (lambda p: SRDataModule(scale=2, scales=[2, 3], patch_size=24, **p),
                      lambda: VDSR(depth=3, features=4)),
    "denoise": (lambda p: DenoiseDataModule(recipe=AWGN(sigma=[0, 55]), patch_size=24, **p),
                lambda: DnCNN(depth=3, features=4)),
    "deblur_pyramid": (lambda p: DeblurDataModule(recipe=MotionBlur(), pyramid_levels=2, patch_size=24, **p),
                       lambda: DeepDeblur(scales=2, blocks=1, features=4)),
}


def fit_three_steps(dm: RestorationDataModule, net) -> tuple[L.Trainer, SupervisedScheme, dict]:
    module = SupervisedScheme(net, scale=dm.scale, lr=1e-3, metric_space="y" if dm.hparams.channels == "y" else "rgb")
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, accelerator="cpu", devices=1,
                        num_sanity_val_steps=0, limit_val_batches=1, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    return trainer, module, before


@pytest.mark.parametrize("case", TINY_RUNS)
def test_each_datamodule_trains_a_tiny_net(photos, case):
    make_dm, make_net = TINY_RUNS[case]
    torch.manual_seed(0)
    dm = make_dm({**photos, "batch_size": 2, "patches_per_epoch": 6})  # one epoch = 3 steps, then validation
    trainer, module, before = fit_three_steps(dm, make_net())
    assert trainer.global_step == 3
    assert any(not torch.equal(v, module.state_dict()[k]) for k, v in before.items() if v.is_floating_point())
    metrics = trainer.callback_metrics
    assert math.isfinite(float(metrics["train/loss"])) and module.monitor in metrics
    assert float(metrics[module.monitor.replace("val/", "val/baseline_")]) > 10  # the baseline PSNR was measured


def test_gopro_trains_srn_through_lightning(gopro):
    dm = DeblurDataModule(recipe=MotionBlur(source="gopro"), train=[str(gopro / "train")], val=[str(gopro / "test")],
                          patch_size=32, pyramid_levels=2, batch_size=2, patches_per_epoch=6)
    trainer, module, _ = fit_three_steps(dm, SRN(scales=2, features=4, blocks=1))
    assert trainer.global_step == 3 and "val/psnr_rgb" in trainer.callback_metrics
    assert dm.val_set[0]["target"].shape == (3, 48, 64)  # already a multiple of SRN's 8


# ----------------------------------------------------------------------------------------------- bad options

# DataModule options; the recipes' own options are checked when a recipe is made (tests/test_recipes.py)
BAD_OPTIONS = [
    (SRDataModule, {"scales": [2, 5]}, r"data.init_args.scales=\[2, 5\] must be distinct values"),
    (SRDataModule, {"scale": 5}, "data.init_args.scale must be one of 2, 3, 4, 8; got 5"),
    (SRDataModule, {"recipe": ClassicalSR(kernel="motion", kernel_size=31, order="bicubic_blur"), "patch_size": 33},
     "data.init_args.patch_size=33 is too small for a 31x31 kernel"),
    (SRDataModule, {"recipe": ClassicalSR(kernel="gaussian", kernel_size=21), "scale": 2, "patch_size": 10},
     "data.init_args.patch_size=10 is too small for a 21x21 kernel .* order 'blur_bicubic'"),
    (DenoiseDataModule, {"channels": "y"}, "data.init_args.channels='y' must be one of 'gray', 'rgb'"),
    (DenoiseDataModule, {"scale": 2}, "data.init_args.scale=2 must be 1 for denoising"),
    (DeblurDataModule, {"scale": 2}, "data.init_args.scale=2 must be 1 for deblurring"),
    (DeblurDataModule, {"pyramid_levels": 0}, "data.init_args.pyramid_levels=0 must be a positive integer"),
    (DeblurDataModule, {"pyramid_levels": 3, "patch_size": 30}, "data.init_args.patch_size=30 must be a multiple of 4"),
    (RestorationDataModule, {"recipe": AWGN(), "channels": "bgr"}, "data.init_args.channels='bgr' must be one of"),
    (RestorationDataModule, {"recipe": AWGN(), "batch_size": 0},
     "data.init_args.batch_size=0 must be a positive integer"),
]


@pytest.mark.parametrize("cls, kwargs, message", BAD_OPTIONS, ids=[m.split(" ")[0] for _, _, m in BAD_OPTIONS])
def test_bad_options_raise_one_line_naming_option_and_value(cls, kwargs, message):
    with pytest.raises(ValueError, match=message) as e:
        cls(**kwargs)
    assert "\n" not in str(e.value)


def test_missing_data_names_the_folder(tmp_path):
    dm = DeblurDataModule(recipe=MotionBlur(source="gopro"), train=[str(tmp_path / "GoPro_Large" / "train")],
                          patch_size=32)
    with pytest.raises(FileNotFoundError, match="GoPro_Large/train is not a folder"):
        dm.setup("fit")
    dm = DeblurDataModule(recipe=MotionBlur(source="frames"), train=[str(tmp_path)], patch_size=32)
    with pytest.raises(FileNotFoundError, match="holds no frames and no folder of frames"):
        dm.setup("fit")


# ---------------------------------------------------------------------------------------------------- bench


def test_bench_writes_a_row_per_degradation_and_net(tmp_path, capsys):
    from restorelab.bench import NETS, SYNTHESIS_LABELS, main

    out = tmp_path / "bench" / "synthesis.md"
    assert main(["--batch", "2", "--patch", "12", "--seconds", "0", "--out", str(out), "--no_methods", "--no_nets",
                 "--loop_steps", "0", "--megapixels"]) == 0
    table = out.read_text()
    assert table in capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| synthesis") or line.startswith("| training")]
    assert [r.split(" | ")[0][2:] for r in rows] == (
        [f"synthesis: {label}" for label in SYNTHESIS_LABELS.values()] + [f"training step: {n}" for n in NETS])
    assert all(float(r.split(" | ")[1].rstrip(" |").replace(",", "")) > 0 for r in rows)
    with pytest.raises(SystemExit):
        main(["--patch", "10"])
    assert "--patch=10 must be a multiple of 4" in capsys.readouterr().err


def test_bench_times_classical_methods_per_megapixel():
    from restorelab.bench import methods_markdown
    from restorelab.bench_methods import seconds_per_megapixel

    rows = [seconds_per_megapixel(name, side=48, repeats=1) for name in ("bicubic", "gaussian")]
    assert [(label, task) for label, task, _ in rows] == [("Bicubic", "sr"), ("Gaussian filter", "denoise")]
    assert all(seconds > 0 for _, _, seconds in rows)
    assert "| Gaussian filter | denoise |" in methods_markdown(rows, 48)


def test_bench_times_a_per_image_learner_at_its_stated_budget():
    """ZSSR at its configured 3000 updates took over 10 minutes of `make bench`; the bench runs the budget of
    BENCH_BUDGET and the row says which."""
    from restorelab.bench_methods import BENCH_BUDGET, bench_spec, seconds_per_megapixel

    assert bench_spec("bicubic") == "bicubic"
    label, task, seconds = seconds_per_megapixel(bench_spec("zssr"), side=48, repeats=1)
    assert task == "sr" and seconds > 0
    assert label.startswith("ZSSR") and "max_iters=100" in label and "max_iters=100" in BENCH_BUDGET["zssr"]


# -------------------------------------------------------------------------------------------------- configs


def build(spec):
    """An object from a printed config's {class_path, init_args}, its nested ones (the recipe) first."""
    if not (isinstance(spec, dict) and "class_path" in spec):
        return spec
    module, _, name = spec["class_path"].rpartition(".")
    cls = getattr(__import__(module, fromlist=[name]), name)
    return cls(**{k: build(v) for k, v in spec.get("init_args", {}).items()})


@pytest.mark.parametrize("config", ["configs/sr_blur.yaml", "configs/denoise.yaml", "configs/deblur.yaml"])
def test_task_configs_parse_and_build_their_datamodule(run_env, capsys, config):
    import yaml

    from restorelab.cli import main

    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", config, "--print_config"])
    assert e.value.code == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    data = cfg["data"]
    dm = build(data)
    assert dm.hparams.train == ["skimage:train"] and dm.scale == cfg["data"]["init_args"]["scale"]
    assert type(dm.recipe).__name__ == data["init_args"]["recipe"]["class_path"].rpartition(".")[2]
