"""benchmarks/check_results.py on benchmarks/RESULTS.md: every figure beside a log is in that log, and the checker
catches a figure that is not, a log that does not exist and a table with no source. Reads only repository files.

    pytest tests/test_results_md.py
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


@pytest.fixture(scope="module")
def checker():
    spec = importlib.util.spec_from_file_location("check_results", ROOT / "benchmarks" / "check_results.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_results"] = module  # its dataclass looks itself up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("check_results", None)


def test_results_md_matches_its_logs(checker, capsys):
    assert checker.main([str(RESULTS)]) == 0, capsys.readouterr().out
    blocks, unsourced = checker.check(RESULTS)
    assert len(blocks) >= 30 and sum(b.checked for b in blocks) >= 300  # it checked something real
    assert unsourced == []


def planted(tmp_path, old: str, new: str) -> Path:
    text = RESULTS.read_text()
    assert text.count(old) == 1, old
    out = tmp_path / "RESULTS.md"
    out.write_text(text.replace(old, new))
    return out


@pytest.mark.parametrize(
    "old, new, problem",
    [
        ("| 1.244990 (177) |", "| 1.245003 (177) |", "not in the log: 1.245003"),  # the audit's val_bpb
        ("| 37,280 | 10.2 | 45.9 |", "| 37,290 | 10.2 | 45.9 |", "not in the log: 37,290"),  # a peak off by 10 MiB
        ("938,016 tokens/s", "938,061 tokens/s", "not in the log: 938,061"),  # a figure in prose
        ("gpu2/h200_torch_SSSL_120s.log`):", "gpu2/h200_torch_SSSL_12s.log`):", "no such log"),
    ],
    ids=["val-bpb", "table-peak", "prose-unit", "missing-log"],
)
def test_a_planted_mismatch_fails(checker, tmp_path, capsys, old, new, problem):
    path = planted(tmp_path, old, new)
    assert checker.main([str(path)]) == 1
    out = capsys.readouterr().out
    assert problem in out and "mismatch" in out


def test_a_table_without_a_source_fails(checker, tmp_path, capsys):
    path = planted(tmp_path, "Log: `benchmarks/logs/2026-11-25-gpu2/flex_tune.json`.\n", "")
    assert checker.main([str(path)]) == 1
    assert "unsourced: line" in capsys.readouterr().out
