"""Harness tests over the twin API, not the twins' insides: they must hold for any research branch that keeps
`build_config`, `GPT`, `setup_optimizer` and `make_train_step`.

The metric is fenced: a script that evaluates on fewer rows or switches its own profile is refused. (A twin pair
with another MLP still runs and passes parity: tests/baseline/test_swiglu_branch.py, whose edits anchor on the
baseline's own lines.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from common.profiles import get_profile
from common.research.execute import Expected, RunSpec, execute

ROOT = Path(__file__).resolve().parent.parent


def expected_for(data_dir: Path, profile: str) -> Expected:
    from common.data import PreparedData

    p, data = get_profile(profile), PreparedData.open(data_dir)
    rows = data.val_rows(p.max_seq_len, p.eval_tokens)
    return Expected(p.name, p.max_seq_len, len(rows) * p.max_seq_len, data.name, p.steps)


def run_copy(tmp_path: Path, data_dir: Path, script: str, text: str, profile: str = "ci@3steps") -> dict:
    backend = "mlx" if script == "train_mlx.py" else "cpu"
    spec = RunSpec(backend, profile, 42, script, text, None, "test-data", timeout=300)
    return execute(spec, expected_for(data_dir, profile), tmp_path / f"{script}.log", ROOT, data_dir)


def edited(script: str, old: str, new: str) -> str:
    text = (ROOT / script).read_text()
    assert old in text, f"test needs updating: {old!r} is no longer in {script}"
    return text.replace(old, new, 1)


@pytest.mark.parametrize("script", ["train_torch.py", "train_mlx.py"])
def test_a_script_that_shrinks_its_eval_is_a_violation(script, prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    anchor = "run.train("
    text = edited(script, anchor, "run.val_rows = run.val_rows[:2]  # scored on two rows\n    " + anchor)
    run = run_copy(tmp_path, prepared, script, text)
    assert run["status"] == "violation" and "eval_tokens 128 (expected 4096)" in run["reason"], run["log_tail"]
    honest = run_copy(tmp_path, prepared, script, (ROOT / script).read_text())
    assert honest["status"] == "ok", honest["log_tail"]


def test_a_script_that_picks_its_own_profile_is_a_violation(prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    text = edited("train_torch.py", "import time\n", 'import os\nimport time\n\nos.environ["AUTORESEARCH_PROFILE"] = "ci@4steps"\n')
    run = run_copy(tmp_path, prepared, "train_torch.py", text)
    assert run["status"] == "violation"
    assert "profile 'ci@4steps' (expected 'ci@3steps')" in run["reason"] and "num_steps 4" in run["reason"]
