import math

import pytest

from common.summary import FIELDS, format_summary, parse_summary

VALUES = {
    "val_bpb": 0.9979,
    "training_seconds": 300.1,
    "total_seconds": 325.94,
    "peak_vram_mb": 45060.2,
    "mfu_percent": None,
    "total_tokens_M": 499.6,
    "num_steps": 953,
    "num_params_M": 50.3,
    "depth": 8,
    "backend": "cuda",
    "device": "NVIDIA H100 80GB HBM3",
    "profile": "h100",
}


def test_format_matches_design_layout():
    text = format_summary(VALUES)
    lines = text.splitlines()
    assert lines[0] == "---"
    assert lines[1] == "val_bpb:          0.997900"
    assert lines[5] == "mfu_percent:      null"
    assert lines[11] == "device:           NVIDIA H100 80GB HBM3"
    assert [line.split(":")[0] for line in lines[1:]] == [k for k, _ in FIELDS]


def test_round_trip_inside_noisy_output():
    extra = dict(VALUES, startup_seconds=12.5, tokens_per_second=1.9e6)
    out = "step 00010 | loss 3.2\n---\nnot a summary\n" + format_summary(extra) + "\n"
    parsed = parse_summary(out)
    assert parsed["val_bpb"] == pytest.approx(0.9979)
    assert parsed["num_steps"] == 953 and isinstance(parsed["num_steps"], int)
    assert parsed["mfu_percent"] is None
    assert parsed["device"] == "NVIDIA H100 80GB HBM3"
    assert parsed["startup_seconds"] == pytest.approx(12.5)
    assert parsed["tokens_per_second"] == pytest.approx(1.9e6)


def test_last_block_wins_and_missing_block_is_an_error():
    a = format_summary(dict(VALUES, val_bpb=1.5))
    b = format_summary(dict(VALUES, val_bpb=1.25))
    assert parse_summary(a + "\n" + b)["val_bpb"] == 1.25
    with pytest.raises(ValueError, match="no summary block"):
        parse_summary("step 1 | loss nan\nFAIL\n")


def test_missing_field_is_refused():
    with pytest.raises(KeyError, match="val_bpb"):
        format_summary({k: v for k, v in VALUES.items() if k != "val_bpb"})


def test_nan_prints_null():
    assert "val_bpb:          null" in format_summary(dict(VALUES, val_bpb=math.nan))


def test_long_extra_keys_stay_parseable_and_precise():
    text = format_summary(dict(VALUES, calibration_seconds=3.4567891, tokens_per_second=1505320.4))
    assert "calibration_seconds: 3.456789" in text
    assert "tokens_per_second: 1505320.4" in text
    parsed = parse_summary(text)
    assert parsed["tokens_per_second"] == pytest.approx(1505320.4)
