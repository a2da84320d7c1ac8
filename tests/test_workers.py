"""`autoresearch loop --workers N` and `--ray`: several experiments in flight, one best, one ledger.

The training script is tests/research_fixtures/fake_train.py with more constants: GAIN_A and GAIN_B lower its
val_bpb, on lines apart so that a change to each merges cleanly; AFTER_n holds a run until the ledger has n records
and HOLD while a file exists. So the order in which concurrent runs finish is set by the test, never by this
machine's speed. Each worker's agent is research_fixtures/plan_agent.py with a plan of its own (w0.json, w1.json).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.research.ledger import TSV_HEADER, read_jsonl
from tests.conftest import prepare_isolated
from tests.research_fixtures import git, user_project

ROOT = Path(__file__).resolve().parent.parent
FIX = Path(__file__).resolve().parent / "research_fixtures"
TAG = "w"

KNOBS = '''
# -- the worker tests' constants, a line apart so that changes to two of them merge cleanly
GAIN_A = 0.0
# -
GAIN_B = 0.0
# -
AFTER_1 = 0
# -
AFTER_2 = 0
# -
AFTER_3 = 0
# -
HOLD = ""
LEDGER = {ledger!r}
'''
GATE = '''
def _records():
    return sum(1 for _ in open(LEDGER)) if os.path.exists(LEDGER) else 0


_t0 = time.time()  # the gates: wait for the ledger, or while the HOLD file exists (never past 120 s)
while time.time() - _t0 < 120 and (_records() < max(AFTER_1, AFTER_2, AFTER_3) or (HOLD and os.path.exists(HOLD))):
    time.sleep(0.05)
'''


def fake_script(ledger: Path) -> str:
    text = (FIX / "fake_train.py").read_text()
    mode = next(line for line in text.splitlines() if line.startswith("MODE = "))
    model = next(line for line in text.splitlines() if line.startswith('print(f"model fake'))
    val = '"val_bpb": VAL + SLOPE * (seed - 42)'
    assert val in text
    text = text.replace(mode, mode + KNOBS.format(ledger=str(ledger)), 1).replace(model, model + GATE, 1)
    return text.replace(val, '"val_bpb": VAL - GAIN_A - GAIN_B + SLOPE * (seed - 42)', 1)


@pytest.fixture
def repo(tmp_path, prepared, monkeypatch) -> Path:
    root = user_project(tmp_path / "proj", fake_script(tmp_path / "proj" / "runs" / TAG / "ledger.jsonl"))
    monkeypatch.setenv("AUTORESEARCH_DATA_DIR", str(prepared))
    monkeypatch.chdir(root)
    return root


def plans(tmp_path: Path, **per_worker: list[dict]) -> dict:
    """The environment for the CLI: worker k's agent follows w<k>.json."""
    d = tmp_path / "plans"
    d.mkdir(exist_ok=True)
    for name, actions in per_worker.items():
        (d / f"{name}.json").write_text(json.dumps(actions))
    return {**os.environ, "PLANS": str(d), "PYTHONPATH": str(ROOT)}


AGENT = f'PLAN_FILE="$PLANS/w$AUTORESEARCH_WORKER.json" "{sys.executable}" {FIX / "plan_agent.py"}'
COMMON = ("--tag", TAG, "--backend", "cpu", "--profile", "ci", "--seeds", "1", "--agent", AGENT)


def cli(root: Path, *args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-m", "common.cli", *args], cwd=root, capture_output=True, text=True, timeout=240, env=env
    )
    if check:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return out


def start(root: Path, *args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "common.cli", *args], cwd=root, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def ledger(root: Path) -> list[dict]:
    return read_jsonl(root / "runs" / TAG / "ledger.jsonl")


def by_desc(recs: list[dict]) -> dict[str, dict]:
    return {r["description"]: r for r in recs}


