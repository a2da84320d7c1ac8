"""`autoresearch loop --workers N` (or `--ray ADDRESS`): N experiments in flight, one best, one ledger.

One driver, this module, owns git, the agents and the ledger, all from one thread. Each of N slots repeats two
steps. First, an agent turn in the slot's own worktree (runs/<tag>/worktrees/w<k>/, a detached checkout of the
best, with no branch). Then the candidate's runs, on the slot's worker (workers.py: a local process per GPU, or
a Ray task). Whatever finishes comes back to the driver as an event. Only the driver commits, decides, appends
to the ledger and moves the branch.

Optimistic concurrency. A candidate is judged against its parent, the best it was built on, with the same rule
as one worker (decide.py). It is kept only if that parent is still the best when it finishes. If the best moved
meanwhile, a candidate that beat its parent is re-applied on the new best (a 3-way merge of its change to the
script) and run again, which is judged the same way. On a conflict it is discarded, with the reason. So no
improvement is lost and none is counted twice. Every record and every run names the parent it was built on.

Resume. runs/<tag>/inflight.json lists the agents, the workers and the committed candidates in flight. A new
driver stops what the killed one left running and judges those candidates again. Runs that had finished come
from the run cache, so none is paid for twice.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.research import agents
from common.research.decide import Decision, confirm, decide
from common.research.execute import RunSpec, run_key, sha256_text
from common.research.gitops import Ratchet, merge_text
from common.research.ledger import now_iso
from common.research.loop import FAILED, FIXED_HINT, Session, limit_reached, stop_orphan
from common.research.workers import stop_group

INFLIGHT = "inflight.json"
MAX_REAPPLY = 3  # a candidate the best outran this many times is discarded: the agent can propose it again


@dataclass
class Candidate:
    """A committed change in flight: built on `parent`, not yet recorded."""

    id: int
    commit: str
    parent: str
    description: str
    started: str
    agent: dict | None = None
    runs: list = field(default_factory=list)
    reapplied: list = field(default_factory=list)
    slot: int = 0


@dataclass(frozen=True)
class Need:
    """One run an experiment waits for."""

    commit: str
    text: str
    seed: int
    role: str  # baseline | candidate | confirm | best (the parent's value on a seed it lacks)
    parent: str | None
    suffix: str = ""  # of the log's name, so that no two runs of one experiment share a log


def has_inflight(results_dir: Path) -> bool:
    """Whether a --workers loop was interrupted here with candidates in flight (the next loop must judge them)."""
    try:
        return bool(json.loads((Path(results_dir) / INFLIGHT).read_text()).get("candidates"))
    except (FileNotFoundError, ValueError):
        return False


class Driver:
    def __init__(self, session: Session, workers):
        self.s = session
        self.workers = workers
        self.n = workers.n
        self.events: queue.Queue = queue.Queue()
        self.slots: dict[int, dict] = {k: {"state": "idle"} for k in range(self.n)}
        self.flows: dict[int, tuple[Candidate, Generator]] = {}
        self.candidates: dict[int, Candidate] = {}  # committed and not yet recorded, by id
        self.queued: list[Candidate] = []  # resumed candidates waiting for a slot
        self.path = session.results_dir / INFLIGHT
        self.wt_dir = session.results_dir / "worktrees"
        self._worktrees: dict[int, Ratchet] = {}

    # -- state ---------------------------------------------------------------------------------------------------

    def _save(self) -> None:
        state = {
            "agents": {k: v["pidfile"] for k, v in self.slots.items() if v["state"] == "agent"},
            "jobs": {k: v["job"] for k, v in self.slots.items() if v.get("job")},
            "candidates": [asdict(c) for c in sorted(self.candidates.values(), key=lambda c: c.id)],
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, default=str))
        os.replace(tmp, self.path)

    def _next_id(self) -> int:
        return max([self.s.ledger.next_id(), *(c.id + 1 for c in self.candidates.values())])

    def resume(self) -> None:
        """Stop what a killed driver left running, bring the branch up to the recorded best, and queue the
        committed candidates that were in flight (those recorded before the kill are not judged twice)."""
        s = self.s
        try:
            state = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            state = {}
        for pidfile in state.get("agents", {}).values():
            _stop_agent(pidfile)
        for job in state.get("jobs", {}).values():
            stop_group(job.get("worker_pid"), job.get("job", "\0"))
            if job.get("run_pid"):
                stop_orphan(job["run_pid"])
        best = s.best
        if best:  # killed between the record of a keep and the move of the branch
            head = s.ratchet.head()
            if head != best["commit"] and s.ratchet.is_ancestor(head, best["commit"]):
                s.say(f"resume: moving the branch up to the recorded best {best['commit'][:7]}")
                s.ratchet.fast_forward(best["commit"])
        s.reconcile()
        recorded = {r["id"] for r in s.ledger.records}
        for c in state.get("candidates", []):
            c = Candidate(**c)
            if c.id in recorded:
                continue
            c.runs = [r for r in c.runs if r.get("role") == "superseded"]  # the rest come back from the run cache
            self.candidates[c.id] = c
            self.queued.append(c)
        if self.queued:
            s.say(f"resume: judging {len(self.queued)} candidate(s) left in flight: "
                  + ", ".join(f"#{c.id} {c.commit[:7]}" for c in self.queued))  # fmt: skip
        self._save()

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
        s = self.s
        self.resume()
        s.require_clean_tree()
        self.program = s.program_text()
        self.command, self.agent_timeout = agent_command, agent_timeout
        t_end = time.time() + hours * 3600 if hours else None
        turns, why = 0, None
        failures = dict.fromkeys(self.slots, 0)  # per worker: N agents starting at once may well repeat one idea
        interrupted = True
        try:
            self.baseline()
            while True:
                for k in [k for k, v in self.slots.items() if v["state"] == "idle"]:
                    if self.queued:
                        self._start_flow(k, self.queued.pop(0))
                        continue
                    if why is None:
                        why = limit_reached(turns, max_iterations, t_end, hours)
                        if why is None and min(failures.values()) >= max_failures:
                            why = f"{max_failures} agent failures in a row on every worker (--max-failures)"
                    if why is None and failures[k] < max_failures:
                        self._start_agent(k)
                        turns += 1
                if all(v["state"] == "idle" for v in self.slots.values()) and not self.queued:
                    break
                kind, k, payload = self._next_event()
                if kind == "agent":
                    rec = self._agent_done(k, payload)
                    failures[k] = failures[k] + 1 if rec is not None and rec["status"] in FAILED else 0
                    if failures[k] == max_failures and why is None:
                        s.say(f"w{k}: {max_failures} agent failures in a row; this worker's agent stops")
                elif kind == "run":
                    self._advance(k, payload)
                elif kind == "started" and self.slots[k].get("job") is not None:
                    self.slots[k]["job"].update(payload)
                    self._save()
            interrupted = False
        finally:
            self._shutdown(interrupted)
        return s._stopped(why or "nothing left to do", turns)

    def _next_event(self) -> tuple[str, int, object]:
        while True:
            try:
                return self.events.get(timeout=1.0)  # a timeout, so that Ctrl-C is seen at once
            except queue.Empty:
                continue

    def _shutdown(self, interrupted: bool) -> None:
        for v in self.slots.values():
            if v["state"] == "agent":
                _stop_agent(v["pidfile"])
        self.workers.stop()
        if interrupted:
            self._save()  # the committed candidates stay listed: the next loop judges them
            return
        if self.wt_dir.exists():
            for path in self.wt_dir.iterdir():
                self.s.ratchet.remove_worktree(path)
            if not any(self.wt_dir.iterdir()):
                self.wt_dir.rmdir()
        self.path.unlink(missing_ok=True)

    # -- baseline ------------------------------------------------------------------------------------------------

    def baseline(self) -> None:
        """The baseline's seeds run at once, one per slot."""
        s = self.s
        if s.best:
            return
        s._started = now_iso()
        commit = s.ratchet.head()
        text = s.ratchet.script_at(commit)
        exp_id = s.ledger.next_id()
        s.say(
            f"baseline: {s.script} at {commit[:7]} with {len(s.seeds)} seeds on {self.n} workers ({s.backend}, "
            f"profile {s.profile.name}, timeout {s.timeout:.0f}s per run); results in {s.results_dir}"
        )
        todo = [Need(commit, text, seed, "baseline", None) for seed in s.seeds]
        runs: dict[int, dict] = {}
        busy: dict[int, Need] = {}
        while len(runs) < len(todo):
            for k in range(self.n):
                waiting = [need for need in todo if need.seed not in runs and need not in busy.values()]
                if k in busy or not waiting:
                    continue
                need = waiting[0]
                cached = self._cached(need)
                if cached:
                    runs[need.seed] = cached
                else:
                    busy[k] = need
                    self._dispatch(k, exp_id, need)
            if len(runs) == len(todo):
                break
            kind, k, payload = self._next_event()
            if kind == "run":
                need = busy.pop(k)
                runs[need.seed] = self._arrived(k, need, payload)
                self.slots[k] = {"state": "idle"}
                self._save()
            elif kind == "started" and self.slots[k].get("job") is not None:
                self.slots[k]["job"].update(payload)
        s.record_baseline(commit, [runs[seed] for seed in s.seeds])

    # -- runs ----------------------------------------------------------------------------------------------------

    def _spec(self, need: Need) -> RunSpec:
        s = self.s
        return RunSpec(
            backend=s.backend, profile=s.profile.name, seed=need.seed, script=s.script, script_text=need.text,
            commit=need.commit, dataset=s.dataset, timeout=s.timeout,
        )  # fmt: skip

    def _cached(self, need: Need) -> dict | None:
        cached = self.s.ledger.cached_run(run_key(self._spec(need)))
        return {**cached, "role": need.role, "parent": need.parent, "cached": True} if cached else None

    def _dispatch(self, k: int, exp_id: int, need: Need) -> None:
        s = self.s
        spec = self._spec(need)
        log = s.ledger.log_path(exp_id, need.seed, need.suffix)
        job = {
            "spec": asdict(spec), "expected": asdict(s.expected), "log": str(log), "worker": f"w{k}",
            "label": f"#{exp_id} w{k} {need.role} seed {need.seed}", "data_dir": str(s.data_dir), "root": str(s.root),
        }  # fmt: skip
        slot = self.slots[k]
        if slot["state"] == "idle":
            slot["state"] = "run"
        slot["job"] = {}  # the worker's and the run's pids, once they exist
        self._save()
        events = self.events
        self.workers.submit(
            k, job, done=lambda run: events.put(("run", k, run)), started=lambda info: events.put(("started", k, info))
        )

    def _arrived(self, k: int, need: Need, run: dict) -> dict:
        """A run back from a worker: into the run cache (unless it was lost), and labelled for its record."""
        if run["status"] != "ok":
            self.s.say(f"w{k} seed {need.seed}: {run['status']}: {run['reason']} (log {run['log']})")
        if not run.get("lost"):
            self.s.ledger.add_run(run)
        self.slots[k].pop("job", None)
        return {**run, "role": need.role, "parent": need.parent}

    # -- agent turns ---------------------------------------------------------------------------------------------

    def _worktree(self, k: int, commit: str) -> Ratchet:
        wt = self.s.ratchet.worktree(self.wt_dir / f"w{k}", commit)
        self._worktrees[k] = wt
        return wt

    def _start_agent(self, k: int) -> None:
        s = self.s
        best, base = s.best, s.ledger.baseline
        wt = self._worktree(k, best["commit"])
        log = s.results_dir / "logs" / f"w{k}-agent.log"
        pidfile = log.with_suffix(".pid")
        pidfile.unlink(missing_ok=True)
        running = [{"id": c.id, "status": "running", "description": c.description} for c in self.candidates.values()]
        prompt = agents.build_prompt(
            self.program, script=s.script, tag=s.tag, profile=s.profile.name, backend=s.backend, best=best,
            baseline=base, diff=s.ratchet.diff(base["commit"], best["commit"]), history=s.ledger.records + running,
        )  # fmt: skip
        if self.n > 1:
            prompt += (
                f"\n{self.n} agents work at once; you are agent {k + 1}. The ideas the others are running now are "
                "listed under 'Already tried': choose a different one.\n"
            )
        env = {"AUTORESEARCH_TAG": s.tag, "AUTORESEARCH_BACKEND": s.backend, "AUTORESEARCH_WORKER": str(k),
               "AUTORESEARCH_WORKERS": str(self.n)}  # fmt: skip
        command = self.command
        if sys.platform != "win32":
            # The shell's pid leads the agent's process group; the file lets a later driver stop an orphaned agent.
            # `exit $?` last, so that the shell stays (and keeps the pid file's name on its command line).
            command = f'echo $$ > "{pidfile}"\n{command}\nexit $?'
        self.slots[k] = {"state": "agent", "base": best["commit"], "started": now_iso(), "pidfile": str(pidfile),
                         "log": str(log)}  # fmt: skip
        self._save()
        s.say(f"w{k}: agent at work on the best #{best['id']} ({best['commit'][:7]}; timeout {self.agent_timeout:.0f}s)")
        events, timeout = self.events, self.agent_timeout

        def turn() -> None:
            try:
                res = agents.run_agent(command, prompt, wt.root, s.script, log, timeout, env)
            except Exception as e:  # whatever went wrong, the driver must hear back: the turn failed, the loop goes on
                log.write_text(f"could not run the agent: {type(e).__name__}: {e}\n")
                res = agents.AgentResult(None, False, 0.0, "", str(log))
            events.put(("agent", k, res))

        threading.Thread(target=turn, daemon=True).start()

    def _agent_done(self, k: int, res: agents.AgentResult) -> dict | None:
        """What the agent left in its worktree: a record (failure, violation, skip), or None for a candidate,
        which is committed there and starts its runs."""
        s = self.s
        slot = self.slots[k]
        base, started = slot["base"], slot["started"]
        Path(slot["pidfile"]).unlink(missing_ok=True)
        self.slots[k] = {"state": "idle"}
        wt = self._worktrees[k]
        exp_id = self._next_id()
        log = Path(slot["log"])  # named by slot while the turn ran, by experiment from now on
        for src, dest in ((log.with_suffix(".prompt.md"), f"{exp_id:04d}-agent.prompt.md"), (log, f"{exp_id:04d}-agent.log")):
            if src.exists():
                src.rename(src.with_name(dest))
        log = log.with_name(f"{exp_id:04d}-agent.log")
        agent = {"exit_code": res.exit_code, "timed_out": res.timed_out, "seconds": round(res.seconds, 1),
                 "log": str(log)}  # fmt: skip

        def fail(status: str, reason: str, **extra) -> dict:
            self._save()
            s._started = started
            return s._record(
                id=exp_id, status=status, commit=None, parent=base, description=res.description, reason=reason,
                agent=agent, worker=f"w{k}", **extra,
            )  # fmt: skip

        best = s.best["commit"]
        if s.ratchet.head() != best or s.ratchet.current_branch() != Ratchet.branch_name(s.tag):
            s.ratchet.repo.git.checkout("-q", "-f", Ratchet.branch_name(s.tag))
            s.ratchet.repo.git.reset("-q", "--hard", best)
            return fail("violation", "the agent moved the research branch from its worktree; put back")
        if wt.current_branch() is not None:
            wt.repo.git.checkout("-q", "--detach", "-f", base)
            s._undo(base, wt.untracked(), exp_id, "switched branches", wt)
            return fail("violation", "the agent checked out a branch in its worktree; undone")
        if wt.head() != base:
            if not wt.is_ancestor(base, wt.head()):
                wt.repo.git.checkout("-q", "--detach", "-f", base)
                s._undo(base, wt.untracked(), exp_id, "moved HEAD", wt)
                return fail("violation", "the agent moved its worktree off the best; undone")
            wt.unwind_to(base)  # an agent that commits by habit: its commits become one harness commit
        new = wt.untracked()
        if not res.ok:
            why = f"timed out after {self.agent_timeout:.0f}s" if res.timed_out else f"exit {res.exit_code}"
            s._undo(base, new, exp_id, f"agent failed: {why}", wt)
            return fail("agent-failure", f"the agent {why} (log {log})")
        touched = wt.tracked_changes() | new
        if not touched:
            return fail("agent-failure", f"the agent changed nothing (log {log})")
        fixed = wt.fixed_files_touched(touched)
        if fixed:
            saved = s._undo(base, new, exp_id, f"changed fixed files: {', '.join(fixed)}", wt)
            return fail(
                "violation",
                f"changed {', '.join(fixed[:5])}: only {s.script} may change ({FIXED_HINT}); undone, saved in {saved}",
                files=fixed,
            )
        text = wt.work_tree_script()
        sha = sha256_text(text)
        seen = self._seen(sha)
        if seen:
            wt.reset_to(base)
            return fail("skip", f"identical to {seen}: not run again", script_sha256=sha)
        description = (res.description or f"edit {s.script} (no description line from the agent)")[:200]
        commit = wt.commit_script(description, exp_id)
        c = Candidate(exp_id, commit, base, description, started, agent, slot=k)
        self.candidates[c.id] = c
        self._start_flow(k, c)
        return None

    def _seen(self, sha: str) -> str | None:
        rec = self.s.ledger.by_script(sha)
        if rec:
            return f"#{rec['id']} ({rec['status']})"
        for c in self.candidates.values():
            if sha256_text(self.s.ratchet.script_at(c.commit)) == sha:
                return f"#{c.id} (in flight)"
        return None

    # -- one candidate, from its first run to its record -------------------------------------------------------

    def _start_flow(self, k: int, c: Candidate) -> None:
        c.slot = k
        self.slots[k] = {"state": "run", "id": c.id}
        self.flows[k] = (c, self._evaluate(c))
        self._save()
        self._step(k, None)

    def _advance(self, k: int, run: dict) -> None:
        self._step(k, self._arrived(k, self.slots[k]["need"], run))

    def _step(self, k: int, value: dict | None) -> None:
        """Feed the candidate's flow what it waited for, until it waits for a run that is not cached (sent to the
        slot's worker) or finishes (the slot is free again)."""
        c, flow = self.flows[k]
        try:
            need = flow.send(value) if value is not None else next(flow)
            while True:
                cached = self._cached(need)
                if cached is None:
                    break
                need = flow.send(cached)
        except StopIteration:
            del self.flows[k]
            self.candidates.pop(c.id, None)
            self.slots[k] = {"state": "idle"}
            self._save()
            return
        self.slots[k]["need"] = need
        self._dispatch(k, c.id, need)

    def _evaluate(self, c: Candidate) -> Generator[Need, dict, dict]:
        s = self.s
        while True:
            text = s.ratchet.script_at(c.commit)
            suffix = f"-r{len(c.reapplied)}" if c.reapplied else ""
            first = yield Need(c.commit, text, s.seeds[0], "candidate", c.parent, suffix)
            c.runs.append(first)
            parent = s.ledger.by_commit(c.parent)
            rec = dict(
                id=c.id, commit=c.commit, parent=c.parent, description=c.description,
                script_sha256=first["script_sha256"], best_before=parent["val_bpb"], spread=s.spread,
                memory_gb=first["memory_gb"], runs=c.runs, worker=f"w{c.slot}",
            )  # fmt: skip
            if c.agent:
                rec["agent"] = c.agent
            if c.reapplied:
                rec["reapplied"] = c.reapplied
            if first["status"] != "ok":
                return self._finish(c, rec, status=first["status"], reason=first["reason"], val_bpb=None)
            rec["val_bpb"] = first["val_bpb"]
            verdict = yield from self._verdict(c, first, parent, text, suffix)
            if isinstance(verdict, str):
                return self._finish(c, rec, status="crash", reason=verdict)
            rec.update(margin=verdict.margin, confirm_margin=verdict.confirm_margin, decision=verdict.describe())
            if verdict.status != "keep":
                return self._finish(c, rec, status="discard")
            best = s.best
            if best["commit"] == c.parent:
                return self._finish(c, rec, status="keep")
            why = self._reapply(c, best, first)
            if why:
                return self._finish(c, rec, status="discard", reason=why, decision=f"{rec['decision']}; {why}")

    def _verdict(self, c: Candidate, first: dict, parent: dict, text: str, suffix: str):
        """Decide against the parent, on the same seeds (decide.py): a Decision, or why it could not."""
        s = self.s
        value = yield from self._value_of(parent, s.seeds[0], c)
        if value is None:
            return f"the best's run on seed {s.seeds[0]} failed: {c.runs[-1]['reason']}"
        d = decide(first["val_bpb"], value, s.spread)
        if d.status != "confirm":
            return d
        if len(s.seeds) < 2:  # one seed: no spread to beat, so no confirmation either
            return Decision("keep", d.margin, d.spread)
        seed = s.seeds[1]
        s.say(f"#{c.id}: {d.describe()}")
        run = yield Need(c.commit, text, seed, "confirm", c.parent, suffix)
        c.runs.append(run)
        if run["status"] != "ok":
            return f"the confirming run (seed {seed}) {run['status']}ed: {run['reason']}"
        value = yield from self._value_of(parent, seed, c)
        if value is None:
            return f"the best's run on seed {seed} failed: {c.runs[-1]['reason']}"
        return confirm(d, run["val_bpb"], value)

    def _value_of(self, rec: dict, seed: int, c: Candidate):
        """A best's val_bpb on `seed`: from its record, else a run of its script now (then cached)."""
        for r in rec.get("runs", []):
            if r["seed"] == seed and r["status"] == "ok" and r.get("role") in ("baseline", "candidate", "confirm"):
                return r["val_bpb"]
        commit = rec["commit"]
        suffix = f"-r{len(c.reapplied)}-best" if c.reapplied else "-best"
        run = yield Need(commit, self.s.ratchet.script_at(commit), seed, "best", rec.get("parent"), suffix)
        c.runs.append(run)
        return run["val_bpb"] if run["status"] == "ok" else None

    def _reapply(self, c: Candidate, best: dict, first: dict) -> str | None:
        """The best moved on while `c` ran, and `c` beat its own parent: its change, merged onto the new best, is
        committed as the candidate to run again. Returns why not, if it cannot be."""
        s = self.s
        onto = f"#{best['id']} ({best['commit'][:7]})"
        if len(c.reapplied) >= MAX_REAPPLY:
            return f"the best moved {MAX_REAPPLY + 1} times while it ran; not re-applied again"
        ours = s.ratchet.script_at(best["commit"])
        merged, conflicts = merge_text(s.ratchet.script_at(c.parent), ours, s.ratchet.script_at(c.commit))
        if conflicts:
            return (f"conflict re-applying it onto the new best {onto}: both changed the same lines of {s.script} "
                    f"({conflicts} conflict{'s' if conflicts > 1 else ''})")  # fmt: skip
        if merged == ours:
            return f"its change is already in the new best {onto}"
        seen = self._seen(sha256_text(merged))
        if seen:
            return f"re-applied onto the new best {onto} it is identical to {seen}"
        wt = self._worktree(c.slot, best["commit"])
        (wt.root / s.script).write_bytes(merged.encode())
        message = (f"{c.description}\n\nRe-applied onto {best['commit'][:7]} from {c.commit[:7]}, "
                   f"which was built on {c.parent[:7]}.")  # fmt: skip
        commit = wt.commit_script(message, c.id)
        for r in c.runs:
            if r.get("role") in ("candidate", "confirm"):
                r["role"] = "superseded"  # the old commit's runs: never read as the value of the new one
        c.reapplied.append({"commit": c.commit, "parent": c.parent, "val_bpb": first["val_bpb"], "onto": best["commit"]})
        s.say(f"#{c.id}: beat its parent {c.parent[:7]}, but the best moved to {onto}: re-applied as {commit[:7]}, "
              "running again")  # fmt: skip
        c.commit, c.parent = commit, best["commit"]
        self._save()
        return None

    def _finish(self, c: Candidate, rec: dict, **fields) -> dict:
        """Append the record; for a keep, then move the branch (the ledger first: a kill between the two is
        finished by resume())."""
        s = self.s
        rec.update(fields)
        if rec["status"] != "keep":
            rec.setdefault("decision", "")
        s._started = c.started
        out = s._record(**rec)
        if out["status"] == "keep":
            s.ratchet.fast_forward(c.commit)
        return out


def _stop_agent(pidfile: str) -> None:
    path = Path(pidfile)
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    stop_group(pid, path.name)
    path.unlink(missing_ok=True)

