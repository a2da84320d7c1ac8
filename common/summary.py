"""The summary block: printed last by both training scripts, parsed by the harness.

One printer and one parser, so the two backends can never drift apart in what they report:

    ---
    val_bpb:          0.997900
    training_seconds: 300.1
    ...
    profile:          h100
"""

from __future__ import annotations

import math

# (key, formatter). Order is the printed order; None prints as "null" (e.g. MFU on a chip of unknown peak).
FIELDS: list[tuple[str, str]] = [
    ("val_bpb", "{:.6f}"),
    ("training_seconds", "{:.1f}"),
    ("total_seconds", "{:.1f}"),
    ("peak_vram_mb", "{:.1f}"),
    ("mfu_percent", "{:.2f}"),
    ("total_tokens_M", "{:.1f}"),
    ("num_steps", "{:d}"),
    ("num_params_M", "{:.1f}"),
    ("depth", "{:d}"),
    ("backend", "{}"),
    ("device", "{}"),
    ("profile", "{}"),
]
_FLOAT_KEYS = {k for k, f in FIELDS if "f}" in f}
_INT_KEYS = {k for k, f in FIELDS if f == "{:d}"}
# Optional extra lines a script may add (startup/compile/eval seconds, tokens/s...): printed after the fixed ones.
WIDTH = 18


def format_summary(values: dict) -> str:
    missing = [k for k, _ in FIELDS if k not in values]
    if missing:
        raise KeyError(f"summary is missing {', '.join(missing)}")
    lines = ["---"]
    known = {k for k, _ in FIELDS}
    for key, fmt in FIELDS:
        lines.append(f"{key + ':':<{WIDTH}}{_fmt(values[key], fmt)}")
    for key, value in values.items():
        if key not in known:
            fmt = (
                "{:.6f}"
                if isinstance(value, float) and abs(value) < 1e4
                else "{:.1f}"
                if isinstance(value, float)
                else "{}"
            )
            lines.append(f"{key + ':':<{max(WIDTH, len(key) + 2)}}{_fmt(value, fmt)}")
    return "\n".join(lines)


def print_summary(values: dict) -> None:
    print(format_summary(values), flush=True)


def _fmt(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    return fmt.format(value)


def parse_summary(text: str) -> dict:
    """Parse the last summary block in `text` (a run's whole output). Raises ValueError if there is none."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "---"]
    for start in reversed(starts):
        out: dict = {}
        for line in lines[start + 1 :]:
            key, sep, value = line.partition(":")
            if not sep or not key or " " in key.strip():
                break
            out[key.strip()] = _parse_value(key.strip(), value.strip())
        if "val_bpb" in out:
            return out
    raise ValueError("no summary block (a '---' line followed by 'val_bpb: ...') in the output")


def _parse_value(key: str, value: str):
    if value == "null":
        return None
    if key in _INT_KEYS:
        return int(value)
    if key in _FLOAT_KEYS:
        return float(value)
    try:
        return float(value) if any(c in value for c in ".eE") else int(value)
    except ValueError:
        return value