def inflight(root: Path) -> dict:
    try:
        return json.loads((root / "runs" / TAG / "inflight.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def held_job(root: Path, hold: Path) -> dict | None:
    """The job in flight whose script waits for the file `hold`, once its training run has started."""
    for job in inflight(root).get("jobs", {}).values():
        try:
            if job.get("run_pid") and str(hold) in Path(job["job"]).read_text():
                return job
        except FileNotFoundError:
            continue
    return None


def wait_for(predicate, timeout: float = 60.0, what: str = "") -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def const(root: Path, commit: str, name: str) -> str:
    line = next(ln for ln in git(root, "show", f"{commit}:train_torch.py").splitlines() if ln.startswith(f"{name} ="))
    return line.split("=", 1)[1].strip()


def assert_clean_finish(root: Path) -> None:
    assert git(root, "status", "--porcelain") == ""
    assert len(git(root, "worktree", "list").splitlines()) == 1, git(root, "worktree", "list")
    assert not (root / "runs" / TAG / "inflight.json").exists()
    assert not (root / "runs" / TAG / "worktrees").exists()


# ---------------------------------------------------------------------------------------------------------------------
# Two workers: concurrent keeps re-applied on the new best, a conflict discarded, ledger and git row by row


def test_concurrent_keeps_are_reapplied_and_a_conflict_discarded(repo, tmp_path):
    start_commit = git(repo, "rev-parse", "HEAD")
    env = plans(
        tmp_path,
        w0=[{"set": {"GAIN_A": 0.03}, "desc": "a"},  # 1.47: first to finish, kept
            {"set": {"VAL": 1.40, "AFTER_2": 3}, "desc": "v1"}],  # built on a; finishes after b: re-applied
        w1=[{"set": {"GAIN_B": 0.05, "AFTER_1": 2}, "desc": "b"},  # built on the baseline, finishes after a
            {"set": {"VAL": 1.41, "AFTER_3": 4}, "desc": "v2"}],  # built on b; v1 changed VAL too: a conflict
    )  # fmt: skip
    out = cli(repo, "loop", *COMMON, "--workers", "2", "--max", "4", env=env)

    recs = ledger(repo)
    assert [r["description"] for r in recs] == ["baseline", "a", "b", "v1", "v2"], out.stderr[-4000:]
    assert sorted(r["id"] for r in recs) == [1, 2, 3, 4, 5] and [r["id"] for r in recs][3:] == [4, 5]
    base, a, b, v1, v2 = recs
    assert [r["status"] for r in recs] == ["keep", "keep", "keep", "keep", "discard"]
    assert [r.get("worker") for r in recs] == [None, "w0", "w1", "w0", "w1"]

    # a: built on the baseline, still the best when it finished: kept as it was
    assert a["parent"] == base["commit"] == start_commit and "reapplied" not in a
    assert a["val_bpb"] == pytest.approx(1.47) and a["margin"] == pytest.approx(0.03)
    # b: built on the baseline, beat it (1.45), but a was kept meanwhile: re-applied onto a and run again
    (old,) = b["reapplied"]
    assert old["parent"] == start_commit and old["onto"] == a["commit"] and old["val_bpb"] == pytest.approx(1.45)
    assert b["parent"] == a["commit"] and b["val_bpb"] == pytest.approx(1.42) and b["best_before"] == pytest.approx(1.47)
    assert [(r["role"], r["commit"], r["parent"]) for r in b["runs"]] == [
        ("superseded", old["commit"], start_commit), ("candidate", b["commit"], a["commit"]),
    ]  # fmt: skip
    assert git(repo, "rev-parse", f"{old['commit']}^") == start_commit
    assert "Re-applied onto" in git(repo, "log", "-1", "--format=%B", b["commit"])
    assert (const(repo, b["commit"], "GAIN_A"), const(repo, b["commit"], "GAIN_B")) == ("0.03", "0.05")
    # v1: built on a, re-applied onto b, both changes in its commit
    assert v1["reapplied"][0]["parent"] == a["commit"] and v1["parent"] == b["commit"]
    assert v1["val_bpb"] == pytest.approx(1.40 - 0.08)
    # v2: built on b, beat it, but VAL changed in v1 too: discarded with the reason, never run again
    assert v2["parent"] == b["commit"] and v2["val_bpb"] == pytest.approx(1.41 - 0.08)
    assert "conflict re-applying it onto the new best #4" in v2["reason"] and "reapplied" not in v2
    assert [r["role"] for r in v2["runs"]] == ["candidate"]

    # git: the branch is the user's commit plus exactly the kept commits, each on the one before
    kept = [r["commit"] for r in recs[1:] if r["status"] == "keep"]
    assert git(repo, "log", "--format=%H", f"autoresearch/{TAG}").split() == kept[::-1] + [start_commit]
    for r in recs[1:4]:
        assert git(repo, "rev-parse", f"{r['commit']}^") == r["parent"]
        assert f"Autoresearch-Experiment: {r['id']}" in git(repo, "log", "-1", "--format=%B", r["commit"])
    assert const(repo, "HEAD", "VAL") == "1.4"
    rows = (repo / "runs" / TAG / "results.tsv").read_text().splitlines()
    assert rows[0] == TSV_HEADER
    assert [row.split("\t")[3:] for row in rows[1:]] == [[r["status"], r["description"]] for r in recs]
    assert_clean_finish(repo)

    rep = json.loads(cli(repo, "results", "--json", env=env).stdout)["search"]
    assert [(w["worker"], w["experiments"]) for w in rep["workers"]] == [("w0", 2), ("w1", 2)]
    assert all(0 <= w["idle_fraction"] <= 1 for w in rep["workers"])
    assert "w0: 2 experiments" in cli(repo, "results", env=env).stdout


def test_a_repeat_of_an_idea_in_flight_is_skipped_and_each_agent_stops_on_its_own_failures(repo, tmp_path):
    hold = tmp_path / "hold"
    hold.write_text("")
    same = {"set": {"GAIN_A": 0.03, "HOLD": str(hold)}}  # both agents make the same change at once
    env = plans(tmp_path, w0=[{**same, "desc": "same"}, {"exit": 1}, {"exit": 1}], w1=[{**same, "desc": "same too"}, {"exit": 2}])
    proc = start(repo, "loop", *COMMON, "--workers", "2", "--max-failures", "2", env=env)
    try:
        wait_for(lambda: any(r["status"] == "skip" for r in ledger(repo)), what="the repeat to be skipped")
        hold.unlink()  # the first of the two runs until the repeat is recorded
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-4000:]
    recs = ledger(repo)
    (skip,) = [r for r in recs if r["status"] == "skip"]
    (kept,) = [r for r in recs[1:] if r["status"] == "keep"]
    assert skip["reason"] == f"identical to #{kept['id']} (in flight): not run again"
    assert skip["script_sha256"] == kept["script_sha256"] and skip["worker"] != kept["worker"]
    assert sorted(r["status"] for r in recs) == ["agent-failure"] * 3 + ["keep", "keep", "skip"]
    assert "2 agent failures in a row on every worker" in err
    assert_clean_finish(repo)


def test_worktree_turns_undo_violations_and_fold_an_agents_own_commit(repo, tmp_path):
    env = plans(
        tmp_path,
        w0=[{"set": {"VAL": 1.4}, "touch": "common/fixed.py", "new": "extra/new.py", "desc": "sneaky"}],
        w1=[{"set": {"GAIN_B": 0.02}, "commit": True, "desc": "commits itself"}],
    )
    cli(repo, "loop", *COMMON, "--workers", "2", "--max", "2", env=env)
    recs = by_desc(ledger(repo))
    sneaky, own = recs["sneaky"], recs["commits itself"]
    assert sneaky["status"] == "violation" and sneaky["files"] == ["common/fixed.py", "extra/new.py"]
    saved = repo / "runs" / TAG / "undone" / f"{sneaky['id']:04d}"
    assert "edited by the agent" in (saved / "tracked.patch").read_text() and (saved / "extra" / "new.py").exists()
    assert own["status"] == "keep" and git(repo, "log", "--format=%s", "-1") == "commits itself"
    assert f"Autoresearch-Experiment: {own['id']}" in git(repo, "log", "-1", "--format=%B")
    assert (repo / "common" / "fixed.py").read_text() == "FIXED = 1\n" and not (repo / "extra").exists()
    assert_clean_finish(repo)


def _interactive() -> None:
    # As a foreground command in a terminal: an earlier test in the session (seen with the whole suite on a fresh
    # clone) can leave SIGINT ignored, and an ignored SIGINT is inherited, so the driver would never see Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_runs_and_agents_and_the_next_loop_judges_what_was_in_flight(repo, tmp_path):
    hold = tmp_path / "hold"
    hold.write_text("")
    env = plans(tmp_path, w0=[{"set": {"GAIN_A": 0.03, "HOLD": str(hold)}, "desc": "held"}],
                w1=[{"set": {"GAIN_B": 0.01}, "sleep": 120, "desc": "slow agent"}])  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "common.cli", "loop", *COMMON, "--workers", "2", "--max", "2"], cwd=repo,
        env={**env, "PYTHONFAULTHANDLER": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=_interactive,
    )  # fmt: skip
    pidfile = repo / "runs" / TAG / "logs" / "w1-agent.pid"
    try:
        wait_for(lambda: held_job(repo, hold) and pidfile.exists() and pidfile.read_text().strip(), what="both busy")
        job, agent_pid = held_job(repo, hold), int(pidfile.read_text())
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C at a terminal: the whole foreground group
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack: where the driver hangs
            out, err = proc.communicate(timeout=30)
            pytest.fail(f"the driver did not stop within 60 s of Ctrl-C:\n{err[-6000:]}")
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err[-3000:]
    wait_for(lambda: not any(map(alive, (job["worker_pid"], job["run_pid"], agent_pid))), 10, "all to stop")
    assert [c["description"] for c in inflight(repo)["candidates"]] == ["held"] and len(ledger(repo)) == 1
    hold.unlink()
    cli(repo, "loop", *COMMON, "--workers", "2", "--max", "0", env=env)
    assert [(r["description"], r["status"]) for r in ledger(repo)] == [("baseline", "keep"), ("held", "keep")]
    assert_clean_finish(repo)


