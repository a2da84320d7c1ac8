"""Parity catches and locates the classic porting bugs, each injected as text into a copy of the committed twins:
baseline tests, since the anchors are the baseline's own lines (a research branch updates them)."""

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from common.parity import run_parity

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two OpenMP threads on a 2-core CI box stall torch's CPU kernels


def _broken_twin(tmp_path: Path, old: str, new: str, count: int = 1) -> Path:
    """A checkout whose train_mlx.py has one thing 'ported' wrong (the first `count` occurrences, -1 for all)."""
    for name in ("train_mlx.py", "train_torch.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    text = (tmp_path / "train_mlx.py").read_text()
    assert old in text, f"test needs updating: {old!r} is no longer in train_mlx.py"
    (tmp_path / "train_mlx.py").write_text(text.replace(old, new, count))
    return tmp_path


def test_rotary_sign_convention_bug_is_located(prepared, tmp_path):
    # mx.fast.rope's default direction is the opposite of upstream's formula: the classic porting trap, here in a
    # twin that writes its own rotary instead of calling the kernel.
    own_rotary = (
        "d = q.shape[-1] // 2\n"
        "        rot = lambda x: mx.concatenate([x[..., :d] * cos - x[..., d:] * sin, x[..., d:] * cos + x[..., :d] * sin], -1)\n"
        "        q = norm(rot(q))\n        k = norm(rot(k))"
    )
    root = _broken_twin(tmp_path, "q = norm(K.rotary(q, cos, sin))\n        k = norm(K.rotary(k, cos, sin))", own_rotary)
    report = run_parity(root=root, data_dir=prepared, steps=2, bf16=False)
    logits = next(c for c in report.checks if c.name.startswith("forward logits"))
    assert not logits.ok and "transformer.h.0" in logits.detail
    assert not report.ok


def test_norm_epsilon_drift_is_reported(prepared, tmp_path):
    root = _broken_twin(tmp_path, "NORM_EPS = 1.1920928955078125e-07", "NORM_EPS = 1e-5")
    report = run_parity(root=root, data_dir=prepared, steps=2, bf16=False)
    constants = next(c for c in report.checks if c.name.startswith("hyperparameters"))
    assert not constants.ok and "NORM_EPS" in constants.detail


def test_cli_exit_status_and_json(prepared, tmp_path, monkeypatch):
    from common.cli import main

    monkeypatch.chdir(_broken_twin(tmp_path, "SOFTCAP = 15", "SOFTCAP = 30"))
    r = CliRunner().invoke(main, ["parity", "--data-dir", str(prepared), "--steps", "2", "--json"])
    assert r.exit_code == 1, r.output
    assert '"ok": false' in r.output and "SOFTCAP" in r.output


def test_window_off_by_one_is_located(prepared, tmp_path):
    # FlashAttention's window w attends to w + 1 keys (i - w .. i); a port that attends to w keys differs on every
    # S layer, starting with the first.
    root = _broken_twin(tmp_path, "K.attention(q, k, v, window)", "K.attention(q, k, v, window - 1)")
    report = run_parity(root=root, data_dir=prepared, steps=2, bf16=False)
    logits = next(c for c in report.checks if c.name.startswith("forward logits"))
    assert not logits.ok and "transformer.h.0 (window 16)" in logits.detail


def test_bf16_rotary_tables_are_caught_in_float32(prepared, tmp_path):
    # Tables rounded to bfloat16 (as a port that builds them in the compute dtype would) shift q and k by ~0.4%.
    root = _broken_twin(
        tmp_path,
        "return mx.cos(freqs), mx.sin(freqs)",
        "return mx.cos(freqs).astype(mx.bfloat16), mx.sin(freqs).astype(mx.bfloat16)",
    )
    report = run_parity(root=root, data_dir=prepared, steps=2, bf16=False)
    logits = next(c for c in report.checks if c.name.startswith("forward logits"))
    assert not logits.ok and logits.value > 10 * logits.gate


def test_tables_registered_as_parameters_are_reported(prepared, tmp_path):
    # Any mx.array attribute of an nn.Module without a leading underscore is a trainable parameter in MLX.
    root = _broken_twin(tmp_path, "self._cos", "self.rope_cos", count=-1)
    report = run_parity(root=root, data_dir=prepared, steps=2, bf16=False)
    names = next(c for c in report.checks if c.name.startswith("canonical parameter names"))
    assert not names.ok and "rope_cos" in names.detail
    assert "stopped early" in report.table() and not report.ok
