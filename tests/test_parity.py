"""Cross-backend parity: train_mlx.py and train_torch.py compute the same function (common/parity.py). That a port
with a classic bug is caught and located: tests/baseline/test_parity_mutations.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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
