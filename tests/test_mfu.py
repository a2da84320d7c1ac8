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


def test_profiles_and_budget_override(monkeypatch):
    from common.profiles import get_profile

    monkeypatch.setenv("AUTORESEARCH_PROFILE", "h100")
    monkeypatch.delenv("AUTORESEARCH_TIME_BUDGET", raising=False)
    p = get_profile()
    assert (p.name, p.time_budget, p.max_seq_len, p.eval_tokens) == ("h100", 300.0, 2048, 40 * 524288)
    monkeypatch.setenv("AUTORESEARCH_TIME_BUDGET", "120")
    p = get_profile()
    assert p.name == "h100@120s" and p.time_budget == 120.0 and p.max_seq_len == 2048
    with pytest.raises(ValueError, match="unknown profile 'nope'"):
        get_profile("nope")