# ---------------------------------------------------------------------------------------------------------------------
# Faults: a worker killed mid-run; the driver killed with -9 and resumed


def test_a_worker_killed_mid_run_costs_that_experiment_only(repo, tmp_path):
    """Two seeds (spread 0.001), so small gains need a confirming seed, on the re-applied candidate too."""
    hold = tmp_path / "hold"
    hold.write_text("")
    env = plans(
        tmp_path,
        w0=[{"set": {"GAIN_A": 0.01, "HOLD": str(hold)}, "desc": "held"},  # its worker is killed mid-run
            {"set": {"GAIN_A": 0.0003, "AFTER_2": 3}, "desc": "tiny"}],  # built on the baseline, ends after big
        w1=[{"set": {"GAIN_B": 0.02, "AFTER_1": 2}, "desc": "big"}],  # starts once held is recorded
    )  # fmt: skip
    args = ("--tag", TAG, "--backend", "cpu", "--profile", "ci", "--seeds", "2", "--agent", AGENT)
    proc = start(repo, "loop", *args, "--workers", "2", "--max", "3", env=env)
    try:
        wait_for(lambda: held_job(repo, hold), what="the held run")
        job = held_job(repo, hold)
        os.kill(job["worker_pid"], signal.SIGKILL)  # the worker process dies; its training run is left alone
        wait_for(lambda: not alive(job["run_pid"]), 15, "the reaper to stop the orphaned run")
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-4000:]
    recs = ledger(repo)
    assert [(r["description"], r["status"]) for r in recs] == [
        ("baseline", "keep"), ("held", "crash"), ("big", "keep"), ("tiny", "keep"),
    ], err[-4000:]  # fmt: skip
    base, held, big, tiny = recs
    assert base["spread"] == pytest.approx(0.001) and [r["worker"] for r in base["runs"]] == ["w0", "w1"]
    assert held["reason"].startswith("worker w0 died mid-run (killed by signal 9)") and held["val_bpb"] is None
    assert held["runs"][0]["lost"] and "worker w0 died" in Path(held["runs"][0]["log"]).read_text()
    assert big["parent"] == base["commit"] and big["margin"] == pytest.approx(0.02)
    # tiny beat its parent (the baseline) only within the spread: confirmed on seed 43, then re-applied onto big
    # and confirmed again, against big's value on seed 43, which big's record lacked (a run of big's script)
    assert tiny["reapplied"][0]["parent"] == base["commit"] and tiny["parent"] == big["commit"]
    assert [(r["role"], r["seed"]) for r in tiny["runs"]] == [
        ("superseded", 42), ("superseded", 43), ("candidate", 42), ("confirm", 43), ("best", 43),
    ]  # fmt: skip
    assert tiny["runs"][-1]["commit"] == big["commit"] and tiny["runs"][-1]["val_bpb"] == pytest.approx(1.481)
    assert tiny["val_bpb"] == pytest.approx(1.4797) and tiny["margin"] == pytest.approx(0.0003)
    assert tiny["confirm_margin"] == pytest.approx(0.0003) and "confirmed on the next seed" in tiny["decision"]
    assert git(repo, "log", "--format=%H", "-2").split() == [tiny["commit"], big["commit"]]
    assert const(repo, "HEAD", "GAIN_A") == "0.0003" and const(repo, "HEAD", "GAIN_B") == "0.02"
    assert_clean_finish(repo)


