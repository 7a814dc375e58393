"""ZSSR (lightning_modules/zero_shot/zssr.py): its sons are the recipe's LR, its learning-rate policy, a tiny
seeded run, the missing-kernel line, and the method config in the benchmark. Tiny images, a few dozen updates."""
import numpy as np
import pytest
import torch

from datamodules.errors import AnticipatedError
from datamodules.image_ops import quantize
from datamodules.recipes import BicubicSR, ClassicalSR
from datamodules.sources import read_image, resolve_source
from lightning_modules.nets.zssr import ZSSRNet
from lightning_modules.zero_shot.zssr import ZSSR, LearningRatePolicy, random_father, slope_says_reduce
from restorelab.methods import read_method

TINY = dict(max_iters=60, min_iters=10, features=16, depth=4, seed=3)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convolutions gain nothing from a second thread, and on a busy machine two OpenMP threads wait on
    each other (10x slower here); the previous count is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def camera() -> torch.Tensor:
    """A 64×64 crop of the bundled camera.png (1×1×64×64)."""
    return read_image(resolve_source("skimage:camera.png")[0])[None][..., 180:244, 200:264].float()


@pytest.mark.parametrize("order", ["blur_decimate", "blur_bicubic"])
def test_son_of_an_image_is_the_recipes_lr_of_it(camera, order):
    """The son-maker is the recipe's blur-and-subsample: equal to ClassicalSR's float LR to 1e-6, and bit-equal
    to its 8-bit LR once rounded the same way."""
    hr = camera.expand(1, 3, -1, -1).contiguous()
    for round_lr in (False, True):
        recipe = ClassicalSR(kernel="gaussian", sigma=1.6, sigma2=0.8, theta=30.0, kernel_size=11, order=order,
                             round_lr=round_lr)
        pair = recipe(hr, 2, None, None)
        son = ZSSR(order=order).son(hr, 2, pair["kernel"][0])
        if round_lr:
            assert torch.equal(quantize(son), pair["degraded"])
        else:
            assert (son - pair["degraded"].clamp(0, 1)).abs().max() < 1e-6
    bicubic = BicubicSR(round_lr=False)(hr, 2, None, None)["degraded"]
    assert (ZSSR().son(hr, 2, None) - bicubic.clamp(0, 1)).abs().max() < 1e-6


