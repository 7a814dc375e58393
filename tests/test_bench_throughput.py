"""`restorelab bench`'s throughput tables: FLOPs counted as the convolutions' arithmetic, every net of the model
table built at both sizes from its configs, the loop-cost and tiling rows measured for real. Nothing here
asserts a speed (that is `make bench`'s to measure, as ratios); only what the numbers mean."""
from __future__ import annotations

import pytest
import torch

from lightning_modules.nets.srcnn import SRCNN
from restorelab import bench_throughput as tp
from restorelab.bench import main
from restorelab.model_table import SPECS


def srcnn_macs_per_pixel(kernels, filters, channels=1):
    widths = [channels, *filters, channels]
    return sum(cin * cout * k * k for cin, cout, k in zip(widths, widths[1:], kernels))


def test_counted_flops_are_two_per_multiply_add_forward_and_three_times_that_for_a_training_step():
    net = SRCNN(kernel_sizes=[9, 1, 5], filters=[16, 8], init_std=None)
    x = torch.rand(2, 1, 20, 20)
    forward = 2 * 2 * 20 * 20 * srcnn_macs_per_pixel([9, 1, 5], [16, 8])
    with torch.no_grad():
        assert tp.counted_flops(lambda: net(x)) == forward
    # backward: weight gradients of every layer and input gradients of all but the first (x needs none)
    first = 2 * 2 * 20 * 20 * 1 * 16 * 81
    assert tp.counted_flops(lambda: net(x).sum().backward()) == 3 * forward - first


def test_every_net_of_the_model_table_is_built_at_both_sizes_with_its_configs_batch_and_patch():
    cases = tp.net_cases(None, ["CPU budget", "paper"], paper_pixels=2**16)
    assert [(c.key, c.size) for c in cases] == [(k, s) for k in SPECS for s in ("CPU budget", "paper")]
    by = {(c.key, c.size): c for c in cases}
    assert by["srcnn", "CPU budget"].input_shape == (1, 33, 33)  # upsampled Y patch
    assert by["srresnet", "paper"].input_shape == (3, 24, 24)  # 96² HR patch at ×4: the LR patch
    count = lambda c: sum(p.numel() for p in c.net.parameters())  # noqa: E731
    assert count(by["vdsr", "paper"]) > 2 * count(by["vdsr", "CPU budget"])  # 20 × 64 vs 10 × 32
    for c in cases:
        if c.size == "paper":
            assert c.batch == 1 or c.batch * c.input_shape[1] * c.input_shape[2] <= 2**16
    assert by["deepdeblur", "paper"].batch == 1  # 4 × 256² cut to fit 2^16 pixels


def test_bench_writes_the_throughput_loop_and_tiling_tables(tmp_path, capsys):
    out = tmp_path / "bench.md"
    assert main(["--nets", "srcnn", "--sizes", "cpu", "--seconds", "0", "--loop_steps", "20", "--loop_repeats", "1",
                 "--megapixels", "0.02", "--tile", "64", "--no_methods", "--batch", "2", "--patch", "12",
                 "--out", str(out)]) == 0
    text = out.read_text()
    assert text in capsys.readouterr().out
    net_rows = [line for line in text.splitlines() if line.startswith("| SRCNN | CPU budget |")]
    assert len(net_rows) == 1
    cells = [c.strip() for c in net_rows[0].strip("|").split("|")]
    assert float(cells[3].replace(",", "")) > 0 and cells[5].endswith("%")
    loop = next(line for line in text.splitlines() if "×** |" in line)
    ratio = float(loop.split("**")[1].rstrip("×"))
    low, high = (float(x) for x in loop.split("|")[4].strip().rstrip("×").split("–"))
    assert ratio > 0 and low == high == pytest.approx(ratio, abs=1e-3)  # one run: the range is its ratio
    assert "| 0.02 |" in text and "## On-the-fly synthesis" in text


@pytest.mark.parametrize("measured", [100e9, 186e9])
def test_a_nominal_peak_below_the_measured_ceiling_is_said_to_be_no_bound(measured):
    """/proc/cpuinfo's clock in a VM is the base clock: 2 AVX2 cores at 2445 MHz give 157 GFLOP/s, where a
    matmul measured 186."""
    text = tp.throughput_markdown(torch.device("cpu"), "fp32", ("matmul 1536²", measured), 157e9, [], [])
    assert "nominal peak 157 GFLOP/s" in text
    assert ("which the ceiling exceeds" in text) == (measured > 157e9)


def test_bench_refuses_options_out_of_range_in_one_line(capsys):
    for argv, message in ((["--nets", "srcnnn"], "--nets: 'srcnnn' is not a net of the model table"),
                          (["--loop_steps", "5"], "--loop_steps=5 must be 0 (skip) or at least 20"),
                          (["--megapixels", "100"], "--megapixels=100 must be in (0, 64]"),
                          (["--tile", "0"], "--tile=0 must be positive")):
        try:
            main(argv)
        except SystemExit as e:
            assert e.code == 2
        assert message in capsys.readouterr().err


def test_tiled_peak_memory_stays_flat_in_image_size_while_one_pass_grows():
    small, large = tp.tiling([0.25, 1.0], tile=128, device=torch.device("cpu"))
    mb = 1e6
    # one pass holds 96 feature maps of the whole image (about 400 MB at 1 MP); tiles hold those of a tile
    assert large["whole"]["peak_bytes"] > 3 * small["whole"]["peak_bytes"] > 0
    assert large["tiled"]["peak_bytes"] < large["whole"]["peak_bytes"] / 4
    # flat: the output buffer grows by 3 MB, and the RSS a few MB either way (allocator, thread arenas)
    assert large["tiled"]["peak_bytes"] < small["tiled"]["peak_bytes"] + 64 * mb
