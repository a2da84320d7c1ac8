"""The research loop (`autoresearch run`, `loop`, `results`) in a temporary git repository.

The training script is tests/research_fixtures/fake_train.py: it prints a twin's summary with a val_bpb read from
its own constants, so the test decides every keep, discard and crash, whatever this machine's speed. The agent is
tests/research_fixtures/plan_agent.py, which follows a JSON plan. One slow test runs the real torch twin in
fixed-step mode with the shipped example agent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.research.decide import confirm, decide, seed_spread
from common.research.execute import LiveLine
from common.research.ledger import TSV_HEADER, Ledger, read_jsonl
from tests.research_fixtures import git, user_project

ROOT = Path(__file__).resolve().parent.parent
FIX = Path(__file__).resolve().parent / "research_fixtures"
TAG = "t"


@pytest.fixture
def repo(tmp_path, prepared, monkeypatch) -> Path:
    """A user's project: the fake script as train_torch.py, program.md, a fixed file, two commits of the user's."""
    root = user_project(tmp_path / "proj", (FIX / "fake_train.py").read_text())
    (root / "NOTES.md").write_text("notes\n")
    git(root, "add", "NOTES.md")
    git(root, "commit", "-qm", "user: notes")
    monkeypatch.setenv("AUTORESEARCH_DATA_DIR", str(prepared))
    monkeypatch.chdir(root)
    return root


def cli(root: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-m", "common.cli", *args], cwd=root, capture_output=True, text=True, timeout=300,
        env=env or {**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    if check:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def plan(tmp_path: Path, actions: list[dict]) -> dict:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(actions))
    return {**os.environ, "PLAN_FILE": str(path), "PYTHONPATH": str(ROOT)}


AGENT = f'"{sys.executable}" {FIX / "plan_agent.py"}'
COMMON = ("--tag", TAG, "--backend", "cpu", "--profile", "ci")


def ledger(root: Path) -> list[dict]:
    return read_jsonl(root / "runs" / TAG / "ledger.jsonl")


def tsv(root: Path) -> list[list[str]]:
    lines = (root / "runs" / TAG / "results.tsv").read_text().splitlines()
    assert lines[0] == TSV_HEADER
    return [line.split("\t") for line in lines[1:]]


def branch_commits(root: Path) -> list[str]:
    return git(root, "log", "--format=%H", f"autoresearch/{TAG}").split()


# ---------------------------------------------------------------------------------------------------------------------
# The whole loop: every outcome, then the ledger, results.tsv and git checked row by row


def test_loop_records_every_outcome_and_git_follows_the_ledger(repo, tmp_path):
    user_commits = git(repo, "log", "--format=%H", "main").split()
    pid_file = tmp_path / "pids"
    actions = [
        {"set": {"VAL": 1.45}, "desc": "big win"},  # keep
        {"set": {"VAL": 1.46}, "desc": "worse"},  # discard
        {"set": {"MODE": "crash"}, "desc": "crashes"},  # crash
        {"set": {"VAL": 1.46}, "desc": "worse again"},  # skip: that script already ran (#3)
        {"set": {"VAL": 1.4}, "touch": "common/fixed.py", "new": "extra/new.py", "desc": "sneaky"},  # violation
        {"exit": 3},  # agent failure
        {"set": {"MODE": "hang"}, "desc": "hangs"},  # crash: timeout
        {"set": {"VAL": 1.4495}, "desc": "tiny win"},  # within the spread: confirmed on seed 43, kept
        {"set": {"VAL": 1.449, "SLOPE": 0.01}, "desc": "lucky seed"},  # within the spread, not confirmed
        {"set": {"MODE": "lie"}, "desc": "evaluates on more"},  # violation: the summary disagrees
        {"set": {"VAL": 1.3}, "commit": True, "desc": "commits itself"},  # keep, as one harness commit
        {"noop": True},  # agent failure: no change
    ]
    env = {**plan(tmp_path, actions), "FAKE_PID_FILE": str(pid_file)}
    out = cli(repo, "loop", *COMMON, "--agent", AGENT, "--max", str(len(actions)), "--timeout", "10", env=env)

    recs = ledger(repo)
    statuses = [r["status"] for r in recs]
    assert statuses == [
        "keep", "keep", "discard", "crash", "skip", "violation", "agent-failure", "crash", "keep", "discard",
        "violation", "keep", "agent-failure",
    ], out.stderr[-3000:]  # fmt: skip
    assert [r["id"] for r in recs] == list(range(1, 14))
    base = recs[0]
    assert base["baseline"] and base["seeds"] == [42, 43, 44]
    assert [r["val_bpb"] for r in base["runs"]] == pytest.approx([1.5, 1.501, 1.502])
    assert base["spread"] == pytest.approx(0.002)
    assert recs[1]["margin"] == pytest.approx(0.05) and recs[1]["confirm_margin"] is None
    assert recs[2]["margin"] == pytest.approx(-0.01) and recs[2]["parent"] == recs[1]["commit"]
    assert "boom" in recs[3]["runs"][0]["log_tail"] and recs[3]["reason"].startswith("exit 1")
    assert "identical to #3 (discard)" in recs[4]["reason"]
    assert recs[5]["files"] == ["common/fixed.py", "extra/new.py"]
    assert recs[6]["agent"]["exit_code"] == 3
    assert recs[7]["reason"].startswith("timeout")
    # the paired confirmation: #9 vs the best (#2) on seed 43, which the best had not run yet
    assert [r["role"] for r in recs[8]["runs"]] == ["candidate", "confirm", "best"]
    assert recs[8]["confirm_margin"] == pytest.approx(1.451 - 1.4505)
    assert recs[9]["confirm_margin"] == pytest.approx(1.4505 - 1.459) and "not confirmed" in recs[9]["decision"]
    assert "eval_tokens" in recs[10]["reason"]
    logs = repo / "runs" / TAG / "logs"  # #9's confirmation ran the best on seed 43 too, into a log of its own
    assert "1.4505" in (logs / "0009-seed43.log").read_text() and "1.451" in (logs / "0009-seed43-best.log").read_text()
    assert recs[11]["description"] == "commits itself"
    assert "changed nothing" in recs[12]["reason"]

    # results.tsv: upstream's five columns, one row per judged experiment, in ledger order
    rows = tsv(repo)
    judged = [r for r in recs if r["status"] in ("keep", "discard", "crash", "violation")]
    assert [row[3] for row in rows] == [r["status"] for r in judged]
    for row, r in zip(rows, judged):
        assert row[0] == (r["commit"] or "0000000")[:7] and row[4] == r["description"]
        expect = r["val_bpb"] if r["status"] in ("keep", "discard") else 0.0
        assert row[1] == f"{expect:.6f}"

    # git: the branch is the user's commits plus exactly the kept harness commits; the user's are untouched
    kept = [r["commit"] for r in recs if r["status"] == "keep" and not r.get("baseline")]
    assert branch_commits(repo) == kept[::-1] + user_commits
    assert git(repo, "log", "--format=%H", "main").split() == user_commits
    for sha in kept:
        assert f"Autoresearch-Experiment: {next(r['id'] for r in recs if r['commit'] == sha)}" in git(
            repo, "log", "-1", "--format=%B", sha
        )
    assert git(repo, "status", "--porcelain") == ""
    assert (repo / "common" / "fixed.py").read_text() == "FIXED = 1\n" and not (repo / "extra").exists()
    saved = repo / "runs" / TAG / "undone" / "0006"
    assert "edited by the agent" in (saved / "tracked.patch").read_text() and (saved / "extra" / "new.py").exists()
    assert "VAL = 1.3" in (repo / "train_torch.py").read_text()
    # the hung run's own child was killed with its group
    for pid in map(int, pid_file.read_text().split()):
        assert not _alive(pid), pid
    # one line per decision on stdout
    assert len(re.findall(r"^#\d+ ", out.stdout, re.M)) == 13


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat")
    return not (state.exists() and state.read_text().split()[2] == "Z")


def test_loop_stops_after_consecutive_agent_failures(repo, tmp_path):
    env = plan(tmp_path, [{"exit": 1}, {"noop": True}, {"exit": 2}, {"set": {"VAL": 1.4}, "desc": "never reached"}])
    out = cli(repo, "loop", *COMMON, "--agent", AGENT, "--max-failures", "3", env=env)
    assert [r["status"] for r in ledger(repo)] == ["keep", "agent-failure", "agent-failure", "agent-failure"]
    assert "3 agent failures in a row" in out.stderr


def test_agent_timeout_kills_the_agent_and_undoes_its_edits(repo, tmp_path):
    env = plan(tmp_path, [{"set": {"VAL": 1.1}, "sleep": 60, "desc": "slow"}])
    out = cli(repo, "loop", *COMMON, "--agent", AGENT, "--max", "1", "--agent-timeout", "3", env=env)
    rec = ledger(repo)[-1]
    assert rec["status"] == "agent-failure" and "timed out" in rec["reason"], out.stderr
    assert git(repo, "status", "--porcelain") == ""


# ---------------------------------------------------------------------------------------------------------------------
# Resume: kill -9 mid-run, mid-commit, after the record and before the reset, mid-agent


def _wait_for(predicate, timeout=60.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def test_resume_after_kill_9_mid_run(repo, tmp_path):
    marker = tmp_path / "slow"
    marker.write_text("")
    env = {**plan(tmp_path, [{"set": {"VAL": 1.45, "MODE": "slow"}, "desc": "slow win"}]),
           "FAKE_SLOW_MARKER": str(marker)}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "common.cli", "loop", *COMMON, "--agent", AGENT, "--max", "1"],
        cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    state = repo / "runs" / TAG / "state.json"
    log = repo / "runs" / TAG / "logs" / "0002-seed42.log"
    _wait_for(lambda: log.exists() and "model fake" in log.read_text() and "run_pid" in state.read_text())
    run_pid = json.loads(state.read_text())["run_pid"]
    proc.kill()  # kill -9 of the harness: its training run lives on in its own session
    proc.wait()
    assert _alive(run_pid)
    marker.unlink()
    assert len(ledger(repo)) == 1  # only the baseline was recorded
    candidate = git(repo, "rev-parse", "HEAD")
    cli(repo, "loop", *COMMON, "--agent", AGENT, "--max", "0", env=env)
    _wait_for(lambda: not _alive(run_pid), 10)  # the orphaned run was stopped
    recs = ledger(repo)
    assert [(r["id"], r["status"], r.get("commit")) for r in recs[1:]] == [(2, "keep", candidate)]
    assert git(repo, "rev-parse", "HEAD") == candidate and git(repo, "status", "--porcelain") == ""


def test_resume_mid_commit_commits_the_change_once(repo, tmp_path):
    cli(repo, "run", *COMMON)  # the baseline
    script = repo / "train_torch.py"
    script.write_text(script.read_text().replace("VAL = 1.5", "VAL = 1.4"))
    git(repo, "add", "train_torch.py")
    (repo / ".git" / "index.lock").write_text("")  # what a kill -9 inside `git commit` leaves
    state = repo / "runs" / TAG / "state.json"
    state.write_text(json.dumps({"phase": "commit", "id": 2, "description": "half committed"}))
    cli(repo, "loop", *COMMON, "--agent", AGENT, "--max", "0", env=plan(tmp_path, []))
    recs = ledger(repo)
    assert [(r["id"], r["status"], r["description"]) for r in recs] == [
        (1, "keep", "baseline"), (2, "keep", "half committed"),
    ]  # fmt: skip
    assert recs[1]["commit"] == git(repo, "rev-parse", "HEAD")
    assert not (repo / ".git" / "index.lock").exists() and git(repo, "status", "--porcelain") == ""


def test_resume_after_the_record_before_the_reset(repo):
    cli(repo, "run", *COMMON)
    best = git(repo, "rev-parse", "HEAD")
    script = repo / "train_torch.py"
    script.write_text(script.read_text().replace("VAL = 1.5", "VAL = 1.6"))
    cli(repo, "run", *COMMON, "--desc", "worse")
    discarded = ledger(repo)[-1]["commit"]
    git(repo, "reset", "-q", "--hard", discarded)  # as if killed between the ledger append and the reset
    cli(repo, "run", *COMMON)
    assert git(repo, "rev-parse", "HEAD") == best
    assert [r["status"] for r in ledger(repo)] == ["keep", "discard"]


def test_resume_mid_agent_turn_undoes_and_saves_its_edits(repo, tmp_path):
    cli(repo, "run", *COMMON)
    (repo / "train_torch.py").write_text((repo / "train_torch.py").read_text() + "# half an edit\n")
    (repo / "common" / "fixed.py").write_text("FIXED = 2\n")
    (repo / "scratch.txt").write_text("agent notes\n")
    (repo / "runs" / TAG / "state.json").write_text(json.dumps({"phase": "agent", "id": 2, "untracked": []}))
    cli(repo, "loop", *COMMON, "--agent", AGENT, "--max", "0", env=plan(tmp_path, []))
    assert git(repo, "status", "--porcelain") == "" and not (repo / "scratch.txt").exists()
    saved = repo / "runs" / TAG / "undone" / "0002"
    assert "half an edit" in (saved / "tracked.patch").read_text() and (saved / "scratch.txt").exists()
    assert len(ledger(repo)) == 1


# ---------------------------------------------------------------------------------------------------------------------
# `autoresearch run`, pins and refusals


def test_run_judges_the_work_tree_and_an_agents_own_commit(repo):
    out = cli(repo, "run", *COMMON)
    assert "#1 keep" in out.stdout and "nothing to judge" in out.stdout
    script = repo / "train_torch.py"
    script.write_text(script.read_text().replace("VAL = 1.5", "VAL = 1.4"))
    out = cli(repo, "run", "--desc", "lower")  # the tag, backend and profile come from the branch
    assert re.match(r"#2 keep val_bpb 1\.400000 \(margin \+0\.100000", out.stdout)
    script.write_text(script.read_text().replace("VAL = 1.4", "VAL = 1.2"))
    git(repo, "commit", "-qam", "agent: much lower")  # an agent that commits, as upstream's program.md says
    out = cli(repo, "run")
    rec = ledger(repo)[-1]
    assert rec["status"] == "keep" and rec["description"] == "agent: much lower"
    assert "Autoresearch-Experiment: 3" in git(repo, "log", "-1", "--format=%B")
    assert len(branch_commits(repo)) == 4  # the user's 2 + 2 kept: the agent's own commit was folded in


def test_branch_pins_profile_backend_and_data(repo, tmp_path, tmp_path_factory):
    cli(repo, "run", *COMMON)
    out = cli(repo, "run", "--tag", TAG, "--profile", "cpu", check=False)
    assert out.returncode == 1 and "pinned to profile 'ci'" in out.stderr and "Traceback" not in out.stderr
    out = cli(repo, "run", "--tag", TAG, "--steps", "5", check=False)
    assert out.returncode == 1 and "'ci@5steps'" in out.stderr
    out = cli(repo, "run", "--tag", TAG, "--backend", "mlx", check=False)
    assert out.returncode == 1 and "pinned to backend 'cpu'" in out.stderr


def test_loop_refuses_foreign_commits_after_the_best(repo, tmp_path):
    cli(repo, "run", *COMMON)
    (repo / "NOTES.md").write_text("more notes\n")
    git(repo, "commit", "-qam", "user: my own work")
    mine = git(repo, "rev-parse", "HEAD")
    out = cli(repo, "loop", "--tag", TAG, "--agent", AGENT, "--max", "1", check=False, env=plan(tmp_path, []))
    assert out.returncode == 1 and "was not made by the harness" in out.stderr and "Traceback" not in out.stderr
    assert git(repo, "rev-parse", "HEAD") == mine


def test_user_errors_are_one_clear_line(repo, tmp_path):
    out = cli(repo, "run", check=False)  # on main, no --tag
    assert out.returncode == 1 and "pass --tag TAG" in out.stderr and "Traceback" not in out.stderr
    out = cli(repo, "run", "--tag", TAG, "--profile", "ci@fast", check=False)
    assert out.returncode == 1 and "unknown override @fast" in out.stderr
    out = cli(tmp_path, "run", "--tag", TAG, "--backend", "cpu", "--profile", "ci", check=False)
    assert out.returncode == 1 and "not a git repository" in out.stderr
    out = cli(repo, "results", "--tag", "nothing", check=False)
    assert out.returncode == 1 and "no experiments recorded" in out.stderr


def test_a_broken_baseline_stops_with_the_log_and_a_fixed_one_takes_over(repo, tmp_path):
    script = repo / "train_torch.py"
    script.write_text(script.read_text().replace('MODE = "ok"', 'MODE = "crash"'))
    git(repo, "commit", "-qam", "user: broken")
    out = cli(repo, "run", *COMMON, check=False)
    assert out.returncode == 1 and "the baseline crashed" in out.stderr and "0001-seed42.log" in out.stderr
    script.write_text(script.read_text().replace('MODE = "crash"', 'MODE = "ok"'))
    git(repo, "commit", "-qam", "user: fixed")
    cli(repo, "run", "--tag", TAG, "--profile", "cpu", "--backend", "cpu", check=False)  # the crash pinned nothing
    recs = ledger(repo)
    assert [(r["status"], r.get("baseline")) for r in recs] == [("crash", True), ("keep", True)]
    assert recs[1]["profile"] == "cpu" and recs[1]["spread"] == pytest.approx(0.002)
    out = cli(repo, "results", "--json")
    assert json.loads(out.stdout)["baseline"]["commit"] == recs[1]["commit"]


def test_an_agent_that_moves_the_branch_back_is_a_violation_and_the_loop_goes_on(repo, tmp_path):
    env = plan(tmp_path, [{"set": {"VAL": 1.4}, "desc": "win"}, {"reset_back": True, "desc": "reset"},
                          {"set": {"VAL": 1.3}, "touch": "NOTES.md", "desc": "sneaky"}])  # fmt: skip
    cli(repo, "loop", *COMMON, "--agent", AGENT, "--max", "3", env=env)
    recs = ledger(repo)
    assert [r["status"] for r in recs] == ["keep", "keep", "violation", "violation"]
    assert "moved the branch" in recs[2]["reason"] and git(repo, "rev-parse", "HEAD") == recs[1]["commit"]
    # the last turn was a violation: nothing is left to resume, so the user's own edit is judged, not undone
    script = repo / "train_torch.py"
    script.write_text(script.read_text().replace("VAL = 1.4", "VAL = 1.35"))
    out = cli(repo, "run", "--desc", "mine")
    assert "#5 keep" in out.stdout and "undone" not in out.stderr


# ---------------------------------------------------------------------------------------------------------------------
# `autoresearch results`


def test_results_report_json_and_plot(repo, tmp_path):
    cli(repo, "run", *COMMON)
    script = repo / "train_torch.py"
    for val, desc in [(1.45, "a"), (1.47, "b"), (1.40, "c")]:
        script.write_text(re.sub(r"^VAL = .*$", f"VAL = {val}", script.read_text(), flags=re.M))
        cli(repo, "run", "--desc", desc)
    rep = json.loads(cli(repo, "results", "--json").stdout)
    assert rep["counts"]["keep"] == 3 and rep["counts"]["discard"] == 1
    assert rep["best"]["val_bpb"] == pytest.approx(1.40) and rep["best"]["delta"] == pytest.approx(-0.10)
    assert rep["best"]["spreads"] == pytest.approx(0.10 / 0.002)
    assert [k["description"] for k in rep["kept"]] == ["baseline", "a", "c"]
    assert [k["delta"] for k in rep["kept"][1:]] == pytest.approx([-0.05, -0.05])
    top = json.loads(cli(repo, "results", "--json", "--kept-only", "--top", "2").stdout)["top"]
    assert [t["description"] for t in top] == ["c", "a"]
    text = cli(repo, "results").stdout
    assert "best     1.400000" in text and "50.0x the seed spread" in text
    pytest.importorskip("matplotlib")
    cli(repo, "results", "--plot", str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_plot_without_matplotlib_says_how(repo, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from common.cli import main

    cli(repo, "run", *COMMON)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    res = CliRunner().invoke(main, ["results", "--tag", TAG, "--plot", str(tmp_path / "p.png")])
    assert res.exit_code == 1 and 'pip install -e ".[plot]"' in res.output and "baseline 1.500000" in res.output


# ---------------------------------------------------------------------------------------------------------------------
# Units: decisions, the ledger's torn line, the live line


def test_decisions_against_hand_computed_margins():
    assert seed_spread([1.50, 1.52, 1.49]) == pytest.approx(0.03) and seed_spread([1.5]) == 0.0
    d = decide(1.46, 1.50, 0.03)
    assert d.status == "keep" and d.margin == pytest.approx(0.04)
    assert decide(1.51, 1.50, 0.03).status == "discard" and decide(1.50, 1.50, 0.0).status == "discard"
    d = decide(1.49, 1.50, 0.03)
    assert d.status == "confirm"
    assert confirm(d, 1.495, 1.50).status == "keep" and confirm(d, 1.505, 1.50).status == "discard"
    assert decide(1.4999, 1.50, 0.0).status == "keep"  # one seed: any gain counts


def test_ledger_cuts_a_torn_last_line_and_rejects_corruption(tmp_path):
    led = Ledger(tmp_path)
    led.append({"status": "keep", "commit": "a" * 40, "val_bpb": 1.5, "description": "x\ty"})
    with open(tmp_path / "ledger.jsonl", "a") as f:
        f.write('{"id": 2, "status": "dis')  # a kill mid-append
    led = Ledger(tmp_path)
    assert [r["id"] for r in led.records] == [1]
    assert (tmp_path / "ledger.jsonl").read_text().count("\n") == 1
    assert (tmp_path / "results.tsv").read_text().splitlines()[1] == "aaaaaaa\t1.500000\t0.0\tkeep\tx y"
    assert led.append({"status": "crash", "description": "c"})["id"] == 2
    (tmp_path / "ledger.jsonl").write_text('garbage\n{"id": 1}\n')
    with pytest.raises(ValueError, match="line 1 is not JSON"):
        Ledger(tmp_path)


def test_live_line_reads_the_twins_progress():
    import io

    buf = io.StringIO()
    live = LiveLine("#3 candidate seed 42", buf)
    for line in ["model {...}: 1.0M params", "compile 1.0s (2 steps); fixed-step mode: 20 steps",
                 "step 00004 (20.0%) | loss 5.123456 | lrm 1.00 | dt 12ms | tok/s 1,234 | mfu - | epoch 1 | "
                 "remaining 7s", "startup 1.0s, compile 1.0s, calibration 0.0s, training 2.0s", "---"]:  # fmt: skip
        live(line + "\n")
    assert live.detail == "" and live.phase == "done"
    assert [ln.split(": ")[1].split(" (")[0] for ln in buf.getvalue().splitlines()] == ["compile", "train", "eval"]
    live = LiveLine("x", io.StringIO())
    live("step 00004 (20.0%) | loss 5.123456 | lrm 1.00 | dt 12ms | tok/s 1,234 | mfu - | epoch 1 | remaining 7s\n")
    assert live.detail == "step 5 (20.0%) loss 5.123 1,234 tok/s 7s left"


# ---------------------------------------------------------------------------------------------------------------------
# The real torch twin, fixed-step mode, the shipped example agent


@pytest.mark.slow
def test_loop_with_the_real_twin_and_the_example_agent(repo, tmp_path):
    shutil.copy(ROOT / "train_torch.py", repo / "train_torch.py")
    shutil.copy(ROOT / "program.md", repo / "program.md")
    git(repo, "commit", "-qam", "user: the real twin")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = cli(repo, "loop", "--tag", TAG, "--backend", "cpu", "--profile", "ci", "--steps", "10", "--seeds", "2",
              "--agent", "example", "--max", "2", env=env)  # fmt: skip
    recs = ledger(repo)
    assert [r["status"] for r in recs][0] == "keep" and len(recs) == 3, out.stderr[-3000:]
    assert {r["status"] for r in recs[1:]} <= {"keep", "discard"}
    assert [r["description"] for r in recs[1:]] == ["matrix lr 0.04 -> 0.06", "warmdown over 70% of the run instead of 50%"]
    for r in recs:
        for run in r["runs"]:
            assert run["summary"]["num_steps"] == 10 and run["summary"]["profile"] == "ci@10steps"
            assert 0 < run["val_bpb"] < 20
    assert recs[0]["spread"] == pytest.approx(abs(recs[0]["runs"][0]["val_bpb"] - recs[0]["runs"][1]["val_bpb"]))
    assert git(repo, "status", "--porcelain") == ""


@pytest.mark.slow
def test_demo_runs_the_loop_in_a_scratch_worktree(tmp_path, monkeypatch):
    """`autoresearch demo` (README's first command): the loop on demo data, the user's checkout untouched."""
    root = tmp_path / "clone"
    for rel in git(ROOT, "ls-files", "--cached", "--others", "--exclude-standard").splitlines():
        if (ROOT / rel).is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, root / rel)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "clone")
    head = git(root, "rev-parse", "HEAD")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = cli(root, "demo", "--backend", "cpu", "--turns", "1", "--steps", "5", "--seeds", "2", env=env)
    assert git(root, "rev-parse", "--abbrev-ref", "HEAD") == "main" and git(root, "rev-parse", "HEAD") == head
    assert git(root, "status", "--porcelain") == "" and len(git(root, "worktree", "list").splitlines()) == 1
    (results,) = (root / "runs").iterdir()
    recs = read_jsonl(results / "ledger.jsonl")
    assert [r["id"] for r in recs] == [1, 2] and recs[1]["description"] == "matrix lr 0.04 -> 0.06"
    assert git(root, "branch", "--list", f"autoresearch/{results.name}")
    assert "baseline" in out.stdout and "best experiments:" in out.stdout
