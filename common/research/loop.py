"""`autoresearch run` and `autoresearch loop`: the ratchet that keeps or reverts, driven by the harness.

An experiment is one candidate commit on `autoresearch/<tag>`, made by the harness from a change to the one
training script. Its runs are judged against the recorded best (decide.py), the result is appended to the ledger,
and only then is the branch advanced (keep) or hard-reset to the best (discard, crash). The ledger is the record
and git follows it, so a kill at any point resumes: the first thing a session does is `reconcile()`.

    session = Session(Settings(...)); session.reconcile()
    session.run_pending(description)     # autoresearch run: judge the script as it is in the work tree
    session.loop(agent_command, ...)     # autoresearch loop: ask the agent, judge, repeat
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import manifest
from common.profiles import DEFAULT_SEED, get_profile, run_timeout
from common.research import agents
from common.research.decide import Decision, confirm, decide, seed_spread
from common.research.execute import Expected, LiveLine, RunSpec, execute, run_key, sha256_text
from common.research.gitops import Ratchet
from common.research.ledger import Ledger, now_iso

FAILED = ("agent-failure", "violation", "skip")  # agent turns that count towards --max-failures
FIXED_HINT = "common/, backends/, prepare.py, tests/, pyproject.toml and program.md are the fixed harness"


class LoopError(Exception):
    """A state the loop cannot go on from; the message names the fix."""


@dataclass
class Settings:
    root: Path
    tag: str
    backend: str | None = None  # mlx | cuda | mps | cpu; None: the branch's pinned one, else check-hardware's
    profile: str | None = None  # full name ("ci@20steps"); None: the branch's pinned one, else the default
    results_dir: Path | None = None  # default <root>/runs/<tag>
    data_dir: Path | None = None
    seeds: int | None = None  # baseline seeds; None: the profile's
    timeout: float | None = None  # per run; None: the profile's
    out: object = field(default=sys.stdout)  # one line per decision
    err: object = field(default=sys.stderr)  # progress


def script_name(backend: str) -> str:
    return "train_mlx.py" if backend == "mlx" else "train_torch.py"


class Session:
    """One research branch: its git ratchet, its ledger, its pinned backend, profile and data."""

    def __init__(self, s: Settings):
        self.s = s
        tag = s.tag.removeprefix("autoresearch/")
        self.results_dir = Path(s.results_dir or Path(s.root) / "runs" / tag)
        self.ledger = Ledger(self.results_dir)
        base = self.ledger.baseline
        self.backend = self._pinned("backend", s.backend, base)
        self.profile = get_profile(self._pinned("profile", s.profile, base))
        self.tag = tag
        self.script = script_name(self.backend)
        self.ratchet = Ratchet(s.root, self.script)
        self.root = self.ratchet.root
        if not (self.root / self.script).exists():
            raise LoopError(f"{self.root} has no {self.script}: run from the root of your autoresearch checkout")
        self.ratchet.start(tag)
        self._open_data(base)
        k = s.seeds or (base and len(base.get("seeds", []))) or self.profile.baseline_seeds
        self.seeds = [DEFAULT_SEED + i for i in range(max(1, k))]
        self.timeout = s.timeout or run_timeout(self.profile)
        self.state_path = self.results_dir / "state.json"
        self._started: str | None = None  # when the experiment being recorded began (for the search's throughput)

    def _pinned(self, key: str, given, base: dict | None):
        pinned = base and base.get(key)
        if given is None:
            if pinned:
                return pinned
            if key == "backend":
                from common.runner import resolve_backend

                return resolve_backend("auto")
            return None
        if pinned and key == "profile":
            given = get_profile(given).name
        if pinned and given != pinned:
            raise LoopError(
                f"branch autoresearch/{self.s.tag.removeprefix('autoresearch/')} is pinned to {key} {pinned!r} "
                f"(its baseline ran so); results from {given!r} would not compare: rerun with --{key} {pinned} "
                "or start a new --tag"
            )
        return given

    def _open_data(self, base: dict | None) -> None:
        from common import paths
        from common.data import PreparedData

        data_dir = Path(self.s.data_dir) if self.s.data_dir else paths.current_data_dir()
        data = PreparedData.open(data_dir)
        self.data_dir = data.dir
        self.dataset = manifest.fingerprint(data.dir)
        if base and base.get("dataset") != self.dataset:
            raise LoopError(
                f"the prepared data in {data.dir} ({data.name}) is not the data this branch's baseline ran on: "
                "point --data-dir (or $AUTORESEARCH_DATA_DIR) at that data, or start a new --tag"
            )
        T = self.profile.max_seq_len
        self.expected = Expected(
            profile=self.profile.name,
            max_seq_len=T,
            eval_tokens=len(data.val_rows(T, self.profile.eval_tokens)) * T,
            dataset_name=data.name,
            steps=self.profile.steps,
        )

    # -- output --------------------------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(text, file=self.s.err, flush=True)

    def result_line(self, rec: dict) -> None:
        bpb = f"{rec['val_bpb']:.6f}" if rec.get("val_bpb") else "-"
        why = rec.get("decision") or rec.get("reason") or ""
        desc = rec.get("description", "")
        print(f"#{rec['id']} {rec['status']} val_bpb {bpb} ({why}) {desc!r}", file=self.s.out, flush=True)

    # -- state ---------------------------------------------------------------------------------------------------

    def _save_state(self, **state) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)

    def _load_state(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    @property
    def best(self) -> dict:
        return self.ledger.best

    # -- runs ----------------------------------------------------------------------------------------------------

    def _run(self, exp_id: int, commit: str | None, text: str, seed: int, role: str) -> dict:
        """One run, from the run cache if this script already ran with this seed (a resumed experiment)."""
        spec = RunSpec(
            backend=self.backend, profile=self.profile.name, seed=seed, script=self.script, script_text=text,
            commit=commit, dataset=self.dataset, timeout=self.timeout,
        )  # fmt: skip
        cached = self.ledger.cached_run(run_key(spec))
        if cached:
            return {**cached, "role": role, "cached": True}
        live = LiveLine(f"#{exp_id} {role} seed {seed}", self.s.err)
        state = self._load_state()

        def started(proc) -> None:
            # Recorded so that a resumed session can stop a run this one left behind (kill -9 of the harness).
            self._save_state(**state, run_pid=proc.pid)

        try:
            log = self.ledger.log_path(exp_id, seed, "-best" if role == "best" else "")
            run = execute(spec, self.expected, log, self.root, self.data_dir, live, started)
        finally:
            live.close()
            self._save_state(**state)
        self.ledger.add_run(run)
        if run["status"] != "ok":
            self.say(f"#{exp_id} seed {seed}: {run['status']}: {run['reason']} (log {run['log']})")
        return {**run, "role": role}

    def _best_value(self, exp_id: int, seed: int, runs: list[dict]) -> float | None:
        """The best's val_bpb on `seed`: from its record, the run cache, or a run made now (then cached)."""
        best = self.best
        for r in best.get("runs", []):
            if r["seed"] == seed and r["status"] == "ok" and r.get("role") in ("baseline", "candidate", "confirm"):
                return r["val_bpb"]
        run = self._run(exp_id, best["commit"], self.ratchet.script_at(best["commit"]), seed, "best")
        runs.append(run)
        return run["val_bpb"] if run["status"] == "ok" else None

    def _record(self, **rec) -> dict:
        base = {
            "tag": self.tag, "branch": Ratchet.branch_name(self.tag), "backend": self.backend,
            "profile": self.profile.name, "dataset": self.dataset, "script": self.script,
        }  # fmt: skip
        rec = self.ledger.append({**base, "started": self._started or now_iso(), **rec})
        self._started = None
        if rec["status"] in ("violation", "skip"):  # nothing of the turn is left to resume
            self._save_state(phase="idle")
        self.result_line(rec)
        return rec

    # -- baseline ------------------------------------------------------------------------------------------------

    def ensure_baseline(self) -> dict:
        if self.best:
            return self.best
        self._started = now_iso()
        commit = self.ratchet.head()
        text = self.ratchet.script_at(commit)
        exp_id = self.ledger.next_id()
        self.say(
            f"baseline: {self.script} at {commit[:7]} with {len(self.seeds)} seeds ({self.backend}, "
            f"profile {self.profile.name}, timeout {self.timeout:.0f}s per run); results in {self.results_dir}"
        )
        runs = [self._run(exp_id, commit, text, seed, "baseline") for seed in self.seeds]
        return self.record_baseline(commit, runs)

    def record_baseline(self, commit: str, runs: list[dict]) -> dict:
        """Record the baseline from its runs (one per seed): its value, and the seed spread every decision uses."""
        bad = [r for r in runs if r["status"] != "ok"]
        common = dict(
            commit=commit, parent=None, baseline=True, seeds=self.seeds, script_sha256=runs[0]["script_sha256"],
            description="baseline", runs=runs,
        )  # fmt: skip
        if bad:
            rec = self._record(status=bad[0]["status"], reason=bad[0]["reason"], **common)
            raise LoopError(
                f"the baseline {bad[0]['status']}ed: {bad[0]['reason']}; see {bad[0]['log']}. Nothing can be judged "
                f"against a broken baseline: fix {self.script} (commit the fix) and rerun (ledger row #{rec['id']})"
            )
        values = [r["val_bpb"] for r in runs]
        spread = seed_spread(values)
        return self._record(
            status="keep", val_bpb=values[0], memory_gb=max(r["memory_gb"] for r in runs), spread=spread,
            decision=f"seeds {', '.join(f'{v:.6f}' for v in values)}: spread {spread:.6f}", **common,
        )  # fmt: skip

    @property
    def spread(self) -> float:
        return self.ledger.baseline.get("spread", 0.0)

    # -- reconcile (resume) ----------------------------------------------------------------------------------------

    def reconcile(self, adopt_foreign: bool = False) -> dict | None:
        """Bring git in line with the ledger after any interruption, finishing an experiment that was committed
        (or being committed) but never decided; returns its record, else None. adopt_foreign: commits after the
        best that the harness did not make are the agent's candidate (`autoresearch run`), not somebody's work."""
        self.ratchet.clear_stale_lock()
        state = self._load_state()
        if state.get("run_pid"):
            stop_orphan(state["run_pid"])
            self._save_state(**{k: v for k, v in state.items() if k != "run_pid"})
        best = self.best
        if best is None:
            return None
        head = self.ratchet.head()
        if state.get("phase") == "agent":  # killed during the agent's turn: its edits, and commits, are undone
            if state.get("agent_pid"):
                stop_orphan(state["agent_pid"], state.get("agent_marker", ""))
            if head != best["commit"] and self.ratchet.is_ancestor(best["commit"], head):
                self.ratchet.unwind_to(best["commit"])
            elif head != best["commit"] and self.ratchet.current_branch() == Ratchet.branch_name(self.tag):
                self._save_undone(state.get("id", 0), "interrupted agent turn moved the branch", set())
                self.ratchet.repo.git.reset("-q", "--hard", best["commit"])
                head = best["commit"]
            new = self.ratchet.untracked() - set(state.get("untracked", []))
            saved = self._undo(best["commit"], new, state.get("id", 0), "interrupted agent turn")
            self._save_state(phase="idle")
            if saved:
                self.say(f"resume: the interrupted agent turn's edits were undone (saved in {saved})")
            return None
        if head == best["commit"]:
            if state.get("phase") == "commit" and self.ratchet.tracked_changes() == {self.script}:
                self.say("resume: committing the change that was being committed at the interruption")
                return self.propose(state.get("description", ""))
            return None
        if not self.ratchet.is_ancestor(best["commit"], head):
            raise LoopError(
                f"HEAD {head[:7]} does not descend from the recorded best {best['commit'][:7]}: check out "
                f"{Ratchet.branch_name(self.tag)} at {best['commit'][:7]} (git reset --hard) and rerun"
            )
        commits = self.ratchet.commits_since(best["commit"])
        if all(Ratchet.experiment_of(c) is not None for c in commits):
            rec = self.ledger.by_commit(head)
            if rec and rec["status"] != "keep":  # decided and recorded, killed before the reset
                self.ratchet.reset_to(best["commit"])
                return None
            if len(commits) == 1 and Ratchet.experiment_of(commits[0]) == self.ledger.next_id():
                self.say(f"resume: judging {head[:7]}, committed before the interruption")
                return self.judge(head)
            raise LoopError(
                f"the harness commits after the best {best['commit'][:7]} do not match the ledger in "
                f"{self.results_dir}: was the ledger moved or edited? Restore it, or reset the branch to the best"
            )
        if adopt_foreign:
            return None
        c = next(c for c in commits if Ratchet.experiment_of(c) is None)
        raise LoopError(
            f"commit {c.hexsha[:7]} ({c.summary!r}) after the recorded best {best['commit'][:7]} was not made by "
            "the harness, which resets only its own: move it to another branch (git branch mine; git reset --hard "
            f"{best['commit'][:7]}) or use `autoresearch run` to judge it"
        )

    def _undo(
        self, best: str, new_untracked: set[str], exp_id: int, why: str, ratchet: Ratchet | None = None
    ) -> str | None:
        """Hard reset to the best, after saving what is undone (the diff and new files) under undone/<id>/: a
        violation is reverted, never lost. `ratchet`: another checkout than the branch's (an agent's worktree)."""
        ratchet = ratchet or self.ratchet
        saved = self._save_undone(exp_id, why, new_untracked, ratchet)
        ratchet.reset_to(best, new_untracked)
        return saved

    def _save_undone(self, exp_id: int, why: str, new_untracked: set[str], ratchet: Ratchet | None = None):
        """Save the work tree's changes against HEAD and the new untracked files under undone/<id>/ (a second save
        for the same id goes beside the first, never over it)."""
        ratchet = ratchet or self.ratchet
        if not (ratchet.tracked_changes() | new_untracked):
            return None
        dest = self.results_dir / "undone" / f"{exp_id:04d}"
        n = 1
        while (dest / "why.txt").exists():
            n += 1
            dest = self.results_dir / "undone" / f"{exp_id:04d}-{n}"
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "tracked.patch").write_text(ratchet.repo.git.diff("HEAD"))
        for p in new_untracked:
            src = ratchet.root / p
            if src.is_file():
                (dest / p).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / p)
        (dest / "why.txt").write_text(why + "\n")
        return str(dest)

    # -- one experiment ------------------------------------------------------------------------------------------

    def propose(self, description: str, new_untracked: set[str] = frozenset(), agent: dict | None = None) -> dict:
        """Judge the work tree's change as a new experiment: a violation if it touches more than the script, a
        skip if this exact script already ran, else commit it and judge it. Returns the ledger record."""
        best = self.best["commit"]
        exp_id = self.ledger.next_id()
        extra = {"agent": agent} if agent else {}
        touched = self.ratchet.tracked_changes() | set(new_untracked)
        fixed = self.ratchet.fixed_files_touched(touched)
        if fixed:
            saved = self._undo(best, set(new_untracked), exp_id, f"changed fixed files: {', '.join(fixed)}")
            return self._record(
                id=exp_id, status="violation", commit=None, parent=best, description=description,
                reason=f"changed {', '.join(fixed[:5])}: only {self.script} may change ({FIXED_HINT}); undone, "
                f"saved in {saved}", files=fixed, **extra,
            )  # fmt: skip
        text = self.ratchet.work_tree_script()
        sha = sha256_text(text)
        seen = self.ledger.by_script(sha)
        if seen or self.script not in touched:
            self._undo(best, set(), exp_id, "no new script")
            why = f"identical to #{seen['id']} ({seen['status']}): not run again" if seen else "no change"
            return self._record(
                id=exp_id, status="skip", commit=None, parent=best, description=description, reason=why,
                script_sha256=sha, **extra,
            )  # fmt: skip
        self._save_state(phase="commit", id=exp_id, description=description)
        commit = self.ratchet.commit_script(description or f"edit {self.script}", exp_id)
        self._save_state(phase="run", id=exp_id, commit=commit)
        return self.judge(commit, extra)

    def judge(self, commit: str, extra: dict | None = None) -> dict:
        """Run a committed candidate, decide, append the record, then keep or reset (in that order)."""
        best = self.best
        exp_id = Ratchet.experiment_of(self.ratchet.commit(commit))
        text = self.ratchet.script_at(commit)
        description = self.ratchet.commit(commit).summary
        seeds = self.seeds
        runs = [self._run(exp_id, commit, text, seeds[0], "candidate")]
        rec = dict(
            id=exp_id, commit=commit, parent=best["commit"], description=description,
            script_sha256=runs[0]["script_sha256"], best_before=best["val_bpb"], spread=self.spread,
            memory_gb=runs[0]["memory_gb"], runs=runs, **(extra or {}),
        )  # fmt: skip
        first = runs[0]
        if first["status"] != "ok":
            rec.update(status=first["status"], reason=first["reason"], val_bpb=None)
        else:
            rec["val_bpb"] = first["val_bpb"]
            best0 = self._best_value(exp_id, seeds[0], runs)
            d = decide(first["val_bpb"], best0, self.spread)
            if d.status == "confirm":
                d = self._confirm(exp_id, commit, text, d, runs)
            if isinstance(d, Decision):
                rec.update(
                    status=d.status, margin=d.margin, confirm_margin=d.confirm_margin, decision=d.describe()
                )
            else:
                rec.update(status="crash", reason=d)
        if rec["status"] != "keep":
            rec.setdefault("decision", "")
        out = self._record(**rec)
        if out["status"] != "keep":
            self.ratchet.reset_to(best["commit"])
        self._save_state(phase="idle")
        return out

    def _confirm(self, exp_id: int, commit: str, text: str, first: Decision, runs: list[dict]):
        if len(self.seeds) < 2:  # one seed: no spread to beat, so no confirmation either
            return Decision("keep", first.margin, first.spread)
        seed = self.seeds[1]
        self.say(f"#{exp_id}: {first.describe()}")
        run = self._run(exp_id, commit, text, seed, "confirm")
        runs.append(run)
        if run["status"] != "ok":
            return f"the confirming run (seed {seed}) {run['status']}ed: {run['reason']}"
        best_value = self._best_value(exp_id, seed, runs)
        if best_value is None:
            return f"the best's run on seed {seed} failed: {runs[-1]['reason']}"
        return confirm(first, run["val_bpb"], best_value)

    def run_pending(self, description: str | None) -> dict | None:
        """`autoresearch run`: judge what the work tree (or the agent's own commits) holds; None if nothing."""
        finished = self.reconcile(adopt_foreign=True)
        if finished:
            return finished
        self.ensure_baseline()
        best = self.best["commit"]
        head = self.ratchet.head()
        if head != best:  # an agent that commits by habit: its commits become one harness commit
            subjects = [c.summary for c in reversed(self.ratchet.commits_since(best))]
            self.ratchet.unwind_to(best)
            description = description or "; ".join(subjects)
        if not self.ratchet.tracked_changes():
            return None
        self._started = now_iso()
        return self.propose(description or f"edit {self.script}")

    # -- the loop ------------------------------------------------------------------------------------------------

    def loop(
        self,
        agent_command: str,
        *,
        max_iterations: int | None = None,
        hours: float | None = None,
        max_failures: int = 5,
        agent_timeout: float = 1800.0,
    ) -> dict:
        """Ask the agent for a change, judge it, repeat, until --max, --hours, Ctrl-C or `max_failures` agent
        failures in a row. Returns counts."""
        self.reconcile()
        self.require_clean_tree()
        self.ensure_baseline()
        program = self.program_text()
        t_end = time.time() + hours * 3600 if hours else None
        done, failures = 0, 0
        while True:
            why = limit_reached(done, max_iterations, t_end, hours)
            if why:
                return self._stopped(why, done)
            if failures >= max_failures:
                return self._stopped(f"{failures} agent failures in a row (--max-failures)", done)
            rec = self._iteration(agent_command, program, agent_timeout)
            done += 1
            failed = rec["status"] in FAILED
            failures = failures + 1 if failed else 0

    def require_clean_tree(self) -> None:
        dirty = self.ratchet.tracked_changes()
        if dirty:
            raise LoopError(
                f"uncommitted changes to {', '.join(sorted(dirty)[:5])}: the agent's turn must start from a clean "
                "tree; commit them (git commit -am ...) or stash them, or judge them with `autoresearch run`"
            )

    def program_text(self) -> str:
        path = self.root / "program.md"
        return path.read_text() if path.exists() else ""

    def _stopped(self, why: str, done: int) -> dict:
        self.say(f"loop: stopped after {done} iterations: {why}. `autoresearch results` shows the table.")
        return {"iterations": done, "why": why}

    def _iteration(self, agent_command: str, program: str, agent_timeout: float) -> dict:
        self._started = now_iso()
        best, base = self.best, self.ledger.baseline
        exp_id = self.ledger.next_id()
        untracked_before = self.ratchet.untracked()
        prompt = agents.build_prompt(
            program, script=self.script, tag=self.tag, profile=self.profile.name, backend=self.backend,
            best=best, baseline=base, diff=self.ratchet.diff(base["commit"], best["commit"]),
            history=self.ledger.records,
        )  # fmt: skip
        self._save_state(phase="agent", id=exp_id, untracked=sorted(untracked_before))
        self.say(f"#{exp_id}: agent at work (timeout {agent_timeout:.0f}s)")
        log = self.results_dir / "logs" / f"{exp_id:04d}-agent.log"
        env = {"AUTORESEARCH_TAG": self.tag, "AUTORESEARCH_BACKEND": self.backend}
        state = dict(phase="agent", id=exp_id, untracked=sorted(untracked_before))

        def started(proc) -> None:  # recorded, so that a resumed session stops an agent a killed one left behind
            self._save_state(**state, agent_pid=proc.pid, agent_marker=agent_command.split("{")[0][:40])

        res = agents.run_agent(agent_command, prompt, self.root, self.script, log, agent_timeout, env, started)
        agent = {"exit_code": res.exit_code, "timed_out": res.timed_out, "seconds": round(res.seconds, 1),
                 "log": res.log}  # fmt: skip
        # The agent may have committed, or switched branches: back to our branch at the best, keeping its edits.
        branch = Ratchet.branch_name(self.tag)
        if self.ratchet.current_branch() != branch:
            self._save_undone(exp_id, "switched branches", self.ratchet.untracked() - untracked_before)
            self.ratchet.repo.git.checkout("-f", branch)
            self._undo(best["commit"], self.ratchet.untracked() - untracked_before, exp_id, "switched branches")
            return self._fail(exp_id, "violation", "the agent switched branches; undone", agent, res.description)
        if self.ratchet.head() != best["commit"]:
            if not self.ratchet.is_ancestor(best["commit"], self.ratchet.head()):
                # reset or amend: the branch was at the best when the turn began, and the reflog keeps the rest
                self._save_undone(exp_id, "moved the branch", self.ratchet.untracked() - untracked_before)
                self.ratchet.repo.git.reset("-q", "--hard", best["commit"])
                return self._fail(exp_id, "violation", "the agent moved the branch; undone", agent, res.description)
            self.ratchet.unwind_to(best["commit"])
        new_untracked = self.ratchet.untracked() - untracked_before
        if not res.ok:
            why = f"timed out after {agent_timeout:.0f}s" if res.timed_out else f"exit {res.exit_code}"
            self._undo(best["commit"], new_untracked, exp_id, f"agent failed: {why}")
            return self._fail(exp_id, "agent-failure", f"the agent {why} (log {res.log})", agent, res.description)
        if not self.ratchet.tracked_changes() and not new_untracked:
            return self._fail(exp_id, "agent-failure", f"the agent changed nothing (log {res.log})", agent,
                              res.description)  # fmt: skip
        description = res.description or f"edit {self.script} (no description line from the agent)"
        return self.propose(description[:200], new_untracked, agent)

    def _fail(self, exp_id: int, status: str, reason: str, agent: dict, description: str) -> dict:
        self._save_state(phase="idle")
        return self._record(
            id=exp_id, status=status, commit=None, parent=self.best["commit"], description=description,
            reason=reason, agent=agent,
        )  # fmt: skip



def limit_reached(turns: int, max_iterations: int | None, t_end: float | None, hours: float | None) -> str | None:
    """Why the loop starts no new turn (--max or --hours), or None."""
    if max_iterations is not None and turns >= max_iterations:
        return f"--max {max_iterations} reached"
    if t_end and time.time() >= t_end:
        return f"--hours {hours:g} reached"
    return None


def stop_orphan(pid: int, marker: str = "train_") -> None:
    """Kill the process group of a run or agent that a killed harness left behind, if that pid's command line
    still holds `marker` (else it is gone, or the pid now belongs to something else)."""
    if sys.platform == "win32":
        return  # the group died with its console
    import signal
    import subprocess

    ps = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True)
    if not ps.stdout.strip() or marker not in ps.stdout:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