def test_driver_killed_with_9_resumes_without_lost_or_duplicated_rows(repo, tmp_path):
    hold = tmp_path / "hold"
    hold.write_text("")
    env = plans(
        tmp_path,
        w0=[{"set": {"GAIN_A": 0.03, "HOLD": str(hold)}, "desc": "held a"}],
        w1=[{"set": {"GAIN_B": 0.05}, "desc": "b"}, {"set": {"GAIN_B": 0.07}, "sleep": 120, "desc": "sleepy"}],
    )
    proc = start(repo, "loop", *COMMON, "--workers", "2", "--max", "3", env=env)
    pidfile = repo / "runs" / TAG / "logs" / "w1-agent.pid"
    try:
        wait_for(lambda: len(ledger(repo)) == 2 and pidfile.exists() and pidfile.read_text().strip()
                 and held_job(repo, hold), what="b kept, sleepy at work and held a running")  # fmt: skip
        job, agent_pid = held_job(repo, hold), int(pidfile.read_text())
        proc.kill()  # kill -9 of the driver, with a run and an agent in flight
        proc.wait()
    finally:
        proc.kill()
    wait_for(lambda: not alive(job["worker_pid"]) and not alive(job["run_pid"]), 15, "the worker to stop its run")
    assert alive(agent_pid)  # an agent runs in its own session: the next driver stops it
    held = inflight(repo)["candidates"]
    assert [c["description"] for c in held] == ["held a"]
    hold.unlink()

    out = cli(repo, "loop", *COMMON, "--workers", "2", "--max", "0", env=env)
    wait_for(lambda: not alive(agent_pid), 10, "the orphaned agent to be stopped")
    recs = ledger(repo)
    assert [r["description"] for r in recs] == ["baseline", "b", "held a"], out.stderr[-3000:]
    assert sorted(r["id"] for r in recs) == [1, 2, 3]
    b, a = recs[1], recs[2]
    assert a["id"] == held[0]["id"] and a["status"] == "keep" and b["status"] == "keep"
    assert a["reapplied"][0]["commit"] == held[0]["commit"] and a["parent"] == b["commit"]
    assert a["val_bpb"] == pytest.approx(1.42)
    assert git(repo, "log", "--format=%H", "-2").split() == [a["commit"], b["commit"]]
    assert "resume: judging 1 candidate" in out.stderr
    assert_clean_finish(repo)


