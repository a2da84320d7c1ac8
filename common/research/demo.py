"""`autoresearch demo`: the research loop end to end on the embedded demo data, with the scripted example agent.

It runs in a scratch git worktree of the current commit on a fresh branch `autoresearch/demo-<time>`, so the
user's checkout and branch are never touched; the branch (the kept commits) and `runs/<tag>/` (ledger, results.tsv,
logs, progress.png) stay for a look afterwards.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from common.research import agents, report
from common.research.gitops import GitError, Ratchet
from common.research.ledger import LEDGER, read_jsonl
from common.research.loop import Session, Settings


def run_demo(cwd: Path, data_dir: Path, backend: str | None, turns: int, steps: int, seeds: int | None) -> Path:
    """Returns the results directory."""
    try:
        repo = Ratchet(cwd, "").repo
    except GitError:
        raise GitError(
            "the demo runs the research loop, which needs a git checkout of autoresearch: "
            "git clone <the repository> && cd autoresearch, then rerun `autoresearch demo`"
        ) from None
    root = Path(repo.working_tree_dir)
    tag = time.strftime("demo-%Y%m%d-%H%M%S")
    results = root / "runs" / tag
    scratch = Path(tempfile.mkdtemp(prefix="autoresearch-demo-"))
    worktree = scratch / "worktree"
    repo.git.worktree("add", "--detach", str(worktree), "HEAD")
    try:
        session = Session(
            Settings(
                root=worktree, tag=tag, backend=backend, profile=f"ci@{steps}steps", results_dir=results,
                data_dir=data_dir, seeds=seeds,
            )
        )  # fmt: skip
        session.say(
            f"demo: branch autoresearch/{tag} in a scratch worktree; {turns} turns of the scripted example agent, "
            f"{session.backend} backend, profile {session.profile.name}; results in {results}"
        )
        session.loop(agents.resolve("example"), max_iterations=turns, agent_timeout=120)
    finally:
        repo.git.worktree("remove", "--force", str(worktree))
        shutil.rmtree(scratch, ignore_errors=True)
    records = read_jsonl(results / LEDGER)
    print("\n" + report.format_text(report.summarize(records)), flush=True)
    try:
        report.plot(records, results / "progress.png")
        print(f"\nplot: {results / 'progress.png'}", flush=True)
    except ImportError:
        print('\n(no plot: pip install -e ".[plot]" for runs/<tag>/progress.png)', file=sys.stderr)
    print(
        f"results.tsv: {results / 'results.tsv'}; the kept commits: git log autoresearch/{tag}; "
        f"again: autoresearch results --tag {tag}",
        flush=True,
    )
    return results
