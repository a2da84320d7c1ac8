"""A research branch that swapped relu^2 for SwiGLU in both twins (injected as text into copies of the committed
twins: a baseline test, since the anchors are the baseline's lines): the protocol scores it and parity passes."""

import shutil

import pytest

from tests.test_twin_api import edited, run_copy

SWIGLU = {
    "train_torch.py": (
        "        return self.c_proj(K.relu_squared(self.c_fc(x)))",
        "        a, b = self.c_fc(x).chunk(2, dim=-1)\n        return self.c_proj(F.silu(a) * b)",
        "self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)",
        "self.c_fc = nn.Linear(config.n_embd, 8 * config.n_embd, bias=False)",
    ),
    "train_mlx.py": (
        "        return self.c_proj(K.relu_squared(self.c_fc(x)))",
        "        a, b = mx.split(self.c_fc(x), 2, axis=-1)\n        return self.c_proj(nn.silu(a) * b)",
        "self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=False)",
        "self.c_fc = Linear(config.n_embd, 8 * config.n_embd, bias=False)",
    ),
}


@pytest.mark.slow
def test_a_swiglu_branch_runs_and_passes_parity(prepared, tmp_path, monkeypatch):
    """A research branch that swapped relu^2 for SwiGLU in both twins: the protocol scores it and parity passes."""
    from common.parity import run_parity

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = tmp_path / "branch"
    root.mkdir()
    for script, (old_fwd, new_fwd, old_fc, new_fc) in SWIGLU.items():
        text = edited(script, old_fwd, new_fwd).replace(old_fc, new_fc, 1)
        assert "relu_squared" not in text
        (root / script).write_text(text)
        run = run_copy(tmp_path, prepared, script, text)
        assert run["status"] == "ok", run["log_tail"]
        assert run["summary"]["num_steps"] == 3 and run["val_bpb"] > 0
    report = run_parity(root=root, data_dir=prepared, steps=5)
    assert report.ok, report.table()
    shutil.rmtree(root)