# ---------------------------------------------------------------------------------------------------------------------
# Ray: a local cluster started here, a Ray worker killed mid-run, a worker with other data refused


def _training_under_ray(holding: Path) -> list[tuple[int, int]]:
    """(pid, parent pid) of each training run a Ray task started (from ray_task's scratch dir) whose script waits
    for the file `holding`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().decode().split("\0")
            script = next((a for a in args if "autoresearch-run-" in a and a.endswith("train_torch.py")), None)
            if script and str(holding) in Path(script).read_text():
                found.append((int(proc.name), int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])))
        except (OSError, ValueError):
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds Ray's worker processes in /proc")
def test_ray_cluster_runs_the_loop_and_survives_a_dead_worker(repo, tmp_path, tmp_path_factory, small_corpus,
                                                               monkeypatch):  # fmt: skip
    # Ray's "single machine" mode: every address is 127.0.0.1 (by default it takes the host's own network address).
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = pytest.importorskip("ray", reason='Ray is not installed: pip install -e ".[ray]"')
    hold = tmp_path / "hold"
    hold.write_text("")
    # Other data (another vocabulary, so another fingerprint): the driver is given it, the workers keep theirs.
    other = prepare_isolated(small_corpus, tmp_path_factory, vocab_size=400)

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="ERROR")
    try:
        address = ray.get_runtime_context().gcs_address
        assert address.startswith("127.0.0.1:")
        env = plans(
            tmp_path,
            w0=[{"set": {"GAIN_A": 0.03, "HOLD": str(hold)}, "desc": "held"}, {"set": {"GAIN_A": 0.02}, "desc": "a"}],
            w1=[{"set": {"GAIN_B": 0.05, "AFTER_1": 2}, "desc": "b"}],
        )
        proc = start(repo, "loop", *COMMON, "--ray", address, "--workers", "2", "--max", "3", env=env)
        try:
            wait_for(lambda: _training_under_ray(hold), 90, "the held run on Ray")
            ((run_pid, ray_worker),) = _training_under_ray(hold)
            os.kill(ray_worker, signal.SIGKILL)
            wait_for(lambda: not alive(run_pid), 15, "the reaper to stop the orphaned run")
            out, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
        assert proc.returncode == 0, err[-4000:]
        recs = by_desc(ledger(repo))
        assert recs["held"]["status"] == "crash" and "the Ray worker died mid-run" in recs["held"]["reason"]
        assert recs["a"]["status"] == "keep" and recs["b"]["status"] == "keep"
        assert const(repo, "HEAD", "GAIN_A") == "0.02" and const(repo, "HEAD", "GAIN_B") == "0.05"
        assert {r["runs"][-1]["host"] for r in recs.values() if r["status"] == "keep"} and all(
            Path(run["log"]).exists() for r in recs.values() for run in r["runs"]
        )
        assert_clean_finish(repo)

        out = cli(repo, "loop", "--tag", "other", "--backend", "cpu", "--profile", "ci", "--seeds", "1", "--agent",
                  AGENT, "--ray", address, "--data-dir", str(other), "--max", "1", env=env, check=False)  # fmt: skip
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert "the baseline crashed: refused by worker" in out.stderr and "is not the driver's" in out.stderr
        (row,) = read_jsonl(repo / "runs" / "other" / "ledger.jsonl")
        assert row["status"] == "crash" and row["reason"].startswith("refused by worker")
    finally:
        ray.shutdown()


# ---------------------------------------------------------------------------------------------------------------------
# Units: the merge, the worker's data check, --ray without Ray, the report


def test_merge_text_applies_a_change_onto_another():
    from common.research.gitops import merge_text

    base = "A = 0\n# -\nB = 0\nC = 0\n"
    assert merge_text(base, base.replace("A = 0", "A = 1"), base.replace("B = 0", "B = 2")) == (
        "A = 1\n# -\nB = 2\nC = 0\n", 0,
    )  # fmt: skip
    merged, conflicts = merge_text(base, base.replace("A = 0", "A = 1"), base.replace("A = 0", "A = 5"))
    assert conflicts == 1 and "<<<<<<< best" in merged


def test_a_worker_refuses_data_with_another_fingerprint(prepared, tmp_path, monkeypatch):
    from common import manifest
    from common.research.workers import check_data

    fp = manifest.fingerprint(prepared)
    assert check_data(fp, str(prepared), own=False) == (prepared, None)
    monkeypatch.setenv("AUTORESEARCH_DATA_DIR", str(tmp_path / "nothing"))
    data, why = check_data(fp, str(prepared), own=True)  # the worker's own setting comes first
    assert data is None and why.startswith("refused by worker") and "no finished prepared data" in why
    monkeypatch.setenv("AUTORESEARCH_DATA_DIR", str(prepared))
    data, why = check_data("f" * 64, None, own=True)
    assert data is None and f"(fingerprint {fp[:12]}) is not the driver's (ffffffffffff)" in why


def test_ray_option_without_ray_says_how_to_install(repo, monkeypatch):
    from click.testing import CliRunner

    from common.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    res = CliRunner().invoke(main, ["loop", "--tag", TAG, "--agent", "true", "--ray", "auto"])
    assert res.exit_code == 1 and 'pip install -e ".[ray]"' in res.output and "Traceback" not in res.output


def test_report_shows_throughput_per_worker_and_idle_time():
    from common.research.report import format_text, summarize

    def run(worker, start, seconds):
        return {"worker": worker, "wall_seconds": seconds, "time": start, "seed": 42, "status": "ok"}

    recs = [
        {"id": 1, "status": "keep", "baseline": True, "commit": "a" * 40, "val_bpb": 1.5, "spread": 0.0,
         "started": "2026-01-01T00:00:00Z", "time": "2026-01-01T00:10:00Z",
         "runs": [run("w0", "2026-01-01T00:00:00Z", 600), run("w1", "2026-01-01T00:00:00Z", 600)]},
        {"id": 2, "status": "keep", "worker": "w0", "commit": "b" * 40, "val_bpb": 1.4,
         "time": "2026-01-01T00:40:00Z", "runs": [run("w0", "2026-01-01T00:20:00Z", 1200)]},
        {"id": 3, "status": "discard", "worker": "w1", "commit": "c" * 40, "val_bpb": 1.6,
         "time": "2026-01-01T01:00:00Z", "runs": [run("w1", "2026-01-01T00:10:00Z", 1800)]},
        {"id": 4, "status": "crash", "worker": "w1", "commit": "d" * 40, "time": "2026-01-01T01:00:00Z",
         "runs": [{**run("w1", "2026-01-01T00:50:00Z", 600), "cached": True}]},
    ]  # fmt: skip
    s = summarize(recs)["search"]
    assert s["hours"] == 1.0 and s["experiments_per_hour"] == 4.0
    assert s["busy_fraction"] == round((600 + 600 + 1200 + 1800) / 7200, 3)
    w0, w1 = s["workers"]
    assert (w0["worker"], w0["experiments"], w0["run_seconds"], w0["idle_seconds"]) == ("w0", 1, 1800, 1800)
    assert (w1["worker"], w1["experiments"], w1["run_seconds"], w1["idle_seconds"]) == ("w1", 2, 2400, 1200)
    assert w1["experiments_per_hour"] == 2.0 and w0["idle_fraction"] == 0.5
    assert "w0: 1 experiments (1.0/hour), idle 50%" in format_text(summarize(recs))
