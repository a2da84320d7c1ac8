"""Cross-backend parity: train_mlx.py and train_torch.py compute the same function (common/parity.py), and a port
with a classic bug is caught and located."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from common.parity import run_parity

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv(
        "OMP_NUM_THREADS", "1"
    )  # two OpenMP threads on a 2-core CI box stall torch's CPU kernels


def test_twins_agree_on_every_gate(prepared):
    """The full check, as a user runs it: `autoresearch parity --json` (which restarts itself with OpenBLAS
    preloaded on Linux), on the test corpus."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
    }  # two OpenMP threads on a 2-core CI box stall torch's CPU kernels
    r = subprocess.run(
        [sys.executable, "-m", "common.cli", "parity", "--data-dir", str(prepared), "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    report = json.loads(r.stdout)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert r.returncode == 0 and report["ok"] and not failed, r.stdout + r.stderr
    names = [c["name"] for c in report["checks"]]
    assert "100 training steps (loss, every step)" in names and "bfloat16: loss after 100 steps" in names
    assert report["info"]["val_bpb"]["torch"] == pytest.approx(report["info"]["val_bpb"]["mlx"], abs=1e-5)


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


def test_every_target_is_a_real_token(prepared):
    # The twins' losses have no ignore_index (MLX's cross-entropy has none; torch's default is -100): that is only
    # sound if no target is ever a padding or ignore marker. The packer fills every position with document tokens.
    from common.data import PreparedData

    data = PreparedData.open(prepared)
    from common.tokenizer import SPECIAL_TOKENS, Tokenizer

    tok = Tokenizer.load(data.dir / "tokenizer.json")
    padding = [tok.tok.token_to_id(t) for t in SPECIAL_TOKENS if t != "<|bos|>"]  # eos, pad, reserved
    for (x, y, _), _ in zip(data.train_batches(4, 32, seed=0, prefetch=0), range(50)):
        assert y.min() >= 0 and y.max() < data.vocab_size
        assert not np.isin(
            y, padding
        ).any()  # BOS may be a target (a new document starts); nothing else special
        assert (x[:, 1:] == y[:, :-1]).all()
    val = data.val_rows(32, 32 * 16)
    assert val.min() >= 0 and val.max() < data.vocab_size and not np.isin(val, padding).any()