def test_lr_policy_divides_on_a_flat_curve_not_on_a_falling_one_and_stops_below_min_lr():
    rng = np.random.default_rng(0)
    steps = np.arange(0, 300, 50)
    flat = 0.01 + rng.normal(0, 1e-4, len(steps))
    falling = 0.01 - 2e-5 * steps + rng.normal(0, 1e-5, len(steps))
    assert slope_says_reduce(steps[-5:], flat[-5:]) and not slope_says_reduce(steps[-5:], falling[-5:])
    assert slope_says_reduce(steps[-5:], 0.01 + 1e-5 * steps[-5:])  # a rising error counts as not falling

    def policy_after(errors, **kw):
        policy = LearningRatePolicy(**kw)
        for it in range(300):
            if policy.wants_test(it):
                policy.record(it, errors[it // 50])
            changed = policy.step(it)
            assert not changed or it == 299  # the first check: (it + 1) % 60 == 0 and it > min_iters (256)
        return policy

    assert policy_after(flat).lr == pytest.approx(1e-4) and policy_after(flat).changes == [0, 299]
    assert policy_after(falling).lr == pytest.approx(1e-3)
    low = policy_after(flat, lr=2e-5)
    assert low.lr == pytest.approx(2e-6) and low.done


def test_fathers_stay_in_range_and_keep_their_size_bounds(camera):
    rng = np.random.default_rng(0)
    for _ in range(40):
        father = random_father([(camera, 1.0)], rng, crop_size=48, min_side=8)
        assert father.shape[:2] == (1, 1) and 8 <= min(father.shape[-2:]) and max(father.shape[-2:]) <= 48
        assert father.min() >= 0 and father.max() <= 1


def test_tiny_run_has_the_target_size_records_its_budget_and_is_seeded(camera):
    pair = BicubicSR()(camera, 2, None, None)  # LR 32×32
    zssr = ZSSR(**TINY)
    out = zssr(pair)
    assert out.shape == (1, 1, 64, 64) and torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1
    assert zssr.last_budget["updates"] >= 1 and zssr.last_budget["seconds"] >= 0
    assert set(zssr.last_budget) == {"updates", "seconds"}
    again = ZSSR(**TINY)(pair)
    assert (out - again).abs().max() <= 1e-6
    # a kernel in the pair is used (sons by the recipe's function); gradual steps run too
    blurred = ClassicalSR(kernel="gaussian", sigma=1.0, kernel_size=7, order="blur_decimate")(camera, 2, None, None)
    quick = dict(TINY, max_iters=5, ensemble=False, back_projection_iters=2)
    assert ZSSR(**quick)(blurred).shape == (1, 1, 64, 64)
    gradual = ZSSR(**quick, gradual=[1.5])
    assert gradual(pair).shape == (1, 1, 64, 64) and gradual.last_budget["updates"] == 10
    limited = ZSSR(**dict(quick, time_limit_seconds=0))
    assert limited(pair).shape == (1, 1, 64, 64) and limited.last_budget["updates"] == 0


def test_use_kernel_without_a_kernel_is_the_one_line_of_degradation(camera):
    pair = BicubicSR()(camera, 2, None, None)
    zssr = ZSSR(use_kernel=True, **TINY)
    with pytest.raises(AnticipatedError, match="needs the blur kernel") as e:
        zssr.restore(pair, what="Set5/baby")
    assert "\n" not in str(e.value) and "Set5/baby" in str(e.value)
    assert zssr.last_budget == {"updates": 0, "seconds": zssr.last_budget["seconds"]}
    for bad in (dict(depth=1), dict(channels="gray"), dict(order="box"), dict(gradual=[0.5]),
                dict(use_kernel=True, gradual=[1.5]), dict(back_projection_iters=-1)):
        with pytest.raises(AnticipatedError):
            ZSSR(**bad)


def test_net_contract():
    net = ZSSRNet(3, depth=8, features=64)
    assert (net.scale, net.in_channels, net.out_channels, net.receptive_field, net.size_multiple) == (1, 3, 3, 17, 1)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) == 8
    x = torch.rand(1, 3, 9, 11)
    assert net(x).shape == x.shape
    with pytest.raises(AnticipatedError, match="channels"):
        ZSSRNet(2)


def test_method_config_builds_and_runs_in_the_benchmark(tmp_path):
    from restorelab.benchmark import run_benchmark

    config, fixed = read_method("zssr")
    assert fixed == {} and config.grid == {} and config.grid_points() == [{}]
    zssr = config.build(tmp_path)
    assert isinstance(zssr, ZSSR) and zssr.label == "ZSSR (Shocher 2018)" and zssr.max_iters == 3000
    result = run_benchmark([], ["skimage:camera.png"], "sr", scales=[2],
                           method_specs=["zssr:max_iters=20,features=8,depth=3"], progress=False, extra_metrics=False)
    rows = [r for r in result.rows if r["method"].startswith("ZSSR")]
    assert len(rows) == 1 and rows[0]["image"] == "camera.png" and np.isfinite(rows[0]["psnr"])
    assert rows[0]["method"] == "ZSSR (Shocher 2018) (max_iters=20, features=8, depth=3)"
    # its budget per image rides in the rows and the table (updates, seconds), not in the others'
    assert rows[0]["updates"] == 20 and rows[0]["seconds"] > 0
    assert all(r.get("updates") is None for r in result.rows if r is not rows[0])
    from restorelab.benchmark import markdown_tables
    assert "×2 updates / s per image" in markdown_tables(result)


def test_sons_follow_the_blur_order_the_pair_records(camera):
    """g^b_1.3 pairs are made blur-then-bicubic, and ZSSR's sons follow the pair's order; ``order`` overrides it."""
    pair = ClassicalSR(kernel="gb_1.3")(camera, 2, None, None)
    assert pair["order"] == "blur_bicubic"
    quick = dict(max_iters=1, min_iters=0, features=4, depth=2, ensemble=False, back_projection_iters=0)
    follows, told = ZSSR(**quick), ZSSR(**quick, order="blur_decimate")
    follows.run(pair, "")
    told.run(pair, "")
    assert follows.active_order == "blur_bicubic" and told.active_order == "blur_decimate"
