import pytest

from common.mfu import mfu_percent, peak_flops


def test_known_and_unknown_devices():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989.5e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12  # not the SXM number
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("Apple M3 Max") is None
    assert peak_flops("cpu") is None and peak_flops(None) is None


def test_mfu():
    # 6 * 50M params per token at 1.65M tokens/s on an H100 = 50.0%
    assert mfu_percent(6 * 50e6, 1.649166e6, "NVIDIA H100 80GB HBM3") == pytest.approx(50.0, rel=1e-4)
    assert mfu_percent(1e9, 1e6, "Intel Xeon") is None
