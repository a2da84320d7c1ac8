"""Peak dense bf16 matmul throughput of known accelerators, for MFU.

MFU = achieved model FLOP/s / the chip's peak. The peak must be the detected chip's own: an unknown chip gets None
(the summary prints null), never the H100's number.
"""

from __future__ import annotations

# Dense (no sparsity) bf16 tensor-core peaks in FLOP/s, from the vendors' datasheets. Longest names first so
# "H100 PCIe" is not matched as "H100".
_NVIDIA_BF16 = [
    ("GH200", 989.5e12),
    ("H200", 989.5e12),
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989.5e12),  # SXM (e.g. "NVIDIA H100 80GB HBM3")
    ("H800", 989.5e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362.05e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("RTX 6000 Ada", 364.2e12),
    ("RTX 4090", 165.2e12),
    ("RTX 3090", 71e12),
    ("A6000", 154.8e12),
    ("V100", 125e12),  # fp16 tensor cores (no bf16 on Volta)
    ("T4", 65e12),  # fp16
]


def peak_flops(device_name: str | None) -> float | None:
    """Peak bf16 FLOP/s for a device name as the framework reports it, or None when unknown."""
    if not device_name:
        return None
    name = device_name.upper()
    for key, flops in _NVIDIA_BF16:
        if key.upper() in name:
            return flops
    return None


def mfu_percent(flops_per_token: float, tokens_per_second: float, device_name: str | None) -> float | None:
    peak = peak_flops(device_name)
    return None if peak is None else 100.0 * flops_per_token * tokens_per_second / peak
